"""The exceptions automl raises, and how a process reports one to the process that started it.

User-input problems (configuration, search space, data) subclass ``ValueError`` as well as
``AutoMLError`` so that library users can catch either. Every message follows the house form:
where -> what was expected -> what was found -> how to fix it.

The contract between the command line and a supervisor of worker processes: an ``AutoMLError``
(bad input or environment) ends ``automl`` with :data:`EXIT_INPUT_ERROR` after one line on stderr
that starts with :data:`ERROR_PREFIX` (:func:`error_line`). A supervisor tells such a child from
a crash with :func:`input_error_of`: a crash (a traceback, a kill) is worth a retry, bad input
is not.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Exit status of a command stopped by an ``AutoMLError``. Click's usage errors exit 2 as well,
#: so the status alone does not say "automl refused the input"; the stderr line does.
EXIT_INPUT_ERROR = 2
#: What the one stderr line of an ``AutoMLError`` starts with.
ERROR_PREFIX = "error: "


class AutoMLError(Exception):
    """Root of every error automl raises on purpose."""


class ConfigError(AutoMLError, ValueError):
    """The YAML configuration or a command-line override is invalid."""


class SpaceError(ConfigError):
    """The ``space:`` section (a distribution or a fixed value in it) is invalid."""


class DataError(AutoMLError, ValueError):
    """The data cannot be read or does not fit the configuration (e.g. too few per class)."""


class DownloadError(DataError):
    """A dataset download failed or its checksum did not match."""


class StudyError(AutoMLError, ValueError):
    """A study is missing, incompatible with the configuration, or has no usable trials."""


def error_line(message: object) -> str:
    """The stderr line for an input or environment error: ``error: <message>``."""
    return f"{ERROR_PREFIX}{message}"


def input_error_of(exit_status: int | None, stderr_lines: Iterable[str]) -> str | None:
    """The message of the input error a child process stopped with, or None for anything else.

    Args:
        exit_status: the child's exit status (None while it runs).
        stderr_lines: its last stderr lines, oldest first; the last ``error:`` line counts.

    Returns:
        The message without the prefix when the child exited with :data:`EXIT_INPUT_ERROR`
        after an :func:`error_line`; None for a crash, a kill, a usage error or success.
    """
    if exit_status != EXIT_INPUT_ERROR:
        return None
    prefix = ERROR_PREFIX.rstrip()  # a line read back may have lost its trailing space
    errors = [line for line in stderr_lines if line.startswith(prefix)]
    return errors[-1].removeprefix(prefix).strip() if errors else None
