"""Scale-out: a supervisor that keeps worker processes busy, and the worker they run.

**Supervisor** (``automl tune --workers N`` or ``--gpus 0,1,2,3``). Once ``tune`` has checked
everything and created the study, :func:`supervise` keeps one child process per slot alive::

    python -m automl.cli worker --study NAME --studies-dir DIR --max-trials 1 --no-progress

Each child loads the saved configuration and splits (the decoded images are a memory-mapped
cache, so this is cheap), runs exactly one trial through ``objective.Objective`` and exits, so all
of its GPU and host memory returns after every trial. A slot is refilled as soon as its child
exits: workers pull trials asynchronously, with no batch barrier and no GPU idle while another
trial finishes. A slot of ``--gpus`` gets ``CUDA_VISIBLE_DEVICES=<id>``: its worker sees only
that GPU (memory growth on, see ``session.record_device``); ``--gpus 0,0,1,1`` runs two per GPU.
The storage URL is never put on a child's command line (``ps`` would show its password) nor in
the saved configuration: the child gets it, password included, in ``AUTOML_STORAGE``
(``storage_url.child_environment``).

The supervisor stops starting children by the study's stop rule (``session.py``): when the study
has ``n_trials`` complete or pruned trials (every worker's, every machine's), counting trials
that run now and children still starting so the study does not overshoot, or when ``timeout``
has passed (running trials finish). Like ``study.optimize(n_trials=remaining)`` it starts at most
``remaining`` children, but a child that died (killed, crashed) does not use one up: its trial is
failed by the heartbeat sweep (which the supervisor also runs) and retried. A child that stops
with automl's input/environment error (``errors.input_error_of``) stops the run with that error;
a run of abnormal exits without progress stops it too.

**Worker** (``automl worker --study NAME``): joins an existing study and runs its trials until
the study is done, or ``--max-trials``. On a machine without the study folder, ``--storage URL``
fetches the resolved configuration the study stored (``study.publish_config``) and writes it
locally; the data must be readable at the same paths (or a shared mount), and the splits must
hash to the fingerprint the study stored.

Each worker seeds its sampler with a salt of its own (host and slot, or pid), so two workers
that start together do not draw the same parameters. This module imports no TensorFlow; the
worker imports it when it starts training.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.config.schema import Config, load_config
from automl.config.storage_url import child_environment
from automl.console import TF_NOISE
from automl.data.splits import Splits
from automl.errors import ConfigError, StudyError, input_error_of
from automl.files import atomic_write_text
from automl.search.attrs import SPLITS_ATTR, WORKER_ATTR
from automl.search.heartbeat import fail_stale_trials, worker_identity
from automl.search.paths import StudyPaths, paths_for
from automl.search.session import (
    check_weights,
    count_finished,
    log_trial,
    optimize,
    prepare_splits,
    record_device,
    stop_at_n_trials,
    trials_missing,
    trials_to_start,
)
from automl.search.storage import (
    config_from_study,
    connect_url,
    make_pruner,
    make_sampler,
    open_storage,
    splits_fingerprint,
)

logger = logging.getLogger(__name__)

SLOT_ENV = "AUTOML_WORKER_SLOT"
_SWEEP_SECONDS = 2.0


@dataclass(frozen=True)
class Slot:
    """One worker place: its index and, when pinned, the GPU it sees."""

    index: int
    gpu: str | None = None


def plan_slots(workers: int | None, gpus: str | None) -> list[Slot]:
    """Slots for ``--workers N`` and/or ``--gpus 0,1``; empty: trials run in this process."""
    if gpus is None:
        if workers is None:
            return []
        if workers < 1:
            raise ConfigError(f"--workers must be 1 or more, got {workers}.")
        return [Slot(i) for i in range(workers)]
    ids = [g.strip() for g in gpus.split(",")]
    if not all(ids) or not all(g.isdigit() for g in ids):
        raise ConfigError(
            f"--gpus must be GPU ids separated by commas such as 0,1,2,3 (repeat an id to run "
            f"two workers on one GPU: 0,0,1,1), got {gpus!r}."
        )
    if workers is not None and workers != len(ids):
        raise ConfigError(
            f"--workers {workers} with --gpus {gpus} ({len(ids)} workers, one per entry); drop "
            "--workers, or repeat GPU ids to run more than one worker per GPU (0,0,1,1)."
        )
    return [Slot(i, gpu) for i, gpu in enumerate(ids)]


# --- supervisor --------------------------------------------------------------------------------


@dataclass
class _Child:
    slot: Slot
    process: subprocess.Popen[str]
    identity: str
    last_lines: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=20)
    )
    reader: threading.Thread | None = None

    def forward(self, seen: set[str]) -> None:
        """Relay the child's log lines and keep the last ones for errors.

        TensorFlow's start-up notices are dropped, and a line every child repeats (reading the
        cached data, a data warning) is relayed once per run; trial lines always.
        """
        assert self.process.stderr is not None
        for line in self.process.stderr:
            line = line.rstrip()
            if not line or TF_NOISE.match(line):
                continue
            self.last_lines.append(line)
            if line in seen:
                continue
            if not line.startswith("trial "):
                seen.add(line)
            logger.info("[worker %d] %s", self.slot.index, line)


def supervise(
    config: Config, study: optuna.Study, slots: list[Slot], *, progress: bool = False
) -> int:
    """Keep one worker process per slot busy until the study is done; return children started.

    Raises:
        StudyError: a worker stopped with an input or environment error, or workers keep dying
            without the study making progress.
    """
    return _Supervisor(config, study, slots, progress=progress).run()


class _Supervisor:
    """One :func:`supervise` run: its children, and the counts that say when to stop."""

    def __init__(
        self, config: Config, study: optuna.Study, slots: list[Slot], *, progress: bool
    ) -> None:
        self.config, self.study, self.slots = config, study, slots
        self.n_trials = config.study.n_trials
        timeout = config.study.timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        trials = study.get_trials(deepcopy=False)
        self.last_done = count_finished(trials)
        # Like study.optimize(n_trials=remaining): at most this many children run a trial.
        self.launches_left = trials_missing(trials, self.n_trials)
        self.children: dict[int, _Child] = {}
        self.seen: set[str] = set()  # log lines already relayed once
        self.started = 0
        self.abnormal_in_a_row = 0
        self.last_sweep = 0.0
        self.last_words = ""  # the last log line of the last worker that died
        self.bar = _progress_bar(self.n_trials, self.last_done) if progress else None

    def run(self) -> int:
        try:
            while not self._step():
                time.sleep(0.5)
        except KeyboardInterrupt:
            _stop(self.children.values(), wait=10.0)  # they got Ctrl+C too and close their trial
            raise
        except BaseException:
            _stop(self.children.values())  # their trials are failed by the heartbeat, retried
            raise
        finally:
            if self.bar is not None:
                self.bar.close()
        return self.started

    def _step(self) -> bool:
        """One round: reap exited children, sweep, note progress, refill slots; True: done."""
        self._reap()
        if time.monotonic() - self.last_sweep > _SWEEP_SECONDS:
            fail_stale_trials(self.study)
            self.last_sweep = time.monotonic()
        trials = self.study.get_trials(deepcopy=False)
        self._note_progress(trials)
        if self._no_more_launches(trials):
            return not self.children  # running trials finish first
        self._fill_slots(trials)
        return False

    def _reap(self) -> None:
        for index, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            del self.children[index]
            if child.reader is not None:
                child.reader.join(timeout=5)  # its last lines, the error among them
            if code == 0:
                self._exited(child)
            else:
                self._died(index, child, code)

    def _exited(self, child: _Child) -> None:
        self.abnormal_in_a_row = 0
        ran_one = any(
            t.user_attrs.get(WORKER_ATTR) == child.identity
            for t in self.study.get_trials(deepcopy=False)
        )
        if not ran_one and self.launches_left is not None:
            self.launches_left += 1  # it found the study taken; the launch is unused

    def _died(self, index: int, child: _Child, code: int) -> None:
        message = input_error_of(code, child.last_lines)
        if message is not None:  # bad input stops every worker the same way: no retry
            raise StudyError(f"worker {index}: {message}")
        self.abnormal_in_a_row += 1
        self.last_words = child.last_lines[-1] if child.last_lines else self.last_words
        if self.launches_left is not None:
            self.launches_left += 1  # its trial is retried; the launch did not count
        logger.warning(
            "worker %d (pid %d) exited with status %d; a trial it was running is failed "
            "by the heartbeat after study.grace_period and retried",
            index,
            child.process.pid,
            code,
        )

    def _note_progress(self, trials: list[FrozenTrial]) -> None:
        """Advance the bar; raise when workers keep dying while no trial finishes."""
        done = count_finished(trials)
        if done != self.last_done:
            self.abnormal_in_a_row, self.last_done = 0, done
            if self.bar is not None:
                self.bar.update(done - self.bar.n)
        if self.abnormal_in_a_row >= max(3, 2 * len(self.slots)):
            raise StudyError(
                f"{self.abnormal_in_a_row} worker processes in a row died without finishing a "
                f"trial (last line: {self.last_words or 'none'}); run `automl --debug worker "
                f"--study {self.config.study.name} --max-trials 1` to see why."
            )

    def _no_more_launches(self, trials: list[FrozenTrial]) -> bool:
        finished = trials_missing(trials, self.n_trials) == 0
        expired = self.deadline is not None and time.monotonic() >= self.deadline
        out_of_launches = self.launches_left is not None and self.launches_left <= 0
        return finished or expired or out_of_launches

    def _fill_slots(self, trials: list[FrozenTrial]) -> None:
        """Start a child in each free slot while the stop rule leaves trials to start."""
        ours = {c.identity for c in self.children.values()}
        busy = sum(
            1
            for t in trials
            if t.state == TrialState.RUNNING and t.user_attrs.get(WORKER_ATTR) in ours
        )
        # Children still starting have no RUNNING trial yet but will take one each.
        free = trials_to_start(trials, self.n_trials)
        free = None if free is None else free - (len(self.children) - busy)
        for slot in self.slots:
            if slot.index in self.children or (free is not None and free <= 0):
                continue
            if self.launches_left is not None and self.launches_left <= 0:
                break
            self.children[slot.index] = _spawn(self.config, slot, self.seen)
            self.started += 1
            free = None if free is None else free - 1
            self.launches_left = None if self.launches_left is None else self.launches_left - 1


def _spawn(config: Config, slot: Slot, seen: set[str]) -> _Child:
    env = {**child_environment(config.study.storage), SLOT_ENV: str(slot.index)}
    if slot.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.gpu
    command = [
        sys.executable,
        "-m",
        "automl.cli",
        "worker",
        "--study",
        config.study.name,
        "--studies-dir",
        config.study.studies_dir,
        "--max-trials",
        "1",
        "--no-progress",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    child = _Child(slot, process, worker_identity(process.pid))
    child.reader = threading.Thread(target=child.forward, args=(seen,), daemon=True)
    child.reader.start()
    logger.debug("worker %d started (pid %d, gpu %s)", slot.index, process.pid, slot.gpu)
    return child


def _stop(children: Any, wait: float = 0.0) -> None:
    children = list(children)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(c.process.poll() is None for c in children):
        time.sleep(0.2)
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    for child in children:
        try:
            child.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.process.kill()


def _progress_bar(n_trials: int | None, done: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=n_trials, initial=done, desc="trials", unit="trial", file=sys.stderr)


# --- worker ------------------------------------------------------------------------------------


def load_worker_config(name: str, studies_dir: Path, storage: str | None) -> Config:
    """The configuration of study ``name``: its saved file here, else the one stored with it.

    Raises:
        StudyError: no study folder here and no ``--storage``, or the storage has no such study.
    """
    studies_dir = Path(studies_dir).expanduser().resolve()
    paths = StudyPaths(studies_dir / name)
    if paths.config.is_file():
        # The folder may have been copied or moved since it was saved: it is the study here.
        overrides = [f"study.studies_dir={json.dumps(str(studies_dir))}"]
        overrides += [f"study.storage={json.dumps(storage)}"] if storage else []
        return load_config(paths.config, overrides)
    if storage is None:
        raise StudyError(
            f"--study {name}: no study at {paths.root} (no {paths.config.name}); pass --storage "
            "URL to join a study kept in a database, or --studies-dir where it lives."
        )
    try:
        remote = optuna.load_study(study_name=name, storage=connect_url(storage))
    except KeyError as exc:
        raise StudyError(
            f"--study {name}: the storage holds no study '{name}'; start it with `automl tune "
            "--space FILE --storage URL`."
        ) from exc
    config = config_from_study(remote, storage=storage, studies_dir=studies_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    config.save(paths.config)
    return config


def run_worker(config: Config, *, max_trials: int | None = None, progress: bool = False) -> int:
    """Run trials of the existing study until it is done (or ``max_trials``); return how many.

    Raises:
        StudyError: the study does not exist, or this machine reads different data.
    """
    paths = paths_for(config)
    splits = prepare_splits(config)
    if paths.splits.is_file():
        splits.check_matches(paths.splits)
    storage = open_storage(config)
    existing = _existing_study(config, storage)
    _check_same_data(config, existing, splits)
    check_weights(config)
    study = optuna.load_study(
        study_name=config.study.name,
        storage=storage,
        sampler=make_sampler(
            config, n_existing_trials=len(existing.get_trials(deepcopy=False)), salt=_salt()
        ),
        pruner=make_pruner(config),
    )
    n_trials = config.study.n_trials
    fail_stale_trials(study)  # dead workers' trials are not "taken"
    if trials_to_start(study.get_trials(deepcopy=False), n_trials) == 0:
        logger.info("study '%s' has all its %d trials; nothing to do", config.study.name, n_trials)
        return 0
    record_device(study, config)
    ran = 0

    def count(_study: optuna.Study, _trial: FrozenTrial) -> None:
        nonlocal ran
        ran += 1

    callbacks = [log_trial, count, *stop_at_n_trials(n_trials)]
    optimize(study, config, splits, n_trials=max_trials, callbacks=callbacks, progress=progress)
    return ran


def _existing_study(config: Config, storage: optuna.storages.BaseStorage) -> optuna.Study:
    try:
        return optuna.load_study(study_name=config.study.name, storage=storage)
    except KeyError as exc:
        raise StudyError(
            f"--study {config.study.name}: its storage holds no such study; run `automl tune "
            f"--space {paths_for(config).config}` to start it."
        ) from exc


def _check_same_data(config: Config, study: optuna.Study, splits: Splits) -> None:
    """Refuse data whose splits differ from the study's; save them here on a new machine."""
    splits_dict = splits.to_dict()
    expected = study.user_attrs.get(SPLITS_ATTR)
    if expected is not None and expected != splits_fingerprint(splits_dict):
        raise StudyError(
            f"--study {config.study.name}: this machine reads different data than the study was "
            f"created with (data.path {config.data.source.path}); mount the same data at the "
            "same path, or fix the copy."
        )
    paths = paths_for(config)
    if not paths.splits.is_file():
        atomic_write_text(paths.splits, json.dumps(splits_dict))


def _salt() -> int:
    """Differs between workers, stable for one slot of one machine."""
    who = os.environ.get(SLOT_ENV) or str(os.getpid())
    return zlib.crc32(f"{socket.gethostname()}/{who}".encode()) % 1_000_003 + 1
