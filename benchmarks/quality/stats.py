"""Scores, field-group bootstrap intervals and the decision rule of ``benchmarks.model_quality``.

Every metric comes from confusion counts, so a bootstrap resample is a weighted sum of per-group
confusion matrices: resampling the hold-out's field groups (the unit that is independent: crops
of one smear field share stain, focus and background, and overlap) costs one matrix product.
The rule itself is written out in ``benchmarks/model_quality.py``'s docstring; ``rule`` is it
in code. numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

METRICS = ("balanced_accuracy", "macro_f1", "accuracy")
PRIMARY = "balanced_accuracy"
MARGIN = 0.02  # the smallest difference in balanced accuracy that counts as ahead or behind
RESAMPLES = 2000
DEGENERATE_CLASSES = 2  # a vote that predicts this many classes or fewer is degenerate
LEARNS_TIMES_CHANCE = 2.0  # the floor learns: its interval's lower end above 2 / n_classes


@dataclass(frozen=True)
class Holdout:
    """The fixed hold-out: true labels, each crop's field group (0..G-1), the class count."""

    labels: np.ndarray
    groups: np.ndarray
    n_classes: int

    @classmethod
    def from_lists(cls, labels: Any, groups: Any, n_classes: int) -> Holdout:
        """From JSON lists; group names become indices 0..G-1."""
        _, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        return cls(np.asarray(labels, dtype=np.int64), index.astype(np.int64), int(n_classes))

    @property
    def n_groups(self) -> int:
        return int(self.groups.max()) + 1


@dataclass(frozen=True)
class Decision:
    """One comparison, A minus B, over seeds: the figures and the verdict of ``rule``."""

    verdict: str  # "ahead", "behind", "inconclusive", "void" or "not measured"
    reason: str
    mean: float | None = None
    interval: tuple[float, float] | None = None
    per_seed: dict[int, float] | None = None
    per_seed_interval: dict[int, tuple[float, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "mean": self.mean,
            "interval": list(self.interval) if self.interval else None,
            "per_seed": self.per_seed,
            "per_seed_interval": {s: list(i) for s, i in (self.per_seed_interval or {}).items()},
        }


def group_counts(holdout: Holdout, predicted: np.ndarray) -> np.ndarray:
    """Confusion counts per field group: shape ``(G, C, C)``, true class first."""
    c = holdout.n_classes
    codes = (holdout.groups * c + holdout.labels) * c + np.asarray(predicted, dtype=np.int64)
    counts = np.bincount(codes, minlength=holdout.n_groups * c * c)
    return counts.reshape(holdout.n_groups, c, c).astype(np.float64)


def metrics_from_counts(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """The three metrics of confusion matrices ``(..., C, C)``, as ``automl.metrics`` defines
    them: recall averaged over the classes present, F1 over the classes present or predicted."""
    hits = np.diagonal(matrices, axis1=-2, axis2=-1)
    support, called = matrices.sum(axis=-1), matrices.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)
        f1 = np.where(support + called > 0, 2 * hits / (support + called), np.nan)
        accuracy = hits.sum(axis=-1) / support.sum(axis=-1)
    return {
        "balanced_accuracy": np.nanmean(recall, axis=-1),
        "macro_f1": np.nanmean(f1, axis=-1),
        "accuracy": accuracy,
    }


def point_scores(holdout: Holdout, predicted: np.ndarray) -> dict[str, float]:
    """The three metrics on the whole hold-out."""
    scores = metrics_from_counts(group_counts(holdout, predicted).sum(axis=0))
    return {m: round(float(scores[m]), 4) for m in METRICS}


def classes_used(predicted: np.ndarray) -> int:
    """How many classes a vote predicts for at least one crop."""
    return len(np.unique(np.asarray(predicted)))


def degenerate(predicted: np.ndarray) -> bool:
    """A vote that predicts ``DEGENERATE_CLASSES`` classes or fewer: it cannot be ahead."""
    return classes_used(predicted) <= DEGENERATE_CLASSES


def group_weights(n_groups: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each group is drawn in each resample (``(R, G)``, each row sums to G)."""
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=resamples)


def resampled(
    holdout: Holdout, predicted: np.ndarray, weights: np.ndarray, metric: str = PRIMARY
) -> np.ndarray:
    """``metric`` of ``predicted`` on every resample of the groups (``weights``: ``(R, G)``)."""
    matrices = np.tensordot(weights.astype(np.float64), group_counts(holdout, predicted), axes=1)
    return metrics_from_counts(matrices)[metric]


def interval(values: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval."""
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


def two_level(per_seed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mean over seeds of each resample, the seeds themselves resampled too.

    ``per_seed`` is ``(S, R)``: seed ``s``'s statistic on group resample ``r``. Every seed uses
    the same group resample ``r``, because every seed is scored on the same hold-out: its
    sampling error is common to all of them and must not average out over seeds.
    """
    n_seeds, resamples = per_seed.shape
    drawn = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    return np.take_along_axis(per_seed.T, drawn, axis=1).mean(axis=1)


def mean_over_seeds(
    holdout: Holdout, predicted: Mapping[int, np.ndarray], *, resamples: int = RESAMPLES
) -> tuple[float, tuple[float, float]]:
    """Mean balanced accuracy over seeds and its two-level 95% interval."""
    rng = np.random.default_rng(0)
    weights = group_weights(holdout.n_groups, resamples, rng)
    samples = np.stack([resampled(holdout, p, weights) for p in predicted.values()])
    points = [point_scores(holdout, p)[PRIMARY] for p in predicted.values()]
    return round(float(np.mean(points)), 4), interval(two_level(samples, rng))


def compare(
    holdout: Holdout,
    pairs: Mapping[int, tuple[np.ndarray, np.ndarray]],
    *,
    metric: str = PRIMARY,
    resamples: int = RESAMPLES,
) -> Decision:
    """A minus B (``pairs``: seed -> (A's predictions, B's)) in ``metric``, judged by ``rule``.

    Paired: both are scored on the same group resamples. The per-seed intervals are the group
    bootstrap; the interval of the mean, the two-level one (``two_level``).
    """
    if not pairs:
        return Decision("not measured", "no seed has a result of both")
    rng = np.random.default_rng(0)
    weights = group_weights(holdout.n_groups, resamples, rng)
    seeds = sorted(pairs)
    samples = np.stack(
        [
            resampled(holdout, pairs[s][0], weights, metric)
            - resampled(holdout, pairs[s][1], weights, metric)
            for s in seeds
        ]
    )
    per_seed = {
        s: round(
            point_scores(holdout, pairs[s][0])[metric]
            - point_scores(holdout, pairs[s][1])[metric],
            4,
        )
        for s in seeds
    }
    mean = round(float(np.mean(list(per_seed.values()))), 4)
    span = interval(two_level(samples, rng))
    verdict, reason = rule(
        mean,
        span,
        per_seed,
        a_degenerate=any(degenerate(pairs[s][0]) for s in seeds),
        b_degenerate=any(degenerate(pairs[s][1]) for s in seeds),
    )
    return Decision(
        verdict,
        reason,
        mean,
        span,
        per_seed,
        {s: interval(samples[i]) for i, s in enumerate(seeds)},
    )


def rule(
    mean: float,
    span: tuple[float, float],
    per_seed: Mapping[int, float],
    *,
    a_degenerate: bool,
    b_degenerate: bool,
) -> tuple[str, str]:
    """The decision rule (module docstring of ``benchmarks.model_quality``): verdict, reason.

    ahead: mean >= MARGIN, the interval's lower end > 0, no seed below -MARGIN, A not
    degenerate in any seed. behind: the mirror image (mean <= -MARGIN, upper end < 0, no seed
    above +MARGIN, B not degenerate). Anything else is inconclusive, with the first reason.
    """
    shown = f"mean {mean:+.3f}, 95% interval [{span[0]:+.3f}, {span[1]:+.3f}]"
    if abs(mean) < MARGIN:
        return "inconclusive", f"{shown}: smaller than the {MARGIN} margin"
    sign = 1 if mean > 0 else -1
    if (sign > 0 and span[0] <= 0) or (sign < 0 and span[1] >= 0):
        return "inconclusive", f"{shown}: the interval includes 0"
    against = [s for s, d in per_seed.items() if sign * d < -MARGIN]
    if against:
        side = "behind" if sign > 0 else "ahead"
        seeds = ", ".join(f"seed {s} {per_seed[s]:+.3f}" for s in against)
        return "inconclusive", f"{shown}, but {seeds} clearly {side} (beyond {MARGIN})"
    if (a_degenerate and sign > 0) or (b_degenerate and sign < 0):
        who = "A" if sign > 0 else "B"
        return "inconclusive", f"{shown}, but {who}'s vote is degenerate (<= 2 classes)"
    return ("ahead" if sign > 0 else "behind"), shown


def learns(
    holdout: Holdout, predicted: Mapping[int, np.ndarray], *, resamples: int = RESAMPLES
) -> tuple[bool, str]:
    """Whether a reference learns: in every seed its balanced-accuracy interval's lower end is
    above ``LEARNS_TIMES_CHANCE / n_classes``. Without that, comparisons against it are void."""
    if not predicted:
        return False, "not measured"
    threshold = LEARNS_TIMES_CHANCE / holdout.n_classes
    weights = group_weights(holdout.n_groups, resamples, np.random.default_rng(0))
    lows = {s: interval(resampled(holdout, p, weights))[0] for s, p in predicted.items()}
    shown = ", ".join(f"seed {s}: {low:.3f}" for s, low in lows.items())
    ok = all(low > threshold for low in lows.values())
    return ok, f"lower ends of the balanced-accuracy intervals {shown} vs {threshold:.3f}"
