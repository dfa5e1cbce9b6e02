"""A trial's finished folds: collected into out-of-fold outputs, and handed over across workers.

**Collection.** :class:`TrialFolds` gathers what each fold of a trial produced (out-of-fold
probabilities, score, per-epoch history, parameter counts) and writes the trial's outputs:
``oof.npz`` (probabilities and image ids, one row per tuning image) and ``history.json``.

**Take-over.** A worker that dies mid-trial leaves, for every fold it finished,
``fold_<k>.keras`` plus ``fold_<k>.npz`` (that fold's probabilities, validation indices, score,
history, parameter counts and the trial's hyperparameters; written after the model, so it marks
both as complete). The retry of that trial (same hyperparameters, same seed) moves both into its
own folder with :func:`take_finished_fold` instead of training the fold again. ``fold_<k>.npz``
is removed when the trial completes: ``oof.npz`` then holds the same numbers.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automl.files import atomic_write, atomic_write_text
from automl.search.paths import (
    FOLD_RECORD_GLOB,
    HISTORY_FILE,
    OOF_FILE,
    fold_model_name,
    fold_record_name,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinishedFold:
    """One fold's outcome, trained here or taken over from a dead worker's trial."""

    probabilities: np.ndarray  # (n_val, C), rows in the order of the fold's validation indices
    score: float
    history: list[dict[str, float]]  # per epoch, as ``nn.fit.FoldFit.history``
    n_params: dict[str, int]  # {"total": ..., "trainable": ...}


@dataclass
class TrialFolds:
    """What the folds of one trial have produced so far (filled in while the trial runs)."""

    probabilities: np.ndarray  # (n, C) out-of-fold; NaN rows for folds not finished
    scores: list[float] = field(default_factory=list)  # of finished folds
    histories: list[list[dict[str, float]]] = field(default_factory=list)  # of every fold run
    n_params: dict[str, int] = field(default_factory=dict)  # of the last model built
    reused: list[int] = field(default_factory=list)  # folds taken over from a dead worker
    latency_ms: float | None = None  # one-image latency of the first fold model trained here
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def empty(cls, n_samples: int, n_classes: int) -> TrialFolds:
        return cls(np.full((n_samples, n_classes), np.nan, dtype=np.float32))

    def add(self, val_indices: np.ndarray, fold: FinishedFold) -> None:
        """A finished fold: its rows of the out-of-fold matrix, its score and history."""
        self.probabilities[val_indices] = fold.probabilities
        self.scores.append(fold.score)
        self.add_unfinished(fold.history, fold.n_params)

    def add_unfinished(self, history: list[dict[str, float]], n_params: dict[str, int]) -> None:
        """A fold stopped before its end (pruned): its epochs count, it has no score."""
        self.histories.append(history)
        self.n_params = n_params

    @property
    def epochs_per_fold(self) -> list[int]:
        return [len(history) for history in self.histories]

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.scores))

    def seconds(self) -> float:
        """Wall time since the first fold started."""
        return time.perf_counter() - self.started

    def save(self, out_dir: Path, ids: np.ndarray) -> None:
        """``oof.npz`` and ``history.json``; the per-fold records go, ``oof.npz`` holds them."""
        _atomic_savez(out_dir / OOF_FILE, probabilities=self.probabilities, ids=ids.astype(str))
        for record in out_dir.glob(FOLD_RECORD_GLOB):
            record.unlink()
        atomic_write_text(out_dir / HISTORY_FILE, json.dumps(self.histories))


def save_finished_fold(
    out_dir: Path,
    fold: int,
    params: dict[str, Any],
    val_indices: np.ndarray,
    finished: FinishedFold,
) -> None:
    """What a retry needs to take this fold over; written after the model, so it marks both."""
    meta = {
        "params": _params_key(params),
        "score": finished.score,
        "history": finished.history,
        "n_params": finished.n_params,
    }
    _atomic_savez(
        out_dir / fold_record_name(fold),
        probabilities=finished.probabilities,
        val_indices=np.asarray(val_indices),
        meta=np.array(json.dumps(meta)),
    )


def take_finished_fold(
    resume_dir: Path | None,
    out_dir: Path,
    fold: int,
    params: dict[str, Any],
    val_indices: np.ndarray,
) -> FinishedFold | None:
    """Move a fold the repeated trial finished into ``out_dir``; None when there is none.

    Only a fold of the same hyperparameters and the same validation rows is taken.
    """
    if resume_dir is None:
        return None
    model, record = resume_dir / fold_model_name(fold), resume_dir / fold_record_name(fold)
    if not (model.is_file() and record.is_file()):
        return None
    try:
        with np.load(record) as archive:
            meta = json.loads(str(archive["meta"]))
            probabilities = archive["probabilities"]
            same_fold = np.array_equal(archive["val_indices"], val_indices)
    except (OSError, ValueError, KeyError) as exc:  # a torn file of a killed worker
        logger.warning("cannot reuse %s: %s", record, exc)
        return None
    if not same_fold or meta["params"] != _params_key(params):
        return None
    os.replace(model, out_dir / model.name)
    os.replace(record, out_dir / record.name)
    return FinishedFold(probabilities, meta["score"], meta["history"], meta["n_params"])


def _params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _atomic_savez(path: Path, **arrays: Any) -> None:
    atomic_write(path, lambda temporary: np.savez_compressed(temporary, **arrays))
