"""One fold's fit (``automl/nn/fit.py``) through its API, on real white-blood-cell crops."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import real_image_array, tiny_cnn_params

import automl.nn.fit
from automl.metrics import compute_metric
from automl.nn.fit import (
    FORCE_GROWTH_ENV,
    DeviceError,
    FoldFit,
    OutOfMemory,
    configure_device,
    fit_fold,
    memory_growth,
)

SIZE = 28
N_CLASSES = 3


@pytest.fixture(scope="module")
def cells(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """24 real crops (8 per class, in class order) at 28 px, and their labels."""
    return real_image_array(shared_data, SIZE, per_class=8)


def _params(**space: object) -> dict:
    return tiny_cnn_params(SIZE, **{"epochs": 3, "learning_rate": 0.01, **space})


def _fit(cells, params: dict, **kwargs) -> FoldFit:
    """Train on the even rows, score the odd ones: 4 images of each class on either side."""
    images, labels = cells
    rows = np.arange(len(labels))
    return fit_fold(
        params,
        images,
        labels,
        rows[0::2],
        rows[1::2],
        n_classes=N_CLASSES,
        image_size=SIZE,
        seed=11,
        metric=kwargs.pop("metric", "balanced_accuracy"),
        **kwargs,
    )


def test_a_fit_scores_every_validation_image_and_saves_the_model_it_scored(
    cells, tmp_path: Path
) -> None:
    images, labels = cells
    fit = _fit(cells, _params(), save_to=tmp_path / "fold_0.keras", measure_latency=True)
    val = np.arange(len(labels))[1::2]
    assert fit.probabilities is not None and fit.probabilities.shape == (len(val), N_CLASSES)
    np.testing.assert_allclose(fit.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert fit.score == compute_metric("balanced_accuracy", labels[val], fit.probabilities)
    assert [record["epoch"] for record in fit.history] == [0, 1, 2] and fit.epochs_run == 3
    assert fit.history[-1]["val_metric"] == fit.score  # the last epoch's weights are kept
    assert not fit.nan_loss and fit.stopped_at is None
    assert fit.n_params["total"] >= fit.n_params["trainable"] > 0
    assert fit.latency_ms is not None and fit.latency_ms > 0
    assert fit.model_path == tmp_path / "fold_0.keras"
    saved = keras.saving.load_model(fit.model_path, safe_mode=True)
    predicted = saved.predict(images[val].astype("float32"), verbose=0)
    np.testing.assert_allclose(predicted, fit.probabilities, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["fold_0.keras"]  # no temporary left


def test_the_hook_hears_every_epoch_and_can_stop_the_fit(cells, tmp_path: Path) -> None:
    heard: list[tuple[int, float]] = []

    def stop_after_the_second_epoch(epoch: int, score: float) -> bool:
        heard.append((epoch, score))
        return epoch == 1

    fit = _fit(
        cells,
        _params(epochs=5),
        on_epoch=stop_after_the_second_epoch,
        save_to=tmp_path / "fold_0.keras",
    )
    assert [epoch for epoch, _ in heard] == [0, 1]  # once per epoch, then no more
    assert [score for _, score in heard] == [r["val_metric"] for r in fit.history]
    assert fit.stopped_at == 1 and fit.epochs_run == 2
    # A stopped fit is not scored nor saved: the caller prunes it.
    assert fit.probabilities is None and np.isnan(fit.score) and fit.model_path is None
    assert not (tmp_path / "fold_0.keras").exists()


def test_a_hook_that_never_stops_hears_all_epochs(cells) -> None:
    heard: list[int] = []
    fit = _fit(cells, _params(epochs=2), on_epoch=lambda epoch, _: heard.append(epoch) or False)
    assert heard == [0, 1] and fit.stopped_at is None and fit.probabilities is not None


def test_a_diverging_fit_reports_nan_loss_and_no_scores(cells, tmp_path: Path) -> None:
    params = _params(epochs=3)
    params["learning_rate"] = 1.0e36
    params["optimizer"] = {"name": "sgd", "momentum": 0.99, "nesterov": False}
    heard: list[int] = []
    fit = _fit(
        cells,
        params,
        on_epoch=lambda epoch, _: heard.append(epoch) or False,
        save_to=tmp_path / "fold_0.keras",
    )
    assert fit.nan_loss
    assert fit.epochs_run == len(heard) < 3  # the NaN epoch is neither recorded nor heard
    assert fit.probabilities is None and fit.model_path is None
    assert not (tmp_path / "fold_0.keras").exists()


def test_early_stopping_with_restore_scores_the_best_epoch_weights(cells) -> None:
    # restore_best puts the weights of the best epoch back, so the fold's score is the best
    # validation score of its history, not the last one (here the last epoch scores worse).
    backbone = {"name": "custom_cnn", "blocks": 2, "filters": 16, "batchnorm": False}
    params = _params(epochs=8, learning_rate=0.003, backbone=backbone)
    fit = _fit(cells, params, patience=2, restore_best=True, metric="accuracy")
    scores = [record["val_metric"] for record in fit.history]
    assert fit.score == max(scores)
    # It stopped two epochs after the (first) best one, or ran every epoch.
    assert fit.epochs_run == 8 or scores.index(max(scores)) == fit.epochs_run - 3


def test_out_of_fold_predictions_come_from_weights_not_chosen_on_the_fold(
    cells, tmp_path: Path
) -> None:
    # By default early stopping keeps the last epoch's weights: the kept probabilities are the
    # last scored epoch's, the saved model predicts exactly them, and the fold's score is the
    # last epoch's even where an earlier epoch scored better on these same rows.
    backbone = {"name": "custom_cnn", "blocks": 2, "filters": 16, "batchnorm": False}
    params = _params(epochs=8, learning_rate=0.003, backbone=backbone)
    fit = _fit(cells, params, patience=2, metric="accuracy", save_to=tmp_path / "fold_0.keras")
    scores = [record["val_metric"] for record in fit.history]
    assert fit.score == scores[-1]
    assert fit.score < max(scores)  # this fold does have a better epoch it did not keep
    images, _ = cells
    model = keras.saving.load_model(tmp_path / "fold_0.keras", safe_mode=True)
    again = model.predict(images[1::2], verbose=0)
    np.testing.assert_allclose(again, fit.probabilities, atol=1e-5)


@pytest.mark.parametrize(
    ("schedule", "warmup", "stops_after"),
    [("constant", 0, 2), ("constant", 2, 3), ("cosine", 0, 4), ("cosine_restarts", 0, 6)],
)
def test_early_stopping_waits_for_the_decay_of_the_schedule(
    cells, schedule: str, warmup: int, stops_after: int
) -> None:
    # A rate of 1e-9 leaves the weights where they start, so no epoch after the first improves
    # and patience 1 stops at the first epoch it may count: the second epoch with a constant
    # rate, the first after a warm-up of 2 (epoch 3); under cosine the middle of the decay
    # (epoch 4 of 6); under restarts the middle of the last cycle (cycles of 1, 2 and 4 of 7
    # epochs: epoch 6 of 7).
    epochs = 7 if schedule == "cosine_restarts" else 6
    params = _params(epochs=epochs, learning_rate=1e-9, schedule=schedule, warmup_epochs=warmup)
    fit = _fit(cells, params, patience=1, metric="accuracy")
    scores = [record["val_metric"] for record in fit.history]
    assert len(set(scores)) == 1, scores  # flat: the premise of the test
    assert fit.epochs_run == stops_after


def test_running_out_of_device_memory_is_raised_as_out_of_memory(
    cells, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_model = automl.nn.fit.build_model

    def model_that_runs_out_of_memory(*args, **kwargs):
        # A py_function raising MemoryError inside the compiled training step surfaces as
        # TensorFlow's ResourceExhaustedError, as a real GPU's allocation failure does.
        model = build_model(*args, **kwargs)
        train_step = model.train_step

        def step(data):
            tf.py_function(_allocation_failure, [tf.shape(data[0])[0]], tf.int32)
            return train_step(data)

        model.train_step = step
        return model

    monkeypatch.setattr(automl.nn.fit, "build_model", model_that_runs_out_of_memory)
    with pytest.raises(OutOfMemory, match="OOM when allocating a tensor for a batch of 8"):
        _fit(cells, _params(epochs=1))


def _allocation_failure(batch: tf.Tensor) -> tf.Tensor:
    raise MemoryError(f"OOM when allocating a tensor for a batch of {int(batch)}")


def test_op_determinism_makes_a_seeded_fit_repeat_exactly(cells) -> None:
    """Augmentation is drawn in a parallel map: only op determinism fixes which image gets which
    draw. Without it three such fits differ (most runs: not asserted, it is chance)."""
    params = _params(epochs=2, augment={"rotation": 0.1, "flip": "horizontal"})
    try:
        assert configure_device("off", "on")["deterministic"] is True
        runs = [_fit(cells, params).probabilities for _ in range(3)]
    finally:
        configure_device("off", "auto")  # the default the rest of the session runs with
    assert all(run is not None and np.array_equal(run, runs[0]) for run in runs)


def test_memory_growth_that_comes_too_late_is_an_error_not_a_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What TensorFlow does on a GPU once a model has initialised it, replayed on CPU."""
    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    grown: list[str] = []

    def set_memory_growth(device: tf.config.PhysicalDevice, enable: bool) -> None:
        if device not in grown:  # TensorFlow returns quietly only where growth is on already
            raise RuntimeError("Physical devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", set_memory_growth)
    monkeypatch.delenv(FORCE_GROWTH_ENV, raising=False)
    with pytest.raises(DeviceError, match=r"^GPU /physical_device:GPU:0: memory growth must be"):
        memory_growth()
    with pytest.raises(DeviceError, match="initialised already"):
        configure_device("auto")  # training's set-up says so as well, before any fit
    grown.append(gpu)
    assert memory_growth() == 1  # set before: a second call is fine
    grown.clear()
    monkeypatch.setenv(FORCE_GROWTH_ENV, "true")  # TensorFlow grew it itself (the CLI sets it)
    assert memory_growth() == 1
