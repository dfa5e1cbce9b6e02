"""The ensemble folder as one set: written aside, swapped into place, one writer at a time.

``automl ensemble`` writes the hold-out confusion matrix, the hold-out predictions and
``ensemble.json``, which belong together. They are written into a hidden staging folder beside
``<study>/ensemble/`` (:func:`staged_folder`) and swapped in by two renames: the old folder
becomes ``.ensemble.previous``, the staging folder becomes ``ensemble``, and only then is the
previous one removed. A failure or a kill while writing leaves the previous ensemble as it was
and removes (or, after a kill, leaves hidden) the staging folder; a kill between the two renames
leaves the previous set under ``.ensemble.previous``, which readers fall back to
(:func:`readable_folder`) and the next ``ensemble`` puts back before it starts
(:func:`recover`).

One ``ensemble`` per study at a time: :func:`ensemble_lock` takes an exclusive ``flock`` on
``<study>/.ensemble.lock`` (released by the kernel when the process dies, so a killed run never
leaves a stale lock) and refuses a second run with one line.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from automl.errors import StudyError
from automl.search.paths import ENSEMBLE_LOCK, previous_folder, staging_folder, staging_glob

logger = logging.getLogger(__name__)


def readable_folder(target: Path) -> Path:
    """``target``, or the previous set when a kill fell between the swap's two renames."""
    previous = previous_folder(target)
    if not target.is_dir() and previous.is_dir():
        return previous
    return target


@contextmanager
def ensemble_lock(study_root: Path, study_name: str) -> Iterator[None]:
    """Hold the study's ensemble lock; refuse at once if another process holds it.

    Raises:
        StudyError: another ``automl ensemble`` of this study is running.
    """
    study_root.mkdir(parents=True, exist_ok=True)
    path = study_root / ENSEMBLE_LOCK
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise StudyError(
                f"study '{study_name}': expected no other `automl ensemble` running on it, got "
                f"one holding {path} ({holder}); wait for it to finish, then run this again."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def recover(target: Path) -> None:
    """Under the lock: put back a previous set left between two renames; drop dead staging.

    Staging folders can only belong to killed runs while the lock is held.
    """
    previous = previous_folder(target)
    if previous.is_dir():
        if target.is_dir():
            shutil.rmtree(previous)  # the swap finished; only the clean-up was cut short
        else:
            logger.warning("restoring the previous ensemble from %s (a run was killed)", previous)
            os.rename(previous, target)
    for staging in target.parent.glob(staging_glob(target)):
        logger.info("removing %s, left by a killed `automl ensemble`", staging)
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success swap it in as ``target``.

    On an exception the staging folder is removed and ``target`` is left untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(target, f"{os.getpid()}.{uuid.uuid4().hex}")
    staging.mkdir()  # the umask's permissions, as the folder it replaces had
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = previous_folder(target)
    if previous.exists():
        shutil.rmtree(previous)
    if target.exists():
        os.rename(target, previous)
    os.rename(staging, target)
    shutil.rmtree(previous, ignore_errors=True)
