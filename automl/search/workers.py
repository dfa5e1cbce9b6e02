"""Scale-out: a supervisor that keeps worker processes busy, and the worker they run.

**Supervisor** (``automl tune --workers N`` or ``--gpus 0,1,2,3``). Once ``tune`` has checked
everything and created the study, :func:`supervise` keeps one child process per slot alive::

    python -m automl.cli worker --study NAME --studies-dir DIR --max-trials 1 --no-progress

Each child loads the saved configuration and splits (the decoded images are a memory-mapped
cache, so this is cheap), runs exactly one trial through ``objective.Objective`` and exits, so all
of its GPU and host memory returns after every trial. A slot is refilled as soon as its child
exits: workers pull trials asynchronously, with no batch barrier and no GPU idle while another
trial finishes. A slot of ``--gpus`` gets ``CUDA_VISIBLE_DEVICES=<id>``: its worker sees only
that GPU, and sets up its device (memory growth) before it builds a model (``session.py``);
``--gpus 0,0,1,1`` runs two per GPU. The supervisor itself never touches a GPU: it checks the
pretrained weights in a process of its own that sees none (:func:`check_weights_apart`).
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
a run of abnormal exits without progress stops it too; either way once the children still running
have finished their trials. A fault of the supervisor's own step (the storage unreachable for a
moment, a full disk) is logged in one line naming the step and retried after a pause; only
Ctrl-C and SIGTERM stop running children.

**Worker** (``automl worker --study NAME``): joins an existing study and runs its trials until
the study is done, or ``--max-trials``. Independent workers check the stop rule and then ask for
a trial in two steps, so together they may run up to ``workers - 1`` trials past ``n_trials``
(``session.py``, "The bound"). On a machine without the study folder, ``--storage URL``
fetches the resolved configuration the study stored (``study.publish_config``) and writes it
locally; the data must be readable at the same paths (or a shared mount), and the splits must
hash to the fingerprint the study stored.

Each worker seeds its sampler with a salt of its own (host and slot, or pid), so two workers
that start together do not draw the same parameters. This module imports no TensorFlow; the
worker imports it when it starts training.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.config.schema import Config, load_config
from automl.config.storage_url import child_environment
from automl.console import TF_NOISE
from automl.data.splits import Splits
from automl.errors import (
    ERROR_PREFIX,
    EXIT_INPUT_ERROR,
    AutoMLError,
    ConfigError,
    StudyError,
    error_line,
    input_error_of,
)
from automl.files import atomic_write_text
from automl.search.attrs import SPLITS_ATTR, WORKER_ATTR
from automl.search.heartbeat import fail_stale_trials, worker_identity
from automl.search.paths import StudyPaths, paths_for
from automl.search.session import (
    check_weights,
    count_complete_or_pruned,
    log_trial,
    optimize,
    prepare_splits,
    record_device,
    stop_at_n_trials,
    trials_missing,
    trials_to_start,
    weights_to_check,
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
# Pauses before a failed supervisor step runs again (the last one repeats), and how many faults
# in a row with no child running end the run.
_FAULT_PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)
_MAX_FAULTS = 10


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

    A fault of the supervisor itself (the storage unreachable for a moment, a full disk) is
    logged and its step retried while the children go on; only Ctrl-C and SIGTERM stop them.

    Raises:
        StudyError: a worker stopped with an input or environment error, or workers keep dying
            without the study making progress (raised once the running workers have finished
            their trials), or a step keeps failing with no worker left running.
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
        self.last_done = count_complete_or_pruned(trials)
        # Like study.optimize(n_trials=remaining): at most this many children run a trial.
        self.launches_left = trials_missing(trials, self.n_trials)
        self.children: dict[int, _Child] = {}
        self.seen: set[str] = set()  # log lines already relayed once
        self.started = 0
        self.abnormal_in_a_row = 0
        self.last_sweep = 0.0
        self.last_words = ""  # the last log line of the last worker that died
        self.doing = "starting"  # the part of a step that runs now (named when it fails)
        self.bar = _progress_bar(self.n_trials, self.last_done) if progress else None

    def run(self) -> int:
        """Run until the study is done; only Ctrl-C or SIGTERM stop running children."""
        try:
            with _sigterm_as_interrupt():
                self._loop()
        except _Terminated:
            # SIGTERM reached this process only: the children are stopped now. Their trials
            # are failed by the heartbeat and retried with their finished folds.
            _stop(self.children.values())
            raise
        except KeyboardInterrupt:
            _stop(self.children.values(), wait=10.0)  # they got Ctrl+C too and close their trial
            raise
        finally:
            if self.bar is not None:
                self.bar.close()
        return self.started

    def _loop(self) -> None:
        """Steps until done. A fault of a step is logged and the step retried after a pause,
        the children running on; a decision to stop (``StudyError``) lets running children
        finish their trials first, then raises."""
        stopping: StudyError | None = None
        faults = 0
        while True:
            try:
                done = self._step() if stopping is None else self._wait_for_children()
            except StudyError as error:
                if stopping is not None:  # another worker refused its input as well
                    logger.warning("%s", error)
                    continue
                stopping = error
                if self.children:
                    logger.warning(
                        "%s; stopping once the %d running worker(s) finish their trials "
                        "(Ctrl-C stops them now)",
                        error,
                        len(self.children),
                    )
                continue
            except Exception as error:  # noqa: BLE001 - a fault of the supervisor: say which
                faults += 1
                self._after_fault(error, faults)
                continue
            faults = 0
            if done:
                break
            time.sleep(0.5)
        if stopping is not None:
            raise stopping

    def _after_fault(self, error: Exception, faults: int) -> None:
        """Log a failed step in one line and pause; give up once no child is left to wait on."""
        what = f"{self.doing} failed ({type(error).__name__}: {str(error).splitlines()[0]})"
        alive = sum(1 for c in self.children.values() if c.process.poll() is None)
        if not alive and faults >= _MAX_FAULTS:
            raise StudyError(
                f"supervisor: {what}, {faults} times in a row with no worker running; fix the "
                "cause (storage reachable, disk space) and run the same command to resume."
            ) from error
        pause = _FAULT_PAUSES[min(faults, len(_FAULT_PAUSES)) - 1]
        logger.warning(
            "supervisor: %s; %d running worker(s) go on, trying again in %.0f s",
            what,
            alive,
            pause,
        )
        time.sleep(pause)

    def _step(self) -> bool:
        """One round: reap exited children, sweep, note progress, refill slots; True: done.

        ``self.doing`` names the part that runs, for the log line of a fault.
        """
        self.doing = "reaping exited workers"
        self._reap()
        if time.monotonic() - self.last_sweep > _SWEEP_SECONDS:
            self.doing = "the stale-trial sweep"
            fail_stale_trials(self.study)
            self.last_sweep = time.monotonic()
        self.doing = "reading the study's trials"
        trials = self.study.get_trials(deepcopy=False)
        self.doing = "counting progress"
        self._note_progress(trials)
        if self._no_more_launches(trials):
            return not self.children  # running trials finish first
        self.doing = "starting workers"
        self._fill_slots(trials)
        return False

    def _wait_for_children(self) -> bool:
        """After a decision to stop: reap children as they finish; True once none is left."""
        self.doing = "waiting for running workers"
        self._reap()
        return not self.children

    def _reap(self) -> None:
        for index, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            if child.reader is not None:
                child.reader.join(timeout=5)  # its last lines, the error among them
            if code == 0:
                self._exited(child)  # a storage fault here: the child is reaped next round
                del self.children[index]
            else:
                del self.children[index]
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
        done = count_complete_or_pruned(trials)
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


class _Terminated(KeyboardInterrupt):
    """SIGTERM reached the supervisor: it stops its children, as on Ctrl-C."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while the supervisor runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(_signum: int, _frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worker_command(config: Config) -> list[str]:
    """The command line of one worker process (one trial, then it exits)."""
    return [
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


def _spawn(config: Config, slot: Slot, seen: set[str]) -> _Child:
    env = {**child_environment(config.study.storage), SLOT_ENV: str(slot.index)}
    if slot.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.gpu
    process = subprocess.Popen(
        _worker_command(config),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
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


# --- the supervisor's weight check -----------------------------------------------------------

#: The environment of the weight check's process: no GPU visible (CUDA reads it at start-up).
NO_GPU_ENV = {"CUDA_VISIBLE_DEVICES": ""}


def check_weights_apart(config: Config) -> None:
    """``session.check_weights`` in a process of its own that sees no GPU.

    The supervisor of ``--workers``/``--gpus`` never imports TensorFlow: building a backbone
    there would initialise every visible GPU and, by TensorFlow's default, hold most of each
    one's memory for the whole run, which its workers then lack. The check runs in a child
    started with ``CUDA_VISIBLE_DEVICES=""`` (set before the child imports anything); the
    weights it fetches land in Keras' cache, where the workers find them.

    Raises:
        AutoMLError: the weights cannot be had (the child's own one-line message).
        StudyError: the check's process crashed.
    """
    checks = weights_to_check(config)
    if not checks:
        return
    process = subprocess.Popen(
        [sys.executable, "-m", "automl.search.workers", _CHECK_WEIGHTS],
        env={"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ, **NO_GPU_ENV},  # quiet, as the CLI
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write(json.dumps(checks))
    process.stdin.close()
    lines: list[str] = []
    for line in process.stderr:  # Keras' download progress, as it comes
        line = line.rstrip()
        if line and not TF_NOISE.match(line):
            lines.append(line)
            if not line.startswith(ERROR_PREFIX.rstrip()):
                logger.info("%s", line)
    code = process.wait()
    if code == 0:
        return
    message = input_error_of(code, lines)
    if message is not None:
        raise AutoMLError(message)
    raise StudyError(
        f"checking the pretrained weights in a process of its own failed (exit status {code}; "
        f"last line: {lines[-1] if lines else 'none'}); run `automl --debug tune` without "
        "--workers/--gpus to see why."
    )


_CHECK_WEIGHTS = "check-weights"


def _check_weights_main() -> int:
    """The weight check's process: ``(backbone, weights, image_size)`` triples on stdin."""
    from automl.nn.models import ensure_weights  # the only import of Keras, after the env

    try:
        for name, weights, image_size in json.loads(sys.stdin.read()):
            ensure_weights(name, weights, int(image_size))
    except AutoMLError as exc:
        print(error_line(exc), file=sys.stderr)
        return EXIT_INPUT_ERROR
    return 0


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


if __name__ == "__main__" and sys.argv[1:] == [_CHECK_WEIGHTS]:
    sys.exit(_check_weights_main())
