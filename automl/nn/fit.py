"""Train one fold: the Keras side of a trial, behind :func:`fit_fold`.

:func:`fit_fold` builds the model the hyperparameters describe, trains it on the fold's
training rows with the trial's recipe (learning-rate schedule, weight averaging, optional early
stopping on the validation metric), scores the validation rows after every epoch and hands each
score to a plain-Python hook, ``on_epoch(epoch, score) -> stop``. The caller reports there and
decides whether to stop (``search.objective`` reports to Optuna and asks its pruner), so nothing
above this package imports Keras or reads TensorFlow's errors.

**NaN.** A non-finite training loss, or non-finite validation probabilities (Keras clips the
loss, so diverged weights can show in the outputs alone), stops the fold at once:
``FoldFit.nan_loss`` says so and the hook does not hear about that epoch.

**Early stopping** counts its patience only after the warm-up and, under a decaying schedule,
from the decay point of ``config.recipe.patience_start_epoch``; it keeps the last epoch's
weights unless asked to restore the best: the best epoch is chosen on the very validation rows
that are then scored, so its predictions would be the maximum over a noisy curve, optimistic
out-of-fold estimates for the sampler and the ensemble selection.

**Out of memory.** TensorFlow's ``ResourceExhaustedError`` anywhere in a fit becomes
:class:`OutOfMemory`; the caller decides whether to retry at a smaller batch.

**Device.** :func:`configure_device` (memory growth, mixed precision, determinism) runs before
anything touches TensorFlow's devices; a GPU initialised before it is a :class:`DeviceError`.

**Memory between fits.** Each fit starts from a cleared Keras session; :func:`release` clears it
and collects garbage when the caller is done with a trial.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from automl.config.recipe import patience_start_epoch
from automl.errors import AutoMLError
from automl.metrics import compute_metric, log_loss_value
from automl.nn.inference import PREDICT_BATCH_SIZE
from automl.nn.models import build_model, count_parameters, latency_ms, save_model
from automl.nn.pipeline import make_dataset
from automl.nn.schedules import VAL_METRIC_LOG, WeightAveraging, training_callbacks

#: ``on_epoch(epoch, score) -> stop``: called after every scored epoch (epoch counted from 0,
#: score the validation metric, NaN where undefined); returning True ends the fit there.
EpochHook = Callable[[int, float], bool]


class OutOfMemory(Exception):
    """The device ran out of memory during a fit (TensorFlow's ``ResourceExhaustedError``)."""


@dataclass(frozen=True)
class FoldFit:
    """What training one fold produced.

    Attributes:
        probabilities: ``(n_val, C)`` class probabilities of the validation rows, in the order
            of ``val_indices``; None when the fit stopped early (NaN, or the hook).
        score: the metric on ``probabilities`` (``metrics.compute_metric``); NaN without them.
        history: one record per scored epoch: ``epoch``, ``loss``, ``accuracy`` (training),
            ``val_loss``, ``val_metric`` and ``learning_rate`` (the rate of its last step).
        n_params: ``{"total": ..., "trainable": ...}`` parameter counts of the model.
        model_path: where the trained model was saved; None when not asked or stopped early.
        latency_ms: median milliseconds to predict one image; None when not asked.
        nan_loss: the loss or the validation outputs became NaN (the fit stopped there).
        stopped_at: the epoch after which the hook stopped the fit; None when it never did.
    """

    probabilities: np.ndarray | None
    score: float
    history: list[dict[str, float]]
    n_params: dict[str, int]
    model_path: Path | None = None
    latency_ms: float | None = None
    nan_loss: bool = False
    stopped_at: int | None = None

    @property
    def epochs_run(self) -> int:
        """Epochs trained and scored (an epoch that turned NaN is not counted)."""
        return len(self.history)


def fit_fold(
    params: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    train_indices: np.ndarray,
    val_indices: np.ndarray,
    *,
    n_classes: int,
    image_size: int,
    seed: int,
    metric: str,
    patience: int = 0,
    restore_best: bool = False,
    jit_compile: str = "auto",
    on_epoch: EpochHook | None = None,
    save_to: Path | None = None,
    measure_latency: bool = False,
) -> FoldFit:
    """Build, train and score one fold's model.

    Args:
        params: the trial's resolved hyperparameters (``space.suggest``).
        images: all rows, ``(n, s, s, 3)`` uint8 (or a memmap; never copied whole).
        labels: class indices of all rows, ``(n,)`` (balanced class weights count them all).
        train_indices, val_indices: the rows to train on, and to score after every epoch.
        n_classes, image_size: the model's output width and input size (``s``).
        seed: seeds Keras (weights, dropout) and the shuffling and augmentation of the data.
        metric: the validation metric (``metrics.METRICS``).
        patience, restore_best: early stopping after ``patience`` epochs without a better
            validation metric (0: never), and whether the best epoch comes back (module doc).
        jit_compile: ``auto``, ``on`` or ``off`` (XLA).
        on_epoch: hears every scored epoch and may stop the fit (:data:`EpochHook`).
        save_to: a ``.keras`` path to save the trained model to (atomically).
        measure_latency: also time one-image predictions of the trained model.

    Raises:
        OutOfMemory: the device ran out of memory (building, training, scoring or saving).
    """
    with _out_of_memory_as_own_error():
        model = _fresh_model(params, n_classes, image_size, jit_compile, seed)
        n_params = count_parameters(model)
        val_data = make_dataset(
            images, None, val_indices, n_classes=n_classes, batch_size=PREDICT_BATCH_SIZE
        )
        reporter = _FoldReporter(val_data, labels[val_indices], metric, on_epoch)
        stopping = _early_stopping(params, reporter, patience, restore_best)
        _train(model, params, images, labels, train_indices, n_classes, seed, reporter, stopping)
        if reporter.nan_loss or reporter.stopped_at is not None:
            return FoldFit(
                None, math.nan, reporter.history, n_params, nan_loss=reporter.nan_loss,
                stopped_at=reporter.stopped_at,
            )  # fmt: skip
        probabilities = reporter.final_probabilities(restored=bool(stopping and stopping.restored))
        if save_to is not None:
            save_model(model, save_to)
        return FoldFit(
            probabilities, compute_metric(metric, labels[val_indices], probabilities),
            reporter.history, n_params, model_path=save_to,
            latency_ms=round(latency_ms(model, images[:1]), 3) if measure_latency else None,
        )  # fmt: skip


def saved_model_latency_ms(path: Path, batch: np.ndarray) -> float:
    """Median milliseconds to predict ``batch`` with the model saved at ``path`` (rounded)."""
    with _out_of_memory_as_own_error():
        model = keras.saving.load_model(path, safe_mode=True)
        return round(latency_ms(model, batch), 3)


def release() -> None:
    """Free what earlier fits hold: Keras' global session state, then Python's garbage."""
    keras.backend.clear_session()
    gc.collect()


def configure_device(mixed_precision: str, deterministic: str = "auto") -> dict[str, Any]:
    """Memory growth on every GPU; mixed precision and op determinism as asked.

    Call it before anything touches TensorFlow's devices (a model built, a weights file loaded):
    once a GPU is initialised its memory growth can no longer be set (:func:`memory_growth`).

    ``auto`` means mixed precision only with a GPU, and determinism only without one. With
    TensorFlow's op determinism a trial's seed fixes its scores (same machine, same versions,
    same study); without it, multi-threaded kernels and the input pipeline's parallel map change
    the last digits of a fold's weights from run to run, and now and then a trial's score. On a
    GPU it costs speed and some ops have no deterministic kernel (TensorFlow raises), hence off
    there unless asked.

    Raises:
        DeviceError: memory growth could not be set (:func:`memory_growth`).
    """
    n_gpus = memory_growth()
    use_mixed = mixed_precision == "on" or (mixed_precision == "auto" and n_gpus > 0)
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    use_determinism = deterministic == "on" or (deterministic == "auto" and n_gpus == 0)
    if use_determinism:
        tf.config.experimental.enable_op_determinism()
    else:  # a process can run studies of both kinds (tests, notebooks): undo an earlier one
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()
    return {"gpus": n_gpus, "mixed_precision": use_mixed, "deterministic": use_determinism}


class DeviceError(AutoMLError):
    """The accelerator could not be set up as training needs it (an environment error)."""


#: Read by TensorFlow when it initialises a GPU: growth on whatever Python did before. The command
#: line sets it before TensorFlow is imported (``cli/main.py``), as a second line of defence.
FORCE_GROWTH_ENV = "TF_FORCE_GPU_ALLOW_GROWTH"


def memory_growth() -> int:
    """Turn on memory growth on every visible GPU; return how many there are.

    Without growth TensorFlow reserves most of a GPU's memory for the first process that
    touches it, so two workers pinned to one GPU (``--gpus 0,0``) run out of memory. Growth can
    only be set before TensorFlow initialises the GPU; TensorFlow then raises RuntimeError
    (setting growth that is already on returns quietly), and that is an error here.

    Raises:
        DeviceError: TensorFlow initialised a GPU before growth was set.
    """
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:
            if os.environ.get(FORCE_GROWTH_ENV, "").lower() == "true":
                continue  # TensorFlow turned growth on itself when it initialised the GPU
            raise DeviceError(
                f"GPU {gpu.name}: memory growth must be set before TensorFlow initialises the "
                f"GPU, but it was initialised already ({exc}); set up the device first "
                "(automl.nn.fit.configure_device) before building or loading a model, or set "
                "TF_FORCE_GPU_ALLOW_GROWTH=true before starting Python."
            ) from exc
    return len(gpus)


def _fresh_model(
    params: dict[str, Any], n_classes: int, image_size: int, jit_compile: str, seed: int
) -> keras.Model:
    """The fold's model in a cleared session, its weights drawn from ``seed``."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    return build_model(params, n_classes=n_classes, image_size=image_size, jit_compile=jit_compile)


@contextlib.contextmanager
def _out_of_memory_as_own_error() -> Iterator[None]:
    try:
        yield
    except tf.errors.ResourceExhaustedError as exc:
        raise OutOfMemory(str(exc)) from exc


def _train(
    model: keras.Model,
    params: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    train_indices: np.ndarray,
    n_classes: int,
    seed: int,
    reporter: _FoldReporter,
    stopping: _EarlyStopping | None,
) -> None:
    """``model.fit`` on the training rows with the trial's callbacks."""
    batch_size, epochs = int(params["batch_size"]), int(params["epochs"])
    train_data = make_dataset(
        images,
        labels,
        train_indices,
        n_classes=n_classes,
        batch_size=batch_size,
        training=True,
        augment=params["augment"],
        seed=seed,
    )
    callbacks = _callbacks(
        params, reporter, stopping, steps_per_epoch=math.ceil(len(train_indices) / batch_size)
    )
    model.fit(
        train_data,
        epochs=epochs,
        callbacks=callbacks,
        class_weight=_class_weights(labels, n_classes, params["class_weight"]),
        shuffle=False,  # the dataset reshuffles itself every epoch
        verbose=0,
    )


def _callbacks(
    params: dict[str, Any],
    reporter: _FoldReporter,
    stopping: _EarlyStopping | None,
    *,
    steps_per_epoch: int,
) -> list[keras.callbacks.Callback]:
    """The fit's callbacks, in the order they must run at each epoch end."""
    # Averaged weights first, so the reporter and everything after see them.
    callbacks: list[keras.callbacks.Callback] = (
        [WeightAveraging()] if params.get("ema", {}).get("momentum", 0) > 0 else []
    )
    callbacks.append(reporter)
    if stopping is not None:
        callbacks.append(stopping)
    # The plateau schedule monitors the metric the reporter has just written into the logs.
    return callbacks + training_callbacks(
        params, steps_per_epoch=steps_per_epoch, epochs=int(params["epochs"])
    )


class _FoldReporter(keras.callbacks.Callback):
    """Scores the validation rows after each epoch, records it and asks the hook to go on."""

    def __init__(
        self, val_data: Any, y_val: np.ndarray, metric: str, on_epoch: EpochHook | None
    ) -> None:
        super().__init__()
        self.val_data, self.y_val, self.metric, self.on_epoch = val_data, y_val, metric, on_epoch
        self.history: list[dict[str, float]] = []
        self.stopped_at: int | None = None
        self.nan_loss = False
        self.last_probabilities: np.ndarray | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs if logs is not None else {}
        logs[VAL_METRIC_LOG] = float("nan")  # what the plateau schedule monitors
        loss = float(logs.get("loss", float("nan")))
        probabilities = (
            self.model.predict(self.val_data, verbose=0) if math.isfinite(loss) else None
        )
        if probabilities is None or not np.isfinite(probabilities).all():
            self.nan_loss = True
            self.model.stop_training = True
            return
        self.last_probabilities = probabilities
        score = compute_metric(self.metric, self.y_val, probabilities)
        logs[VAL_METRIC_LOG] = score
        self.history.append(self._record(epoch, loss, logs, probabilities, score))
        if self.on_epoch is not None and self.on_epoch(epoch, score):
            self.stopped_at = epoch
            self.model.stop_training = True

    def final_probabilities(self, *, restored: bool) -> np.ndarray:
        """The probabilities to keep: the last epoch's, or new ones after early stopping.

        Early stopping puts the best epoch's weights back; those are saved, so those are scored.
        """
        if self.last_probabilities is None or restored:
            return self.model.predict(self.val_data, verbose=0)
        return self.last_probabilities

    def _record(
        self,
        epoch: int,
        loss: float,
        logs: dict[str, float],
        probabilities: np.ndarray,
        score: float,
    ) -> dict[str, float]:
        return {
            "epoch": epoch,
            "loss": loss,
            "accuracy": float(logs.get("accuracy", float("nan"))),
            "val_loss": log_loss_value(self.y_val, probabilities),
            "val_metric": score,
            # The rate of the epoch's last step (what the schedule reached).
            "learning_rate": float(np.asarray(self.model.optimizer.learning_rate)),
        }


def _early_stopping(
    params: dict[str, Any], reporter: _FoldReporter, patience: int, restore_best: bool
) -> _EarlyStopping | None:
    """The fold's early stopping, patient until the schedule's decay point; None without."""
    if not patience:
        return None
    start = patience_start_epoch(params, int(params["epochs"]))
    return _EarlyStopping(reporter, patience, restore_best, start)


class _EarlyStopping(keras.callbacks.Callback):
    """Early stopping on the reporter's validation metric, patient through the schedule's decay.

    The best score is tracked from the first epoch, but epochs before ``start`` (warm-up; the
    high-rate half of a cosine) never count towards ``patience``. With ``restore_best`` the best
    epoch's weights come back when the fit ends, and :attr:`restored` says so.
    """

    def __init__(
        self, reporter: _FoldReporter, patience: int, restore_best: bool, start: int
    ) -> None:
        super().__init__()
        self.reporter, self.patience, self.restore_best = reporter, patience, restore_best
        self.start = start
        self.best = -math.inf
        self.best_weights: list[Any] | None = None
        self.wait = 0
        self.restored = False

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if not self.reporter.history:
            return
        score = self.reporter.history[-1]["val_metric"]
        if score > self.best:
            self.best, self.wait = score, 0
            if self.restore_best:
                self.best_weights = self.model.get_weights()
        elif epoch >= self.start:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.restore_best and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            self.restored = True


def _class_weights(labels: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    if mode != "balanced":
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    # sklearn's "balanced": n_samples / (n_classes * count)
    return {i: float(len(labels) / (n_classes * c)) if c else 0.0 for i, c in enumerate(counts)}
