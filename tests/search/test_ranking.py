"""The one best-first order of trials (``search/ranking.py``)."""

from __future__ import annotations

import math

from automl.search.ranking import rank_key


def _order(trials: list[tuple[int, str, float | None]], direction: str) -> list[int]:
    ranked = sorted(trials, key=lambda t: rank_key(t[1], t[2], t[0], direction))
    return [number for number, _, _ in ranked]


def test_completed_best_first_then_pruned_by_their_last_value_then_the_rest_by_number() -> None:
    trials = [
        (0, "complete", 0.70),
        (1, "pruned", 0.95),  # a fold-0 epoch score: never above a CV mean
        (2, "complete", 0.80),
        (3, "fail", None),
        (4, "pruned", 0.40),
        (5, "complete", 0.80),  # ties: the lower number first
        (6, "running", None),
        (7, "complete", math.nan),  # no usable value: after the scored ones
        (8, "pruned", None),
    ]
    assert _order(trials, "maximize") == [2, 5, 0, 7, 1, 4, 8, 3, 6]
    assert _order(trials, "minimize") == [0, 2, 5, 7, 4, 1, 8, 3, 6]
