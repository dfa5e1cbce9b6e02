"""One YAML file per study -> frozen, validated dataclasses.

The file has five sections; every key is checked (unknown keys are errors that list the valid
ones), every value is type-checked, and relative paths are resolved against the current
directory so that the resolved configuration saved beside the study works from anywhere::

    study:    name, metric, direction, n_trials, timeout, seed, sampler, pruner, storage,
              studies_dir, enqueue, warm_start, artifacts_dir, heartbeat_interval,
              grace_period, max_retries, latency_objective
    data:     where the images are (format, path, ...), image_size, n_folds, holdout_fraction,
              test (a separate hold-out set), cache
    training: early_stopping_patience, restore_best_weights, mixed_precision, jit_compile,
              deterministic
    space:    the hyperparameters and their distributions (see ``space.py``)
    ensemble: selection, top_k, vote, positive_class, target_recall

Command-line overrides (``--set data.image_size=64``) are applied to the raw mapping before
validation, so they get the same checks. This module imports no TensorFlow.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import optuna
import yaml

from automl.config.methods import SelectionMethod, VoteMethod
from automl.config.portfolio import WARM_STARTS
from automl.config.sources import BLOODMNIST_SIZES, MEDMNIST_SPLITS, SOURCE_FORMATS, DataSource
from automl.config.space import SearchSpace, number_problem, parse_space, yaml_number_hint
from automl.errors import ConfigError
from automl.metrics import METRICS, metric_direction

Direction = Literal["maximize", "minimize"]

SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "qmc": "QMCSampler",
    "cmaes": "CmaEsSampler",
}
PRUNERS: dict[str, str] = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "threshold": "ThresholdPruner",
    "none": "NopPruner",
}
# Pruners whose rungs are budgets in epochs of fold 0 (search/pruning.py).
RUNG_PRUNERS = ("hyperband", "successive_halving")
SECTIONS = ("study", "data", "training", "space", "ensemble")
# Keys the sampler/pruner constructors take that automl sets itself.
_MANAGED_KWARGS = {"seed", "search_space"}


@dataclass(frozen=True)
class AlgorithmConfig:
    """A sampler or pruner: its short name and keyword arguments for the Optuna constructor."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


@dataclass(frozen=True)
class StudyConfig:
    """The ``study:`` section."""

    name: str
    metric: str = "accuracy"
    direction: Direction = "maximize"
    n_trials: int | None = 20
    timeout: float | None = None
    seed: int = 42
    sampler: AlgorithmConfig = AlgorithmConfig("tpe", {"n_startup_trials": 10})
    pruner: AlgorithmConfig = AlgorithmConfig("median", {"n_startup_trials": 3})
    storage: str | None = None
    studies_dir: str = "studies"
    enqueue: tuple[dict[str, Any], ...] = ()
    # Known-good configurations enqueued after ``enqueue`` (``config/portfolio.py``).
    warm_start: str = "portfolio"
    artifacts_dir: str | None = None  # fold models etc.; None: the study folder
    heartbeat_interval: int = 60  # seconds between a running trial's heartbeats
    grace_period: int | None = None  # seconds without a beat before a trial is dead; None: 2x
    max_retries: int = 2  # how often a dead worker's trial is queued again
    # Second objective: minimise single-image latency (a Pareto front instead of one best).
    latency_objective: bool = False

    @property
    def directions(self) -> list[Direction]:
        """Optuna directions: the metric's, then ``minimize`` for latency when asked."""
        return [self.direction, "minimize"] if self.latency_objective else [self.direction]

    @property
    def directory(self) -> Path:
        """Where the study's files live: ``<studies_dir>/<name>``."""
        return Path(self.studies_dir) / self.name

    @property
    def artifacts_directory(self) -> Path:
        """Where trials write fold models and pictures: ``artifacts_dir`` or the study folder."""
        return Path(self.artifacts_dir) if self.artifacts_dir else self.directory


@dataclass(frozen=True)
class DataConfig:
    """The ``data:`` section: the training pool, its splits, and an optional separate test set."""

    source: DataSource
    image_size: int = 96
    n_folds: int = 5
    holdout_fraction: float = 0.2
    test: DataSource | None = None
    cache: bool = True
    exclude: str | None = None  # CSV/TXT list of ids or files to leave out (e.g. audit.csv)
    groups_from_duplicates: bool = False  # keep each near-duplicate group on one split side


@dataclass(frozen=True)
class TrainingConfig:
    """The ``training:`` section: how every trial trains, whatever its hyperparameters."""

    early_stopping_patience: int | None = None
    # Put the best epoch's weights back after early stopping: off, so that out-of-fold
    # predictions come from weights not chosen on that fold (README: early stopping).
    restore_best_weights: bool = False
    mixed_precision: str = "auto"  # "auto" (on when a GPU is visible), "on" or "off"
    jit_compile: str = "auto"  # "auto" (Keras decides), "on" or "off"
    deterministic: str = "auto"  # op determinism, same seed same scores; "auto": without a GPU


@dataclass(frozen=True)
class EnsembleConfig:
    """The ``ensemble:`` section."""

    top_k: int = 5  # members when selection is top_k
    vote: VoteMethod = VoteMethod.MAJORITY
    positive_class: str | None = None
    target_recall: float | None = None  # binary: pick the decision threshold out-of-fold
    # greedy (forward selection with replacement, OOF) or top_k
    selection: SelectionMethod = SelectionMethod.GREEDY


@dataclass(frozen=True)
class Config:
    """A whole, validated study configuration."""

    study: StudyConfig
    data: DataConfig
    training: TrainingConfig
    space: SearchSpace
    ensemble: EnsembleConfig
    source: str = "<config>"

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping that :func:`config_from_dict` turns back into an equal ``Config``."""
        study = {
            "name": self.study.name,
            "metric": self.study.metric,
            "direction": self.study.direction,
            "n_trials": self.study.n_trials,
            "timeout": self.study.timeout,
            "seed": self.study.seed,
            "sampler": self.study.sampler.to_dict(),
            "pruner": self.study.pruner.to_dict(),
            "storage": self.study.storage,
            "studies_dir": self.study.studies_dir,
            "enqueue": [dict(e) for e in self.study.enqueue],
            "warm_start": self.study.warm_start,
            "artifacts_dir": self.study.artifacts_dir,
            "heartbeat_interval": self.study.heartbeat_interval,
            "grace_period": self.study.grace_period,
            "max_retries": self.study.max_retries,
            "latency_objective": self.study.latency_objective,
        }
        data = {
            **self.data.source.to_dict(),
            "image_size": self.data.image_size,
            "n_folds": self.data.n_folds,
            "holdout_fraction": self.data.holdout_fraction,
            "test": self.data.test.to_dict() if self.data.test else None,
            "cache": self.data.cache,
            "exclude": self.data.exclude,
            "groups_from_duplicates": self.data.groups_from_duplicates,
        }
        return {
            "study": study,
            "data": data,
            "training": {
                "early_stopping_patience": self.training.early_stopping_patience,
                "restore_best_weights": self.training.restore_best_weights,
                "mixed_precision": self.training.mixed_precision,
                "jit_compile": self.training.jit_compile,
                "deterministic": self.training.deterministic,
            },
            "space": copy.deepcopy(self.space.raw),
            "ensemble": {
                "top_k": self.ensemble.top_k,
                "vote": self.ensemble.vote.value,
                "positive_class": self.ensemble.positive_class,
                "target_recall": self.ensemble.target_recall,
                "selection": self.ensemble.selection.value,
            },
        }

    def save(self, path: Path) -> None:
        """Write the resolved configuration as YAML (atomically, owner-only), no password in it.

        The storage URL is written without its password: a process reads that at run time
        from ``AUTOML_STORAGE`` or the driver's ``PGPASSWORD`` / ``~/.pgpass``
        (``config/storage_url.py``).
        """
        from automl.config.storage_url import without_password
        from automl.files import atomic_write_text

        resolved = self.to_dict()
        resolved["study"]["storage"] = without_password(self.study.storage)
        header = "# Resolved configuration of this study (file values + command-line overrides).\n"
        text = header + yaml.safe_dump(resolved, sort_keys=False)
        atomic_write_text(path, text, private=True)


# --------------------------------------------------------------------------------------------


def load_config(
    path: str | Path, overrides: list[str] | None = None, *, study_name: str | None = None
) -> Config:
    """Read, override and validate a study file.

    Args:
        path: the YAML file.
        overrides: ``key.path=value`` strings; values are parsed as YAML.
        study_name: default for ``study.name`` when the file has none (the file's stem otherwise).

    Raises:
        ConfigError: the file is missing, not YAML, or any key is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such file; pass --space with the path of a search-space YAML file "
            "(see search_spaces/)."
        )
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{path}: is not valid YAML{where}: {problem}; fix the syntax there."
        ) from exc
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping with sections {', '.join(SECTIONS)}, got "
            f"{type(raw).__name__}."
        )
    raw = apply_overrides(raw, overrides or [], source=str(path))
    return config_from_dict(raw, source=str(path), default_name=study_name or path.stem)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that names the same key twice (YAML keeps the last one silently)."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping, with both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(
                    f"key '{key}' is written twice in one section, at lines {seen[key]} and "
                    f"{line}; YAML would silently keep the second. Delete one of them."
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def apply_overrides(raw: dict[str, Any], overrides: list[str], *, source: str) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b.c=value`` override set (value parsed as YAML)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set {item!r}: expected KEY.PATH=VALUE such as data.image_size=64."
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc}).") from exc
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"--set {item!r}: {part} in {source} is a value, not a section; "
                    "set the whole value instead."
                )
            node = child
        node[parts[-1]] = value
    return raw


def config_from_dict(
    raw: dict[str, Any], *, source: str = "<config>", default_name: str = "study"
) -> Config:
    """Validate a raw mapping (already YAML-parsed) into a :class:`Config`."""
    _unknown(source, "", raw, SECTIONS)
    data = _parse_data(source, _section(source, "data", raw.get("data")))
    study = _parse_study(source, _section(source, "study", raw.get("study")), default_name)
    training = _parse_training(source, _section(source, "training", raw.get("training")))
    space = parse_space(raw.get("space"), source=source, image_size=data.image_size)
    ensemble = _parse_ensemble(source, _section(source, "ensemble", raw.get("ensemble")))
    _check_enqueue(source, study.enqueue, space)
    _check_rungs(source, study.pruner, space.max_epochs())
    if study.sampler.name == "grid":
        grid_search_space(space, source=source)  # raises when the space cannot be gridded
    return Config(study, data, training, space, ensemble, source)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _parse_study(source: str, raw: dict[str, Any], default_name: str) -> StudyConfig:
    keys = (
        "name",
        "metric",
        "direction",
        "n_trials",
        "timeout",
        "seed",
        "sampler",
        "pruner",
        "storage",
        "studies_dir",
        "enqueue",
        "warm_start",
        "artifacts_dir",
        "heartbeat_interval",
        "grace_period",
        "max_retries",
        "latency_objective",
    )
    _unknown(source, "study.", raw, keys)
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError(
            f"{source}: study.name must be a plain name usable as a folder, got {name!r}."
            + _text_hint(name)
        )
    metric = _choice(source, "study.metric", raw.get("metric", "accuracy"), METRICS)
    direction = cast(
        Direction,
        _choice(
            source,
            "study.direction",
            raw.get("direction", metric_direction(metric)),
            ("maximize", "minimize"),
        ),
    )
    n_trials = raw.get("n_trials", 20)
    if n_trials is not None:
        n_trials = _int(source, "study.n_trials", n_trials, low=1)
    timeout = raw.get("timeout")
    if timeout is not None:
        timeout = _number(source, "study.timeout", timeout, low=0.0, exclusive=True)
    if n_trials is None and timeout is None:
        raise ConfigError(
            f"{source}: study.n_trials and study.timeout are both null, so the study would never "
            "stop; set at least one."
        )
    seed = _int(source, "study.seed", raw.get("seed", 42), low=0)
    sampler = _algorithm(
        source,
        "study.sampler",
        raw.get("sampler", {"name": "tpe", "n_startup_trials": 10}),
        SAMPLERS,
    )
    pruner = _algorithm(
        source,
        "study.pruner",
        raw.get("pruner", {"name": "median", "n_startup_trials": 3}),
        PRUNERS,
    )
    storage = raw.get("storage")
    if storage is not None and (not isinstance(storage, str) or "://" not in storage):
        raise ConfigError(
            f"{source}: study.storage must be an Optuna storage URL such as "
            f"sqlite:///path.db or postgresql+psycopg2://user@host/db, got {storage!r}; "
            "leave it out for the embedded default in studies/<name>/."
        )
    studies_dir = raw.get("studies_dir", "studies")
    if not isinstance(studies_dir, str) or not studies_dir:
        raise ConfigError(
            f"{source}: study.studies_dir must be a folder path, got {studies_dir!r}."
        )
    enqueue = raw.get("enqueue") or []
    if not isinstance(enqueue, list) or not all(isinstance(e, dict) for e in enqueue):
        raise ConfigError(
            f"{source}: study.enqueue must be a list of mappings parameter-name -> value "
            f"(the names `automl validate` prints), got {enqueue!r}."
        )
    artifacts_dir = raw.get("artifacts_dir")
    if artifacts_dir is not None:
        if not isinstance(artifacts_dir, str) or not artifacts_dir:
            raise ConfigError(
                f"{source}: study.artifacts_dir must be a folder path (shared by every machine "
                f"that runs workers), got {artifacts_dir!r}; leave it out for the study folder."
            )
        artifacts_dir = str(Path(artifacts_dir).expanduser().resolve())
    heartbeat = _int(source, "study.heartbeat_interval", raw.get("heartbeat_interval", 60), low=1)
    grace = raw.get("grace_period")
    if grace is not None:
        grace = _int(source, "study.grace_period", grace, low=1)
        if grace < 2 * heartbeat:
            # A margin of one whole interval: a beat that comes late once must not be taken for
            # a dead worker, or a live trial is failed and retried while it still trains.
            raise ConfigError(
                f"{source}: study.grace_period={grace} must be at least 2 x "
                f"study.heartbeat_interval={heartbeat}: one late beat (a busy machine, a slow "
                "storage) must not fail a trial that is still training; use grace_period >= "
                f"{2 * heartbeat}, or leave it out (2 x the interval)."
            )
    max_retries = _int(source, "study.max_retries", raw.get("max_retries", 2), low=0)
    return StudyConfig(
        name=name,
        metric=metric,
        direction=direction,
        n_trials=n_trials,
        timeout=timeout,
        seed=seed,
        sampler=sampler,
        pruner=pruner,
        storage=storage,
        studies_dir=str(Path(studies_dir).expanduser().resolve()),
        enqueue=tuple(dict(e) for e in enqueue),
        warm_start=_choice(
            source, "study.warm_start", raw.get("warm_start", "portfolio"), WARM_STARTS
        ),
        artifacts_dir=artifacts_dir,
        heartbeat_interval=heartbeat,
        grace_period=grace,
        max_retries=max_retries,
        latency_objective=_bool(
            source, "study.latency_objective", raw.get("latency_objective", False)
        ),
    )


def _algorithm(source: str, key: str, raw: Any, known: dict[str, str]) -> AlgorithmConfig:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(
            f"{source}: {key} must be a name or a mapping with 'name' and options, got {raw!r}; "
            f"valid names: {', '.join(known)}."
        )
    options = dict(raw)
    name = options.pop("name")
    name = _choice(source, f"{key}.name", name, tuple(known))
    module = optuna.samplers if known is SAMPLERS else optuna.pruners
    cls = getattr(module, known[name])
    parameters = inspect.signature(cls).parameters
    valid = [p for p in parameters if p not in _MANAGED_KWARGS and p not in ("self", "kwargs")]
    for option, value in options.items():
        if option not in valid:
            raise ConfigError(
                f"{source}: {key}.{option} is not an option of optuna "
                f"{known[name]}; valid options: {', '.join(valid) or 'none'}."
            )
        _check_algorithm_option(source, f"{key}.{option}", value, parameters[option])
    for option in valid:
        if parameters[option].default is inspect.Parameter.empty and option not in options:
            raise ConfigError(
                f"{source}: {key}.{option} is required by optuna {known[name]}; add it, e.g. "
                f"{key.split('.')[-1]}: {{name: {name}, {option}: ...}}."
            )
    if name != "grid":  # GridSampler needs the search space, which automl passes itself
        # Optuna's own checks (e.g. PercentilePruner's percentile in [0, 100]), worded with
        # the key, before any study exists.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental-option warnings
                cls(**options)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{source}: {key} is not valid for optuna {known[name]}: {exc}"
            ) from exc
    if known is SAMPLERS and name == "cmaes":
        # Optuna's CmaEsSampler imports its optional package only when it first samples.
        try:
            import cmaes  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                f"{source}: study.sampler is cmaes, but the 'cmaes' package is not "
                "installed; pip install cmaes, or use tpe."
            ) from exc
    return AlgorithmConfig(name, options)


# Counts Optuna takes without checking them; a negative one silently means "none" or breaks later.
_COUNT_OPTIONS = {
    "n_startup_trials": 0,
    "n_warmup_steps": 0,
    "interval_steps": 1,
    "n_ei_candidates": 1,
    "n_min_trials": 1,
    "min_early_stopping_rate": 0,
    "reduction_factor": 2,
    "patience": 0,
    "population_size": 2,
}


def _check_algorithm_option(source: str, key: str, value: Any, parameter: Any) -> None:
    """Check a sampler/pruner option against the type annotation of Optuna's signature."""
    option = key.rsplit(".", 1)[-1]
    annotation = parameter.annotation
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    allowed = {part.strip() for part in text.split("|")}
    checks = {
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "None": lambda v: v is None,
    }
    known = [name for name in allowed if name in checks or name.startswith("dict[")]
    if not [name for name in known if name != "None"]:  # a callable or an object
        raise ConfigError(
            f"{source}: {key} takes a Python object ({text}), which a YAML file cannot give; "
            "leave it out, or build the study in Python."
        )
    ok = any(checks[name](value) for name in known if name in checks) or (
        isinstance(value, dict) and any(name.startswith("dict[") for name in known)
    )
    if not ok:
        words = {
            "bool": "true or false",
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "None": "null",
        }
        expected = " or ".join(words.get(name, name) for name in sorted(known))
        raise ConfigError(
            f"{source}: {key} must be {expected}, got {value!r}." + yaml_number_hint(value)
        )
    if isinstance(value, float) and number_problem(value) is not None:  # .nan, .inf
        raise ConfigError(f"{source}: {key} {number_problem(value)}")
    low = _COUNT_OPTIONS.get(option)
    if low is not None and isinstance(value, int) and value < low:
        raise ConfigError(f"{source}: {key} must be an integer >= {low}, got {value}.")


def _parse_data(source: str, raw: dict[str, Any]) -> DataConfig:
    split_keys = (
        "image_size",
        "n_folds",
        "holdout_fraction",
        "test",
        "cache",
        "exclude",
        "groups_from_duplicates",
    )
    _unknown(source, "data.", raw, (*DataSource.field_names(), *split_keys))
    if "format" not in raw:
        raise ConfigError(
            f"{source}: data.format is missing; set it to one of {', '.join(SOURCE_FORMATS)}."
        )
    source_raw = {k: v for k, v in raw.items() if k not in split_keys}
    data_source = _parse_source(source, "data", source_raw)
    image_size = _int(source, "data.image_size", raw.get("image_size", 96), low=8, high=1024)
    n_folds = _int(source, "data.n_folds", raw.get("n_folds", 5), low=2, high=50)
    holdout = _number(source, "data.holdout_fraction", raw.get("holdout_fraction", 0.2), low=0.0)
    if holdout >= 0.9:
        raise ConfigError(
            f"{source}: data.holdout_fraction must be in [0, 0.9), got {holdout:g}; "
            "0.1-0.2 is usual."
        )
    test = None
    if raw.get("test") is not None:
        test_raw = _section(source, "data.test", raw["test"])
        _unknown(source, "data.test.", test_raw, DataSource.field_names())
        test = _parse_source(source, "data.test", test_raw)
    cache = raw.get("cache", True)
    if not isinstance(cache, bool):
        raise ConfigError(f"{source}: data.cache must be true or false, got {cache!r}.")
    exclude = raw.get("exclude")
    if exclude is not None:
        resolved = Path(_string(source, "data.exclude", exclude)).expanduser().resolve()
        if not resolved.is_file():
            raise ConfigError(
                f"{source}: data.exclude must be a CSV or TXT file of ids to leave out, got "
                f"'{exclude}' ({resolved}), which does not exist; check the path."
            )
        exclude = str(resolved)
    grouped = raw.get("groups_from_duplicates", False)
    if not isinstance(grouped, bool):
        raise ConfigError(
            f"{source}: data.groups_from_duplicates must be true or false, got {grouped!r}."
        )
    return DataConfig(data_source, image_size, n_folds, holdout, test, cache, exclude, grouped)


def _parse_source(source: str, key: str, raw: dict[str, Any]) -> DataSource:
    fmt = _choice(source, f"{key}.format", raw.get("format"), SOURCE_FORMATS)
    values: dict[str, Any] = {"format": fmt}
    for name in ("id_column", "label_column", "group_column", "images_key"):
        if raw.get(name) is not None:
            values[name] = _string(source, f"{key}.{name}", raw[name])
    extension = raw.get("extension", "")
    if not isinstance(extension, str):
        raise ConfigError(
            f"{source}: {key}.extension must be text such as .tif, got {extension!r}."
        )
    values["extension"] = extension
    if raw.get("labels_key") is not None:
        values["labels_key"] = _string(source, f"{key}.labels_key", raw["labels_key"])
    if raw.get("url") is not None:
        values["url"] = _string(source, f"{key}.url", raw["url"])
    if "split" in raw:
        values["split"] = _choice(source, f"{key}.split", raw["split"], MEDMNIST_SPLITS)
    if "size" in raw:
        values["size"] = _choice(source, f"{key}.size", raw["size"], BLOODMNIST_SIZES)
    if raw.get("class_names") is not None:
        names = raw["class_names"]
        if not isinstance(names, list):
            raise ConfigError(
                f"{source}: {key}.class_names must be a list of names, got {names!r}."
            )
        values["class_names"] = tuple(
            _name(source, f"{key}.class_names[{i}]", n) for i, n in enumerate(names)
        )
    values["on_unreadable"] = _choice(
        source, f"{key}.on_unreadable", raw.get("on_unreadable", "error"), ("error", "skip")
    )
    needs_path = {
        "folder": "a folder with one subfolder per class",
        "csv": "the image folder",
        "npz": "the .npz file",
    }
    path = raw.get("path")
    if fmt in needs_path and path is None:
        raise ConfigError(f"{source}: {key}.path is missing; set it to {needs_path[fmt]}.")
    if path is not None:
        resolved = Path(_string(source, f"{key}.path", path)).expanduser().resolve()
        exists = resolved.is_file() if fmt == "npz" else resolved.is_dir()
        if fmt in needs_path and not exists:
            raise ConfigError(
                f"{source}: {key}.path must be {needs_path[fmt]}, got '{path}' "
                f"({resolved}), which does not exist; check the path (relative paths are from "
                "the current directory)."
            )
        values["path"] = str(resolved)
    if fmt == "csv":
        labels_csv = raw.get("labels_csv")
        if labels_csv is None:
            raise ConfigError(
                f"{source}: {key}.labels_csv is missing; csv data needs the CSV of "
                f"{values.get('id_column', 'id')},{values.get('label_column', 'label')}."
            )
        resolved_csv = (
            Path(_string(source, f"{key}.labels_csv", labels_csv)).expanduser().resolve()
        )
        if not resolved_csv.is_file():
            raise ConfigError(
                f"{source}: {key}.labels_csv must be a CSV file, got '{labels_csv}' "
                f"({resolved_csv}), which does not exist; check the path."
            )
        values["labels_csv"] = str(resolved_csv)
    return DataSource(**values)


def _parse_training(source: str, raw: dict[str, Any]) -> TrainingConfig:
    _unknown(
        source,
        "training.",
        raw,
        (
            "early_stopping_patience",
            "restore_best_weights",
            "mixed_precision",
            "jit_compile",
            "deterministic",
        ),
    )
    patience = raw.get("early_stopping_patience")
    if patience is not None:
        patience = _int(source, "training.early_stopping_patience", patience, low=1)
    mixed = _switch(source, "training.mixed_precision", raw.get("mixed_precision", "auto"))
    jit = _switch(source, "training.jit_compile", raw.get("jit_compile", "auto"))
    deterministic = _switch(source, "training.deterministic", raw.get("deterministic", "auto"))
    restore = _bool(
        source, "training.restore_best_weights", raw.get("restore_best_weights", False)
    )
    return TrainingConfig(patience, restore, mixed, jit, deterministic)


def _parse_ensemble(source: str, raw: dict[str, Any]) -> EnsembleConfig:
    _unknown(
        source,
        "ensemble.",
        raw,
        ("top_k", "vote", "positive_class", "target_recall", "selection"),
    )
    top_k = _int(source, "ensemble.top_k", raw.get("top_k", 5), low=1)
    vote = VoteMethod.parse(raw.get("vote", VoteMethod.MAJORITY), f"{source}: ensemble.vote")
    selection = SelectionMethod.parse(
        raw.get("selection", SelectionMethod.GREEDY), f"{source}: ensemble.selection"
    )
    positive = raw.get("positive_class")
    if positive is not None:
        positive = _name(source, "ensemble.positive_class", positive)
    target = raw.get("target_recall")
    if target is not None:
        target = _number(source, "ensemble.target_recall", target, low=0.0, exclusive=True)
        if target > 1:
            raise ConfigError(
                f"{source}: ensemble.target_recall must be in (0, 1], got {target:g}; "
                "e.g. 0.95 to find 95% of the positive class."
            )
    return EnsembleConfig(top_k, vote, positive, target, selection)


def _check_enqueue(source: str, enqueue: tuple[dict[str, Any], ...], space: SearchSpace) -> None:
    distributions = space.param_distributions()
    for i, params in enumerate(enqueue):
        for name, value in params.items():
            dist = distributions.get(name)
            if dist is None:
                raise ConfigError(
                    f"{source}: study.enqueue[{i}].{name} is not a parameter of this space; "
                    f"valid names: {', '.join(distributions) or 'none (the space is fixed)'}."
                )
            try:
                ok = dist._contains(dist.to_internal_repr(value))
            except (ValueError, TypeError):
                ok = False
            if not ok:
                raise ConfigError(
                    f"{source}: study.enqueue[{i}].{name}={value!r} lies outside its "
                    f"distribution {dist}; change the value or widen the space."
                )


def _check_rungs(source: str, pruner: AlgorithmConfig, max_epochs: int) -> None:
    """Hyperband and successive halving decide inside fold 0: a rung must fit in its epochs."""
    if pruner.name not in RUNG_PRUNERS:
        return
    low = pruner.options.get("min_resource", 1)
    if low == "auto":  # successive halving's default: read from the first finished trial
        return
    high = pruner.options.get("max_resource", "auto")
    if isinstance(high, int) and high > max_epochs:
        raise ConfigError(
            f"{source}: study.pruner.max_resource={high} is more than the {max_epochs} epochs "
            "of fold 0, where automl runs the rungs; leave it out (automl sets it to the "
            "space's largest epochs) or lower it."
        )
    top = high if isinstance(high, int) else max_epochs
    if isinstance(low, int) and low >= top:
        raise ConfigError(
            f"{source}: study.pruner.min_resource={low} leaves no rung inside fold 0's "
            f"{top} epochs, so the pruner would never stop a trial; use e.g. min_resource: "
            f"{max(1, top // 9)} (rungs at min_resource x reduction_factor^k)."
        )


def grid_search_space(space: SearchSpace, *, source: str = "<config>") -> dict[str, list[Any]]:
    """The grid a ``GridSampler`` walks: every parameter must be categorical or stepped."""
    grid: dict[str, list[Any]] = {}
    for name, dist in space.param_distributions().items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif (
            isinstance(
                dist,
                (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution),
            )
            and dist.step is not None
            and not dist.log
        ):
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            # round(): low + i*step drifts (0.1*3 = 0.30000000000000004 > high=0.3).
            grid[name] = [
                min(dist.high, round(dist.low + i * dist.step, 12)) for i in range(count)
            ]
        else:
            raise ConfigError(
                f"{source}: study.sampler is grid but space parameter {name} is {dist}; "
                "grid search needs categorical or stepped (no log) distributions."
            )
    return grid


# --------------------------------------------------------------------------------------------
# Scalars
# --------------------------------------------------------------------------------------------


def _section(source: str, key: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {key} must be a mapping of settings, got {raw!r}.")
    return raw


def _unknown(source: str, prefix: str, raw: dict[str, Any], valid: Any) -> None:
    for key in raw:
        if key not in valid:
            raise ConfigError(
                f"{source}: {prefix}{key} is not a known key; valid keys here: {', '.join(valid)}."
            )


def _choice(source: str, key: str, value: Any, valid: Any) -> Any:
    if value not in valid:
        shown = ", ".join(str(v) for v in valid)
        raise ConfigError(f"{source}: {key} must be one of {shown}, got {value!r}.")
    return value


def _switch(source: str, key: str, value: Any) -> str:
    # YAML reads on/off as booleans; accept them, since that is what the user meant.
    if isinstance(value, bool):
        value = "on" if value else "off"
    return str(_choice(source, key, value, ("auto", "on", "off")))


def _bool(source: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}.")
    return value


def _string(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{source}: {key} must be a non-empty string, got {value!r}." + _text_hint(value)
        )
    return value


def _name(source: str, key: str, value: Any) -> str:
    """A class name as written: text, or a whole number (``positive_class: 1``), as text.

    A boolean or a fractional number is refused: YAML 1.1 turned the text into a value whose
    ``str`` is not what was written (``no`` -> ``False``, ``1.10`` -> ``1.1``).
    """
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{source}: {key} must be a name, got {value!r}." + _text_hint(value))


def _text_hint(value: Any) -> str:
    """How to keep a word that YAML read as a boolean or a number, or ``""``."""
    if isinstance(value, bool):
        word = "yes/on/true" if value else "no/off/false"
        return (
            f" YAML reads an unquoted {word} as the boolean {value}; quote the name to keep "
            f"the text, e.g. '{'yes' if value else 'no'}'."
        )
    if isinstance(value, (int, float)):
        return f" YAML read it as a number; quote it to keep the text as written, e.g. '{value}'."
    return ""


def _int(
    source: str, key: str, value: Any, *, low: int | None = None, high: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"{source}: {key} must be an integer, got {value!r} ({type(value).__name__})."
        )
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{source}: {key} must be an integer {bounds}, got {value}.")
    return value


def _number(source: str, key: str, value: Any, *, low: float, exclusive: bool = False) -> float:
    problem = number_problem(value)  # NaN would pass every bound below
    if problem is not None:
        raise ConfigError(f"{source}: {key} {problem}")
    if value < low or (exclusive and value == low):
        raise ConfigError(
            f"{source}: {key} must be {'>' if exclusive else '>='} {low:g}, got {value}."
        )
    return float(value)


def check_target_recall(config: Config, n_classes: int) -> None:
    """``ensemble.target_recall`` is a threshold on one class's probability: binary tasks only.

    Raises:
        ConfigError: the task has more than two classes (checked by ``tune`` before the first
            trial and by ``ensemble``).
    """
    if config.ensemble.target_recall is not None and n_classes != 2:
        raise ConfigError(
            f"{config.source}: ensemble.target_recall={config.ensemble.target_recall:g} sets a "
            f"decision threshold for a binary task, but the data has {n_classes} classes; "
            "remove ensemble.target_recall."
        )
