"""What the user reads: a quiet terminal, and one way to show a value in notes, captions, tables.

TensorFlow's C++ start-up lines never reach the user (``--debug`` shows them).

Importing TensorFlow prints absl's preamble (``WARNING: All log messages before
absl::InitializeLog() ...``) and info lines (``I0000 00:00:... oneDNN custom operations are
on ...``) straight to file descriptor 2, whatever ``TF_CPP_MIN_LOG_LEVEL`` says, so no Python
logging setting can hide them; TensorFlow 2.21's ``tf.data`` adds one ~1,000-character
``E0000 ... NodeDef mentions attribute use_unbounded_threadpool ...`` line the first time a
parallel map runs (harmless: an attribute its own C++ ops do not know). :func:`filter_stderr`
puts a pipe in front of descriptor 2 for the life of the process, read by a small filter
process that passes every other line on as it comes. The filter outlives the process it
serves, so the last lines of one that dies (a fatal TensorFlow abort, a segfault, the OOM
killer) still reach the terminal, or the supervisor that reads a worker's stderr.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys
import threading
from typing import Any

# absl's info lines and its preamble, printed by every TensorFlow start, and tf.data's notice
# about an attribute its C++ ops do not know (TensorFlow 2.21).
TF_NOISE = re.compile(
    r"^(I\d{4} \d\d:\d\d|WARNING: All log messages before absl"
    r"|E\d{4} \d\d:\d\d:[\d.]+ +\d+ node_def_util\.cc:\d+\] NodeDef mentions attribute "
    r"use_unbounded_threadpool )"
)

# The filter process: Ctrl-C is meant for the process it serves, so it reads on to the end of
# the pipe (the end of that process) and writes each line at once.
_FILTER = """
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
noise = re.compile(sys.argv[1])
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if not noise.match(line.decode("utf-8", "replace")):
        out.write(line)
        out.flush()
"""


def filter_stderr() -> None:
    """Drop TensorFlow's start-up lines from this process's stderr (file descriptor 2)."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:  # no usable descriptor 2 (an embedded interpreter): leave it alone
        return
    try:
        # -I -S: no site packages or environment to read; it starts in a few milliseconds.
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _FILTER, TF_NOISE.pattern],
            stdin=read_end,
            stdout=real,
        )
    except OSError:  # no interpreter to start (a frozen application): filter in a thread
        _filter_in_thread(read_end, real)
        wait: Any = None
    else:
        os.close(read_end)
        wait = process.wait
    os.dup2(write_end, 2)
    os.close(write_end)

    def close() -> None:
        # Everything written so far reaches the terminal before the process ends.
        try:
            sys.stderr.flush()
            os.dup2(real, 2)  # closes this process's write end: the filter sees its end
        except OSError:
            return
        if wait is not None:
            try:
                wait(timeout=5)
            except subprocess.TimeoutExpired:  # a child of ours still holds the pipe open
                pass

    atexit.register(close)


def _filter_in_thread(read_end: int, real: int) -> None:
    """The fallback: the same filter in a thread (lines of a process that dies can be lost)."""

    def copy() -> None:
        with os.fdopen(read_end, "rb") as pipe, os.fdopen(os.dup(real), "wb", buffering=0) as out:
            for line in pipe:
                if not TF_NOISE.match(line.decode("utf-8", "replace")):
                    out.write(line)

    threading.Thread(target=copy, name="automl-stderr", daemon=True).start()


def show_value(value: Any, missing: str = "–") -> str:
    """A value as notes, picture captions and report tables print it: floats to 4 digits."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
