"""A new study starts from the warm-start portfolio, and rung pruners decide inside fold 0.

On scikit-learn's digits (1,797 real handwritten scans, 10 classes) at 16 px: a tiny CNN
learns them within two epochs, so a good and a bad configuration differ at the first rung.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from automl.config.portfolio import warm_start_trials
from automl.config.schema import load_config
from automl.errors import ConfigError
from automl.search.attrs import PRUNED_AT_STEP, PRUNED_IN_FOLD
from automl.search.pruning import FirstFoldPruner
from automl.search.storage import make_pruner
from automl.search.tune import run_tune

STUDY = """
study:
  name: {name}
  n_trials: {n_trials}
  seed: 3
  sampler: {{name: random}}
  pruner: {pruner}
  studies_dir: {studies}
  enqueue: {enqueue}
  warm_start: {warm_start}
data: {{format: digits, image_size: 16, n_folds: 2, holdout_fraction: 0.2}}
space:
  backbone:
    name: custom_cnn
    blocks: 1
    filters: {{type: categorical, choices: [8, 16]}}
    batchnorm: false
    pooling: flatten
  head:
    layers: {{type: int, low: 0, high: 1}}
    units: 32
    dropout: {{type: float, low: 0.0, high: 0.3}}
  learning_rate: {{type: float, low: 1.0e-9, high: 1.0e-2, log: true}}
  batch_size: 32
  epochs: {epochs}
"""


def _study_file(tmp_path: Path, **values: object) -> Path:
    defaults: dict[str, object] = {
        "name": "digits",
        "n_trials": 3,
        "pruner": "{name: none}",
        "studies": tmp_path / "studies",
        "enqueue": "[]",
        "warm_start": "portfolio",
        "epochs": 2,
    }
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(**{**defaults, **values}), encoding="utf-8")
    return path


def test_the_portfolio_runs_first_and_a_resumed_study_does_not_enqueue_it_again(
    tmp_path: Path,
) -> None:
    config = load_config(_study_file(tmp_path, n_trials=2))
    planned = warm_start_trials(config.space, config.study.enqueue, config.study.warm_start)
    # The notebooks' CNN, projected: 16 filters (nearest to 32), head dropout clamped to 0.3.
    assert [w.origin for w in planned] == ["portfolio:cnn"]
    assert planned[0].params["backbone.custom_cnn.filters"] == 16
    study = run_tune(config, progress=False).study
    first = study.trials[0]
    assert first.state == TrialState.COMPLETE
    for name, value in planned[0].params.items():
        assert first.params[name] == pytest.approx(value), name
    assert first.value is not None and first.value > 0.5  # the known-good configuration learns
    # Resumed with a larger budget: the sampler goes on, nothing is enqueued a second time.
    resumed = load_config(_study_file(tmp_path, n_trials=4))
    study = run_tune(resumed, progress=False).study
    assert len(study.trials) == 4
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    rates = [t.params["learning_rate"] for t in study.trials]
    assert rates.count(rates[0]) == 1


def test_a_bad_configuration_is_stopped_at_the_first_rung_of_fold_0(tmp_path: Path) -> None:
    # Two good trials, then one whose rate of 1e-9 cannot learn: successive halving (rungs at
    # steps 1 and 2 of fold 0's 4 epochs) stops it at the first rung, after fold 0's second
    # epoch, and never looks at fold 1.
    good = "{learning_rate: 3.0e-3, backbone.custom_cnn.filters: 16, head.layers: 0}"
    bad = "{learning_rate: 1.0e-9, backbone.custom_cnn.filters: 16, head.layers: 0}"
    path = _study_file(
        tmp_path,
        epochs=4,
        warm_start="none",
        enqueue=f"[{good}, {good.replace('3.0e-3', '5.0e-3')}, {bad}]",
        pruner="{name: successive_halving, min_resource: 1, reduction_factor: 2}",
    )
    config = load_config(path)
    assert isinstance(make_pruner(config), FirstFoldPruner)
    study = run_tune(config, progress=False).study
    bad_trial = study.trials[2]
    assert bad_trial.params["learning_rate"] == pytest.approx(1.0e-9)
    assert bad_trial.state == TrialState.PRUNED
    assert bad_trial.user_attrs[PRUNED_IN_FOLD] == 0
    assert bad_trial.user_attrs[PRUNED_AT_STEP] == 1
    assert max(bad_trial.intermediate_values) == 1  # two epochs of one fold, nothing more


def _first_pruned_step(pruner: optuna.pruners.BasePruner) -> int | None:
    """Two trials at 0.9 and 0.8 over 8 steps, then one at 0.95 for 4 steps and 0.1 after.

    Every trial asks the pruner at every step (that records its rungs); the step at which the
    third is first told to stop is returned.
    """
    study = optuna.create_study(direction="maximize", pruner=pruner)
    pruned: list[int] = []
    for values in ([0.9] * 8, [0.8] * 8, [0.95] * 4 + [0.1] * 4):
        trial = study.ask()
        pruned = []
        for step, value in enumerate(values):
            trial.report(value, step)
            if trial.should_prune():
                pruned.append(step)
        study.tell(trial, values[-1])
    return pruned[0] if pruned else None


def test_rung_pruners_never_prune_after_fold_0() -> None:
    # With 4 epochs a fold (stride 4), the third trial leads in fold 0 and collapses in fold 1:
    # bare successive halving stops it at its rung at step 4 (fold 1), automl's does not.
    def halving() -> optuna.pruners.BasePruner:
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)

    assert _first_pruned_step(halving()) == 4
    assert _first_pruned_step(FirstFoldPruner(halving(), stride=4)) is None


def test_hyperband_gets_fold_0s_epochs_and_a_rung_must_fit_in_them(tmp_path: Path) -> None:
    config = load_config(_study_file(tmp_path, epochs=9, pruner="{name: hyperband}"))
    pruner = make_pruner(config)
    assert isinstance(pruner, FirstFoldPruner) and pruner.stride == 9
    assert pruner.inner._max_resource == 9
    with pytest.raises(ConfigError, match=r"study.pruner.min_resource=9 leaves no rung inside"):
        load_config(_study_file(tmp_path, epochs=9, pruner="{name: hyperband, min_resource: 9}"))
    with pytest.raises(ConfigError, match=r"study.pruner.max_resource=12 is more than the 9"):
        load_config(_study_file(tmp_path, epochs=9, pruner="{name: hyperband, max_resource: 12}"))
