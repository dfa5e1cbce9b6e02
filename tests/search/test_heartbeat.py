"""automl.search.heartbeat through its API: a journal study whose dead workers' trials are retried.

The CLI-level tests (tests/search/test_workers.py) kill real worker processes; these drive the
storage directly, so each rule (grace period, retry parameters and attributes, the retry limit,
a late beat after the sweep) is checked on its own.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from automl.search.attrs import RETRY_OF, RETRY_ORIGIN
from automl.search.heartbeat import (
    HeartbeatJournalStorage,
    RetryStaleTrial,
    fail_stale_trials,
    journal_lock,
)

# These tests drive the storage by hand; Optuna warns that heartbeats belong to Study.optimize.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def _study(tmp_path: Path, *, grace: int = 1, max_retries: int = 2) -> optuna.Study:
    journal = str(tmp_path / "study.journal")
    storage = HeartbeatJournalStorage(
        JournalFileBackend(journal, lock_obj=journal_lock(journal)),
        heartbeat_interval=1,
        grace_period=grace,
        stale_trial_callback=RetryStaleTrial(max_retries),
    )
    return optuna.create_study(study_name="hb", storage=storage, direction="maximize")


def _running_trial(study: optuna.Study) -> optuna.Trial:
    """A trial as a worker leaves it when it dies: RUNNING, with parameters and one beat."""
    trial = study.ask()
    trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    trial.suggest_categorical("optimizer", ["adam", "sgd"])
    _beat(study, trial)
    return trial


def _beat(study: optuna.Study, trial: optuna.Trial) -> None:
    study._storage.record_heartbeat(trial._trial_id)


GRACE = 1.5  # seconds past the grace period of 1 s (beats and starts are both checked)


def test_a_trial_silent_past_the_grace_period_is_failed_and_its_parameters_retried(
    tmp_path: Path,
) -> None:
    study = _study(tmp_path, grace=1)
    dead = _running_trial(study)
    alive = _running_trial(study)
    time.sleep(GRACE)
    _beat(study, alive)
    fail_stale_trials(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING  # its beat is recent
    (retry,) = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert retry.params == trials[dead.number].params
    assert retry.user_attrs == {RETRY_OF: dead.number, RETRY_ORIGIN: dead.number}


def test_a_chain_of_retries_keeps_its_origin_and_stops_at_max_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = _study(tmp_path, grace=1, max_retries=1)
    first = _running_trial(study)
    time.sleep(GRACE)
    fail_stale_trials(study)
    # The retry starts (a worker picks the WAITING trial up) and dies too.
    retry = study.ask()
    assert retry.user_attrs[RETRY_OF] == first.number
    _beat(study, retry)
    time.sleep(GRACE)
    with caplog.at_level(logging.WARNING, logger="automl.search.heartbeat"):
        fail_stale_trials(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.FAIL]  # no third trial: the limit is 1 retry
    assert "retried 1 time(s) already, not again (study.max_retries=1)" in caplog.text


def test_a_beat_after_the_sweep_failed_the_trial_is_a_warning_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = _study(tmp_path, grace=1)
    dead = _running_trial(study)
    time.sleep(GRACE)
    fail_stale_trials(study)
    with caplog.at_level(logging.WARNING, logger="automl.search.heartbeat"):
        study._storage.record_heartbeat(dead._trial_id)
    assert "failed by another worker's stale sweep" in caplog.text
    assert study.trials[dead.number].state == TrialState.FAIL


def test_a_trial_that_never_beat_counts_from_its_start(tmp_path: Path) -> None:
    study = _study(tmp_path, grace=2)
    trial = study.ask()  # no beat yet: a worker between ask and its first beat
    fail_stale_trials(study)
    assert study.trials[trial.number].state == TrialState.RUNNING
    time.sleep(2.5)
    fail_stale_trials(study)
    assert study.trials[trial.number].state == TrialState.FAIL
