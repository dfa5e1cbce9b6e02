"""The input-error contract between ``automl`` and a supervisor, in both directions.

A real child process (``python -m automl.cli``, as the supervisor of ``tune --workers`` starts
its workers) stops on bad input with :data:`EXIT_INPUT_ERROR` and one :func:`error_line`, and
:func:`input_error_of` recognises exactly that: not a crash with a traceback, not Click's own
usage error (which also exits 2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from automl.errors import (
    ERROR_PREFIX,
    EXIT_INPUT_ERROR,
    ConfigError,
    error_line,
    input_error_of,
)


def _automl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "automl.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_child_refusing_its_input_exits_with_the_constant_and_is_recognised(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing.yaml"
    child = _automl("tune", "--space", str(missing), "--no-progress")
    assert child.returncode == EXIT_INPUT_ERROR
    assert child.stdout == ""
    lines = child.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX)
    message = input_error_of(child.returncode, lines)
    assert message is not None
    assert message.startswith(f"{missing}: no such file; pass --space")
    assert error_line(message) == lines[0]  # the line round-trips through the contract


def test_a_crash_with_a_traceback_is_not_an_input_error(tmp_path: Path) -> None:
    # --debug lets the same ConfigError escape as a traceback: exit 1, a crash to the supervisor.
    child = _automl("--debug", "tune", "--space", str(tmp_path / "missing.yaml"))
    lines = child.stderr.splitlines()
    assert child.returncode == 1
    assert "Traceback (most recent call last):" in lines
    assert lines[-1].startswith("automl.errors.ConfigError: ")
    assert input_error_of(child.returncode, lines) is None


def test_a_usage_error_exits_2_but_is_not_automls_input_error() -> None:
    child = _automl("worker", "--no-such-option")
    assert child.returncode == 2  # Click's status for usage errors, the same number
    assert "No such option: --no-such-option" in child.stderr
    assert input_error_of(child.returncode, child.stderr.splitlines()) is None


def test_only_the_exit_status_and_the_last_error_line_count() -> None:
    lines = [
        "reading 90 images",
        error_line("first"),
        error_line(ConfigError("study.n_trials must be an integer, got 'many' (str).")),
        "  ",
    ]
    assert input_error_of(EXIT_INPUT_ERROR, lines) == (
        "study.n_trials must be an integer, got 'many' (str)."
    )
    assert input_error_of(1, lines) is None  # the same words after a crash
    assert input_error_of(0, lines) is None
    assert input_error_of(None, lines) is None  # still running
    assert input_error_of(-9, lines) is None  # killed
    assert input_error_of(EXIT_INPUT_ERROR, ["Error: Missing option '--study'."]) is None
    # The supervisor reads lines with trailing space stripped: an empty message still counts.
    assert input_error_of(EXIT_INPUT_ERROR, [error_line("").rstrip()]) == ""
