"""Prediction tables: one row per image with per-class probabilities, or a Kaggle submission."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from automl.ensemble.thresholds import positive_class as positive
from automl.ensemble.voting import Vote
from automl.errors import ConfigError

logger = logging.getLogger(__name__)

PROBABILITY_PREFIX = "prob_"
"""Prefix of the per-class probability columns in :func:`predictions_frame`."""


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
        positive_index = names.index(positive(names, positive_class))
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
