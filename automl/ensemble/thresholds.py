"""Decision thresholds for binary tasks, chosen on out-of-fold predictions.

Medical screening fixes a recall (sensitivity) first: "find 95% of the tumour patches". The
threshold is the highest probability cut-off whose out-of-fold recall of the positive class
reaches the target; out-of-fold predictions are honest (no model saw its own fold) and the
hold-out stays untouched for scoring the choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_score, recall_score


def positive_class(class_names: Sequence[str], chosen: str | None = None) -> str:
    """The positive class of a binary task: ``chosen`` if set, else the second class.

    The one rule (README: ``ensemble.positive_class``, default the second class) used by the
    decision threshold, ``predict --threshold`` and the Kaggle file's probability column.
    """
    return chosen if chosen is not None else class_names[1]


@dataclass(frozen=True)
class Cutoff:
    """A decision threshold as ``predict`` applies it: ``positive_class`` where p >= it."""

    positive_class: str
    threshold: float


@dataclass(frozen=True)
class Threshold:
    """A cut-off on the positive class probability and what it achieved out-of-fold."""

    positive_class: str
    threshold: float
    target_recall: float
    recall: float
    precision: float

    def to_dict(self) -> dict[str, Any]:
        """The keys ``ensemble.json`` stores under ``threshold``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Threshold:
        """Rebuild a threshold written by :meth:`to_dict`."""
        return cls(
            positive_class=str(data["positive_class"]),
            threshold=float(data["threshold"]),
            target_recall=float(data["target_recall"]),
            recall=float(data["recall"]),
            precision=float(data["precision"]),
        )

    @property
    def cutoff(self) -> Cutoff:
        """The part ``predict`` applies."""
        return Cutoff(self.positive_class, self.threshold)


def choose_threshold(
    y_true: np.ndarray,
    positive_probability: np.ndarray,
    *,
    positive_index: int,
    positive_class: str,
    target_recall: float,
) -> Threshold:
    """Highest cut-off whose recall of ``positive_index`` reaches ``target_recall``."""
    positive = np.asarray(y_true) == positive_index
    if not positive.any():
        raise ValueError(f"no sample of the positive class '{positive_class}' to choose from")
    # Recall at cut-off t counts positives with p >= t; it reaches the target at the k-th
    # highest positive probability, k = ceil(target * n_positive).
    scores = np.sort(positive_probability[positive])[::-1]
    k = int(np.ceil(target_recall * len(scores)))
    threshold = float(scores[max(k, 1) - 1])
    recall, precision = rates_at(y_true, positive_probability, positive_index, threshold)
    return Threshold(positive_class, threshold, target_recall, recall, precision)


def rates_at(
    y_true: np.ndarray, positive_probability: np.ndarray, positive_index: int, threshold: float
) -> tuple[float, float]:
    """Recall and precision of the positive class, predicting it where ``p >= threshold``."""
    truth = np.asarray(y_true) == positive_index
    predicted = np.asarray(positive_probability) >= threshold
    recall = float(recall_score(truth, predicted, zero_division=0))
    precision = float(precision_score(truth, predicted, zero_division=0))
    return recall, precision


def apply_threshold(
    positive_probability: np.ndarray, threshold: float, positive_index: int
) -> np.ndarray:
    """Class index per sample: the positive class where ``p >= threshold``, else the other."""
    negative_index = 1 - positive_index
    return np.where(positive_probability >= threshold, positive_index, negative_index)
