"""Atomic file writers: every file automl writes goes through here.

The content goes to a hidden temporary file in the destination folder and is then moved over the
destination with :func:`os.replace` (an atomic rename on POSIX and Windows). A crash or an error
half-way therefore leaves either the old file or the new one, never a truncated CSV, JSON or PNG,
and no temporary file is left behind. Missing parent folders are created.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def atomic_write_text(path: Path, text: str, *, private: bool = False) -> None:
    """Write UTF-8 text to ``path`` atomically.

    Args:
        path: destination file; its folder is created if missing.
        text: the complete content.
        private: readable and writable by its owner only (0o600), from the moment the file is
            created, whatever the umask: for files that may hold anything sensitive.
    """

    def write(temporary: Path) -> None:
        if not private:
            temporary.write_text(text, encoding="utf-8")
            return
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)

    atomic_write(Path(path), write)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically.

    NumPy scalars and arrays become Python numbers and lists, paths become strings, dataclasses
    become dictionaries (through their ``to_dict`` when they have one), and NaN or infinite
    floats become ``null`` because JSON has no such values.

    Args:
        path: destination file.
        data: the object to write.

    Raises:
        TypeError: ``data`` holds a value with no JSON form (the message names its type).
    """
    text = json.dumps(_jsonable(data), indent=2, allow_nan=False, ensure_ascii=False)
    atomic_write_text(path, text + "\n")


def write_frame_csv(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` to CSV without its index, atomically.

    Args:
        path: destination file.
        frame: the table.
    """
    atomic_write(Path(path), lambda temporary: frame.to_csv(temporary, index=False))


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary sibling of ``path``, then move it over ``path``.

    The temporary name is hidden and keeps ``path``'s suffix (``.fold_0.keras.<pid>.<uid>.tmp
    .keras``), so writers that choose the format by suffix (Keras, NumPy's ``savez``) work on it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name per call (not mkstemp) so that the writer creates the file itself and the
    # result gets the usual permissions from the umask rather than mkstemp's 0600.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    raise TypeError(f"cannot write a {type(value).__name__} to JSON: {value!r:.80}")
