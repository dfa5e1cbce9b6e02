"""Model quality on the hold-out: automl's tuned ensembles vs the hand-written CNN and KerasTuner.

Data: ``chula_rbc12`` (72x72 red-cell crops, 12 classes) from ``../shared/data``, read through
automl's ``format: csv`` (``group_column: field_group``) at 48 px. A fixed, seeded, stratified
quarter of the 553 field groups is used (one fold of a grouped stratified 4-fold split; see
``FULL``). automl itself takes the grouped hold-out (``holdout_fraction`` 0.2) and 3 grouped
folds; every arm of a seed has the same data section and seed, hence the same hold-out and folds.

Arms, each in its own process, one seed after another:

1. ``floor``: the hand-written CNN (``common.hand_tuned_space``), one trial over every fold, its
   fold models voting on the hold-out;
2. ``old``: automl TPE + median pruner over the space as it was before the recipe keys, top-3;
3. ``new``: the same plus the recipe keys (schedules with warm-up, EMA, MixUp/CutMix/erasing,
   ``custom_resnet``), top-3;
4. ``greedy``: arm 3's study again, only the ensemble step, with ``selection: greedy``;
5. ``kerastuner``: KerasTuner Hyperband over arm 3's space (``search_efficiency``'s adapter),
   the same folds and per-epoch validation, schedule and EMA callbacks as automl's trials; its
   best hyperparameters retrained on all tuning images and scored on the hold-out;
6. ``curves`` (first seed only): arm 3's best configuration on fold 0, as drawn and with
   ``schedule: constant``, no warm-up, no EMA: per-epoch validation accuracy.

Arms 2, 3 and 5 get the same compute: a budget of training epochs summed over folds and trials;
no new trial starts once it is spent (the running one finishes). Reported per arm and seed:
hold-out accuracy, balanced accuracy and macro-F1 with 95% bootstrap intervals over hold-out
images, wall time, epochs, trials; paired bootstrap intervals of the differences the targets
name. ``--arms`` reruns a subset: runs are kept in ``<work>/runs.json`` and merged.

    python benchmarks/model_quality.py [--quick] [--budget-epochs N] [--seeds 0 1] [--arms ...]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

CHULA = common.SHARED_DATA / "chula_rbc12"
ARMS = ("floor", "old", "new", "greedy", "kerastuner", "curves")
TOP_K = 3
RESAMPLES = 1000
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
# Budget (--budget-epochs) measured on this 2-core machine, idle, at 48 px: a fold-epoch over
# the quarter of the groups (~2,650 training and ~1,330 validation crops) costs ~8 s for the
# hand-written CNN and ~12 s on average over the spaces' draws (RandAugment and resnets at stem
# stride 1 cost more, pruned trials less); see the module docstring. 96 fold-epochs = 5.3
# complete trials of 3 folds x 6 epochs per tuner; with the floor (18), KerasTuner's retrain
# (6 epochs over all ~4,000 tuning crops), the curves (12) and the ensembles, one seed takes
# about 65 minutes. All 19,871 crops would leave each tuner one or two trials.
FULL = {"group_fraction": 0.25, "image_size": 48, "n_folds": 3, "epochs": 6, "budget": 96}
QUICK = {"group_fraction": 0.05, "image_size": 32, "n_folds": 2, "epochs": 2, "budget": 8}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Data, spaces, configurations
# --------------------------------------------------------------------------------------------


def build_labels(work: Path, fraction: float) -> Path:
    """``labels.csv`` (id = path below ``chula_rbc12`` without ``.jpg``, label, field_group)."""
    import pandas as pd
    from sklearn.model_selection import StratifiedGroupKFold

    if not (CHULA / "manifest.csv").is_file():
        raise SystemExit(f"{CHULA}: chula_rbc12 not found; set AUTOML_SHARED_DATA.")
    manifest = pd.read_csv(CHULA / "manifest.csv")
    # One fold of a grouped stratified split: whole field groups, class shares kept.
    splitter = StratifiedGroupKFold(n_splits=round(1 / fraction), shuffle=True, random_state=0)
    _, keep = next(splitter.split(manifest, manifest["class_name"], manifest["field_group"]))
    picked = manifest.iloc[np.sort(keep)]
    frame = pd.DataFrame(
        {
            "id": picked["file"].str.removesuffix(".jpg"),
            "label": picked["class_name"],
            "field_group": picked["field_group"],
        }
    )
    path = work / "labels.csv"
    text = frame.to_csv(index=False)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:  # keep automl's cache
        work.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path


def _cat(*choices: Any) -> dict[str, Any]:
    return {"type": "categorical", "choices": list(choices)}


def old_space(epochs: int) -> dict[str, Any]:
    """The space before the recipe keys: custom CNN, head, optimizer, rate, batch, augmentation."""
    space = common.search_space(epochs)
    space["batch_size"] = _cat(32, 64)
    space["augment"] = {
        "flip": _cat("horizontal_and_vertical", "none"),
        "rotation": {"type": "float", "low": 0.0, "high": 0.25},
        "randaugment_magnitude": _cat(0.0, 0.25, 0.5),  # 0 = off, a choice TPE can make
    }
    return space


def new_space(epochs: int) -> dict[str, Any]:
    """``old_space`` plus schedules with warm-up, EMA, MixUp/CutMix/erasing and custom_resnet."""
    space = copy.deepcopy(old_space(epochs))
    cnn = {k: v for k, v in space["backbone"].items() if k != "name"}
    resnet = {
        "stages": {"type": "int", "low": 2, "high": 3},
        "width": _cat(16, 32),
        "blocks_per_stage": {"type": "int", "low": 1, "high": 2},
        "stem_stride": _cat(1, 2),
        "dropout": {"type": "float", "low": 0.0, "high": 0.3},
    }
    space["backbone"] = {
        "type": "categorical",
        "choices": {"custom_cnn": cnn, "custom_resnet": resnet},
    }
    space["schedule"] = _cat("constant", "cosine", "cosine_restarts", "plateau")
    space["warmup_epochs"] = {"type": "int", "low": 0, "high": 2}
    space["ema"] = {"momentum": _cat(0.0, 0.99)}  # floats only: KerasTuner's Choice wants one type
    space["augment"].update(
        mixup_alpha=_cat(0.0, 0.2),
        cutmix_alpha=_cat(0.0, 1.0),
        mix_probability={"type": "float", "low": 0.25, "high": 1.0},
        erasing=_cat(0.0, 0.25),
    )
    return space


def make_config(arm: str, seed: int, work: Path, size: dict[str, Any], **ensemble: Any):
    """The automl configuration of an arm; ``greedy`` and ``curves`` build on arm 3's."""
    from automl.config import config_from_dict

    epochs = size["epochs"]
    space = {"floor": common.hand_tuned_space, "old": old_space}.get(arm, new_space)(epochs)
    raw = {
        "study": {
            "name": f"{'new' if arm == 'greedy' else arm}_seed{seed}",
            "metric": "accuracy",
            "seed": seed,
            "sampler": {"name": "tpe", "n_startup_trials": 5},
            "pruner": {"name": "none"}
            if arm in ("floor", "curves")
            else {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 3},
            "studies_dir": str(work / "studies"),
        },
        "data": {
            "format": "csv",
            "path": str(CHULA),
            "labels_csv": str(work / "labels.csv"),
            "extension": ".jpg",
            "group_column": "field_group",
            "image_size": size["image_size"],
            "n_folds": size["n_folds"],
            "holdout_fraction": 0.2,
        },
        "space": space,
        "ensemble": {"top_k": TOP_K, "vote": "majority", "selection": "top_k", **ensemble},
    }
    return config_from_dict(raw, source=f"benchmarks/model_quality.py:{arm}")


# --------------------------------------------------------------------------------------------
# The arms (each in its own process)
# --------------------------------------------------------------------------------------------


def holdout_record(splits, predicted: np.ndarray) -> dict[str, Any]:
    ids = "\n".join(map(str, splits.holdout.ids))
    return {
        "holdout_sha": hashlib.sha256(ids.encode()).hexdigest()[:16],
        "labels": splits.holdout.labels.tolist(),
        "predicted": [int(p) for p in predicted],
    }


def ensemble_predictions(config, splits) -> np.ndarray:
    """The ensemble's hold-out labels, as ``run_ensemble`` wrote them, in hold-out order."""
    import pandas as pd

    from automl.study import paths_for

    frame = pd.read_csv(paths_for(config).ensemble / "holdout_predictions.csv", dtype=str)
    if frame["id"].tolist() != [str(i) for i in splits.holdout.ids]:
        raise SystemExit(f"{config.study.name}: hold-out predictions are not in hold-out order")
    index = {name: i for i, name in enumerate(splits.tuning.class_names)}
    return np.array([index[name] for name in frame["label"]])


def run_automl(arm: str, seed: int, work: Path, size: dict[str, Any], budget: int) -> dict:
    """floor, old, new: tune until the epoch budget is spent, then the top-K ensemble."""
    import optuna

    from automl.ensemble import run_ensemble
    from automl.study import create_or_load, paths_for
    from automl.tune import optimize, prepare_splits

    config = make_config(arm, seed, work, size, top_k=1 if arm == "floor" else TOP_K)
    shutil.rmtree(paths_for(config).root, ignore_errors=True)  # a rerun starts afresh
    splits = prepare_splits(config)
    study = create_or_load(config)
    used = [0]

    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        used[0] += int(trial.user_attrs.get("epochs_total", 0))
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        spent = f"{used[0]}" if arm == "floor" else f"{used[0]}/{budget}"
        log(f"  [{arm} seed {seed}] trial {trial.number} {trial.state.name.lower()} {value}, "
            f"epochs {spent}")  # fmt: skip
        if arm != "floor" and used[0] >= budget:
            study.stop()

    started = time.perf_counter()
    n_trials = 1 if arm == "floor" else None
    optimize(study, config, splits, n_trials=n_trials, callbacks=[count], progress=False)
    tuned = time.perf_counter() - started
    manifest = run_ensemble(config, study)
    states = [t.state for t in study.trials]
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "tune_seconds": round(tuned, 1),
        "epochs": used[0],
        "trials": len(states),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "best_cv": round(study.best_value, 4),
        "best_params": study.best_params,
        "members": [m["trial"] for m in manifest["members"]],
        **holdout_record(splits, ensemble_predictions(config, splits)),
    }


def run_greedy(seed: int, work: Path, size: dict[str, Any]) -> dict:
    """Arm 3's study, only the ensemble step again, with greedy selection."""
    from automl.ensemble import run_ensemble
    from automl.study import create_or_load
    from automl.tune import prepare_splits

    config = make_config("greedy", seed, work, size, selection="greedy")
    splits = prepare_splits(config)
    started = time.perf_counter()
    manifest = run_ensemble(config, create_or_load(config))
    single = manifest["holdout"]["best_single_trial"]
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "epochs": 0,
        "members": [{k: m.get(k) for k in ("trial", "weight")} for m in manifest["members"]],
        "best_single": {k: round(single[k], 4) for k in ("trial", *METRICS)},
        **holdout_record(splits, ensemble_predictions(config, splits)),
    }


def _fold_callbacks(params: dict, val: Any, y_val: np.ndarray | None, steps: int, scores: list):
    """automl's per-fold callbacks (schedules.py) with a validation score like its reporter's."""
    import keras

    from automl.schedules import VAL_METRIC_LOG, WeightAveraging, training_callbacks

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if val is None:
                return
            predicted = self.model.predict(val, verbose=0).argmax(axis=1)
            scores.append(float(np.mean(predicted == y_val)))
            if logs is not None:
                logs[VAL_METRIC_LOG] = scores[-1]  # what the plateau schedule monitors

    averaging = [WeightAveraging()] if params["ema"]["momentum"] > 0 else []
    schedule = training_callbacks(params, steps_per_epoch=steps, epochs=int(params["epochs"]))
    return [*averaging, Score(), *schedule]


def run_kerastuner(seed: int, work: Path, size: dict[str, Any], budget: int) -> dict:
    """KerasTuner Hyperband over arm 3's space, then its best hyperparameters on all data."""
    import keras
    import keras_tuner as kt
    from search_efficiency import _HpAsOptunaTrial

    from automl.models import build_model
    from automl.pipeline import make_dataset
    from automl.tune import prepare_splits

    config = make_config("new", seed, work, size)
    splits = prepare_splits(config)
    space, tuning, n_classes = config.space, splits.tuning, splits.n_classes
    image_size = config.data.image_size
    checkpoints = work / "kt_weights" / f"seed{seed}"
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True)
    used, trials = [0], []

    def fit(params, indices, val_idx, fold_seed, epochs, initial_epoch=0, weights=None):
        keras.backend.clear_session()
        keras.utils.set_random_seed(fold_seed)
        model = build_model(params, n_classes=n_classes, image_size=image_size)
        if weights is not None:
            model.load_weights(weights)
        batch = int(params["batch_size"])
        train = make_dataset(tuning.images, tuning.labels, indices, n_classes=n_classes,
                             batch_size=batch, training=True, augment=params["augment"],
                             seed=fold_seed)  # fmt: skip
        val = None
        if val_idx is not None:
            val = make_dataset(tuning.images, None, val_idx, n_classes=n_classes, batch_size=256)
        scores: list[float] = []
        steps = -(-len(indices) // batch)
        y_val = None if val_idx is None else tuning.labels[val_idx]
        callbacks = _fold_callbacks(params, val, y_val, steps, scores)
        for callback in callbacks:  # a promoted Hyperband trial resumes its schedule too
            if hasattr(callback, "step"):
                callback.step = initial_epoch * steps
        model.fit(train, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                  shuffle=False, verbose=0)  # fmt: skip
        return model, scores

    class HyperModel(kt.HyperModel):
        def build(self, hp):  # KerasTuner builds once to learn the space; run_trial trains
            params = space.suggest(_HpAsOptunaTrial(hp))
            return build_model(params, n_classes=n_classes, image_size=image_size)

    class Tuner(kt.Hyperband):
        def pre_create_trial(self):
            if used[0] >= budget:  # KerasTuner has no budget: ask for no more trials
                self.oracle.max_trials = len(self.oracle.trials)
            return super().pre_create_trial()

        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            params = space.suggest(_HpAsOptunaTrial(hp))
            epochs = int(hp.values.get("tuner/epochs", params["epochs"]))
            initial = int(hp.values.get("tuner/initial_epoch", 0))
            resume = hp.values.get("tuner/trial_id")
            scores = []
            for fold, (train_idx, val_idx) in enumerate(splits.folds):
                weights = checkpoints / f"{resume}_fold{fold}.weights.h5" if resume else None
                fold_seed = seed * 10_000 + len(trials) * 10 + fold
                model, fold_scores = fit(
                    params, train_idx, val_idx, fold_seed, epochs, initial, weights
                )
                model.save_weights(checkpoints / f"{trial.trial_id}_fold{fold}.weights.h5")
                scores.append(fold_scores[-1])
            used[0] += (epochs - initial) * len(splits.folds)
            trials.append(float(np.mean(scores)))
            log(f"  [kerastuner seed {seed}] trial {len(trials) - 1} ({initial}->{epochs} "
                f"epochs) {trials[-1]:.4f}, epochs {used[0]}/{budget}")  # fmt: skip
            return trials[-1]

    started = time.perf_counter()
    tuner = Tuner(
        hypermodel=HyperModel(),
        objective=kt.Objective("val_accuracy", direction="max"),
        max_epochs=int(space.max_epochs()),
        factor=3,
        hyperband_iterations=1000,  # the epoch budget ends the search
        seed=seed,
        directory=str(work / "kt"),
        project_name=f"seed{seed}",
        overwrite=True,
    )
    tuner.search(verbose=0)
    tuned = time.perf_counter() - started
    best = tuner.get_best_hyperparameters(1)[0]
    params = space.suggest(_HpAsOptunaTrial(best))
    log(f"  [kerastuner seed {seed}] retraining the best ({max(trials):.4f}) on all tuning data")
    model, _ = fit(params, np.arange(len(tuning)), None, seed, int(params["epochs"]))
    test = make_dataset(splits.holdout.images, None, np.arange(len(splits.holdout)),
                        n_classes=n_classes, batch_size=256)  # fmt: skip
    predicted = model.predict(test, verbose=0).argmax(axis=1)
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "tune_seconds": round(tuned, 1),
        "epochs": used[0],
        "retrain_epochs": int(params["epochs"]),
        "trials": len(trials),
        "best_cv": round(max(trials), 4),
        "best_params": {k: v for k, v in best.values.items() if not k.startswith("tuner/")},
        **holdout_record(splits, predicted),
    }


def run_curves(seed: int, work: Path, size: dict[str, Any], best_params: dict) -> dict:
    """Arm 3's best configuration on fold 0: as drawn, and constant rate without warm-up/EMA."""
    from automl.splits import Splits
    from automl.study import create_or_load, paths_for, trial_folder
    from automl.tune import optimize, prepare_splits

    config = make_config("curves", seed, work, size)
    shutil.rmtree(paths_for(config).root, ignore_errors=True)
    full = prepare_splits(config)
    splits = Splits(full.tuning, full.holdout, full.folds[:1])
    study = create_or_load(config)
    plain = {**best_params, "schedule": "constant", "warmup_epochs": 0, "ema.momentum": 0.0}
    variants = {"as drawn": best_params, "constant, no EMA": plain}
    for params in variants.values():
        study.enqueue_trial(params, skip_if_exists=False)
    started = time.perf_counter()
    optimize(study, config, splits, n_trials=2, callbacks=[], progress=False)
    curves = {}
    for (label, params), trial in zip(variants.items(), study.trials, strict=True):
        history = json.loads((trial_folder(config, trial.number) / "history.json").read_text())
        curves[label] = {
            "params": {k: params.get(k) for k in ("schedule", "warmup_epochs", "ema.momentum")},
            "val_accuracy": [round(h["val_metric"], 4) for h in history[0]],
            "learning_rate": [h.get("learning_rate") for h in history[0]],
        }
        log(f"  [curves] {label}: {curves[label]['val_accuracy']}")
    return {"wall_seconds": round(time.perf_counter() - started, 1), "curves": curves}


def run_one(spec: dict[str, Any]) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    # The data checks' notes (odd-looking crops, near-duplicates across the grouped splits)
    # would repeat in every child; `automl audit` on the same CSV shows them once.
    logging.getLogger("automl").setLevel(logging.ERROR)
    arm, seed, work, size = spec["arm"], spec["seed"], Path(spec["work"]), spec["size"]
    if arm in ("floor", "old", "new"):
        result = run_automl(arm, seed, work, size, spec["budget"])
    elif arm == "greedy":
        result = run_greedy(seed, work, size)
    elif arm == "kerastuner":
        result = run_kerastuner(seed, work, size, spec["budget"])
    else:
        result = run_curves(seed, work, size, spec["best_params"])
    print(json.dumps({"arm": arm, "seed": seed, **result}), flush=True)


# --------------------------------------------------------------------------------------------
# Scores, intervals, verdicts (parent process)
# --------------------------------------------------------------------------------------------

LABELS = {
    "floor": "1. floor (hand-written CNN)",
    "old": "2. automl, old space, top-3",
    "new": "3. automl, new recipe, top-3",
    "greedy": "4. automl, new recipe, greedy",
    "kerastuner": "5. KerasTuner Hyperband, retrained",
}


def metric_samples(y: np.ndarray, predicted: np.ndarray, index: np.ndarray) -> dict[str, Any]:
    """The three metrics on each row of ``index`` (resamples of hold-out positions)."""
    n_classes = int(max(y.max(), predicted.max())) + 1
    rows, n = index.shape
    codes = (np.arange(rows)[:, None] * n_classes + y[index]) * n_classes + predicted[index]
    matrix = np.bincount(codes.ravel(), minlength=rows * n_classes**2)
    matrix = matrix.reshape(rows, n_classes, n_classes).astype(float)
    hits = np.diagonal(matrix, axis1=1, axis2=2)
    support, called = matrix.sum(axis=2), matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # As automl.metrics: recall over classes present; F1 over classes present or predicted.
        recall = np.where(support > 0, hits / support, np.nan)
        f1 = np.where(support + called > 0, 2 * hits / (support + called), np.nan)
    return {
        "accuracy": hits.sum(axis=1) / n,
        "balanced_accuracy": np.nanmean(recall, axis=1),
        "macro_f1": np.nanmean(f1, axis=1),
    }


def interval(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in np.percentile(values, [2.5, 97.5])]


def score_seed(runs: dict[str, dict], seed: int) -> tuple[dict, dict]:
    """Point scores and bootstrap samples of every arm of one seed, on the same resamples."""
    scored = {arm: run for arm, run in runs.items() if "predicted" in run}
    if len({run["holdout_sha"] for run in scored.values()}) > 1:
        raise SystemExit(f"seed {seed}: the arms saw different hold-outs; rerun them together")
    y = np.array(next(iter(scored.values()))["labels"])
    index = np.random.default_rng(seed).integers(0, len(y), size=(RESAMPLES, len(y)))
    points, samples = {}, {}
    for arm, run in scored.items():
        predicted = np.array(run["predicted"])
        point = metric_samples(y, predicted, np.arange(len(y))[None])
        points[arm] = {m: round(float(point[m][0]), 4) for m in METRICS}
        samples[arm] = metric_samples(y, predicted, index)
    return points, samples


def compare(samples: dict, a: str, b: str, metric: str = "accuracy") -> list[float] | None:
    """95% interval of ``a - b`` over the same resampled hold-out images (paired)."""
    if a not in samples or b not in samples:
        return None
    return interval(samples[a][metric] - samples[b][metric])


def beyond(intervals: list[list[float] | None]) -> str:
    got = [i for i in intervals if i is not None]
    if not got:
        return "not measured"
    if all(lo > 0 for lo, _ in got):
        return "met"
    if all(hi < 0 for _, hi in got):
        return "not met: behind beyond the interval"
    if any(lo > 0 for lo, _ in got) or any(hi < 0 for _, hi in got):
        return "not met: differs across seeds"
    return "not met: inside the noise"


def summarise(runs: dict[str, dict], seeds: list[int]) -> tuple[list, list, dict]:
    rows, per_seed = [], {}
    for seed in seeds:
        mine = {k.split(":")[0]: r for k, r in runs.items() if k.endswith(f":{seed}")}
        if not any("predicted" in r for r in mine.values()):
            continue
        points, samples = score_seed(mine, seed)
        per_seed[seed] = {"points": points, "samples": samples, "runs": mine}
        for arm in LABELS:
            if arm not in points:
                continue
            run = mine[arm]
            row: dict[str, Any] = {"arm": LABELS[arm], "seed": seed}
            for metric in METRICS:
                low, high = interval(samples[arm][metric])
                row[metric] = points[arm][metric]
                row[f"{metric}_ci"] = f"{low:.3f}-{high:.3f}"
            extra = f" + {run['retrain_epochs']} on all" if run.get("retrain_epochs") else ""
            row.update(
                wall_seconds=run["wall_seconds"],
                epochs=f"{run['epochs']}{extra}",
                trials=run.get("trials", "–" if arm == "greedy" else 1),
                pruned=run.get("pruned"),
                best_cv=run.get("best_cv"),
            )
            rows.append(row)
    verdicts = []

    def diffs(a: str, b: str, metric: str = "accuracy") -> tuple[str, list]:
        found = {s: compare(d["samples"], a, b, metric) for s, d in per_seed.items()}
        shown = "; ".join(f"seed {s}: [{i[0]:+.3f}, {i[1]:+.3f}]" for s, i in found.items() if i)
        return shown or None, list(found.values())

    def mean(arm: str, metric: str) -> float | None:
        values = [d["points"][arm][metric] for d in per_seed.values() if arm in d["points"]]
        return round(statistics.mean(values), 4) if values else None

    shipped = next((a for a in ("greedy", "new") if mean(a, "accuracy") is not None), None)
    accuracy, f1 = (mean(shipped, m) for m in ("accuracy", "macro_f1")) if shipped else (0, 0)
    verdicts.append(
        {
            "target": "tuned ensemble >= 0.85 accuracy and >= 0.70 macro-F1 (mean of seeds)",
            "measured": None
            if shipped is None
            else f"{LABELS[shipped]}: accuracy {accuracy}, macro-F1 {f1}",
            "verdict": "not measured"
            if shipped is None
            else ("met" if accuracy >= 0.85 and f1 >= 0.70 else "not met"),
        }
    )
    for arm in ("new", "greedy"):
        shown, found = diffs(arm, "kerastuner")
        verdicts.append(
            {
                "target": f"arm {LABELS[arm][0]} ahead of KerasTuner beyond the interval "
                "(paired accuracy difference, 95%)",
                "measured": shown,
                "verdict": beyond(found),
            }
        )
    pairs = [
        (s, d["runs"]["greedy"]["best_single"]["accuracy"], d["points"]["greedy"]["accuracy"])
        for s, d in per_seed.items()
        if "greedy" in d["points"]
    ]
    verdicts.append(
        {
            "target": "greedy ensemble >= best single trial on the hold-out, every seed",
            "measured": "; ".join(f"seed {s}: {g} vs {b}" for s, b, g in pairs) or None,
            "verdict": "not measured"
            if not pairs
            else ("met" if all(g >= b for _, b, g in pairs) else "not met"),  # fmt: skip
        }
    )
    for metric in ("accuracy", "macro_f1"):
        shown, found = diffs("new", "old", metric)
        verdicts.append(
            {
                "target": f"new recipe > old recipe beyond the interval ({metric}, paired, 95%)",
                "measured": shown,
                "verdict": beyond(found),
            }
        )
    shown, found = diffs("new", "floor")
    verdicts.append(
        {
            "target": "(context) new recipe vs the hand-written floor (accuracy, paired)",
            "measured": shown,
            "verdict": "–" if shown is None else beyond(found),
        }  # fmt: skip
    )
    return rows, verdicts, per_seed


def spread(rows: list[dict]) -> list[dict]:
    """Across seeds: mean, standard deviation and range of every metric per arm."""
    out = []
    for label in LABELS.values():
        mine = [r for r in rows if r["arm"] == label]
        if len(mine) < 2:
            continue
        row: dict[str, Any] = {"arm": label, "seeds": len(mine)}
        for metric in METRICS:
            values = [r[metric] for r in mine]
            row[metric] = (
                f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} "
                f"({min(values):.3f}-{max(values):.3f})"
            )
        row["wall_seconds"] = round(statistics.mean(r["wall_seconds"] for r in mine), 1)
        out.append(row)
    return out


def plot_curves(curves: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rate_axis = ax.twinx()
    for colour, (label, curve) in zip(("C0", "C1"), curves.items(), strict=False):
        epochs = range(1, len(curve["val_accuracy"]) + 1)
        ax.plot(epochs, curve["val_accuracy"], marker="o", color=colour, label=label)
        if all(v is not None for v in curve["learning_rate"]):
            rate_axis.plot(epochs, curve["learning_rate"], linestyle=":", color=colour)
    ax.set_xlabel("epoch")
    ax.set_ylabel("fold-0 validation accuracy")
    rate_axis.set_ylabel("learning rate at the epoch's end (dotted)")
    ax.set_title("Best arm-3 configuration, fold 0: as drawn vs constant rate, no EMA")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="plumbing check: tiny data, 32 px")
    parser.add_argument("--budget-epochs", type=int, default=None, help="default 96 (quick: 8)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--work", type=Path, default=None, help="default benchmarks/work/...")
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        run_one(json.loads(args.run_one))
        return
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the children's TensorFlow start-up noise
    size = dict(QUICK if args.quick else FULL)
    budget = args.budget_epochs or size["budget"]
    name = "model_quality" + ("-quick" if args.quick else "")
    work = (args.work or common.REPO / "benchmarks" / "work" / name).resolve()
    build_labels(work, size["group_fraction"])
    settings = {"size": size, "budget": budget}
    store = work / "runs.json"
    saved = json.loads(store.read_text()) if store.is_file() else {}
    runs = saved.get("runs", {}) if saved.get("settings") == settings else {}
    if saved and not runs:
        log(f"{store}: other settings than this run's; its runs are set aside")
    arms = [arm for arm in ARMS if arm in args.arms]
    for seed in args.seeds:
        for arm in arms:
            if arm == "curves" and seed != args.seeds[0]:
                continue
            spec = {"arm": arm, "seed": seed, "work": str(work), "size": size, "budget": budget}
            if arm in ("greedy", "curves") and f"new:{seed}" not in runs:
                raise SystemExit(f"{arm} needs arm 'new' for seed {seed}: add it to --arms")
            if arm == "curves":
                spec["best_params"] = runs[f"new:{seed}"]["best_params"]
            log(f"== {arm} (seed {seed}), budget {budget} epochs: started {time.strftime('%X')}")
            result = common.run_child(__file__, spec, f"{arm} seed {seed}", stream_stderr=True)
            runs[f"{arm}:{seed}"] = result
            store.write_text(json.dumps({"settings": settings, "runs": runs}) + "\n")
            log(f"== {arm} (seed {seed}) done in {result.get('wall_seconds', '?')} s")
    seeds = sorted({int(key.split(":")[1]) for key in runs})
    rows, verdicts, _ = summarise(runs, seeds)
    picture = None
    curves = next((r["curves"] for k, r in runs.items() if k.startswith("curves:")), None)
    if curves:
        picture = common.RESULTS / f"{name}.png"
        common.RESULTS.mkdir(parents=True, exist_ok=True)
        plot_curves(curves, picture)
    spread_rows = spread(rows)
    verdict_table = common.markdown_table(verdicts, ["target", "measured", "verdict"])
    print(f"\nVerdicts\n\n{verdict_table}\n")
    description = (
        f"chula_rbc12 at {size['image_size']} px: a fixed stratified {size['group_fraction']:.0%} "
        f"of the 553 field groups, automl's grouped hold-out (20%) and {size['n_folds']} grouped "
        f"folds, the same for every arm of a seed. {size['epochs']} epochs per fold; tuners "
        f"(arms 2, 3, 5) stop starting trials after {budget} epochs summed over folds and "
        f"trials. Intervals: 95% bootstrap over hold-out images ({RESAMPLES} resamples); "
        "differences are paired (the same resamples for both arms). wall_seconds: tuning + "
        "ensemble (KerasTuner: + retraining).\n\n"
        f"{verdict_table}"
        + (
            "\n\nAcross seeds (mean ± sd, range):\n\n"
            + common.markdown_table(spread_rows, ["arm", "seeds", *METRICS, "wall_seconds"])
            if spread_rows
            else ""
        )
        + (f"\n\nLearning curves of fold 0: `{picture.name}`." if picture else "")
    )
    columns = ["arm", "seed"]
    for metric in METRICS:
        columns += [metric, f"{metric}_ci"]
    common.save_results(
        "model_quality",
        title="Model quality on the chula_rbc12 hold-out: tuned ensembles vs floor and KerasTuner",
        description=description,
        rows=rows,
        columns=[*columns, "wall_seconds", "epochs", "trials", "pruned", "best_cv"],
        extra={
            "settings": settings,
            "verdicts": verdicts,
            "spread": spread_rows,
            "curves": curves,
            "runs": runs,
        },
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
