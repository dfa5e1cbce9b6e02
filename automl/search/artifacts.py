"""What a trial and an ensemble leave for optuna-dashboard: pictures, notes, peak memory.

**Pictures.** Every completed trial writes three PNGs into its folder
(``<study>/trials/<number>/``) and uploads them as Optuna artifacts to a
``FileSystemArtifactStore`` in ``<study>/artifacts/``, which ``automl dashboard`` serves:

- ``learning_curves.png``: training and validation loss and metric per fold and epoch, from the
  history the trial recorded (the training side is Keras' accuracy, the validation side the
  study's metric);
- ``oof_confusion_matrix.png`` (and ``.csv``): the out-of-fold predictions of all folds against
  the true labels, so its counts add up to the tuning set;
- ``augmentation_preview.png``: a few training images of fold 0 and what the trial's augmentation
  (``pipeline.build_augmenter``) makes of them; drawn once per distinct augmentation setting
  into ``<study>/previews/`` and copied for every trial with that setting.

Pictures are a convenience: a failure to draw or upload one is logged and never fails the trial.

**Notes.** Each trial gets a short Markdown note (``optuna_dashboard.save_note``): value, folds,
epochs, resources, parameters, and why it was pruned or failed. ``ensemble`` writes a study note
with the members, the vote and the hold-out scores next to the best single trial.

**Peak memory.** :class:`PeakMemory` measures a trial's peak resident memory. On Linux the
process's high-water mark (``VmHWM``) is reset at the start of the trial through
``/proc/self/clear_refs``, so ``peak_rss_mb`` is the peak *during the trial*; elsewhere it is the
process's lifetime peak (``resource.getrusage``) and ``peak_rss_delta_mb`` only counts growth of
that mark. With a GPU, TensorFlow's ``get_memory_info(...)["peak"]`` (reset at the start) gives
``peak_gpu_memory_mb``.

This module imports no TensorFlow at import time (``ensemble`` uses it for the study note).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial
from sklearn.metrics import confusion_matrix

from automl.plots import write_confusion_matrix
from automl.search.attrs import MISSING_ARTIFACTS as MISSING_ARTIFACTS_ATTR
from automl.search.attrs import MISSING_NOTE as MISSING_NOTE_ATTR

logger = logging.getLogger(__name__)

# User attributes naming what a trial (or, after `ensemble`, the study) lacks: a picture or note
# that could not be saved is no reason to fail a trial, but it must not go missing silently.

ARTIFACTS_DIR = "artifacts"
PREVIEWS_DIR = "previews"  # one augmentation preview per distinct setting, copied per trial
LEARNING_CURVES = "learning_curves.png"
OOF_CONFUSION_CSV = "oof_confusion_matrix.csv"
OOF_CONFUSION_PNG = "oof_confusion_matrix.png"
AUGMENTATION_PREVIEW = "augmentation_preview.png"
TRIAL_PICTURES = (LEARNING_CURVES, OOF_CONFUSION_PNG, AUGMENTATION_PREVIEW)

_PREVIEW_IMAGES = 4
_PREVIEW_VARIANTS = 3
_MB = 1024 * 1024


def artifact_store(study_dir: Path) -> FileSystemArtifactStore:
    """The study's artifact store, ``<study_dir>/artifacts/`` (created if missing)."""
    folder = Path(study_dir) / ARTIFACTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder)


# --- peak memory -------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of one trial; create it when the trial starts, read it when it ends."""

    def __init__(self) -> None:
        self._reset = _reset_peak_rss()
        self._start_rss = _status_mb("VmRSS")
        self._start_peak = _peak_rss_mb()
        self._gpus = _reset_gpu_peaks()

    def user_attrs(self) -> dict[str, float]:
        """``peak_rss_mb``, ``peak_rss_delta_mb`` and, with a GPU, ``peak_gpu_memory_mb``."""
        attrs: dict[str, float] = {}
        peak = _peak_rss_mb()
        if peak is not None:
            base = self._start_rss if self._reset else self._start_peak
            attrs["peak_rss_mb"] = round(peak, 1)
            if base is not None:
                attrs["peak_rss_delta_mb"] = round(max(peak - base, 0.0), 1)
        gpu = _gpu_peak_mb(self._gpus)
        if gpu is not None:
            attrs["peak_gpu_memory_mb"] = round(gpu, 1)
        return attrs


def _reset_peak_rss() -> bool:
    # Linux >= 4.0: writing 5 resets the VmHWM high-water mark of this process.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_mb("VmHWM") is not None


def _status_mb(field: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return None


def _peak_rss_mb() -> float | None:
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / _MB if sys.platform == "darwin" else maxrss / 1024  # bytes vs kB


def _reset_gpu_peaks() -> list[str]:
    if "tensorflow" not in sys.modules:  # only trials (which import TensorFlow) measure GPUs
        return []
    import tensorflow as tf

    names = []
    for index, _ in enumerate(tf.config.list_physical_devices("GPU")):
        try:
            tf.config.experimental.reset_memory_stats(f"GPU:{index}")
            names.append(f"GPU:{index}")
        except (ValueError, RuntimeError):
            pass
    return names


def _gpu_peak_mb(names: list[str]) -> float | None:
    if not names:
        return None
    import tensorflow as tf

    total = 0.0
    for name in names:
        try:
            total += tf.config.experimental.get_memory_info(name)["peak"] / _MB
        except (ValueError, RuntimeError):
            return None
    return total


# --- trial pictures ----------------------------------------------------------------------------


def save_trial_artifacts(
    trial: optuna.Trial,
    out_dir: Path,
    study_dir: Path,
    *,
    histories: Sequence[Sequence[dict[str, float]]],
    oof: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    metric: str,
    images: np.ndarray,
    train_indices: np.ndarray,
    augment: dict[str, Any],
) -> list[Path]:
    """Draw a completed trial's pictures into ``out_dir`` and upload them to the study's store.

    Args:
        trial: the running trial (artifacts attach to a trial only while it runs).
        out_dir: the trial's folder.
        study_dir: the study folder; the store is ``study_dir/artifacts``.
        histories: per fold, the per-epoch records of ``trial._FoldReporter``.
        oof: out-of-fold probabilities, ``(n, C)``, one row per tuning image.
        labels: true class indices of the tuning images, ``(n,)``.
        class_names: the ``C`` class names.
        metric: the study's metric (validation curve label).
        images: the tuning images, uint8 ``(n, s, s, 3)``.
        train_indices: fold 0's training indices (where the preview images come from).
        augment: the trial's ``augment`` hyperparameters.

    Returns:
        The PNGs written and uploaded; pictures that failed are logged and left out.
    """
    title = f"trial {trial.number}"
    drawers = {
        LEARNING_CURVES: lambda path: _save(
            learning_curves_figure(histories, metric, title), path
        ),
        OOF_CONFUSION_PNG: lambda path: write_confusion_matrix(
            out_dir / OOF_CONFUSION_CSV,
            path,
            oof_confusion(oof, labels, len(class_names)),
            class_names,
            title=f"{title}: out-of-fold predictions ({len(labels)} images)",
        ),
        AUGMENTATION_PREVIEW: lambda path: _copy_preview(
            study_dir, path, images[preview_indices(labels, train_indices)], augment
        ),
    }
    store = artifact_store(study_dir)
    written = []
    missing: dict[str, str] = {}
    for name, draw in drawers.items():
        path = out_dir / name
        try:
            draw(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.artifacts.upload_artifact(
                    artifact_store=store, file_path=str(path), study_or_trial=trial
                )
        except Exception as exc:  # noqa: BLE001 - a picture must never cost a trial
            logger.warning("trial %d: could not save %s: %s", trial.number, name, exc)
            missing[name] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        written.append(path)
    if missing:  # the trial says what it lacks, in the dashboard and `automl show`
        trial.set_user_attr(MISSING_ARTIFACTS_ATTR, missing)
    return written


def oof_confusion(oof: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix of the out-of-fold argmax; rows without a prediction are left out."""
    scored = np.isfinite(oof).all(axis=1)
    return confusion_matrix(
        labels[scored], oof[scored].argmax(axis=1), labels=list(range(n_classes))
    )


def learning_curves_figure(
    histories: Sequence[Sequence[dict[str, float]]], metric: str, title: str
) -> Figure:
    """Loss and metric per epoch: one colour per fold, solid for training, dashed validation."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, metric_axes = figure.subplots(1, 2)
    for fold, history in enumerate(histories):
        if not history:
            continue
        epochs = [record["epoch"] + 1 for record in history]
        colour = f"C{fold % 10}"
        for axes, train_key, val_key in (
            (loss_axes, "loss", "val_loss"),
            (metric_axes, "accuracy", "val_metric"),
        ):
            axes.plot(epochs, [r[train_key] for r in history], "-o", color=colour, ms=3,
                      label=f"fold {fold} train")  # fmt: skip
            axes.plot(epochs, [r[val_key] for r in history], "--s", color=colour, ms=3,
                      label=f"fold {fold} validation")  # fmt: skip
    loss_axes.set(title="loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    metric_axes.set(title=f"train accuracy, validation {metric}", xlabel="epoch", ylabel="score")
    for axes in (loss_axes, metric_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.legend(fontsize="small")
    figure.suptitle(f"{title}: learning curves")
    return figure


def preview_indices(labels: np.ndarray, train_indices: np.ndarray, n: int = 4) -> np.ndarray:
    """Up to ``n`` training indices, one per class first (class order), then the next ones."""
    train_indices = np.asarray(train_indices)
    picked: list[int] = []
    for label in np.unique(labels[train_indices]):
        picked.append(int(train_indices[labels[train_indices] == label][0]))
    picked = picked[:n]
    for index in train_indices:
        if len(picked) >= n:
            break
        if int(index) not in picked:
            picked.append(int(index))
    return np.asarray(picked, dtype=np.int64)


def augmentation_figure(
    images: np.ndarray, augment: dict[str, Any], seed: int, title: str
) -> Figure:
    """A grid: each row an image, its original then what the augmentation draws from it."""
    from automl.nn.pipeline import build_augmenter  # TensorFlow only when a trial draws this

    augmenter = build_augmenter(augment, seed=seed)
    variants = []
    if augmenter is not None:
        batch = images.astype(np.float32)
        for _ in range(_PREVIEW_VARIANTS):
            drawn = np.asarray(augmenter(batch, training=True))
            variants.append(np.clip(drawn, 0, 255).astype(np.uint8))
    columns = 1 + len(variants)
    figure = Figure(figsize=(1.9 * columns + 0.4, 1.9 * len(images) + 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    grid = np.atleast_2d(figure.subplots(len(images), columns, squeeze=False))
    for row, image in enumerate(images):
        for column, picture in enumerate([image, *(v[row] for v in variants)]):
            axes = grid[row, column]
            axes.imshow(picture)
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title("original" if column == 0 else f"augmented {column}", fontsize=9)
    shown = {k: v for k, v in augment.items() if v not in (0, 0.0, "none")}
    figure.suptitle(
        f"{title}: augmentation "
        + (", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()) if shown else "off"),
        fontsize=10,
    )
    return figure


def _copy_preview(
    study_dir: Path, path: Path, images: np.ndarray, augment: dict[str, Any]
) -> None:
    """Copy the study's preview for this augmentation setting into ``path``, drawing it once.

    Every trial of a study previews the same fold-0 images, so the picture depends only on the
    ``augment`` values: it is drawn once per distinct setting (seed 0, so equal settings look
    the same across trials) into ``<study>/previews/`` and copied for each trial, which saves a
    trial about a third of its drawing time (~0.5 s on 2 CPU cores) when augmentation is fixed
    or takes few values.
    """
    key = hashlib.sha1(json.dumps(augment, sort_keys=True, default=str).encode()).hexdigest()
    cached = study_dir / PREVIEWS_DIR / f"augmentation_{key[:16]}.png"
    if not cached.is_file():
        # Drawn to a private name and renamed: workers sharing the study may draw it at once.
        partial = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.png")
        _save(augmentation_figure(images, augment, 0, "fold-0 training images"), partial)
        os.replace(partial, cached)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, path)


def _save(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)


# --- notes -------------------------------------------------------------------------------------


def trial_note(
    trial: FrozenTrial,
    state: str,
    *,
    metric: str,
    stride: int,
    pruner: str,
    peers: Sequence[FrozenTrial] = (),
) -> str:
    """The Markdown note of a finished trial.

    Args:
        trial: the trial as stored (its params, user attributes and intermediate values).
        state: ``complete``, ``pruned`` or ``fail`` (a running trial's stored state is RUNNING).
        metric: the study's metric name.
        stride: steps per fold (``fold * stride + epoch``).
        pruner: the study's pruner name, to say who stopped the trial.
        peers: other trials, to compare with at the step where this one was pruned.
    """
    attrs = trial.user_attrs
    folds = list(attrs.get("fold_scores", []))
    epochs = list(attrs.get("epochs_per_fold", []))
    lines = [f"## Trial {trial.number}: {state}"]
    if state == "complete" and folds:
        std = attrs.get("cv_std", float(np.std(folds)))
        lines.append(
            f"**{metric} {statistics.fmean(folds):.4f} ± {std:.4f}** (mean ± std over folds)"
        )
    elif state == "pruned":
        lines.append(_pruned_reason(trial, metric, stride, pruner, peers))
    elif state == "fail":
        lines.append(f"**Failed:** {attrs.get('fail_reason', 'see the log of the tune run')}")
    if epochs:
        lines += ["", f"| fold | {metric} | epochs |", "|---|---|---|"]
        for fold, n_epochs in enumerate(epochs):
            score = f"{folds[fold]:.4f}" if fold < len(folds) else "(not finished)"
            lines.append(f"| {fold} | {score} | {n_epochs} |")
    resources = []
    if attrs.get("n_params"):
        resources.append(
            f"{attrs['n_params']:,} parameters ({attrs.get('n_trainable_params', 0):,} trainable)"
        )
    if attrs.get("train_seconds") is not None:
        resources.append(f"{attrs['train_seconds']:.1f} s training")
    if attrs.get("peak_rss_mb") is not None:
        delta = attrs.get("peak_rss_delta_mb")
        resources.append(
            f"peak memory {attrs['peak_rss_mb']:.0f} MB"
            + (f" (+{delta:.0f} MB during the trial)" if delta is not None else "")
        )
    if attrs.get("peak_gpu_memory_mb") is not None:
        resources.append(f"peak GPU memory {attrs['peak_gpu_memory_mb']:.0f} MB")
    if resources:
        lines += ["", "**Resources:** " + ", ".join(resources)]
    if trial.params:
        lines += ["", "| parameter | value |", "|---|---|"]
        lines += [f"| `{name}` | {_fmt(value)} |" for name, value in sorted(trial.params.items())]
    if state == "complete":
        lines += [
            "",
            "Pictures (Artifacts below): learning curves per fold, out-of-fold confusion matrix, "
            "augmentation preview.",
        ]
    return "\n".join(lines) + "\n"


def _pruned_reason(
    trial: FrozenTrial, metric: str, stride: int, pruner: str, peers: Sequence[FrozenTrial]
) -> str:
    step = trial.user_attrs.get("pruned_at_step")
    if step is None:
        return f"**Pruned** by the {pruner} pruner."
    fold, epoch = divmod(int(step), stride)
    value = trial.intermediate_values.get(int(step))
    text = f"**Pruned** by the {pruner} pruner at step {step} (fold {fold}, epoch {epoch + 1})"
    if value is not None:
        text += f" with validation {metric} {value:.4f}"
    others = [
        t.intermediate_values[int(step)]
        for t in peers
        if t.number != trial.number and int(step) in t.intermediate_values
    ]
    others = [v for v in others if math.isfinite(v)]
    if others:
        text += (
            f"; the median of the {len(others)} other trial(s) that reached this step was "
            f"{statistics.median(others):.4f}"
        )
    return text + "."


def save_trial_note(
    trial: optuna.Trial, state: str, *, metric: str, stride: int, pruner: str
) -> None:
    """Write the trial's note for the dashboard; a failure is logged, never raised."""
    try:
        from optuna_dashboard import save_note

        trials = trial.study.get_trials(deepcopy=False)
        frozen = next(t for t in trials if t.number == trial.number)
        body = trial_note(frozen, state, metric=metric, stride=stride, pruner=pruner, peers=trials)
        save_note(trial, body)
    except Exception as exc:  # noqa: BLE001 - a note must never cost a trial
        logger.warning("trial %d: could not save its note: %s", trial.number, exc)
        trial.set_user_attr(MISSING_NOTE_ATTR, f"{type(exc).__name__}: {exc}"[:300])


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
