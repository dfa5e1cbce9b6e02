"""Choose the ensemble's members on out-of-fold predictions (numpy only; no TensorFlow).

Every trial of a study trains on the same seeded folds, so its out-of-fold probabilities (each
tuning image predicted by the fold model that did not see it) are comparable across trials and
can be voted on like hold-out predictions, without touching the hold-out. Two methods, chosen by
``ensemble.selection``:

``greedy`` (the default): greedy forward selection *with replacement* (Caruana, Niculescu-Mizil,
Crew and Ksikes, "Ensemble selection from libraries of models", ICML 2004). The library is every
candidate trial. Start from the empty ensemble; at each step add the trial (one already chosen
may be chosen again) whose addition gives the best study metric for the vote of the members'
out-of-fold probabilities under the study's vote rule; stop when no addition strictly improves
the score, and after at most :data:`MAX_STEPS` steps. A trial chosen ``w`` times votes with
weight ``w`` (``voting.py``). Ties between candidates go to the trial with the better study
value, then to the lower trial number. The first step therefore picks the best single trial by
out-of-fold score and every later step raises the score, so the selected ensemble never scores
below the best single trial out-of-fold. The reason for it: a fixed top K admits weak or
redundant members that can outvote the best trial; greedy adds a trial only when it helps, and
repeats a strong one instead of adding a weak one.

``top_k``: the ``k`` trials with the best study value, weight 1 each. The curve then records the
out-of-fold score as each is added in rank order.

Scores are computed incrementally: the selection keeps running (weighted) vote counts and
probability sums, so a step costs ``O(n_candidates x n_samples x n_classes)`` (times a log for
ROC AUC, which counts correctly ordered pairs with a sort and ``searchsorted`` instead of calling
scikit-learn, which costs far more per call). The curve's scores equal
:func:`automl.metrics.score_predictions` on ``voting.vote(..., weights=...)`` of the same members
up to float rounding (in the tie-break between classes whose probability sums agree to the last
bit).

Selecting on out-of-fold scores fits them a little: the selected ensemble's out-of-fold score is
optimistic, and the hold-out (``build.py``) is the honest estimate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from automl.config.methods import SelectionMethod, VoteMethod
from automl.metrics import METRICS
from automl.search.ranking import rank_key

MAX_STEPS = 50
"""Most greedy steps: ensembles stop improving long before (Caruana et al. saw it level off
within tens of steps), and the cap bounds the time on a large library."""


@dataclass(frozen=True)
class SelectionStep:
    """One step of the selection: the trial added and the ensemble's out-of-fold score after."""

    step: int
    trial: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        """Return plain ints and floats, ready for JSON."""
        return {"step": self.step, "trial": self.trial, "score": self.score}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SelectionStep:
        """Rebuild a step written by :meth:`to_dict`."""
        return cls(int(data["step"]), int(data["trial"]), float(data["score"]))


@dataclass(frozen=True)
class Selection:
    """Which trials form the ensemble, with what weight, and the out-of-fold evidence.

    Attributes:
        method: ``"greedy"`` or ``"top_k"``.
        metric: the study metric all scores are in.
        weights: ``(trial number, weight)`` per member, in the order the members were first
            chosen; a weight is how many times the trial was chosen.
        curve: one :class:`SelectionStep` per step, in order.
        score: out-of-fold score of the selected ensemble (the last step's).
        best_single_trial: the library trial with the best out-of-fold score on its own (ties:
            better study value, then lower number).
        best_single_score: that trial's out-of-fold score.
        library_size: how many trials were candidates.
    """

    method: str
    metric: str
    weights: tuple[tuple[int, int], ...]
    curve: tuple[SelectionStep, ...]
    score: float
    best_single_trial: int
    best_single_score: float
    library_size: int

    @property
    def members(self) -> tuple[int, ...]:
        """Trial numbers of the members, in the order first chosen."""
        return tuple(trial for trial, _ in self.weights)

    def weight_of(self, trial: int) -> int:
        """How many times ``trial`` was chosen (0 when it is not a member)."""
        return dict(self.weights).get(trial, 0)

    def to_dict(self) -> dict[str, Any]:
        """Return plain lists, ints and floats, ready for JSON."""
        return {
            "method": self.method,
            "metric": self.metric,
            "weights": [[trial, weight] for trial, weight in self.weights],
            "curve": [step.to_dict() for step in self.curve],
            "score": self.score,
            "best_single_trial": self.best_single_trial,
            "best_single_score": self.best_single_score,
            "library_size": self.library_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Selection:
        """Rebuild a selection written by :meth:`to_dict`."""
        return cls(
            method=str(data["method"]),
            metric=str(data["metric"]),
            weights=tuple((int(t), int(w)) for t, w in data["weights"]),
            curve=tuple(SelectionStep.from_dict(step) for step in data["curve"]),
            score=float(data["score"]),
            best_single_trial=int(data["best_single_trial"]),
            best_single_score=float(data["best_single_score"]),
            library_size=int(data["library_size"]),
        )


def greedy_selection(
    probabilities: np.ndarray,
    labels: np.ndarray,
    trials: Sequence[int],
    values: Sequence[float],
    *,
    metric: str,
    vote_method: str,
    direction: str = "maximize",
    max_steps: int = MAX_STEPS,
) -> Selection:
    """Greedy forward selection with replacement over out-of-fold probabilities.

    The algorithm, its tie-break and its guarantee are in the module docstring. A metric that is
    undefined (``nan``, e.g. ROC AUC when a class is missing) never counts as an improvement.

    Args:
        probabilities: out-of-fold probabilities of every candidate trial, shape
            ``(n_trials, n_samples, n_classes)``.
        labels: true class indices of the samples, shape ``(n_samples,)``.
        trials: trial numbers, one per row of ``probabilities``.
        values: the trials' study values (their CV scores), for the tie-break.
        metric: one of :data:`automl.metrics.METRICS`.
        vote_method: ``"majority"`` or ``"soft"``.
        direction: the study's direction: ``"maximize"`` or ``"minimize"`` the metric.
        max_steps: at most this many additions (:data:`MAX_STEPS`).

    Returns:
        The :class:`Selection` (``method="greedy"``).

    Raises:
        ValueError: shapes or lengths disagree, a value is not finite, or an argument is not
            one of the names above.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
    stack, y, ranked, sign = _prepare(probabilities, labels, trials, values, metric, direction)
    running = _Running(stack, vote_method, _Scorer(metric, y, stack.shape[2]))
    chosen: dict[int, int] = {}
    curve: list[SelectionStep] = []
    current = -np.inf
    for step in range(1, max_steps + 1):
        scores = np.array([running.score(extra=i) for i in range(len(ranked))])
        keyed = np.where(np.isnan(scores), -np.inf, sign * scores)
        best = int(np.argmax(keyed))  # first maximum: the better-ranked trial wins a tie
        if step > 1 and not keyed[best] > current:
            break
        running.add(best)
        current = keyed[best]
        trial = ranked[best]
        chosen[trial] = chosen.get(trial, 0) + 1
        curve.append(SelectionStep(step, trial, float(scores[best])))
    return Selection(
        method=SelectionMethod.GREEDY,
        metric=metric,
        weights=tuple(chosen.items()),
        curve=tuple(curve),
        score=curve[-1].score,
        best_single_trial=curve[0].trial,
        best_single_score=curve[0].score,
        library_size=len(ranked),
    )


def top_k_selection(
    probabilities: np.ndarray,
    labels: np.ndarray,
    trials: Sequence[int],
    values: Sequence[float],
    k: int,
    *,
    metric: str,
    vote_method: str,
    direction: str = "maximize",
) -> Selection:
    """The ``k`` trials with the best study value, weight 1 each, scored out-of-fold.

    Args:
        probabilities: out-of-fold probabilities of every candidate trial, shape
            ``(n_trials, n_samples, n_classes)``.
        labels: true class indices, shape ``(n_samples,)``.
        trials: trial numbers, one per row of ``probabilities``.
        values: the trials' study values; members are the best ``k`` (ties: lower number).
        k: how many members (fewer when there are fewer candidates).
        metric: one of :data:`automl.metrics.METRICS`.
        vote_method: ``"majority"`` or ``"soft"``.
        direction: the study's direction: ``"maximize"`` or ``"minimize"``.

    Returns:
        The :class:`Selection` (``method="top_k"``); its curve adds the members in rank order.

    Raises:
        ValueError: as :func:`greedy_selection`, or ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    stack, y, ranked, sign = _prepare(probabilities, labels, trials, values, metric, direction)
    scorer = _Scorer(metric, y, stack.shape[2])
    alone = _Running(stack, vote_method, scorer)
    singles = np.array([alone.score(extra=i) for i in range(len(ranked))])
    best = int(np.argmax(np.where(np.isnan(singles), -np.inf, sign * singles)))
    running = _Running(stack, vote_method, scorer)
    curve = []
    for index in range(min(k, len(ranked))):
        running.add(index)
        curve.append(SelectionStep(index + 1, ranked[index], running.score()))
    return Selection(
        method=SelectionMethod.TOP_K,
        metric=metric,
        weights=tuple((step.trial, 1) for step in curve),
        curve=tuple(curve),
        score=curve[-1].score,
        best_single_trial=ranked[best],
        best_single_score=float(singles[best]),
        library_size=len(ranked),
    )


def _prepare(
    probabilities: Any,
    labels: Any,
    trials: Sequence[int],
    values: Sequence[float],
    metric: str,
    direction: str,
) -> tuple[np.ndarray, np.ndarray, list[int], float]:
    """Check the inputs; return the stack in rank order, labels, ranked trials and the sign."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}.")
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, got {direction!r}.")
    stack = np.asarray(probabilities, dtype=np.float64)
    if stack.ndim != 3 or 0 in stack.shape:
        raise ValueError(
            "probabilities must have shape (n_trials, n_samples, n_classes), none empty; "
            f"got {stack.shape}."
        )
    if not np.isfinite(stack).all():
        raise ValueError("out-of-fold probabilities contain NaN or infinite values.")
    y = np.asarray(labels)
    if y.shape != (stack.shape[1],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels must be {stack.shape[1]} integer class indices, got shape {y.shape} "
            f"({y.dtype})."
        )
    if y.min() < 0 or y.max() >= stack.shape[2]:
        raise ValueError(f"labels must lie in 0..{stack.shape[2] - 1}.")
    if not len(trials) == len(values) == stack.shape[0]:
        raise ValueError(
            f"got {stack.shape[0]} probability matrices, {len(trials)} trial numbers and "
            f"{len(values)} values; give one of each per trial."
        )
    sign = 1.0 if direction == "maximize" else -1.0
    # The study's one best-first order (search/ranking.py): better value, then lower number.
    order = sorted(
        range(len(trials)),
        key=lambda i: rank_key("complete", float(values[i]), int(trials[i]), direction),
    )
    return stack[order], y.astype(np.int64), [int(trials[i]) for i in order], sign


class _Scorer:
    """The study metric of a vote, fast: bincounts for labels, ranks for ROC AUC.

    Matches :func:`automl.metrics.score_predictions` (scikit-learn's definitions) up to float
    rounding: tests compare the two. A metric it has no formula for is refused, never scored
    by another one's.
    """

    FROM_LABELS = ("accuracy", "balanced_accuracy", "macro_f1")
    FROM_PROBABILITIES = ("roc_auc",)

    def __init__(self, metric: str, labels: np.ndarray, n_classes: int) -> None:
        if metric not in self.FROM_LABELS + self.FROM_PROBABILITIES:
            raise ValueError(
                f"greedy selection cannot score metric {metric!r}: it computes only "
                f"{', '.join(self.FROM_LABELS + self.FROM_PROBABILITIES)}; add its formula to "
                "ensemble.selection._Scorer or use `--selection top_k`."
            )
        self.metric = metric
        self.needs_probabilities = metric in self.FROM_PROBABILITIES
        self._y = labels
        self._n_classes = n_classes
        self._true_counts = np.bincount(labels, minlength=n_classes)
        self._positive_index = [np.flatnonzero(labels == c) for c in range(n_classes)]
        self._negative_index = [np.flatnonzero(labels != c) for c in range(n_classes)]

    def of_labels(self, predicted: np.ndarray) -> float:
        y = self._y
        if self.metric == "accuracy":
            return float(np.mean(predicted == y))
        hits = np.bincount(y[predicted == y], minlength=self._n_classes)
        if self.metric == "balanced_accuracy":
            present = self._true_counts > 0
            return float(np.mean(hits[present] / self._true_counts[present]))
        if self.metric != "macro_f1":
            raise ValueError(f"metric {self.metric!r} is not computed from predicted labels.")
        # macro F1 over the classes true or predicted (scikit-learn's default label set):
        # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (n_true + n_predicted).
        denominator = self._true_counts + np.bincount(predicted, minlength=self._n_classes)
        seen = denominator > 0
        return float(np.mean(2.0 * hits[seen] / denominator[seen]))

    def of_probabilities(self, probabilities: np.ndarray) -> float:
        if self._n_classes < 2 or (self._true_counts == 0).any():
            return float("nan")  # undefined, as metrics.compute_metric says
        if self._n_classes == 2:  # scikit-learn's binary AUC: the positive class's probability
            columns, classes = probabilities.T, [1]
        else:  # one-vs-rest, macro average, rows renormalised as metrics._roc_auc does
            columns = (probabilities / probabilities.sum(axis=1, keepdims=True)).T
            classes = list(range(self._n_classes))
        aucs = []
        for c in classes:
            # Mann-Whitney: the share of (positive, negative) pairs ranked right, a tie counting
            # half; searchsorted left/right count the negatives below / not above each positive.
            column = columns[c]
            negatives = np.sort(column[self._negative_index[c]])
            positives = column[self._positive_index[c]]
            below = np.searchsorted(negatives, positives, "left").sum()
            not_above = np.searchsorted(negatives, positives, "right").sum()
            aucs.append(0.5 * (below + not_above) / (len(positives) * len(negatives)))
        return float(np.mean(aucs))


class _Running:
    """An ensemble being built: running vote counts and probability sums of its members."""

    def __init__(self, stack: np.ndarray, vote_method: str, scorer: _Scorer) -> None:
        method = VoteMethod.parse(vote_method, "vote_method")
        self._stack = stack
        self._soft = method is VoteMethod.SOFT
        self._scorer = scorer
        self._choices = stack.argmax(axis=2)  # each model's vote; argmax takes the lowest index
        n_samples, n_classes = stack.shape[1:]
        self._rows = np.arange(n_samples)
        self._sums = np.zeros((n_samples, n_classes))
        self._counts = np.zeros((n_samples, n_classes), dtype=np.int64)
        self._top = np.zeros(n_samples, dtype=np.int64)  # highest count per sample
        self._size = 0

    def add(self, index: int) -> None:
        self._sums += self._stack[index]
        self._counts[self._rows, self._choices[index]] += 1
        self._top = self._counts.max(axis=1)
        self._size += 1

    def score(self, extra: int | None = None) -> float:
        """The ensemble's score, with candidate ``extra`` added once (not kept)."""
        sums = self._sums if extra is None else self._sums + self._stack[extra]
        if self._scorer.needs_probabilities:
            return self._scorer.of_probabilities(sums / (self._size + (extra is not None)))
        if self._soft:
            return self._scorer.of_labels(sums.argmax(axis=1))
        counts, top = self._counts, self._top
        if extra is not None:
            choice = self._choices[extra]
            counts = counts.copy()
            counts[self._rows, choice] += 1
            top = np.maximum(top, counts[self._rows, choice])
        # voting.majority_vote's rule: most votes, then the highest mean probability (the sum
        # orders classes like the mean), then the lowest index (argmax's first maximum).
        tied = counts == top[:, np.newaxis]
        return self._scorer.of_labels(np.where(tied, sums, -np.inf).argmax(axis=1))
