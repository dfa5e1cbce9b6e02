"""automl.search.heartbeat through its API: a journal study whose dead workers' trials are retried.

The CLI-level tests (tests/search/test_workers.py) kill real worker processes; these drive the
storage directly, so each rule (grace period, retry parameters and attributes, the retry limit,
a late beat after the sweep, beats that fail and are retried, a trial that lost its heartbeat
stopping itself) is checked on its own. Time is driven, not waited for: the storage's clock and
its back-off sleeps are a :class:`Clock` the test moves.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from automl.search.attrs import HEARTBEAT_ATTR, RETRY_OF, RETRY_ORIGIN
from automl.search.heartbeat import (
    HeartbeatJournalStorage,
    HeartbeatLost,
    HeartbeatRDBStorage,
    RetryStaleTrial,
    check_heartbeat,
    fail_stale_trials,
    journal_lock,
)

# These tests drive the storage by hand; Optuna warns that heartbeats belong to Study.optimize.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


class Clock:
    """Wall-clock seconds that move only when the test (or a back-off sleep) moves them."""

    def __init__(self) -> None:
        self.now = time.time()  # trials' start times are real: start from the real clock
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _study(
    tmp_path: Path, clock: Clock, *, grace: int = 2, max_retries: int = 2, interval: int = 1
) -> optuna.Study:
    journal = str(tmp_path / "study.journal")
    storage = HeartbeatJournalStorage(
        JournalFileBackend(journal, lock_obj=journal_lock(journal)),
        heartbeat_interval=interval,
        grace_period=grace,
        stale_trial_callback=RetryStaleTrial(max_retries),
        clock=clock,
        sleep=clock.sleep,
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


GRACE = 2.5  # seconds past the grace period of 2 s (beats and starts are both checked)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_trial_silent_past_the_grace_period_is_failed_and_its_parameters_retried(
    tmp_path: Path, clock: Clock
) -> None:
    study = _study(tmp_path, clock)
    dead = _running_trial(study)
    alive = _running_trial(study)
    clock.advance(GRACE)
    _beat(study, alive)
    fail_stale_trials(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING  # its beat is recent
    (retry,) = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert retry.params == trials[dead.number].params
    assert retry.user_attrs == {RETRY_OF: dead.number, RETRY_ORIGIN: dead.number}


def test_a_chain_of_retries_keeps_its_origin_and_stops_at_max_retries(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    study = _study(tmp_path, clock, max_retries=1)
    first = _running_trial(study)
    clock.advance(GRACE)
    fail_stale_trials(study)
    # The retry starts (a worker picks the WAITING trial up) and dies too.
    retry = study.ask()
    assert retry.user_attrs[RETRY_OF] == first.number
    _beat(study, retry)
    clock.advance(GRACE)
    with caplog.at_level(logging.WARNING, logger="automl.search.heartbeat"):
        fail_stale_trials(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.FAIL]  # no third trial: the limit is 1 retry
    assert "retried 1 time(s) already, not again (study.max_retries=1)" in caplog.text


def test_a_beat_after_the_sweep_failed_the_trial_is_a_warning_not_a_crash(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    study = _study(tmp_path, clock)
    dead = _running_trial(study)
    clock.advance(GRACE)
    fail_stale_trials(study)
    with caplog.at_level(logging.WARNING, logger="automl.search.heartbeat"):
        study._storage.record_heartbeat(dead._trial_id)
    assert "failed by another worker's stale sweep" in caplog.text
    assert study.trials[dead.number].state == TrialState.FAIL
    with pytest.raises(HeartbeatLost, match="another worker retries it"):
        check_heartbeat(dead)  # the worker, alive after all, stops training that trial


def test_a_trial_that_never_beat_counts_from_its_start(tmp_path: Path, clock: Clock) -> None:
    study = _study(tmp_path, clock)
    trial = study.ask()  # no beat yet: a worker between ask and its first beat
    fail_stale_trials(study)
    assert study.trials[trial.number].state == TrialState.RUNNING
    clock.advance(1.5)
    fail_stale_trials(study)
    assert study.trials[trial.number].state == TrialState.RUNNING  # 1.5 s < grace
    clock.advance(1.0)
    fail_stale_trials(study)
    assert study.trials[trial.number].state == TrialState.FAIL


class FullDisk:
    """The journal's appends fail with ENOSPC while ``failing`` is above 0 (then they work)."""

    def __init__(self, study: optuna.Study, failing: int) -> None:
        backend = study._storage._backend
        self.append, self.failing = backend.append_logs, failing
        backend.append_logs = self

    def __call__(self, logs: list) -> None:
        if self.failing > 0:
            self.failing -= 1
            raise OSError(28, "No space left on device")
        self.append(logs)


def test_a_beat_that_fails_is_tried_again_with_back_off_and_never_raises(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    study = _study(tmp_path, clock, interval=8, grace=16)
    trial = study.ask()
    disk = FullDisk(study, failing=2)
    with caplog.at_level(logging.WARNING, logger="automl.search.heartbeat"):
        _beat(study, trial)  # two failed tries, then the third gets through
        assert clock.slept == [1.0, 2.0]  # 1/8 and 1/4 of the interval
        assert study.trials[0].system_attrs[HEARTBEAT_ATTR] == clock.now
        assert caplog.text == ""
        disk.failing = 100
        _beat(study, trial)  # every try fails: the beat thread would live on
    assert clock.slept == [1.0, 2.0, 1.0, 2.0, 4.0]
    assert (
        "heartbeat not recorded after 4 tries (OSError: [Errno 28] No space left on device); "
        "trying again at the next beat" in caplog.text
    )
    check_heartbeat(trial)  # 7 s without a stored beat, grace 16 s: the trial trains on


def test_a_trial_whose_beats_fail_past_the_grace_period_stops_itself_and_is_retried_once(
    tmp_path: Path, clock: Clock
) -> None:
    study = _study(tmp_path, clock, interval=1, grace=2)
    trial = _running_trial(study)
    disk = FullDisk(study, failing=100)
    _beat(study, trial)  # fails (0.875 s of back-off)
    check_heartbeat(trial)
    clock.advance(1.5)  # no beat stored for 2.375 s > the grace period of 2 s
    with pytest.raises(HeartbeatLost, match=r"stopped, the storage cannot be read \(OSError"):
        check_heartbeat(trial)  # it cannot even sweep: it stops, the others will retry it
    assert study.trials[trial.number].state == TrialState.RUNNING
    disk.failing = 0  # the disk has room again
    with pytest.raises(
        HeartbeatLost,
        match=r"^trial 0: no heartbeat reached the storage for longer than study.grace_period=2s",
    ):
        check_heartbeat(trial)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs[RETRY_OF] == trial.number and trials[1].params == trial.params
    with pytest.raises(HeartbeatLost, match="another worker retries it"):
        check_heartbeat(trial)  # asked again: still stopped, and no second retry
    assert len(study.get_trials(deepcopy=False)) == 2


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_heartbeat_that_fails_on_a_database_retries_and_lets_the_database_decide(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy.exc

    storage = HeartbeatRDBStorage(
        f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=8, grace_period=16
    )
    storage.beats.clock, storage.beats.sleep = clock, clock.sleep
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    record = optuna.storages.RDBStorage.record_heartbeat
    blips = [sqlalchemy.exc.OperationalError("UPDATE trial_heartbeats", {}, Exception("gone"))]

    def blip(self: optuna.storages.RDBStorage, trial_id: int) -> None:
        if blips:
            raise blips.pop()
        record(self, trial_id)

    monkeypatch.setattr(optuna.storages.RDBStorage, "record_heartbeat", blip)
    storage.record_heartbeat(trial._trial_id)  # the blip, then a beat that gets through
    assert clock.slept == [1.0] and not blips
    clock.advance(20)  # this process lost track, but the database holds a fresh beat
    check_heartbeat(trial)
    assert study.trials[0].state == TrialState.RUNNING


def test_a_real_trial_whose_heartbeat_cannot_be_stored_stops_and_the_run_goes_on(
    tmp_path: Path, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import make_folder_layout, write_study_yaml

    from automl.config.schema import load_config
    from automl.search.objective import Objective, TrialFailed
    from automl.search.paths import paths_for
    from automl.search.session import optimize_past_lapses, prepare_splits
    from automl.search.storage import create_or_load

    data = make_folder_layout(shared_data, tmp_path / "cells", per_class=6)
    space = write_study_yaml(tmp_path / "cells.yaml", data, tmp_path / "studies", epochs="3")
    config = load_config(space, ["study.heartbeat_interval=1", "study.grace_period=2"])
    study = create_or_load(config)
    storage = study._storage
    storage.beats.sleep = lambda _seconds: None
    beats = []

    def beat_on_a_full_disk(trial_id: int) -> None:  # every beat's append fails; nothing else's
        def write() -> None:
            beats.append(trial_id)
            raise OSError(28, "No space left on device")

        storage.beats.beat(trial_id, write)

    storage.record_heartbeat = beat_on_a_full_disk
    objective = Objective(config, prepare_splits(config), paths_for(config).root)
    with caplog.at_level(logging.WARNING, logger="automl.search"):
        optimize_past_lapses(
            study, objective, n_trials=1, timeout=None, catch=(TrialFailed,), callbacks=[]
        )
    trials = study.get_trials(deepcopy=False)
    first = trials[0]
    assert beats and first.state == TrialState.FAIL  # stopped itself, before its last epoch
    assert len(first.intermediate_values) < 2 * 3  # 2 folds of 3 epochs: not all reported
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == first.number]
    assert retry.state == TrialState.WAITING  # queued once, by the trial's own sweep
    assert "failed by another process while it ran" in caplog.text
