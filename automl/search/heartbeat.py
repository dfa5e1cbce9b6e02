"""Crash safety: heartbeats of running trials, failing trials of dead workers, retrying them.

A worker that dies in the middle of a trial (``kill -9``, a lost machine, the host's OOM killer)
leaves that trial RUNNING forever unless something notices. Optuna's answer is the heartbeat:
while a trial runs, a thread of its worker records a timestamp every ``heartbeat_interval``
seconds; before each new trial, every worker fails the RUNNING trials whose last beat is older
than ``grace_period`` and hands each to a callback, here :class:`RetryStaleTrial`, which queues
the same parameters again as a WAITING trial (picked up first by the next free worker).

- **RDB storages** (PostgreSQL, MySQL, SQLite) have this built in: ``RDBStorage`` takes
  ``heartbeat_interval``, ``grace_period`` and ``heartbeat_stale_trial_callback``, and the
  database clock times the beats, so it works across machines.
- **The embedded journal file** has no heartbeat in Optuna 5. :class:`HeartbeatJournalStorage`
  adds it through the same interface (``optuna.storages._heartbeat.BaseHeartbeat``), so Optuna's
  own optimize loop starts the beat thread and runs the stale sweep exactly as for RDB. A beat
  is a trial system attribute (``automl:heartbeat``, wall-clock seconds); a trial is stale when
  both its last beat and its start are older than ``grace_period`` (a retried trial carries no
  old beat over, and a worker killed before its first beat is still caught). The journal lives
  on one machine's disk, so one clock times every beat.

The journal file is locked with ``flock`` where available (:class:`FlockLock`): the kernel drops
the lock when its holder dies, so a worker killed while appending cannot stall the others.

Several workers may sweep at once; the storage lets only one of them move a trial from RUNNING
to FAIL (the others get ``UpdateFinishedTrialError``, which Optuna ignores), so each dead trial
is retried once. A retry is a new trial with ``retry_of`` (the trial it repeats) in its user
attributes (and ``retry_origin``, the first of a chain), and Optuna's
``failed_trial``/``retry_history`` system attributes, so
``RetryHeartbeatStaleTrialCallback.retried_trial_number`` works on it. It keeps the seed and
the finished folds of the trial it repeats (see ``objective.py``).

This module imports no TensorFlow.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import BaseJournalBackend, JournalFileOpenLock
from optuna.storages.journal._file import BaseJournalFileLock
from optuna.trial import FrozenTrial, TrialState

from automl.search.attrs import (
    DEVICES_ATTR,
    FAILED_TRIAL_ATTR,
    HEARTBEAT_ATTR,
    RETRY_HISTORY_ATTR,
    RETRY_OF,
    RETRY_ORIGIN,
    WORKER_ATTR,
)

logger = logging.getLogger(__name__)


StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class RetryStaleTrial:
    """Queue the parameters of a trial whose worker died, at most ``max_retries`` times.

    Like Optuna's ``RetryHeartbeatStaleTrialCallback`` (same system attributes), but the retry
    starts with clean user attributes (only ``retry_of``), not the dead trial's partial ones.
    """

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        history = [*trial.system_attrs.get(RETRY_HISTORY_ATTR, []), trial.number]
        if len(history) > self.max_retries:
            logger.warning(
                "trial %d: its worker stopped (no heartbeat); retried %d time(s) already, not "
                "again (study.max_retries=%d)",
                trial.number,
                len(history) - 1,
                self.max_retries,
            )
            return
        queue_retry(study, trial)
        logger.warning(
            "trial %d: its worker stopped (no heartbeat for the grace period); failed it and "
            "queued its parameters again",
            trial.number,
        )


def queue_retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue ``trial``'s parameters again as its retry: ``retry_of``, ``retry_origin`` and
    Optuna's retry system attributes, so it trains with the seed of the first trial of its
    chain and takes over the folds that chain finished (``search/objective.py``)."""
    history = [*trial.system_attrs.get(RETRY_HISTORY_ATTR, []), trial.number]
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={RETRY_OF: trial.number, RETRY_ORIGIN: history[0]},
            system_attrs={FAILED_TRIAL_ATTR: history[0], RETRY_HISTORY_ATTR: history},
        )
    )


class HeartbeatLost(Exception):
    """This trial's heartbeat lapsed past the grace period: the study retries it elsewhere."""


class HeartbeatKeeper:
    """One process's heartbeats: each beat retried on transient errors, and lapses noticed.

    A beat that fails (a database blip, an ``OSError`` on the journal) is tried again after
    1/8, 1/4 and 1/2 of the interval, then logged and left to the next beat: the beat thread
    never dies of it. :meth:`lost` says when no beat has reached the storage for longer than
    the grace period (another worker may fail the trial and retry it at any moment), or when
    the storage refused a beat because another worker failed the trial already.
    """

    def __init__(
        self,
        interval: float,
        grace_period: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval, self.grace_period = interval, grace_period
        self.clock, self.sleep = clock, sleep
        self._stored: dict[int, float] = {}  # trial id -> when a beat last reached the storage
        self._failed_elsewhere: set[int] = set()

    def beat(self, trial_id: int, write: Callable[[], None]) -> None:
        """Record one beat with ``write``, retrying with back-off; never raises."""
        self._stored.setdefault(trial_id, self.clock())  # the lapse counts from the first try
        pauses = [self.interval / 8, self.interval / 4, self.interval / 2]
        for tries in range(1, len(pauses) + 2):
            try:
                write()
            except optuna.exceptions.UpdateFinishedTrialError:
                # Another worker judged this trial dead (a beat came too late) and failed it;
                # its retry runs elsewhere. Nothing to record any more.
                self._failed_elsewhere.add(trial_id)
                logger.warning("trial id %d was failed by another worker's stale sweep", trial_id)
                return
            except Exception as exc:  # noqa: BLE001 - the beat thread must outlive any fault
                if tries > len(pauses):
                    logger.warning(
                        "trial id %d: heartbeat not recorded after %d tries (%s: %s); trying "
                        "again at the next beat, the trial stops if none gets through within "
                        "study.grace_period=%gs",
                        trial_id,
                        tries,
                        type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "",
                        self.grace_period,
                    )
                    return
                self.sleep(pauses[tries - 1])
            else:
                self._stored[trial_id] = self.clock()
                return

    def lost(self, trial_id: int) -> bool:
        """True once the storage has no beat of ``trial_id`` newer than the grace period."""
        if trial_id in self._failed_elsewhere:
            return True
        stored = self._stored.get(trial_id)
        return stored is not None and self.clock() - stored > self.grace_period

    def renew(self, trial_id: int) -> None:
        """The storage still holds ``trial_id`` as running: count its lapse from now."""
        self._stored[trial_id] = self.clock()


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat interface of ``RDBStorage``.

    ``clock`` and ``sleep`` (wall-clock seconds) time the beats, the stale sweep and the
    back-off of failed beats; tests drive them instead of waiting.
    """

    def __init__(
        self,
        backend: BaseJournalBackend,
        *,
        heartbeat_interval: int,
        grace_period: int | None = None,
        stale_trial_callback: StaleCallback | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period if grace_period is not None else 2 * heartbeat_interval
        self.stale_trial_callback = stale_trial_callback
        self.clock = clock
        self.beats = HeartbeatKeeper(
            heartbeat_interval, self.grace_period, clock=clock, sleep=sleep
        )

    def record_heartbeat(self, trial_id: int) -> None:
        self.beats.beat(
            trial_id, lambda: self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, self.clock())
        )

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = self.clock()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beats = [trial.system_attrs.get(HEARTBEAT_ATTR)]
            if trial.datetime_start is not None:  # naive local time in the journal
                beats.append(trial.datetime_start.timestamp())
            last = max((float(b) for b in beats if b is not None), default=None)
            if last is not None and now - last > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.stale_trial_callback


class HeartbeatRDBStorage(RDBStorage):
    """Optuna's ``RDBStorage`` whose beats survive a database blip (:class:`HeartbeatKeeper`)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        interval = self.heartbeat_interval or 60
        self.beats = HeartbeatKeeper(interval, self.grace_period or 2 * interval)

    def record_heartbeat(self, trial_id: int) -> None:
        self.beats.beat(trial_id, lambda: RDBStorage.record_heartbeat(self, trial_id))


def check_heartbeat(trial: optuna.Trial) -> None:
    """Stop a trial whose heartbeat lapsed past the grace period; call it between epochs.

    The storage decides, as for any worker: this process runs the stale sweep itself, which
    fails the trial and queues its retry exactly once (``RetryStaleTrial``), and the trial stops
    unless the storage still holds it as running. If the storage cannot be read, it stops too:
    the other workers will retry it when they can.

    Raises:
        HeartbeatLost: the trial must stop (its finished folds stay for the retry).
    """
    storage = trial.study._storage
    beats = getattr(storage, "beats", None) or getattr(
        getattr(storage, "_backend", None), "beats", None
    )  # RDB storages come wrapped in Optuna's cache
    if not isinstance(beats, HeartbeatKeeper) or not beats.lost(trial._trial_id):
        return
    try:
        fail_stale_trials(trial.study)
        state = storage.get_trial(trial._trial_id).state
    except Exception as exc:  # noqa: BLE001 - unreachable storage: stop, the others retry it
        state, why = None, f"the storage cannot be read ({type(exc).__name__}: {exc})"
    else:
        why = "another worker retries it"
    if state == TrialState.RUNNING:  # our beats did get through after all
        beats.renew(trial._trial_id)
        return
    raise HeartbeatLost(
        f"trial {trial.number}: no heartbeat reached the storage for longer than "
        f"study.grace_period={beats.grace_period:g}s; stopped, {why}"
    )


class FlockLock(BaseJournalFileLock):
    """An exclusive ``flock`` on ``<journal>.flock``; the kernel releases it if the holder dies."""

    def __init__(self, journal_path: str) -> None:
        self._path = journal_path + ".flock"
        self._held = threading.local()

    def acquire(self) -> bool:
        import fcntl

        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._held.fd = fd
        return True

    def release(self) -> None:
        import fcntl

        fd = getattr(self._held, "fd", None)
        if fd is None:
            return
        self._held.fd = None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def journal_lock(journal_path: str) -> BaseJournalFileLock:
    """``flock`` where the platform has it, Optuna's lock-file protocol elsewhere."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # Windows
        return JournalFileOpenLock(journal_path)
    return FlockLock(journal_path)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials of dead workers now and queue their retries (Optuna's own sweep)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def worker_identity(pid: int | None = None) -> str:
    """``host:pid`` of this process (or of child ``pid`` on this host), recorded on its trials."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def worker_attrs() -> dict[str, Any]:
    """User attributes that say where a trial ran: worker and visible GPUs."""
    return {WORKER_ATTR: worker_identity(), DEVICES_ATTR: os.environ.get("CUDA_VISIBLE_DEVICES")}
