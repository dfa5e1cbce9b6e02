"""What the user reads: a quiet terminal, and one way to show a value in notes, captions, tables.

TensorFlow's C++ start-up lines never reach the user (``--debug`` shows them).

Importing TensorFlow prints absl's preamble (``WARNING: All log messages before
absl::InitializeLog() ...``) and info lines (``I0000 00:00:... oneDNN custom operations are
on ...``) straight to file descriptor 2, whatever ``TF_CPP_MIN_LOG_LEVEL`` says, so no Python
logging setting can hide them. :func:`filter_stderr` puts a pipe in front of descriptor 2 for the
life of the process; a thread copies every line to the real stderr except those.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from typing import Any

# absl's info lines and its preamble, printed by every TensorFlow start.
TF_NOISE = re.compile(r"^(I\d{4} \d\d:\d\d|WARNING: All log messages before absl)")


def filter_stderr() -> None:
    """Drop TensorFlow's start-up lines from this process's stderr (file descriptor 2)."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no usable descriptor 2 (an embedded interpreter): leave it alone
        return

    def copy() -> None:
        with os.fdopen(read_end, "rb") as pipe, os.fdopen(real, "wb", buffering=0) as out:
            for line in pipe:
                if not TF_NOISE.match(line.decode("utf-8", "replace")):
                    out.write(line)

    thread = threading.Thread(target=copy, name="automl-stderr", daemon=True)
    thread.start()

    def close() -> None:
        # Everything written so far reaches the terminal before the process ends.
        try:
            sys.stderr.flush()
            os.dup2(real, 2)  # closes the pipe's last write end, so the thread sees its end
        except OSError:
            return
        thread.join(timeout=5)

    atexit.register(close)


def show_value(value: Any, missing: str = "–") -> str:
    """A value as notes, picture captions and report tables print it: floats to 4 digits."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
