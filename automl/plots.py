"""Confusion-matrix tables and pictures, shared by the trial artifacts and the ensemble.

Plots are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, so nothing here
touches pyplot's global backend or figure list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from automl.files import atomic_write


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
    atomic_write(Path(csv_path), lambda temporary: table.to_csv(temporary))

    figure = _confusion_figure(matrix, names, title)
    atomic_write(
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
