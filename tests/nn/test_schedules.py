"""Learning-rate schedules and weight averaging on real crops (``automl/nn/schedules.py``)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from conftest import make_folder_layout, real_image_array, tiny_cnn_params, write_study_yaml

from automl.config.schema import load_config
from automl.nn.models import build_model
from automl.nn.pipeline import make_dataset
from automl.nn.schedules import (
    PLATEAU_FACTOR,
    VAL_METRIC_LOG,
    StepLearningRate,
    WeightAveraging,
    training_callbacks,
)
from automl.search.objective import Objective
from automl.search.paths import paths_for
from automl.search.session import prepare_splits
from automl.search.storage import create_or_load

SIZE = 28


@pytest.fixture(scope="module")
def cells(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    return real_image_array(shared_data, SIZE, per_class=8)


def _params(**space: object) -> dict:
    return tiny_cnn_params(SIZE, **{"epochs": 4, **space})


def _fit(params: dict, cells: tuple[np.ndarray, np.ndarray], extra=()) -> keras.Model:
    images, labels = cells
    keras.utils.set_random_seed(0)
    model = build_model(params, n_classes=3, image_size=SIZE)
    data = make_dataset(
        images, labels, np.arange(len(labels)), n_classes=3, batch_size=8, training=True
    )
    callbacks = [WeightAveraging()] if params["ema"]["momentum"] > 0 else []
    callbacks += list(extra)
    callbacks += training_callbacks(
        params, steps_per_epoch=int(np.ceil(len(labels) / 8)), epochs=params["epochs"]
    )
    model.fit(data, epochs=params["epochs"], callbacks=callbacks, shuffle=False, verbose=0)
    return model


def _rate(model: keras.Model) -> float:
    return float(np.asarray(model.optimizer.learning_rate))


def test_cosine_rate_at_the_last_step_is_its_floor(cells) -> None:
    params = _params(schedule="cosine", learning_rate=0.01, min_lr_ratio=0.05, warmup_epochs=1)
    model = _fit(params, cells)
    assert _rate(model) == pytest.approx(0.01 * 0.05, rel=1e-4)
    assert int(model.optimizer.iterations) == 4 * 3  # 24 images / batch 8, 4 epochs


@pytest.mark.parametrize("name", ["cosine", "cosine_restarts"])
def test_warmup_ramps_linearly_then_the_schedule_ends_at_the_floor(name: str) -> None:
    params = _params(schedule=name, learning_rate=0.1, min_lr_ratio=0.1, warmup_epochs=1)
    (step_rate,) = training_callbacks(params, steps_per_epoch=5, epochs=4)
    assert isinstance(step_rate, StepLearningRate)
    rates = [step_rate.value(s) for s in range(20)]
    assert rates[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert rates[5] == pytest.approx(0.1)
    assert rates[-1] == pytest.approx(0.01, rel=1e-3)
    assert min(rates) >= 0.01 - 1e-9
    if name == "cosine":
        assert all(
            a >= b - 1e-12 for a, b in zip(rates[5:], rates[6:], strict=False)
        )  # never rises
    else:
        assert any(b > a for a, b in zip(rates[5:], rates[6:], strict=False))  # a restart


def test_constant_without_warmup_adds_no_callback() -> None:
    assert training_callbacks(_params(), steps_per_epoch=3, epochs=4) == []


def test_a_searched_warmup_longer_than_the_training_keeps_one_epoch_to_schedule() -> None:
    params = _params(schedule="cosine", learning_rate=0.1, epochs=3, warmup_epochs=2)
    params["warmup_epochs"] = 9  # as a searched warm-up can be drawn
    (step_rate,) = training_callbacks(params, steps_per_epoch=2, epochs=3)
    assert step_rate.warmup_steps == 4


class _FlatMetric(keras.callbacks.Callback):
    """A validation metric that never improves, as the trial's reporter would log it."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs[VAL_METRIC_LOG] = 0.5


class _RateLog(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.rates.append(_rate(self.model))


def test_plateau_halves_the_rate_on_a_flat_validation_metric(cells) -> None:
    params = _params(schedule="plateau", learning_rate=0.01, epochs=8, min_lr_ratio=0.2)
    log = _RateLog()
    model = _fit(params, cells, extra=[_FlatMetric(), log])
    # Patience 2: epochs 0-2 at the full rate, then halved each time the wait runs out
    # (after epochs 2, 4 and 6), never below the floor.
    assert log.rates[:3] == pytest.approx([0.01] * 3)
    assert log.rates[3] == pytest.approx(0.01 * PLATEAU_FACTOR)
    assert _rate(model) == pytest.approx(0.002)


class _Probe(keras.callbacks.Callback):
    """At each epoch end: the weights the callbacks after WeightAveraging see, and the raw."""

    def __init__(self, averaging: WeightAveraging) -> None:
        super().__init__()
        self.averaging = averaging
        self.seen: list[list[np.ndarray]] = []
        self.raw: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seen.append([v.numpy().copy() for v in self.model.trainable_weights])
        self.raw.append([r.copy() for r in self.averaging._raw])


def test_ema_weights_differ_from_the_raw_ones_and_are_the_ones_kept_and_saved(
    cells, tmp_path: Path
) -> None:
    params = _params(ema={"momentum": 0.9}, learning_rate=0.01, epochs=3)
    images, labels = cells
    keras.utils.set_random_seed(0)
    model = build_model(params, n_classes=3, image_size=SIZE)
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.9)
    data = make_dataset(images, labels, np.arange(len(labels)), n_classes=3, batch_size=8)
    averaging = WeightAveraging()
    probe = _Probe(averaging)
    model.fit(data, epochs=3, callbacks=[averaging, probe], shuffle=False, verbose=0)
    averages = [v.numpy() for v in model.optimizer._model_variables_moving_average]
    for seen, raw in zip(probe.seen, probe.raw, strict=True):
        assert any(not np.allclose(s, r) for s, r in zip(seen, raw, strict=True))
    final = [v.numpy() for v in model.trainable_weights]
    assert all(np.allclose(f, a) for f, a in zip(final, averages, strict=True))
    assert all(np.allclose(f, s) for f, s in zip(final, probe.seen[-1], strict=True))
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert all(
        np.allclose(a, b)
        for a, b in zip(reloaded.trainable_weights, model.trainable_weights, strict=True)
    )


RECIPE = """
  schedule: cosine
  warmup_epochs: 1
  ema: {momentum: 0.9}
  augment: {mixup_alpha: 0.4, cutmix_alpha: 1.0, mix_probability: 0.5, erasing: 0.25}
"""


def test_a_trial_with_the_recipe_saves_what_it_scored_and_a_resumed_study_goes_on(
    shared_data: Path, tmp_path: Path
) -> None:
    data_root = make_folder_layout(shared_data, tmp_path / "cells", per_class=8)
    path = write_study_yaml(
        tmp_path / "s.yaml", data_root, tmp_path / "studies", epochs="3", extra_space=RECIPE
    )
    config = load_config(path)
    splits = prepare_splits(config)
    study = create_or_load(config)
    study.optimize(Objective(config, splits, paths_for(config).root), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    folder = Path(trial.user_attrs["trial_dir"])
    history = trial.user_attrs["hyperparameters"]
    assert history["schedule"] == "cosine" and history["ema"] == {"momentum": 0.9}
    # The saved fold model (averaged weights) predicts exactly the out-of-fold probabilities.
    with np.load(folder / "oof.npz") as oof:
        probabilities = oof["probabilities"]
    _, val_idx = splits.folds[0]
    model = keras.saving.load_model(folder / "fold_0.keras", safe_mode=True)
    predicted = model.predict(splits.tuning.images[val_idx].astype("float32"), verbose=0)
    np.testing.assert_allclose(predicted, probabilities[val_idx], atol=1e-5)
    # The rate reached the cosine floor on the last epoch of each fold.
    import json

    rates = [
        fold[-1]["learning_rate"] for fold in json.loads((folder / "history.json").read_text())
    ]
    lr = history["learning_rate"]
    assert rates == pytest.approx([lr * 0.01] * 2, rel=1e-3)
    # Resume: a new process reads the same file and the study goes on to 2 trials.
    config = load_config(path.with_name("s.yaml"), ["study.n_trials=2"])
    study = create_or_load(config)
    study.optimize(Objective(config, prepare_splits(config), paths_for(config).root), n_trials=1)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
