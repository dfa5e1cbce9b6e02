"""Combine the class probabilities of several models into one prediction per sample.

Input is always an array of shape ``(n_models, n_samples, n_classes)``: one probability matrix
per model, stacked. Both rules return a :class:`Vote` whose ``probabilities`` are the mean over
the models, so the two rules differ only in how the winning class is chosen.

Majority vote (``"majority"``), the rule users rely on when reading ties:

1. every model votes for its own most probable class (its argmax; a model whose top
   probabilities tie votes for the lowest of those class indices);
2. the class with the most votes wins;
3. when several classes share the highest vote count, the one among them with the highest mean
   probability (averaged over all models, not only over its voters) wins;
4. when that mean probability is also exactly equal (as computed in float64), the lowest class
   index wins.

Soft vote (``"soft"``): the class with the highest mean probability wins; an exact tie goes to
the lowest class index.

In both cases ``votes`` counts the models whose own argmax is the winning class, so a soft-vote
winner can have fewer votes than another class.

Weights (``weights=``, one positive integer per model) make a model count as that many copies of
itself: its vote counts ``weight`` times and its probabilities enter the mean ``weight`` times
(the mean is ``sum(weight * probabilities) / sum(weights)``). The rules above then apply
unchanged, so a weighted vote equals the unweighted vote of the stack with every model repeated
``weight`` times (up to float rounding of the mean). This is how greedy ensemble selection
(``selection.py``) counts a trial chosen several times. ``n_models`` is then the total weight.

Both rules are vectorised over samples (one ``bincount`` and a few ``argmax`` calls), so their
cost is linear in the number of samples and of models, with no Python loop over either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from automl.config.methods import VoteMethod


@dataclass(frozen=True)
class Vote:
    """The ensemble's decision for every sample.

    Attributes:
        labels: winning class index per sample, shape ``(n,)``.
        probabilities: mean probability over the models, shape ``(n, C)``, float64.
        votes: number of models whose argmax is the winning class, shape ``(n,)``.
        n_models: how many models voted; a model of weight ``w`` counts ``w`` times.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    votes: np.ndarray
    n_models: int

    def to_dict(self) -> dict[str, Any]:
        """Return plain lists and ints, ready for JSON."""
        return {
            "labels": self.labels.tolist(),
            "probabilities": self.probabilities.tolist(),
            "votes": self.votes.tolist(),
            "n_models": int(self.n_models),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vote:
        """Rebuild a vote written by :meth:`to_dict`."""
        n_samples = len(data["labels"])
        probabilities = np.asarray(data["probabilities"], dtype=np.float64)
        return cls(
            labels=np.asarray(data["labels"], dtype=np.int64),
            probabilities=probabilities.reshape(n_samples, -1),
            votes=np.asarray(data["votes"], dtype=np.int64),
            n_models=int(data["n_models"]),
        )


def majority_vote(probabilities: np.ndarray, weights: Any = None) -> Vote:
    """Hard vote with the tie-break described in the module docstring.

    Args:
        probabilities: shape ``(n_models, n_samples, n_classes)``.
        weights: optional positive integers, one per model: how many votes each model casts
            (and how many times its probabilities enter the mean). ``None``: one each.

    Returns:
        The :class:`Vote`.

    Raises:
        ValueError: the array is not 3-D, is empty, or holds NaN or infinite values, or the
            weights are not one positive integer per model.
    """
    stacked = _check(probabilities)
    n_models, n_samples, n_classes = stacked.shape
    w = _check_weights(weights, n_models)
    choices = stacked.argmax(axis=2)
    counts = _vote_counts(choices, n_classes, w)
    mean = _mean(stacked, w)
    # Among the classes with the top count, pick the highest mean; argmax returns the first
    # maximum, which gives the lowest class index on an exact tie.
    tied = counts == counts.max(axis=1, keepdims=True)
    labels = np.where(tied, mean, -np.inf).argmax(axis=1)
    votes = counts[np.arange(n_samples), labels]
    return Vote(labels=labels, probabilities=mean, votes=votes, n_models=_total(w, n_models))


def soft_vote(probabilities: np.ndarray, weights: Any = None) -> Vote:
    """Average the probabilities and take the argmax (lowest class index on an exact tie).

    Args:
        probabilities: shape ``(n_models, n_samples, n_classes)``.
        weights: optional positive integers, one per model: the weights of the mean (and of
            each model's count in ``votes``). ``None``: one each.

    Returns:
        The :class:`Vote`; ``votes`` counts the models whose argmax is the winner.

    Raises:
        ValueError: the array is not 3-D, is empty, or holds NaN or infinite values, or the
            weights are not one positive integer per model.
    """
    stacked = _check(probabilities)
    n_models = stacked.shape[0]
    w = _check_weights(weights, n_models)
    mean = _mean(stacked, w)
    labels = mean.argmax(axis=1)
    votes = _votes_for(stacked, labels, w)
    return Vote(labels=labels, probabilities=mean, votes=votes, n_models=_total(w, n_models))


def votes_for(probabilities: np.ndarray, labels: np.ndarray, weights: Any = None) -> np.ndarray:
    """Per sample, the (weighted) models whose argmax is ``labels``: ``Vote.votes`` for labels
    chosen another way (a decision threshold).

    Raises:
        ValueError: as :func:`soft_vote` for the probabilities and weights.
    """
    stacked = _check(probabilities)
    return _votes_for(stacked, np.asarray(labels), _check_weights(weights, stacked.shape[0]))


def vote(probabilities: np.ndarray, method: str, weights: Any = None) -> Vote:
    """Combine model probabilities with the named rule.

    Args:
        probabilities: shape ``(n_models, n_samples, n_classes)``.
        method: ``"majority"`` or ``"soft"``.
        weights: optional positive integers, one per model (see the module docstring).

    Returns:
        The :class:`Vote`.

    Raises:
        ConfigError: ``method`` is neither ``"majority"`` nor ``"soft"``.
        ValueError: the array is not a valid stack of probability matrices.
    """
    hint = "use 'majority' for a hard vote or 'soft' to average probabilities"
    if VoteMethod.parse(method, "vote method", hint) is VoteMethod.MAJORITY:
        return majority_vote(probabilities, weights)
    return soft_vote(probabilities, weights)


def _check(probabilities: Any) -> np.ndarray:
    stacked = np.asarray(probabilities)
    if stacked.ndim != 3:
        raise ValueError(
            f"probabilities must have shape (n_models, n_samples, n_classes), got {stacked.shape}."
        )
    if 0 in stacked.shape:
        raise ValueError(f"cannot vote on an empty array of shape {stacked.shape}.")
    if not np.issubdtype(stacked.dtype, np.floating):
        stacked = stacked.astype(np.float64)
    if not np.isfinite(stacked).all():
        # A NaN would silently become the argmax of its row and win votes.
        raise ValueError("probabilities contain NaN or infinite values; cannot vote.")
    return stacked


def _check_weights(weights: Any, n_models: int) -> np.ndarray | None:
    """Weights as int64, or None when absent or all 1 (the unweighted code path, bit for bit)."""
    if weights is None:
        return None
    array = np.asarray(weights)
    if array.shape != (n_models,):
        raise ValueError(
            f"weights must hold one entry per model ({n_models}), got shape {array.shape}."
        )
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"weights must be positive integers, got dtype {array.dtype}.")
    integral = np.isfinite(array).all() and (array == np.round(array)).all()
    if not integral or (array < 1).any():
        # A weight is a number of copies of the model; fractions would make votes non-integer.
        raise ValueError(f"weights must be positive integers, got {array.tolist()}.")
    array = array.astype(np.int64)
    return None if (array == 1).all() else array


def _mean(stacked: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return stacked.mean(axis=0, dtype=np.float64)
    total = np.tensordot(weights.astype(np.float64), stacked.astype(np.float64), axes=(0, 0))
    return total / float(weights.sum())


def _total(weights: np.ndarray | None, n_models: int) -> int:
    return n_models if weights is None else int(weights.sum())


def _votes_for(stacked: np.ndarray, labels: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    agrees = stacked.argmax(axis=2) == labels[np.newaxis, :]
    return agrees.sum(axis=0) if w is None else (agrees * w[:, np.newaxis]).sum(axis=0)


def _vote_counts(
    choices: np.ndarray, n_classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Count, per sample, the (weighted) models choosing each class: ``(m, n) -> (n, C)``."""
    n_samples = choices.shape[1]
    flat = choices + n_classes * np.arange(n_samples)[np.newaxis, :]
    if weights is None:
        counts = np.bincount(flat.ravel(), minlength=n_samples * n_classes)
    else:
        # bincount sums float64 weights; integer sums below 2**53 are exact, so rounding back
        # to int64 loses nothing.
        per_choice = np.broadcast_to(weights[:, np.newaxis], choices.shape).ravel()
        counts = np.bincount(flat.ravel(), weights=per_choice, minlength=n_samples * n_classes)
        counts = np.rint(counts).astype(np.int64)
    return counts.reshape(n_samples, n_classes)
