"""Learning-rate schedules and weight averaging: the training recipe's Keras callbacks.

**Schedules** (``space.schedule``, each after ``warmup_epochs`` of linear warm-up from
``learning_rate / warmup_steps`` to ``learning_rate``):

- ``constant``: the rate stays at ``learning_rate``;
- ``cosine``: Keras' ``CosineDecay``, stepped every batch, from ``learning_rate`` down to
  ``learning_rate * min_lr_ratio`` at the trial's very last training step;
- ``cosine_restarts``: Keras' ``CosineDecayRestarts`` (SGDR): three cycles, each twice as long
  as the one before, so the last cycle also ends at the floor on the last step;
- ``plateau``: Keras' ``ReduceLROnPlateau`` halves the rate when the validation metric has not
  improved for ``PLATEAU_PATIENCE`` epochs, down to the same floor.

The optimizer's ``learning_rate`` stays a plain variable that :class:`StepLearningRate` sets
before every batch from the Keras schedule object. Passing the schedule to the optimizer would
be the usual route, but ``ReduceLROnPlateau`` needs an assignable rate, Keras' restarts schedule
has no warm-up, and a saved fold model would carry the schedule in its compile config; with one
mechanism all four schedules warm up the same way and a fold model loads anywhere in safe mode.
Early stopping and pruning only set ``stop_training``, so they work with every schedule; early
stopping counts its patience only from :func:`patience_start_epoch` on, so a cosine run is not
stopped on the noise of its high-rate phase.

**Weight averaging** (``space.ema.momentum``): the Keras optimizer keeps the exponential moving
average itself (``use_ema``). :class:`WeightAveraging` swaps the averaged weights into the model
at every epoch end, so the callbacks after it (validation score, pruning, early stopping, the
plateau) and everything after ``fit`` (the saved fold model, its out-of-fold predictions and
scores) see the averaged weights; the raw weights go back in before the next epoch trains.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from automl.config.recipe import RESTART_CYCLES, RESTART_T_MUL

# Epochs without improvement of the validation metric before ``plateau`` halves the rate.
PLATEAU_PATIENCE = 2
PLATEAU_FACTOR = 0.5

#: Key of the validation metric in Keras' epoch logs (written by ``fit.py``'s fold reporter).
VAL_METRIC_LOG = "val_metric"


def training_callbacks(
    params: dict[str, Any], *, steps_per_epoch: int, epochs: int
) -> list[keras.callbacks.Callback]:
    """The learning-rate callbacks of one fold's ``fit``, in the order they must run.

    Args:
        params: the trial's resolved hyperparameters (``schedule``, ``warmup_epochs``,
            ``min_lr_ratio``, ``learning_rate``); older trials without them train constant.
        steps_per_epoch: training batches per epoch.
        epochs: epochs this fold trains at most.
    """
    name = params.get("schedule", "constant")
    rate = float(params["learning_rate"])
    floor = rate * float(params.get("min_lr_ratio", 0.0))
    # A searched warm-up can be drawn as long as the training: keep one epoch to schedule.
    warmup_epochs = min(int(params.get("warmup_epochs", 0)), max(epochs - 1, 0))
    warmup_steps = warmup_epochs * steps_per_epoch
    decay_steps = max(epochs * steps_per_epoch - warmup_steps - 1, 1)
    schedule: keras.optimizers.schedules.LearningRateSchedule | None = None
    if name == "cosine":
        schedule = keras.optimizers.schedules.CosineDecay(
            rate, decay_steps=decay_steps, alpha=floor / rate
        )
    elif name == "cosine_restarts":
        cycles = sum(RESTART_T_MUL**i for i in range(RESTART_CYCLES))
        schedule = keras.optimizers.schedules.CosineDecayRestarts(
            rate,
            # A hair over 1/7 of the steps: the last step is the end of the third cycle, not
            # the start of a fourth.
            first_decay_steps=decay_steps / cycles * (1 + 1e-6),
            t_mul=RESTART_T_MUL,
            m_mul=1.0,
            alpha=floor / rate,
        )
    callbacks: list[keras.callbacks.Callback] = []
    if schedule is not None or warmup_steps:
        callbacks.append(StepLearningRate(rate, schedule, warmup_steps=warmup_steps))
    if name == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=VAL_METRIC_LOG,
                mode="max",
                factor=PLATEAU_FACTOR,
                patience=PLATEAU_PATIENCE,
                min_lr=floor,
                verbose=0,
            )
        )
    return callbacks


class StepLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's rate before every batch: linear warm-up, then a Keras schedule.

    Without a schedule the rate is left alone after the warm-up (``constant``, ``plateau``).
    """

    def __init__(
        self,
        rate: float,
        schedule: keras.optimizers.schedules.LearningRateSchedule | None,
        *,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        self.rate, self.schedule, self.warmup_steps = rate, schedule, warmup_steps
        self.step = 0

    def value(self, step: int) -> float:
        """The learning rate of training step ``step`` (counted from 0)."""
        if step < self.warmup_steps:
            return self.rate * (step + 1) / self.warmup_steps
        if self.schedule is None:
            return self.rate
        return float(self.schedule(step - self.warmup_steps))

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.step <= self.warmup_steps or self.schedule is not None:
            self.model.optimizer.learning_rate = self.value(self.step)
        self.step += 1


class WeightAveraging(keras.callbacks.Callback):
    """Holds the optimizer's averaged weights in the model between epochs and after training.

    Must come first among the callbacks: at an epoch end it stores the raw weights and puts the
    averages in (``finalize_variable_values``, the call ``fit`` itself makes when it ends), so
    the callbacks after it score the averaged model; at the next epoch begin the raw weights go
    back. After the last epoch the averages stay, and ``fit``'s own finalisation writes the same
    values again.
    """

    def __init__(self) -> None:
        super().__init__()
        self._raw: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        variables = self.model.trainable_weights
        self._raw = [np.array(v.numpy()) for v in variables]
        self.model.optimizer.finalize_variable_values(variables)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._raw is None:
            return
        for variable, raw in zip(self.model.trainable_weights, self._raw, strict=True):
            variable.assign(raw)
        self._raw = None
