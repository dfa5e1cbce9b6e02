"""Pruners as automl runs them: successive-halving rungs inside the first fold.

Every fold-epoch is reported at its own step, ``fold * max_epochs + epoch`` (``objective.py``),
so a median or percentile pruner compares trials at every fold and epoch. Hyperband and
successive halving work differently: they promote a trial past a *rung* (a budget in steps,
``min_resource * reduction_factor ** k``) only when it is among the best ``1 / reduction_factor``
of the trials that reached it. Their budget is meant in epochs of training, so automl gives
them the epochs of fold 0 and nothing else: ``max_resource`` is the space's largest ``epochs``
(unless the file sets it), and :class:`FirstFoldPruner` asks them only while the trial is in
fold 0. A bad configuration then costs a few epochs of one fold, and a trial that passed fold
0's rungs trains its other folds to the end (early stopping aside), so its cross-validated
score is complete. The step of a rung is an epoch index from 0: a rung at step 2 is decided
after the third epoch.

This module imports no TensorFlow.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial


class FirstFoldPruner(optuna.pruners.BasePruner):
    """Asks ``inner`` only at the steps of fold 0 (``step < stride``); never prunes later."""

    def __init__(self, inner: optuna.pruners.BasePruner, stride: int) -> None:
        self.inner, self.stride = inner, stride

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step >= self.stride:
            return False
        return self.inner.prune(study, trial)


def rung_options(name: str, options: dict[str, object], stride: int) -> dict[str, object]:
    """``options`` with Hyperband's ``max_resource`` set to fold 0's epochs when not given.

    Optuna's ``"auto"`` would read it from the first finished trial's last step, which is the
    last epoch of its last fold: rungs would then fall in later folds.
    """
    if name == "hyperband" and options.get("max_resource", "auto") == "auto":
        return {**options, "max_resource": stride}
    return dict(options)
