"""The one best-first order of a study's trials, for every list that ranks them.

``automl show``, the report's leaderboard, the trials an ensemble is chosen from
(``storage.top_trials``) and the candidates of greedy selection all sort with
:func:`rank_key`: completed trials first, best value first (ties: the lower trial number); then
pruned trials, by the value Optuna keeps for them (their last intermediate value, a score of
fold 0 at the epoch they stopped, not a CV mean, so never among the completed ones); then
failed trials, then running and waiting ones, by number. A trial without a finite value goes
after those of its state that have one.
"""

from __future__ import annotations

import math

_STATE_ORDER = {"complete": 0, "pruned": 1, "fail": 2}

Direction = str  # "maximize" or "minimize"


def rank_key(
    state: str, value: float | None, number: int, direction: Direction
) -> tuple[int, int, float, int]:
    """Sort key of one trial: ``sorted(trials, key=...)`` puts the best first.

    Args:
        state: the trial's state in lower case (``complete``, ``pruned``, ``fail``, ...).
        value: its (first) objective value; None if it has none.
        number: its trial number.
        direction: the study's ``maximize`` or ``minimize``.
    """
    sign = -1.0 if direction == "maximize" else 1.0
    scored = value is not None and math.isfinite(value) and state in ("complete", "pruned")
    return (
        _STATE_ORDER.get(state, 3),
        0 if scored else 1,
        sign * float(value) if scored and value is not None else 0.0,
        number,
    )
