"""What a trial leaves for optuna-dashboard: pictures and a note.

**Pictures.** Every completed trial writes three PNGs into its folder
(``<study>/trials/<number>/``) and uploads them as Optuna artifacts to a
``FileSystemArtifactStore`` in ``<study>/artifacts/``, which ``automl dashboard`` serves:

- ``learning_curves.png``: training and validation loss and metric per fold and epoch, from the
  history the trial recorded (the training side is Keras' accuracy, the validation side the
  study's metric);
- ``oof_confusion_matrix.png`` (and ``.csv``): the out-of-fold predictions of all folds against
  the true labels, so its counts add up to the tuning set;
- ``augmentation_preview.png``: a few training images of fold 0 and what the trial's augmentation
  makes of them (``nn.previews``); drawn once per distinct augmentation setting into
  ``<study>/previews/`` and copied for every trial with that setting.

Pictures are a convenience: a failure to draw or upload one is logged and never fails the trial,
but it must not go missing silently either: the trial names what it lacks, and why, in its
``missing_artifacts`` (and ``missing_note``) user attribute.

**Notes.** Each trial gets a short Markdown note (``optuna_dashboard.save_note``): value, folds,
epochs, resources (including the peak memory ``nn.memory.PeakMemory`` measured), parameters,
and why it was pruned or failed. ``ensemble.note`` writes the study's note.

This module imports no TensorFlow at import time: the preview figure (``nn.previews``) imports
it only when it draws.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import statistics
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial
from sklearn.metrics import confusion_matrix

from automl.console import show_value
from automl.files import atomic_write
from automl.nn.previews import augmentation_figure, preview_indices
from automl.plots import write_confusion_matrix
from automl.search.attrs import (
    COLLAPSED,
    CV_STD,
    EPOCHS_PER_FOLD,
    FAIL_REASON,
    FOLD_SCORES,
    MISSING_ARTIFACTS,
    MISSING_NOTE,
    N_PARAMS,
    N_TRAINABLE_PARAMS,
    PEAK_GPU_MEMORY_MB,
    PEAK_RSS_DELTA_MB,
    PEAK_RSS_MB,
    PRUNED_AT_STEP,
    TRAIN_SECONDS,
)
from automl.search.paths import (
    ARTIFACTS_DIR,
    AUGMENTATION_PREVIEW,
    LEARNING_CURVES,
    OOF_CONFUSION_CSV,
    OOF_CONFUSION_PNG,
    PREVIEWS_DIR,
    preview_name,
)

logger = logging.getLogger(__name__)

TRIAL_PICTURES = (LEARNING_CURVES, OOF_CONFUSION_PNG, AUGMENTATION_PREVIEW)


def artifact_store(artifacts_dir: Path) -> FileSystemArtifactStore:
    """The study's artifact store, ``<artifacts_dir>/artifacts/`` (created if missing)."""
    folder = Path(artifacts_dir) / ARTIFACTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder)


# --- trial pictures ----------------------------------------------------------------------------


def save_trial_artifacts(
    trial: optuna.Trial,
    out_dir: Path,
    artifacts_dir: Path,
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
        artifacts_dir: the artifacts root (``study.artifacts_dir``, by default the study
            folder); the store is ``artifacts_dir/artifacts``.
        histories: per fold, the per-epoch records of ``nn.fit.FoldFit.history``.
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
    drawers: dict[str, Callable[[Path], object]] = {
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
            artifacts_dir, path, images[preview_indices(labels, train_indices)], augment
        ),
    }
    return _draw_and_upload(trial, out_dir, artifact_store(artifacts_dir), drawers)


def _draw_and_upload(
    trial: optuna.Trial,
    out_dir: Path,
    store: FileSystemArtifactStore,
    drawers: dict[str, Callable[[Path], object]],
) -> list[Path]:
    """Draw each picture into ``out_dir`` and upload it; name the ones that failed in the trial."""
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
        trial.set_user_attr(MISSING_ARTIFACTS, missing)
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


def _copy_preview(
    artifacts_dir: Path, path: Path, images: np.ndarray, augment: dict[str, Any]
) -> None:
    """Copy the study's preview for this augmentation setting into ``path``, drawing it once.

    Every trial of a study previews the same fold-0 images, so the picture depends only on the
    ``augment`` values: it is drawn once per distinct setting (seed 0, so equal settings look
    the same across trials) into ``<study>/previews/`` and copied for each trial: only the first
    trial of each setting pays for the drawing, which matters when augmentation is fixed or
    takes few values.
    """
    key = hashlib.sha1(json.dumps(augment, sort_keys=True, default=str).encode()).hexdigest()
    cached = artifacts_dir / PREVIEWS_DIR / preview_name(key)
    if not cached.is_file():
        # Drawn to a private name and renamed: workers sharing the study may draw it at once.
        figure = augmentation_figure(images, augment, 0, "fold-0 training images")
        atomic_write(cached, lambda temporary: _save(figure, temporary))
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
    folds = list(attrs.get(FOLD_SCORES, []))
    lines = [f"## Trial {trial.number}: {state}"]
    if state == "complete" and folds:
        std = attrs.get(CV_STD, float(np.std(folds)))
        lines.append(
            f"**{metric} {statistics.fmean(folds):.4f} ± {std:.4f}** (mean ± std over folds)"
        )
        if attrs.get(COLLAPSED):
            lines.append(
                f"**Collapsed:** out-of-fold it {attrs[COLLAPSED]}; it never enters an ensemble."
            )
    elif state == "pruned":
        lines.append(_pruned_reason(trial, metric, stride, pruner, peers))
    elif state == "fail":
        lines.append(f"**Failed:** {attrs.get(FAIL_REASON, 'see the log of the tune run')}")
    lines += _fold_table(folds, list(attrs.get(EPOCHS_PER_FOLD, [])), metric)
    resources = _resources(attrs)
    if resources:
        lines += ["", "**Resources:** " + ", ".join(resources)]
    if trial.params:
        lines += ["", "| parameter | value |", "|---|---|"]
        lines += [
            f"| `{name}` | {show_value(value)} |" for name, value in sorted(trial.params.items())
        ]
    if state == "complete":
        lines += [
            "",
            "Pictures (Artifacts below): learning curves per fold, out-of-fold confusion matrix, "
            "augmentation preview.",
        ]
    return "\n".join(lines) + "\n"


def _fold_table(folds: list[float], epochs: list[int], metric: str) -> list[str]:
    """Score and epochs per fold; a fold that never finished (pruned, failed) says so."""
    if not epochs:
        return []
    lines = ["", f"| fold | {metric} | epochs |", "|---|---|---|"]
    for fold, n_epochs in enumerate(epochs):
        score = f"{folds[fold]:.4f}" if fold < len(folds) else "(not finished)"
        lines.append(f"| {fold} | {score} | {n_epochs} |")
    return lines


def _resources(attrs: dict[str, Any]) -> list[str]:
    """Parameters, training time and peak memory, each when the trial recorded it."""
    resources = []
    if attrs.get(N_PARAMS):
        resources.append(
            f"{attrs[N_PARAMS]:,} parameters ({attrs.get(N_TRAINABLE_PARAMS, 0):,} trainable)"
        )
    if attrs.get(TRAIN_SECONDS) is not None:
        resources.append(f"{attrs[TRAIN_SECONDS]:.1f} s training")
    if attrs.get(PEAK_RSS_MB) is not None:
        delta = attrs.get(PEAK_RSS_DELTA_MB)
        resources.append(
            f"peak memory {attrs[PEAK_RSS_MB]:.0f} MB"
            + (f" (+{delta:.0f} MB during the trial)" if delta is not None else "")
        )
    if attrs.get(PEAK_GPU_MEMORY_MB) is not None:
        resources.append(f"peak GPU memory {attrs[PEAK_GPU_MEMORY_MB]:.0f} MB")
    return resources


def _pruned_reason(
    trial: FrozenTrial, metric: str, stride: int, pruner: str, peers: Sequence[FrozenTrial]
) -> str:
    step = trial.user_attrs.get(PRUNED_AT_STEP)
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
        trial.set_user_attr(MISSING_NOTE, f"{type(exc).__name__}: {exc}"[:300])
