"""Write predictions, submissions and reports to files.

Every writer is atomic: the content goes to a hidden temporary file in the destination folder
and is then moved over the destination with :func:`os.replace` (an atomic rename on POSIX and
Windows). A crash or an error half-way therefore leaves either the old file or the new one,
never a truncated CSV, JSON or PNG, and no temporary file is left behind. Missing parent folders
are created.

Plots are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, so nothing here
touches pyplot's global backend or figure list.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from automl.errors import ConfigError
from automl.voting import Vote

logger = logging.getLogger(__name__)

PROBABILITY_PREFIX = "prob_"
"""Prefix of the per-class probability columns in :func:`predictions_frame`."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text to ``path`` atomically.

    Args:
        path: destination file; its folder is created if missing.
        text: the complete content.
    """
    _atomic_write(Path(path), lambda temporary: temporary.write_text(text, encoding="utf-8"))


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


def predictions_frame(
    ids: Sequence[Any] | np.ndarray, class_names: Sequence[str], vote: Vote
) -> pd.DataFrame:
    """Tabulate an ensemble's predictions, one row per sample.

    Args:
        ids: sample identifiers, in the order of ``vote``.
        class_names: names for class indices ``0..C-1``.
        vote: the ensemble's decision.

    Returns:
        Columns ``id``, ``label`` (the winning class name), ``prob_<class name>`` for every class
        (float, the mean over the models), ``votes`` and ``n_models`` (ints).

    Raises:
        ValueError: ``ids``, ``class_names`` and ``vote`` do not agree in size, or class names
            repeat.
    """
    names = _check_vote(ids, class_names, vote)
    frame = pd.DataFrame({"id": list(ids), "label": np.asarray(names, dtype=object)[vote.labels]})
    for index, name in enumerate(names):
        frame[f"{PROBABILITY_PREFIX}{name}"] = vote.probabilities[:, index].astype(np.float64)
    frame["votes"] = np.asarray(vote.votes, dtype=np.int64)
    frame["n_models"] = np.full(len(frame), int(vote.n_models), dtype=np.int64)
    return frame


def kaggle_frame(
    ids: Sequence[Any] | np.ndarray,
    class_names: Sequence[str],
    vote: Vote,
    positive_class: str | None = None,
) -> pd.DataFrame:
    """Build a Kaggle-style submission with columns ``id`` and ``label``.

    Binary tasks are usually scored by ROC AUC, so ``label`` is then the mean probability of the
    positive class; multi-class tasks get the predicted class name.

    Args:
        ids: sample identifiers, in the order of ``vote``.
        class_names: names for class indices ``0..C-1``.
        vote: the ensemble's decision.
        positive_class: binary tasks: the class whose probability is written; defaults to
            ``class_names[1]``. Ignored (with a warning) for multi-class tasks.

    Returns:
        The two-column frame.

    Raises:
        ConfigError: ``positive_class`` is not one of ``class_names``.
        ValueError: ``ids``, ``class_names`` and ``vote`` do not agree in size.
    """
    names = _check_vote(ids, class_names, vote)
    if positive_class is not None and positive_class not in names:
        raise ConfigError(
            f"positive_class must be one of the class names {', '.join(map(repr, names))}, "
            f"got {positive_class!r}; pick one of those."
        )
    if len(names) == 2:
        positive_index = 1 if positive_class is None else names.index(positive_class)
        label: Any = vote.probabilities[:, positive_index].astype(np.float64)
    else:
        if positive_class is not None:
            logger.warning(
                "positive_class=%r ignored: the task has %d classes, so the submission holds "
                "class names, not probabilities.",
                positive_class,
                len(names),
            )
        label = np.asarray(names, dtype=object)[vote.labels]
    return pd.DataFrame({"id": list(ids), "label": label})


def write_frame_csv(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` to CSV without its index, atomically.

    Args:
        path: destination file.
        frame: the table.
    """
    _atomic_write(Path(path), lambda temporary: frame.to_csv(temporary, index=False))


def write_confusion_matrix(
    csv_path: Path,
    png_path: Path,
    confusion: np.ndarray,
    class_names: Sequence[str],
    title: str,
) -> None:
    """Save a confusion matrix as a CSV table and a PNG picture, each atomically.

    Args:
        csv_path: CSV destination; the header and first column hold the class names, rows are
            true classes and columns predicted classes (the corner cell reads
            ``true\\predicted``).
        png_path: PNG destination.
        confusion: square count matrix, shape ``(C, C)``.
        class_names: the ``C`` class names, in index order.
        title: the picture's title.

    Raises:
        ValueError: ``confusion`` is not ``C`` by ``C``.
    """
    matrix = np.asarray(confusion)
    names = [str(name) for name in class_names]
    if matrix.shape != (len(names), len(names)):
        raise ValueError(
            f"confusion must be {len(names)}x{len(names)} to match class_names, "
            f"got shape {matrix.shape}."
        )
    table = pd.DataFrame(matrix, index=pd.Index(names, name="true\\predicted"), columns=names)
    _atomic_write(Path(csv_path), lambda temporary: table.to_csv(temporary))

    figure = _confusion_figure(matrix, names, title)
    _atomic_write(
        Path(png_path), lambda temporary: figure.savefig(temporary, format="png", dpi=120)
    )


def _confusion_figure(matrix: np.ndarray, names: list[str], title: str) -> Figure:
    # Grow with the class count so that labels and cell counts stay legible.
    edge = max(5.0, 0.6 * len(names) + 2.5)
    figure = Figure(figsize=(edge + 1.0, edge), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    values_format = "d" if np.issubdtype(matrix.dtype, np.integer) else ".2g"
    display = ConfusionMatrixDisplay(matrix, display_labels=names)
    display.plot(ax=axes, cmap="Blues", values_format=values_format, colorbar=True)
    for label in axes.get_xticklabels():
        label.set_rotation(45)
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    axes.set_title(title)
    return figure


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary sibling of ``path``, then move it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name per call (not mkstemp) so that the writer creates the file itself and the
    # result gets the usual permissions from the umask rather than mkstemp's 0600.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _check_vote(
    ids: Sequence[Any] | np.ndarray, class_names: Sequence[str], vote: Vote
) -> list[str]:
    names = [str(name) for name in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names}.")
    n_samples, n_classes = vote.probabilities.shape
    if n_classes != len(names):
        raise ValueError(
            f"the vote has {n_classes} classes but class_names has {len(names)} entries; "
            "pass one name per class."
        )
    if len(ids) != n_samples:
        raise ValueError(
            f"ids has {len(ids)} entries but the vote covers {n_samples} samples; "
            "they must describe the same samples in the same order."
        )
    return names


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
