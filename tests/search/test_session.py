"""``automl.search.session``: the stop rule on a real shared study, the run loop, the summary.

The stop rule is checked on a journal study file that two "workers" (two Optuna handles on the
same file, as two processes would hold) fill through Optuna's API, with one trial still RUNNING:
it counts as taken, a failed trial and a queued retry do not.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from automl.search.attrs import CV_STD, FOLD_SCORES, RETRY_OF
from automl.search.heartbeat import HeartbeatLost
from automl.search.session import (
    best_summary,
    optimize_past_lapses,
    stop_at_n_trials,
    trials_missing,
    trials_to_start,
)


def _worker(journal: Path) -> optuna.Study:
    """One worker's handle on the shared study (created by the first)."""
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.create_study(
        study_name="shared", storage=storage, direction="maximize", load_if_exists=True
    )


def _shared_study(tmp_path: Path) -> tuple[optuna.Study, optuna.Study]:
    """Worker A: 2 complete, 1 pruned. Worker B: 1 complete, 1 failed, 1 running, 1 queued."""
    journal = tmp_path / "study.journal"
    a, b = _worker(journal), _worker(journal)
    for value in (0.5, 0.7):
        a.tell(a.ask(), value)
    a.tell(a.ask(), state=TrialState.PRUNED)
    b.tell(b.ask(), 0.6)
    failed = b.ask()
    b.tell(failed, state=TrialState.FAIL)
    b.ask()  # running: its worker has not told a result yet
    b.enqueue_trial({}, user_attrs={RETRY_OF: failed.number})  # waiting for a worker
    return a, b


def test_the_stop_rule_counts_every_workers_finished_and_running_trials(tmp_path: Path) -> None:
    a, b = _shared_study(tmp_path)
    trials = a.get_trials(deepcopy=False)
    assert len(trials) == 7 and trials == b.get_trials(deepcopy=False)  # one shared study
    assert [t.state for t in trials].count(TrialState.RUNNING) == 1
    # 4 finished (3 complete + 1 pruned); the failed and the waiting trial count for nothing.
    assert trials_missing(trials, 10) == 6
    assert trials_to_start(trials, 10) == 5  # the running trial will finish as well
    assert trials_missing(trials, 4) == 0 and trials_to_start(trials, 4) == 0
    assert trials_missing(trials, 5) == 1 and trials_to_start(trials, 5) == 0
    assert trials_missing(trials, None) is None and trials_to_start(trials, None) is None


def test_the_stop_callback_stops_a_worker_when_the_shared_study_is_full(tmp_path: Path) -> None:
    a, b = _shared_study(tmp_path)
    ran = []

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        return 0.1

    # 4 finished and 1 running of 7: worker A may run 2 more (the queued retry first).
    a.optimize(objective, n_trials=10, callbacks=stop_at_n_trials(7))
    assert ran == [6, 7]
    assert trials_to_start(b.get_trials(deepcopy=False), 7) == 0
    assert stop_at_n_trials(None) == []


def test_best_summary_is_the_best_trial_typed_and_counts_the_pareto_front() -> None:
    study = optuna.create_study(direction="maximize")
    assert best_summary(study) is None
    study.tell(study.ask(), state=TrialState.PRUNED)
    assert best_summary(study) is None  # no completed trial yet
    for value, std in ((0.6, 0.02), (0.8, 0.01), (0.7, 0.03)):
        trial = study.ask({"learning_rate": optuna.distributions.FloatDistribution(0.001, 0.1)})
        trial.set_user_attr(CV_STD, std)
        trial.set_user_attr(FOLD_SCORES, [value - std, value + std])
        study.tell(trial, value)
    best = best_summary(study)
    assert best is not None and best.pareto_size is None
    assert (best.trial.number, best.trial.value, best.trial.cv_std) == (2, 0.8, 0.01)
    assert best.trial.fold_scores == pytest.approx([0.79, 0.81])
    assert best.trial.params == study.trials[2].params

    # Accuracy up, latency down: trials 0 and 1 trade off, trial 2 is worse than trial 1.
    both = optuna.create_study(directions=["maximize", "minimize"])
    for values in ((0.9, 20.0), (0.8, 5.0), (0.7, 9.0)):
        both.tell(both.ask(), values)
    best = best_summary(both)
    assert best is not None and best.trial.number == 0 and best.pareto_size == 2


def test_a_trial_failed_by_another_process_meanwhile_does_not_end_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two processes' handles on one journal file: B's heartbeat sweep fails A's running trial
    # (what it does when A's beat lapsed) at every point where the race can land. A's run must
    # go on each time, and tell the cases apart by exception types and stored states, not by
    # Optuna's message text.
    journal = tmp_path / "study.journal"
    a, b = _worker(journal), _worker(journal)

    def sweep(trial: optuna.Trial) -> None:
        b._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)

    write = a._storage.set_trial_state_values

    def sweep_between_check_and_write(trial_id: int, state: TrialState, values=None) -> bool:
        # Optuna's tell has checked that trial 1 is RUNNING; B's sweep lands before the write.
        if state == TrialState.COMPLETE and a._storage.get_trial(trial_id).number == 1:
            b._storage.set_trial_state_values(trial_id, TrialState.FAIL)
        return write(trial_id, state, values)

    a._storage.set_trial_state_values = sweep_between_check_and_write

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 0:  # the sweep lands before tell checks the state: a ValueError
            sweep(trial)
        if trial.number == 2:  # ... while the objective still writes: UpdateFinishedTrialError
            sweep(trial)
            trial.set_user_attr("fold_scores", [0.5])
        if trial.number == 3:  # the trial noticed its lost heartbeat and stopped itself
            sweep(trial)
            raise HeartbeatLost("trial 3: no heartbeat reached the storage")
        return float(trial.number)

    with caplog.at_level(logging.WARNING, logger="automl.search.session"):
        optimize_past_lapses(a, objective, n_trials=5, timeout=None, catch=(), callbacks=[])
    states = [t.state for t in b.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL] * 4 + [TrialState.COMPLETE]
    assert caplog.text.count("failed by another process") == 4

    # The objective's own errors are still raised, though Optuna then stores the trial as FAIL
    # (a ValueError too, as Optuna's tell raises), and so are errors after a result is stored.
    def raising(trial: optuna.Trial) -> float:
        raise ValueError("a bug in the objective")

    with pytest.raises(ValueError, match="a bug in the objective"):
        optimize_past_lapses(a, raising, n_trials=1, timeout=None, catch=(), callbacks=[])
    assert a.trials[-1].state == TrialState.FAIL

    def callback_bug(_study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        raise ValueError("a bug in a callback")

    with pytest.raises(ValueError, match="a bug in a callback"):
        optimize_past_lapses(
            a, objective, n_trials=1, timeout=None, catch=(), callbacks=[callback_bug]
        )


def _chula_study(tmp_path: Path, shared_data: Path, metric: str, per_class: dict[str, int]):
    """A study file over real chula_rbc12 crops, ``per_class`` images of the named classes."""
    import pandas as pd

    from automl.config.schema import load_config

    manifest = pd.read_csv(shared_data / "chula_rbc12" / "manifest.csv")
    rows = pd.concat(
        manifest[manifest["class_name"] == name].head(count) for name, count in per_class.items()
    )
    labels = tmp_path / "labels.csv"
    pd.DataFrame(
        {"id": rows["file"].str.removesuffix(".jpg"), "label": rows["class_name"]}
    ).to_csv(labels, index=False)
    path = tmp_path / "chula.yaml"
    path.write_text(
        f"study: {{name: chula, metric: {metric}, studies_dir: {tmp_path / 'studies'}}}\n"
        f"data: {{format: csv, path: {shared_data / 'chula_rbc12'}, labels_csv: {labels}, "
        "extension: .jpg, image_size: 16, n_folds: 2, holdout_fraction: 0.2}\n",
        encoding="utf-8",
    )
    return load_config(path)


def test_accuracy_on_imbalanced_classes_is_warned_about_before_the_first_trial(
    tmp_path: Path, shared_data: Path
) -> None:
    from automl.search.session import imbalance_warning, prepare_splits

    imbalanced = {"normal_cell": 80, "spherocyte": 8, "teardrop": 8}  # 10:1
    config = _chula_study(tmp_path, shared_data, "accuracy", imbalanced)
    warning = imbalance_warning(config, prepare_splits(config))
    assert warning is not None
    # Counted on the tuning images (the hold-out is taken off first): about 10:1.
    assert re.search(
        r"study.metric is accuracy but the classes are imbalanced (9|10|11):1", warning
    )
    assert "predicts normal_cell for every image scores 0.83" in warning
    assert "balanced_accuracy or macro_f1" in warning
    balanced_metric = _chula_study(tmp_path, shared_data, "balanced_accuracy", imbalanced)
    assert imbalance_warning(balanced_metric, prepare_splits(balanced_metric)) is None
    mild = _chula_study(
        tmp_path, shared_data, "accuracy", {"normal_cell": 40, "spherocyte": 10, "teardrop": 10}
    )
    assert imbalance_warning(mild, prepare_splits(mild)) is None  # 4:1 is not flagged
