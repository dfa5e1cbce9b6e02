"""The k-fold objective on real crops: step numbering, pruning inside fold 0, saved outputs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import make_folder_layout, write_study_yaml

from automl.config.schema import load_config
from automl.search.objective import Objective, TrialFailed, trial_seed
from automl.search.paths import paths_for
from automl.search.session import prepare_splits
from automl.search.storage import create_or_load


@pytest.fixture(scope="module")
def data_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder_layout(shared_data, tmp_path_factory.mktemp("cells"), per_class=8)


def _setup(tmp_path: Path, data_root: Path, **kwargs):
    config = load_config(
        write_study_yaml(tmp_path / "s.yaml", data_root, tmp_path / "studies", **kwargs)
    )
    splits = prepare_splits(config)
    study = create_or_load(config)
    return config, splits, study, Objective(config, splits, paths_for(config).root)


def test_steps_are_unique_per_fold_epoch_and_use_the_max_epochs_stride(
    tmp_path: Path, data_root: Path
) -> None:
    # epochs is searched up to 3, so fold k reports at steps 3k, 3k+1, ... in every trial.
    config, splits, study, objective = _setup(
        tmp_path, data_root, n_trials=1, epochs="{type: int, low: 2, high: 3}"
    )
    study.enqueue_trial({"epochs": 2})
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [0, 1, 3, 4]
    fold_scores = trial.user_attrs["fold_scores"]
    assert len(fold_scores) == 2
    assert trial.value == pytest.approx(np.mean(fold_scores), abs=1e-5)
    assert trial.user_attrs["epochs_per_fold"] == [2, 2]
    assert trial.user_attrs["n_params"] > 0
    assert trial.user_attrs["model_size_mb"] > 0 and trial.user_attrs["latency_ms_per_image"] > 0
    # The last report of each fold is that fold's final score.
    assert trial.intermediate_values[1] == pytest.approx(fold_scores[0], abs=1e-5)
    assert trial.intermediate_values[4] == pytest.approx(fold_scores[1], abs=1e-5)


def test_outputs_cover_the_tuning_set_and_never_the_holdout(
    tmp_path: Path, data_root: Path
) -> None:
    config, splits, study, objective = _setup(tmp_path, data_root, n_trials=1)
    study.optimize(objective, n_trials=1)
    folder = Path(study.trials[0].user_attrs["trial_dir"])
    assert sorted(p.name for p in folder.glob("*.keras")) == ["fold_0.keras", "fold_1.keras"]
    with np.load(folder / "oof.npz") as oof:
        ids = set(oof["ids"].tolist())
        probabilities = oof["probabilities"]
    assert ids == set(splits.tuning.ids.tolist())
    assert splits.holdout is not None and ids.isdisjoint(splits.holdout.ids.tolist())
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)  # every sample scored once
    history = json.loads((folder / "history.json").read_text())
    assert [len(h) for h in history] == [2, 2]
    assert {"loss", "val_loss", "val_metric"} <= set(history[0][0])


DIGITS_STUDY = """
study:
  name: digits
  seed: 3
  sampler: {{name: random}}
  pruner: {{name: median, n_startup_trials: 1, n_warmup_steps: 0}}
  studies_dir: {studies}
  warm_start: none
data: {{format: digits, image_size: 16, n_folds: 2, holdout_fraction: 0.2}}
space:
  backbone: {{name: custom_cnn, blocks: 2, filters: 8}}
  head: {{layers: 0}}
  learning_rate: {{type: float, low: 1.0e-7, high: 1.0e-2, log: true}}
  batch_size: 32
  epochs: 3
"""


def test_a_clearly_bad_trial_is_pruned_inside_its_first_fold(tmp_path: Path) -> None:
    # The study's median pruner, a good trial first, then one whose learning rate cannot move
    # it from chance: it must stop at its first report, in fold 0, and leave no models.
    (tmp_path / "d.yaml").write_text(DIGITS_STUDY.format(studies=tmp_path / "studies"))
    config = load_config(tmp_path / "d.yaml")
    splits = prepare_splits(config)
    study = create_or_load(config)
    objective = Objective(config, splits, paths_for(config).root)
    study.enqueue_trial({"learning_rate": 3.0e-3})
    study.enqueue_trial({"learning_rate": 1.0e-7})
    study.optimize(objective, n_trials=2)
    good, bad = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE and good.value > 0.5
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert bad.user_attrs["pruned_at_step"] == 0 and bad.user_attrs["pruned_in_fold"] == 0
    assert list(bad.intermediate_values) == [0]
    assert bad.intermediate_values[0] < good.intermediate_values[0]
    assert not Path(bad.user_attrs["trial_dir"]).exists()  # pruned trials leave no models


def test_nan_loss_fails_the_trial_and_the_study_goes_on(tmp_path: Path, data_root: Path) -> None:
    config, splits, study, objective = _setup(tmp_path, data_root, n_trials=2)
    study.enqueue_trial({"learning_rate": 1.0e-2})
    original = objective.config.space.suggest

    def explode(trial):  # an absurd learning rate for the first trial only
        params = original(trial)
        if trial.number == 0:
            params["learning_rate"] = 1.0e36
            params["optimizer"] = {"name": "sgd", "momentum": 0.99, "nesterov": False}
        return params

    object.__setattr__(objective.config.space, "suggest", explode)
    study.optimize(objective, n_trials=2, catch=(TrialFailed,))
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.FAIL
    assert "NaN" in study.trials[0].user_attrs["fail_reason"]
    assert states[1] == optuna.trial.TrialState.COMPLETE


def test_trial_seeds_are_derived_and_distinct() -> None:
    seeds = {trial_seed(42, n) for n in range(1000)}
    assert len(seeds) == 1000
    assert trial_seed(42, 3) == trial_seed(42, 3) != trial_seed(43, 3)


def test_pictures_and_notes_that_cannot_be_saved_are_named_in_the_trial(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk under the artifact store must not fail the trial, nor go unnoticed.
    import optuna_dashboard

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(optuna.artifacts, "upload_artifact", disk_full)
    monkeypatch.setattr(optuna_dashboard, "save_note", disk_full)
    config, splits, study, objective = _setup(tmp_path, data_root, n_trials=1)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    missing = trial.user_attrs["missing_artifacts"]
    assert set(missing) == {
        "learning_curves.png",
        "oof_confusion_matrix.png",
        "augmentation_preview.png",
    }
    assert all("No space left on device" in reason for reason in missing.values())
    assert "No space left on device" in trial.user_attrs["missing_note"]


class _WorkerDied(Exception):
    """Stands in for a worker killed mid-trial: its folder stays as it was."""


def test_a_retry_takes_over_the_folds_its_dead_trial_finished(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import automl.search.objective

    config, splits, study, objective = _setup(tmp_path, data_root, n_trials=2)
    fit_fold = automl.search.objective.fit_fold
    trained: list[int] = []  # the seed of every fold trained (trial seed + fold)

    def dies_in_fold_1_of_trial_0(*args, **kwargs):
        trained.append(kwargs["seed"])
        if len(trained) == 2:
            raise _WorkerDied
        return fit_fold(*args, **kwargs)

    monkeypatch.setattr(automl.search.objective, "fit_fold", dies_in_fold_1_of_trial_0)
    study.optimize(objective, n_trials=1, catch=(_WorkerDied,))
    dead = study.trials[0]
    dead_dir = Path(dead.user_attrs["trial_dir"])
    with np.load(dead_dir / "fold_0.npz") as record:
        fold_0 = record["probabilities"]
    # What heartbeat.RetryStaleTrial queues for a trial whose worker stopped.
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=dead.params,
            distributions=dead.distributions,
            user_attrs={"retry_of": 0, "retry_origin": 0},
        )
    )
    study.optimize(objective, n_trials=1)
    retry = study.trials[1]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["reused_folds"] == [0]
    assert trained[2:] == [dead.user_attrs["seed"] + 1]  # only fold 1 trained, same seed
    assert retry.user_attrs["seed"] == dead.user_attrs["seed"]
    # The pruner sees fold 0's reports again, at the same steps and values.
    assert {s: v for s, v in retry.intermediate_values.items() if s < 2} == (
        dead.intermediate_values
    )
    assert not dead_dir.exists()  # what was usable moved to the retry's folder
    folder = Path(retry.user_attrs["trial_dir"])
    assert sorted(p.name for p in folder.glob("fold_*")) == ["fold_0.keras", "fold_1.keras"]
    with np.load(folder / "oof.npz") as oof:
        probabilities = oof["probabilities"]
    np.testing.assert_array_equal(probabilities[splits.folds[0][1]], fold_0)
    assert np.isfinite(probabilities).all()
    assert [len(h) for h in json.loads((folder / "history.json").read_text())] == [2, 2]


def test_ctrl_c_in_fold_2_is_resumed_with_fold_1_taken_over(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import automl.search.objective
    from automl.search.storage import leaderboard_rows
    from automl.search.tune import run_tune

    config = load_config(
        write_study_yaml(tmp_path / "s.yaml", data_root, tmp_path / "studies", n_trials=1)
    )
    fit_fold = automl.search.objective.fit_fold
    trained: list[int] = []  # the seed of every fold trained (trial seed + fold)

    def ctrl_c_in_the_first_epoch_of_the_second_fold(*args, **kwargs):
        trained.append(kwargs["seed"])
        if len(trained) == 2:
            hook = kwargs["on_epoch"]

            def interrupted(epoch: int, score: float) -> bool:
                hook(epoch, score)
                raise KeyboardInterrupt

            kwargs["on_epoch"] = interrupted
        return fit_fold(*args, **kwargs)

    monkeypatch.setattr(
        automl.search.objective, "fit_fold", ctrl_c_in_the_first_epoch_of_the_second_fold
    )
    with pytest.raises(KeyboardInterrupt):
        run_tune(config, progress=False)
    study = create_or_load(config)
    stopped, queued = study.get_trials(deepcopy=False)
    assert stopped.state == optuna.trial.TrialState.FAIL
    assert "interrupted (Ctrl+C) with 1 fold(s) finished" in stopped.user_attrs["fail_reason"]
    assert queued.state == optuna.trial.TrialState.WAITING
    assert queued.params == stopped.params and queued.user_attrs["retry_of"] == 0
    stopped_dir = Path(stopped.user_attrs["trial_dir"])
    with np.load(stopped_dir / "fold_0.npz") as record:
        fold_0 = record["probabilities"]

    result = run_tune(config, progress=False)  # the same command again: resume
    assert result.counts.complete == 1 and len(result.study.trials) == 2  # the retry ran
    retry = result.study.trials[1]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["reused_folds"] == [0]
    seed = stopped.user_attrs["seed"]
    assert trained == [seed, seed + 1, seed + 1]  # fold 1 never trained again
    assert retry.user_attrs["seed"] == seed
    assert not stopped_dir.exists()  # what was usable moved to the retry's folder
    folder = Path(retry.user_attrs["trial_dir"])
    with np.load(folder / "oof.npz") as oof:
        np.testing.assert_array_equal(
            oof["probabilities"][prepare_splits(config).folds[0][1]], fold_0
        )
    assert leaderboard_rows(result.study)[0].fail_reason.startswith("interrupted (Ctrl+C)")


@pytest.fixture
def terminal_ctrl_c() -> Iterator[None]:
    """Ctrl+C raises KeyboardInterrupt, as in a terminal, also where the test runner ignores
    SIGINT (pytest-xdist's workers do, and their children inherit that)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("terminal_ctrl_c")
def test_a_ctrl_c_that_python_swallowed_still_stops_the_trial_at_the_end_of_its_epoch(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    import automl.search.objective
    from automl.search.tune import run_tune

    config = load_config(
        write_study_yaml(tmp_path / "s.yaml", data_root, tmp_path / "studies", n_trials=1)
    )
    fit_fold = automl.search.objective.fit_fold
    folds_started: list[int] = []
    swallowed: list[int] = []

    def ctrl_c_swallowed_in_the_second_fold(*args, **kwargs):
        folds_started.append(kwargs["seed"])
        hook = kwargs["on_epoch"]

        def on_epoch(epoch: int, score: float) -> bool:
            if len(folds_started) == 2 and not swallowed:
                # What Python does with a KeyboardInterrupt raised inside a weakref callback
                # (frequent while Keras trains): "Exception ignored in ...", and on it goes.
                try:
                    signal.raise_signal(signal.SIGINT)
                    sum(range(1000))  # the handler runs between bytecodes
                except KeyboardInterrupt:
                    swallowed.append(epoch)
            return hook(epoch, score)

        kwargs["on_epoch"] = on_epoch
        return fit_fold(*args, **kwargs)

    monkeypatch.setattr(automl.search.objective, "fit_fold", ctrl_c_swallowed_in_the_second_fold)
    with pytest.raises(KeyboardInterrupt):
        run_tune(config, progress=False)
    assert swallowed == [0]
    stopped, queued = create_or_load(config).get_trials(deepcopy=False)
    assert "interrupted (Ctrl+C) with 1 fold(s) finished" in stopped.user_attrs["fail_reason"]
    # Stopped right after the swallowed Ctrl+C: fold 1 reported none of its epochs.
    assert max(stopped.intermediate_values) < config.space.max_epochs()
    assert queued.user_attrs["retry_of"] == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


@pytest.mark.usefixtures("terminal_ctrl_c")
def test_ctrl_c_of_a_tune_with_workers_queues_the_running_trial_with_its_finished_fold(
    tmp_path: Path, data_root: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from automl.search.tune import run_tune

    space = write_study_yaml(
        tmp_path / "s.yaml", data_root, tmp_path / "studies", n_trials=1, epochs="6"
    )
    # A process group of its own, as in a terminal: Ctrl-C reaches the supervisor and its worker.
    tune = subprocess.Popen(
        [sys.executable, "-m", "automl.cli", "tune", "--space", str(space), "--workers", "1"]
        + ["--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    trials = tmp_path / "studies" / "cells" / "trials"
    deadline = time.monotonic() + 240
    while not list(trials.glob("*/fold_0.npz")):  # the first of two folds is finished
        assert tune.poll() is None and time.monotonic() < deadline, tune.communicate()
        time.sleep(0.05)
    os.killpg(tune.pid, signal.SIGINT)
    _, err = tune.communicate(timeout=120)
    assert tune.returncode == 130, err[-3000:]

    config = load_config(space)
    stopped, queued = create_or_load(config).get_trials(deepcopy=False)
    assert "interrupted (Ctrl+C) with 1 fold(s) finished" in stopped.user_attrs["fail_reason"]
    assert queued.state == optuna.trial.TrialState.WAITING
    assert queued.user_attrs["retry_of"] == 0

    result = run_tune(config, progress=False)  # the same command again, in this process
    retry = result.study.trials[1]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["reused_folds"] == [0]
