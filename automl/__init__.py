"""automl: Optuna-driven AutoML for Keras image classifiers.

The Python API mirrors the command line::

    config = automl.load_config("search_spaces/quickstart.yaml")
    result = automl.run_tune(config)                 # start or resume the study
    ensemble = automl.run_ensemble(config, result.study)   # an EnsembleResult
    print(ensemble.holdout.ensemble.accuracy if ensemble.holdout else ensemble.out_of_fold)
    automl.run_predict(config, Path("new_images/"), Path("predictions.csv"))

TensorFlow is imported only by the functions that train or predict.
"""

from typing import TYPE_CHECKING, Any

from automl.config.schema import Config, config_from_dict, load_config
from automl.errors import (
    AutoMLError,
    ConfigError,
    DataError,
    DownloadError,
    SpaceError,
    StudyError,
)

if TYPE_CHECKING:  # what editors and mypy see; at run time __getattr__ imports them lazily
    from automl.ensemble.build import run_ensemble
    from automl.ensemble.manifest import EnsembleResult
    from automl.ensemble.predict import run_predict
    from automl.search.storage import load_study
    from automl.search.tune import run_tune

__version__ = "0.1.0"

__all__ = [
    "AutoMLError",
    "Config",
    "ConfigError",
    "DataError",
    "DownloadError",
    "EnsembleResult",
    "SpaceError",
    "StudyError",
    "config_from_dict",
    "load_config",
    "load_study",
    "run_ensemble",
    "run_predict",
    "run_tune",
]


def __getattr__(name: str) -> Any:  # lazy: keep `import automl` free of TensorFlow
    if name == "run_tune":
        from automl.search.tune import run_tune

        return run_tune
    if name == "run_ensemble":
        from automl.ensemble.build import run_ensemble

        return run_ensemble
    if name == "EnsembleResult":
        from automl.ensemble.manifest import EnsembleResult

        return EnsembleResult
    if name == "run_predict":
        from automl.ensemble.predict import run_predict

        return run_predict
    if name == "load_study":
        from automl.search.storage import load_study

        return load_study
    raise AttributeError(f"module 'automl' has no attribute {name!r}")
