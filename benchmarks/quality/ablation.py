"""The ablation: one factor at a time around the floor, trained on the pool, scored on hold-out.

Each run trains ``factor_space(factor, epochs)`` once on every crop of the ablation pool with
automl's own fold fit (``automl.nn.fit.fit_fold``), in a fresh process with TensorFlow's op
determinism, and predicts the fixed hold-out with the saved model (``automl.nn.inference``).
The hold-out's labels are read for scoring only: the fit's training rows are the pool, its
per-epoch validation rows a fixed sample of the pool itself (every ``WATCH_STRIDE``-th crop;
they decide nothing: no early stopping, no plateau schedule), and ``class_weight: balanced``
counts the pool's classes alone (``fit_fold`` counts over the ``labels`` it is given, which are
the pool's). A run whose loss diverges predicts nothing and is reported so.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.quality import data, stats

FACTORS = ("floor", "cosine", "ema", "mix", "resnet", "balanced", "smoothing", "all")
EPOCHS = (8, 24)
QUICK_EPOCHS = (2, 3)  # cosine's warm-up epoch needs one more
WATCH_STRIDE = 25
RESNET = {
    "name": "custom_resnet",
    "stages": 3,
    "width": 16,
    "blocks_per_stage": 2,
    "stem_stride": 1,
}
MIX = {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_probability": 0.5}
# Training cost on this 2-core machine, seconds per 1,000 crops and epoch at 32 px (batch 32, op
# determinism), measured while other jobs shared the CPUs (idle is faster); for the plan only,
# scaled by the pixel count at other sizes.
SECONDS_PER_KILO_EPOCH = {"cnn": 2.1, "resnet": 5.6}
START_SECONDS = 18.0  # a fresh process: imports, cached crops, tracing, the hold-out's prediction


def factor_space(factor: str, epochs: int) -> dict[str, Any]:
    """automl's ``space`` of one ablation run: the floor with ``factor`` changed (``all``:
    every factor at once)."""
    space = copy.deepcopy(harness.hand_tuned_space(epochs))
    changes = {
        "cosine": {"schedule": "cosine", "warmup_epochs": 1},
        "ema": {"ema": {"momentum": 0.99}},
        "mix": {"augment": {**space["augment"], **MIX}},
        "resnet": {"backbone": dict(RESNET)},
        "balanced": {"class_weight": "balanced"},
        "smoothing": {"label_smoothing": 0.1},
    }
    if factor == "all":
        for change in changes.values():
            space.update(copy.deepcopy(change))
    elif factor != "floor":
        space.update(changes[factor])
    return space


def train_seconds(crop_epochs: float, kind: str, image_size: int) -> float:
    """About how long ``crop_epochs`` (crops x epochs) of ``kind`` training take here."""
    return SECONDS_PER_KILO_EPOCH[kind] * (image_size / 32) ** 2 * crop_epochs / 1000


def plan(crops: int, epochs: list[int], seeds: list[int], image_size: int) -> dict[str, Any]:
    """How many runs the ablation makes on ``crops`` crops and about how long they take here."""
    seconds = 0.0
    for factor in FACTORS:
        kind = "resnet" if factor in ("resnet", "all") else "cnn"
        runs = [train_seconds(crops * e, kind, image_size) + START_SECONDS for e in epochs]
        seconds += sum(runs) * len(seeds)
    return {"runs": len(FACTORS) * len(epochs) * len(seeds), "seconds": seconds}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Child process: one (factor, epochs, seed) run; the hold-out predictions and its figures."""
    from automl.nn.fit import configure_device, fit_fold
    from automl.nn.inference import predict_probabilities

    started = time.perf_counter()
    configure_device("off", "on")  # op determinism: a rerun gives the same predictions
    factor, epochs, seed = spec["factor"], spec["epochs"], spec["seed"]
    splits, params = pool_and_params(spec)
    tuning = splits.tuning
    rows = np.arange(len(tuning))
    model = Path(spec["work"]) / "ablation_models" / f"{factor}_e{epochs}_s{seed}.keras"
    fit = fit_fold(
        params, tuning.images, tuning.labels, rows, rows[::WATCH_STRIDE],
        n_classes=splits.n_classes, image_size=spec["image_size"], seed=seed,
        metric="balanced_accuracy", save_to=model,
    )  # fmt: skip
    predicted, score = None, None
    if not fit.nan_loss:
        probabilities = predict_probabilities([model], splits.holdout.images)[0]
        predicted = probabilities.argmax(axis=1)
        holdout = stats.Holdout.from_lists(
            splits.holdout.labels, splits.holdout.groups, splits.n_classes
        )
        score = stats.point_scores(holdout, predicted)[stats.PRIMARY]
    model.unlink(missing_ok=True)
    return {
        "factor": factor,
        "epochs": epochs,
        "seed": seed,
        "predicted": None if predicted is None else predicted.tolist(),
        "balanced_accuracy": score,
        "diverged": fit.nan_loss,
        "final_loss": fit.history[-1]["loss"] if fit.history else None,
        "seconds": round(time.perf_counter() - started, 1),
        **holdout_record(splits),
    }


def pool_and_params(
    spec: dict[str, Any], pool: str = "ablation_pool"
) -> tuple[Any, dict[str, Any]]:
    """The pool (``spec["files"][pool]``) and hold-out as automl reads them, through the
    decoded-image cache, and the run's resolved hyperparameters."""
    import optuna

    from automl.config.schema import config_from_dict
    from automl.search.paths import paths_for
    from automl.search.session import prepare_splits

    files = spec["files"]
    space = factor_space(spec["factor"], spec["epochs"])
    raw = {
        "study": {"name": f"{pool}_data", "studies_dir": str(Path(spec["work"]) / "studies")},
        "data": data.data_section(
            Path(files[pool]), Path(files["holdout"]), spec["image_size"], 2
        ),
        "space": space,
    }
    config = config_from_dict(raw, source="benchmarks/quality/ablation.py")
    paths_for(config).root.mkdir(parents=True, exist_ok=True)  # the image cache needs it
    params = config.space.suggest(optuna.trial.FixedTrial({}))
    return prepare_splits(config), params


def holdout_record(splits: Any) -> dict[str, Any]:
    """What the parent checks and scores with: the hold-out's fingerprint, labels and groups."""
    import hashlib

    holdout = splits.holdout
    ids = "\n".join(str(i) for i in holdout.ids)
    labels = holdout.labels.tolist()
    return {
        "holdout": {
            "sha": hashlib.sha256(f"{ids}\n{labels}".encode()).hexdigest()[:16],
            "labels": labels,
            "groups": [str(g) for g in holdout.groups],
            "class_names": list(splits.tuning.class_names),
        }
    }
