"""The embedded journal file (``study.journal``): a torn line found on open, and its repair.

Optuna's ``JournalFileBackend`` appends each record as one JSON line under the journal lock. A
write that stops half-way (the disk filled, a quota ran out) leaves a **torn last line**: bytes
without an end of line. What Optuna 5.1 does then (``JournalFileBackend.read_logs``): a last
line without ``\\n`` is skipped without a word, so the study opens without that record; the next
append lands on the same line, so the record written then is lost as well (a new trial fails
with an ``AttributeError``); from the write after that on, every reader fails to open the study
with a ``JSONDecodeError``.

:func:`check_journal` looks at the end of the file before Optuna reads it, and
:func:`damage_error` explains a line Optuna could not read: both stop the command with one line
that says what is wrong and how to repair it. :func:`repair_journal` (``automl repair``) keeps a
copy of the file (``study.journal.bak-<UTC time>``), drops the torn bytes and keeps every
complete record: a record appended onto a torn line is cut out of that line and kept, because
its writer saw it succeed; a torn tail's writer saw its write fail.

This module imports no TensorFlow.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from automl.errors import StudyError
from automl.files import atomic_write
from automl.search.heartbeat import journal_lock
from automl.search.paths import journal_backup

# Every record Optuna writes starts so (``JournalStorage._write_log``).
_RECORD_START = b'{"op_code":'


@dataclass(frozen=True)
class JournalDamage:
    """What is wrong with a journal file: a torn tail, and lines that are no record."""

    torn_tail: int  # bytes after the last end of line (0: none)
    bad_lines: tuple[int, ...] = ()  # 1-based numbers of lines that are not one JSON record

    def describe(self) -> str:
        parts = []
        if self.bad_lines:
            lines = ", ".join(str(n) for n in self.bad_lines[:5])
            more = f" and {len(self.bad_lines) - 5} more" if len(self.bad_lines) > 5 else ""
            parts.append(
                f"line {lines}{more} is torn (a write stopped half-way and the next one was "
                "appended to it): Optuna cannot read the study"
            )
        if self.torn_tail:
            parts.append(
                f"the last line is torn ({self.torn_tail} bytes without an end of line: a write "
                "stopped half-way, e.g. the disk filled): Optuna would lose the next record "
                "written and then fail on every open"
            )
        return "; ".join(parts)


@dataclass(frozen=True)
class JournalRepair:
    """What :func:`repair_journal` did."""

    journal: Path
    backup: Path | None  # None: nothing was wrong, nothing written
    dropped_bytes: int = 0  # torn bytes removed in all
    dropped_lines: tuple[int, ...] = ()  # lines removed whole (no complete record in them)
    salvaged_lines: tuple[int, ...] = ()  # lines whose appended record was kept


def find_damage(journal: Path) -> JournalDamage | None:
    """Read the whole file: its torn tail and unreadable lines, or None when it is sound."""
    data = journal.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # what follows the last end of line: b"" when the file is whole
    bad = tuple(number for number, line in enumerate(lines, 1) if _record(line) is None)
    if not tail and not bad:
        return None
    return JournalDamage(len(tail), bad)


def check_journal(journal: Path, study_name: str) -> None:
    """Refuse a journal whose last line is torn, before Optuna reads (and appends to) it.

    Only the end of the file is read: Optuna skips a torn last line without a word, but it
    refuses a torn line before the last itself (:func:`damage_error` then says why).

    Raises:
        StudyError: the file does not end with one whole record and an end of line.
    """
    if not journal.is_file() or _last_line_is_whole(journal):
        return
    damage = find_damage(journal)
    if damage is not None:
        raise _error(journal, study_name, damage)


def damage_error(journal: Path, study_name: str) -> StudyError | None:
    """The error to raise when Optuna could not read ``journal``; None if it looks sound."""
    damage = find_damage(journal) if journal.is_file() else None
    return None if damage is None else _error(journal, study_name, damage)


def repair_command(journal: Path, study_name: str) -> str:
    """The command that repairs the journal of study ``study_name``."""
    return f"automl repair --study {study_name} --studies-dir {journal.parent.parent}"


def repair_journal(journal: Path) -> JournalRepair:
    """Keep a copy of ``journal``, then drop its torn bytes and keep every complete record.

    Holds the journal's lock meanwhile. The study's workers must be stopped first: a running
    one keeps reading the file at the byte offsets it knew.

    Raises:
        StudyError: there is no such file.
    """
    if not journal.is_file():
        raise StudyError(
            f"{journal}: no journal file; a study kept in a database (study.storage) has none "
            "to repair. Check --study and --studies-dir."
        )
    lock = journal_lock(str(journal))
    lock.acquire()
    try:
        data = journal.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()
        kept: list[bytes] = []
        dropped: list[int] = []
        salvaged: list[int] = []
        for number, line in enumerate(lines, 1):
            if _record(line) is not None:
                kept.append(line)
                continue
            record = _salvage(line)
            if record is None:
                dropped.append(number)
            else:
                kept.append(record)
                salvaged.append(number)
        if not tail and not dropped and not salvaged:
            return JournalRepair(journal, None)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        backup = journal_backup(journal, stamp)
        shutil.copy2(journal, backup)
        repaired = b"".join(line + b"\n" for line in kept)

        def write(temporary: Path) -> None:
            temporary.write_bytes(repaired)
            shutil.copymode(journal, temporary)

        atomic_write(journal, write)
    finally:
        lock.release()
    return JournalRepair(
        journal,
        backup,
        dropped_bytes=len(data) - len(repaired),
        dropped_lines=tuple(dropped),
        salvaged_lines=tuple(salvaged),
    )


def _error(journal: Path, study_name: str, damage: JournalDamage) -> StudyError:
    return StudyError(
        f"{journal}: every line must be one complete record, but {damage.describe()}. Free "
        f"disk space, stop the study's workers, then run `{repair_command(journal, study_name)}`"
        f" (it keeps a copy as {journal.name}.bak-<time> and drops the torn bytes)."
    )


def _last_line_is_whole(journal: Path, window: int = 1 << 16) -> bool:
    """True when the file is empty or ends with one whole record and an end of line."""
    with journal.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return True
        while True:
            start = max(size - window, 0)
            file.seek(start)
            end = file.read()
            if not end.endswith(b"\n"):
                return False
            previous = end.rfind(b"\n", 0, len(end) - 1)
            if previous != -1 or start == 0:  # the whole last line is in the window
                return _record(end[previous + 1 : -1]) is not None
            window *= 4  # a last line longer than the window: look further back


def _record(line: bytes) -> dict[str, object] | None:
    """The record a line holds, or None when it is not one whole JSON record."""
    try:
        record = json.loads(line)
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return record if isinstance(record, dict) and "op_code" in record else None


def _salvage(line: bytes) -> bytes | None:
    """The whole record appended onto a torn one within ``line``, or None."""
    start = line.find(_RECORD_START, 1)
    while start != -1:
        if _record(line[start:]) is not None:
            return line[start:]
        start = line.find(_RECORD_START, start + 1)
    return None
