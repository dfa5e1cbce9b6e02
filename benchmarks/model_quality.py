"""Model quality on the hold-out: automl's tuned ensembles vs the hand-written CNN and KerasTuner.

Data: ``chula_rbc12`` (72x72 red-cell crops, 12 classes) from ``../shared/data``, read through
automl's ``format: csv`` (``group_column: field_group``) at 48 px: a fixed stratified quarter of
the 553 field groups (one fold of a seeded grouped stratified 4-fold split; see ``FULL`` for
why not all). automl itself takes the grouped hold-out (``holdout_fraction`` 0.2) and 3 grouped
folds from the study seed: every arm of a seed has the same hold-out and folds.

Arms, each in its own process:

1. ``floor``: the hand-written CNN (``harness.hand_tuned_space``: Adam 1e-3), one trial over
   every fold, its fold models voting on the hold-out;
2. ``old``: automl (TPE, median pruner) over the space before the recipe keys, top-3 ensemble;
3. ``new``: the same plus schedules with warm-up, EMA, MixUp/CutMix/erasing and
   ``custom_resnet``, top-3 ensemble;
4. ``greedy``: arm 3's study, only the ensemble step again, with ``selection: greedy``;
   ``greedy_soft`` the same with a soft vote (what the quick start ships), and ``old_greedy``
   arm 2's study ensembled greedily (so the recipe comparison is not one of top-3 votes alone);
5. ``kerastuner``: KerasTuner Hyperband over arm 3's space through ``search_efficiency``'s
   adapter and k-fold trial (automl's fold fit: the same folds, per-epoch validation, schedule
   and EMA as automl's trials); its best hyperparameters retrained on all tuning images
   (``harness.fit_on_all``), scored on the hold-out;
6. ``curves`` (first seed): arm 3's best configuration on fold 0, as drawn and with a constant
   rate, no warm-up, no EMA: validation accuracy per epoch (``results/model_quality.png``).

Arms 2, 3 and 5 get the same compute: a budget of training epochs summed over folds and trials;
no trial starts once it is spent (the running one finishes, so an arm may overshoot by one
trial). Reported: hold-out accuracy, balanced accuracy, macro-F1, each with a 95% bootstrap
interval over hold-out images; wall time, epochs, trials; paired bootstrap intervals of the
differences the targets name; the spread across seeds. Runs accumulate in
``<work>/runs.json``, so ``--arms`` reruns a subset and the tables cover every run kept.

    python -m benchmarks.model_quality [--quick] [--budget-epochs 96] [--seeds 0 1] [--arms ...]
    python -m benchmarks.model_quality --arms floor --epochs 24 --work benchmarks/work/mq_e24 \
        --results benchmarks/results/model_quality_floor_24_epochs
"""

from __future__ import annotations

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

from benchmarks import harness

NAME = "model_quality"
ARMS = ("floor", "old", "new", "greedy", "greedy_soft", "old_greedy", "kerastuner", "curves")
# The ensemble-only arms: the tuned study they re-ensemble greedily, and the vote.
GREEDY_ARMS = {
    "greedy": ("new", "majority"),
    "greedy_soft": ("new", "soft"),
    "old_greedy": ("old", "majority"),
}
LABELS = {
    "floor": "1. floor (hand-written CNN)",
    "old": "2. automl, old space, top-3",
    "new": "3. automl, new recipe, top-3",
    "greedy": "4. automl, new recipe, greedy",
    "greedy_soft": "4. automl, new recipe, greedy, soft vote",
    "old_greedy": "2. automl, old space, greedy",
    "kerastuner": "5. KerasTuner Hyperband, retrained",
}
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
TOP_K, RESAMPLES = 3, 1000
# Sizes, measured at 48 px on this 2-core machine (random draws of each space, fold 0 of the
# quarter: ~2,690 training and ~1,310 validation crops; the others' jobs loaded it, so the idle
# figures are scaled from the floor's, which matched an idle probe): a fold-epoch costs ~8 s
# for the floor, ~7 s for the old space and ~11.5 s for the new one (resnets at stem stride 1
# and RandAugment dominate; 1.3-25 s per draw), plus ~3 s per fold to build and trace. 96
# fold-epochs (5.3 complete trials of 3 folds x 6 epochs) for each of arms 2, 3 and 5, with
# the floor (18), KerasTuner's retrain, the curves (12) and 6 process starts: ~65 minutes per
# seed. All 19,871 crops would cost 4x per epoch and leave each tuner about one trial.
FULL = {"group_fraction": 0.25, "image_size": 48, "n_folds": 3, "epochs": 6, "budget": 96}
QUICK = {"group_fraction": 0.05, "image_size": 32, "n_folds": 2, "epochs": 2, "budget": 8}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cat(*choices: Any) -> dict[str, Any]:
    return {"type": "categorical", "choices": list(choices)}


def old_space(epochs: int) -> dict[str, Any]:
    """The space before the recipe keys: custom CNN, head, optimizer, rate, batch, augmentation."""
    space = harness.search_space(epochs)
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
    space["ema"] = {"momentum": _cat(0.0, 0.99)}  # floats: KerasTuner's Choice wants one type
    space["augment"].update(
        mixup_alpha=_cat(0.0, 0.2),
        cutmix_alpha=_cat(0.0, 1.0),
        mix_probability={"type": "float", "low": 0.25, "high": 1.0},
        erasing=_cat(0.0, 0.25),
    )
    return space


def make_config(arm: str, seed: int, work: Path, size: dict[str, Any], **ensemble: Any):
    """The automl configuration of an arm (an ensemble-only arm: its tuned arm's study)."""
    from automl.config.schema import config_from_dict

    arm = GREEDY_ARMS.get(arm, (arm, ""))[0]  # an ensemble-only arm opens its tuned study
    space = {"floor": harness.hand_tuned_space, "old": old_space}.get(arm, new_space)
    pruner = {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 3}
    raw = {
        "study": {
            "name": f"{arm}_seed{seed}",
            "metric": "accuracy",
            "seed": seed,
            "sampler": {"name": "tpe", "n_startup_trials": 5},
            "pruner": {"name": "none"} if arm in ("floor", "curves") else pruner,
            "studies_dir": str(work / "studies"),
        },
        "data": {
            "format": "csv",
            "path": str(harness.CHULA),
            "labels_csv": str(work / "labels.csv"),
            "extension": ".jpg",
            "group_column": "field_group",
            "image_size": size["image_size"],
            "n_folds": size["n_folds"],
            "holdout_fraction": 0.2,
        },
        "space": space(size["epochs"]),
        "ensemble": {"top_k": TOP_K, "vote": "majority", "selection": "top_k", **ensemble},
    }
    return config_from_dict(raw, source=f"benchmarks/model_quality.py:{arm}")


# --------------------------------------------------------------------------------------------
# The arms, each in its own process
# --------------------------------------------------------------------------------------------


def holdout_record(config, splits, predicted: np.ndarray | None = None) -> dict[str, Any]:
    """Hold-out labels and predictions (default: the ensemble ``run_ensemble`` just wrote)."""
    import pandas as pd

    from automl.search.paths import paths_for

    ids = [str(i) for i in splits.holdout.ids]
    if predicted is None:
        path = paths_for(config).ensemble / "holdout_predictions.csv"
        frame = pd.read_csv(path, dtype=str)
        if frame["id"].tolist() != ids:
            raise SystemExit(f"{path}: not in the hold-out's order")
        index = {name: i for i, name in enumerate(splits.tuning.class_names)}
        predicted = np.array([index[name] for name in frame["label"]])
    return {
        "holdout_sha": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
        "labels": splits.holdout.labels.tolist(),
        "predicted": [int(p) for p in predicted],
    }


def run_automl(arm: str, seed: int, work: Path, size: dict[str, Any], budget: int) -> dict:
    """floor, old, new: trials until the epoch budget is spent, then the top-K ensemble."""
    import optuna

    from automl.ensemble.build import run_ensemble
    from automl.search.attrs import TrialSummary
    from automl.search.paths import paths_for
    from automl.search.session import optimize, prepare_splits
    from automl.search.storage import create_or_load

    config = make_config(arm, seed, work, size, top_k=1 if arm == "floor" else TOP_K)
    shutil.rmtree(paths_for(config).root, ignore_errors=True)  # a rerun starts afresh
    splits = prepare_splits(config)
    study = create_or_load(config)
    used = [0]

    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        used[0] += TrialSummary.from_trial(trial).epochs or 0
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        spent = f"{used[0]}" + ("" if arm == "floor" else f"/{budget}")
        log(
            f"  [{arm} seed {seed}] trial {trial.number} {trial.state.name.lower()} {value}, "
            f"epochs {spent}"
        )
        if used[0] >= budget:
            study.stop()

    started = time.perf_counter()
    n_trials = 1 if arm == "floor" else budget  # a cap in case every trial failed at once
    optimize(study, config, splits, n_trials=n_trials, callbacks=[count], progress=False)
    tuned = time.perf_counter() - started
    run_ensemble(config, study)
    states = [t.state.name.lower() for t in study.trials]
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "tune_seconds": round(tuned, 1),
        "epochs": used[0],
        "trials": len(states),
        "pruned": states.count("pruned"),
        "best_cv": round(study.best_value, 4),
        "best_params": study.best_params,
        **holdout_record(config, splits),
    }


def run_greedy(arm: str, seed: int, work: Path, size: dict[str, Any]) -> dict:
    """A tuned arm's study (``GREEDY_ARMS``), only the ensemble step again, greedy selection."""
    from automl.ensemble.build import run_ensemble
    from automl.search.session import prepare_splits
    from automl.search.storage import create_or_load

    config = make_config(arm, seed, work, size, selection="greedy", vote=GREEDY_ARMS[arm][1])
    splits = prepare_splits(config)
    started = time.perf_counter()
    ensemble = run_ensemble(config, create_or_load(config))
    single = ensemble.holdout.best_single_trial
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "epochs": 0,
        "members": [{"trial": m.trial, "weight": m.weight} for m in ensemble.members],
        "best_single": {
            "trial": single.trial,
            **{metric: round(getattr(single.scores, metric), 4) for metric in METRICS},
        },
        **holdout_record(config, splits),
    }


def run_kerastuner(seed: int, work: Path, size: dict[str, Any], budget: int) -> dict:
    """KerasTuner Hyperband over arm 3's space, then its best hyperparameters on all data."""
    import keras_tuner as kt

    from automl.nn.models import build_model
    from automl.search.session import prepare_splits
    from benchmarks.search_efficiency import HpAsOptunaTrial, keras_tuner_folds

    config = make_config("new", seed, work, size)
    splits = prepare_splits(config)
    space, n_classes, image_size = config.space, splits.n_classes, config.data.image_size
    checkpoints = work / "kt_weights" / f"seed{seed}"
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True)
    used, values = [0], []

    class HyperModel(kt.HyperModel):
        def build(self, hp):  # KerasTuner builds once to learn the space; run_trial trains
            params = space.suggest(HpAsOptunaTrial(hp))
            return build_model(params, n_classes=n_classes, image_size=image_size)

    class Tuner(kt.Hyperband):
        def pre_create_trial(self):
            if used[0] >= budget:  # KerasTuner has no epoch budget: ask for no more trials
                self.oracle.max_trials = len(self.oracle.trials)
            return super().pre_create_trial()

        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            base = seed * 10_000 + len(values) * 10
            # automl's fold fit, with the same schedule, EMA and per-epoch validation as arm 3
            scores, trained = keras_tuner_folds(
                space.suggest(HpAsOptunaTrial(hp)),
                hp.values,
                splits,
                image_size=image_size,
                seeds=[base + fold for fold in range(len(splits.folds))],
                checkpoints=checkpoints,
                trial_id=trial.trial_id,
                save=True,
            )
            used[0] += trained
            values.append(float(np.mean(scores)))
            epochs = f"{hp.values.get('tuner/initial_epoch', 0)}->{hp.values.get('tuner/epochs')}"
            log(
                f"  [kerastuner seed {seed}] trial {len(values) - 1} (epochs {epochs})"
                f" {values[-1]:.4f}, epochs {used[0]}/{budget}"
            )
            return values[-1]

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
    params = space.suggest(HpAsOptunaTrial(best))
    log(f"  [kerastuner seed {seed}] best {max(values):.4f}: retraining it on all tuning data")
    # As KerasTuner users do: all tuning data, no validation (a plateau schedule stays flat).
    probabilities = harness.fit_on_all(params, splits, image_size=image_size, seed=seed)
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "tune_seconds": round(tuned, 1),
        "epochs": used[0],
        "retrain_epochs": int(params["epochs"]),
        "trials": len(values),
        "best_cv": round(max(values), 4),
        "best_params": {k: v for k, v in best.values.items() if not k.startswith("tuner/")},
        **holdout_record(config, splits, probabilities.argmax(axis=1)),
    }


def run_curves(seed: int, work: Path, size: dict[str, Any], best_params: dict) -> dict:
    """Arm 3's best configuration on fold 0: as drawn, and constant rate without warm-up/EMA."""
    from automl.data.splits import Splits
    from automl.search.paths import paths_for, trial_folder
    from automl.search.session import optimize, prepare_splits
    from automl.search.storage import create_or_load

    config = make_config("curves", seed, work, size)
    shutil.rmtree(paths_for(config).root, ignore_errors=True)
    full = prepare_splits(config)
    study = create_or_load(config)
    plain = {**best_params, "schedule": "constant", "warmup_epochs": 0, "ema.momentum": 0.0}
    if plain == best_params:
        log("  [curves] the best configuration is already constant without EMA: twice the same")
    variants = {"as drawn": best_params, "constant, no warm-up, no EMA": plain}
    for params in variants.values():
        study.enqueue_trial(params, skip_if_exists=False)
    started = time.perf_counter()
    splits = Splits(full.tuning, full.holdout, full.folds[:1])
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
    """Child process: one arm of one seed; answers the parent with its figures."""
    from automl.console import filter_stderr

    filter_stderr()  # before TensorFlow starts: its C++ start-up lines stay out of the progress
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    # The data checks' notes (odd-looking crops, near-duplicates across the grouped splits)
    # would repeat in every child; `automl audit` on the same CSV shows them once.
    logging.getLogger("automl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notes of new models
    arm, seed, work, size = spec["arm"], spec["seed"], Path(spec["work"]), spec["size"]
    if arm in ("floor", "old", "new"):
        result = run_automl(arm, seed, work, size, spec["budget"])
    elif arm in GREEDY_ARMS:
        result = run_greedy(arm, seed, work, size)
    elif arm == "kerastuner":
        result = run_kerastuner(seed, work, size, spec["budget"])
    else:
        result = run_curves(seed, work, size, spec["best_params"])
    harness.child_result({"arm": arm, "seed": seed, **result})


# --------------------------------------------------------------------------------------------
# Scores, intervals and verdicts (the parent)
# --------------------------------------------------------------------------------------------


def metric_samples(y: np.ndarray, predicted: np.ndarray, index: np.ndarray) -> dict[str, Any]:
    """The three metrics on every row of ``index`` (resampled hold-out positions), at once."""
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


def score_seed(runs: dict[str, dict], seed: int) -> dict[str, Any]:
    """Point scores and bootstrap samples of every arm of a seed, all on the same resamples."""
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
    return {"points": points, "samples": samples, "runs": runs}


def beyond(found: list[list[float]]) -> str:
    """Verdict on paired-difference intervals, one per seed: ahead only when all exclude 0."""
    if not found:
        return "not measured"
    if all(low > 0 for low, _ in found):
        return "met"
    if all(high < 0 for _, high in found):
        return "not met: behind beyond the interval"
    if any(low > 0 or high < 0 for low, high in found):
        return "not met: differs across seeds"
    return "not met: inside the noise"


def summarise(runs: dict[str, dict]) -> tuple[list, list, list]:
    """Rows per arm and seed, the verdicts of the targets, and the spread across seeds."""
    by_seed = {}
    for seed in sorted({int(key.split(":")[1]) for key in runs}):
        mine = {k.split(":")[0]: r for k, r in runs.items() if k.endswith(f":{seed}")}
        if any("predicted" in run for run in mine.values()):
            by_seed[seed] = score_seed(mine, seed)
    rows = []
    for seed, scored in by_seed.items():
        for arm in (a for a in LABELS if a in scored["points"]):
            run, row = scored["runs"][arm], {"arm": LABELS[arm], "seed": seed}
            for metric in METRICS:
                low, high = interval(scored["samples"][arm][metric])
                row[metric] = scored["points"][arm][metric]
                row[f"{metric}_ci"] = f"{low:.3f}-{high:.3f}"
            retrain = f" + {run['retrain_epochs']} on all" if "retrain_epochs" in run else ""
            row["epochs"] = f"{run['epochs']}{retrain}"
            for key in ("wall_seconds", "trials", "pruned", "best_cv"):
                row[key] = run.get(key)
            rows.append(row)
    return rows, verdicts(by_seed), spread(rows)


def verdicts(by_seed: dict[int, dict]) -> list[dict[str, Any]]:
    """The issue's targets, each judged on every seed measured."""
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str | None, verdict: str) -> None:
        out.append({"target": target, "measured": measured, "verdict": verdict})

    def paired(a: str, b: str, metric: str = "accuracy") -> tuple[str | None, str]:
        found = {
            seed: interval(scored["samples"][a][metric] - scored["samples"][b][metric])
            for seed, scored in by_seed.items()
            if {a, b} <= scored["samples"].keys()
        }
        shown = "; ".join(f"seed {s}: [{lo:+.3f}, {hi:+.3f}]" for s, (lo, hi) in found.items())
        return shown or None, beyond(list(found.values()))

    goal = "tuned ensemble >= 0.85 accuracy and >= 0.70 macro-F1 (mean of seeds)"
    shipped = next(
        (a for a in ("greedy", "new") for d in by_seed.values() if a in d["points"]), None
    )
    if shipped is None:
        add(goal, None, "not measured")
    else:
        points = [d["points"][shipped] for d in by_seed.values() if shipped in d["points"]]
        accuracy = round(statistics.mean(p["accuracy"] for p in points), 4)
        f1 = round(statistics.mean(p["macro_f1"] for p in points), 4)
        met = accuracy >= 0.85 and f1 >= 0.70
        add(
            goal,
            f"{LABELS[shipped]}: accuracy {accuracy}, macro-F1 {f1}",
            "met" if met else "not met",
        )
    for arm in ("new", "greedy"):
        goal = f"arm {LABELS[arm][0]} ahead of KerasTuner beyond the interval (paired accuracy)"
        add(goal, *paired(arm, "kerastuner"))
    for arm, (_, vote) in GREEDY_ARMS.items():
        pairs = [
            (seed, scored["points"][arm]["accuracy"], scored["runs"][arm]["best_single"])
            for seed, scored in by_seed.items()
            if arm in scored["points"]
        ]
        shown = "; ".join(
            f"seed {s}: {g} vs trial {b['trial']}: {b['accuracy']}" for s, g, b in pairs
        )
        met = "met" if all(g >= b["accuracy"] for _, g, b in pairs) else "not met"
        goal = (
            f"{LABELS[arm]}: greedy ensemble >= best single trial on the hold-out (accuracy, "
            f"{vote} vote), every seed"
        )
        add(goal, shown or None, met if pairs else "not measured")
    for metric in ("accuracy", "macro_f1"):
        add(
            f"new recipe > old recipe beyond the interval ({metric}, paired; top-3 votes)",
            *paired("new", "old", metric),
        )
    for metric in ("accuracy", "macro_f1"):
        add(
            f"new recipe > old recipe beyond the interval ({metric}, paired; greedy ensembles)",
            *paired("greedy", "old_greedy", metric),
        )
    add(
        "(context) new recipe vs the hand-written floor (accuracy, paired)",
        *paired("new", "floor"),
    )
    return out


def spread(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Across seeds, per arm: mean ± standard deviation (range) of every metric."""
    out = []
    for label in LABELS.values():
        mine = [row for row in rows if row["arm"] == label]
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
    rates = ax.twinx()
    for colour, (label, curve) in zip(("C0", "C1"), curves.items(), strict=False):
        epochs = range(1, len(curve["val_accuracy"]) + 1)
        ax.plot(epochs, curve["val_accuracy"], marker="o", color=colour, label=label)
        if None not in curve["learning_rate"]:
            rates.plot(epochs, curve["learning_rate"], linestyle=":", color=colour)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("fold-0 validation accuracy")
    rates.set_ylabel("learning rate at the epoch's end (dotted)")
    ax.set_title("Best arm-3 configuration on fold 0, with and without schedule/EMA")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = harness.argument_parser(
        NAME, __doc__, quick="tiny data, 32 px", seeds="default 0", child=True
    )
    parser.add_argument("--budget-epochs", type=int, default=None, help="default 96 (quick: 8)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per fold (default 6, quick: 2); e.g. the floor alone at 24 measures what "
        "the budget costs it",
    )
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--work", type=Path, default=None, help="default benchmarks/work/<name>")
    args = parser.parse_args()
    if args.run_one:
        run_one(json.loads(args.run_one))
        return
    size = dict(QUICK if args.quick else FULL)
    size["epochs"] = args.epochs or size["epochs"]
    budget = args.budget_epochs or size["budget"]
    work = (args.work or harness.WORK / f"{NAME}{'-quick' if args.quick else ''}").resolve()
    harness.chula_group_subset(work, size["group_fraction"])
    runs = run_arms(args.seeds or [0], args.arms, work, {"size": size, "budget": budget})
    save(runs, size, budget, args.quick, args.results)


def run_arms(
    seeds: list[int], arms: list[str], work: Path, settings: dict[str, Any]
) -> dict[str, dict]:
    """Run the arms asked for, each in its own process; every run kept in ``runs.json``.

    Runs of other settings (size, budget) are set aside, so that one table never mixes them.
    """
    store = work / "runs.json"
    saved = json.loads(store.read_text()) if store.is_file() else {}
    runs = saved.get("runs", {}) if saved.get("settings") == settings else {}
    if saved and not runs:
        log(f"{store} holds runs with other settings; they are set aside")
    budget = settings["budget"]
    for seed in seeds:
        for arm in (a for a in ARMS if a in arms):
            if arm == "curves" and seed != seeds[0]:
                continue
            spec = {"arm": arm, "seed": seed, "work": str(work), **settings}
            if arm in GREEDY_ARMS or arm == "curves":
                tuned = GREEDY_ARMS.get(arm, ("new", ""))[0]
                if f"{tuned}:{seed}" not in runs:
                    raise SystemExit(f"{arm} needs arm '{tuned}' of seed {seed}: add it to --arms")
                spec["best_params"] = runs[f"{tuned}:{seed}"]["best_params"]
            log(f"== {arm} (seed {seed}), budget {budget} epochs: started {time.strftime('%X')}")
            runs[f"{arm}:{seed}"] = harness.run_child(NAME, spec, arm, stream_stderr=True)
            store.write_text(json.dumps({"settings": settings, "runs": runs}) + "\n")
            log(f"== {arm} (seed {seed}) done in {runs[f'{arm}:{seed}']['wall_seconds']} s")
    return runs


def save(
    runs: dict[str, dict], size: dict[str, Any], budget: int, quick: bool, folder: Path
) -> None:
    """Score every run kept, judge the targets, draw the curves; write the results files."""
    rows, targets, spread_rows = summarise(runs)
    curves = next((r["curves"] for k, r in runs.items() if k.startswith("curves:")), None)
    picture = harness.output_path(folder, NAME, quick, ".png")
    if curves:
        plot_curves(curves, picture)
    verdict_table = harness.markdown_table(targets, ["target", "measured", "verdict"])
    print(f"\nVerdicts\n\n{verdict_table}")
    spread_text = "\n\nAcross seeds (mean ± sd, range):\n\n" + harness.markdown_table(
        spread_rows, ["arm", "seeds", *METRICS, "wall_seconds"]
    )
    columns = ["arm", "seed", *(c for m in METRICS for c in (m, f"{m}_ci"))]
    harness.save_results(
        NAME,
        title="Model quality on the chula_rbc12 hold-out: tuned ensembles vs floor and KerasTuner",
        description=(
            f"chula_rbc12 at {size['image_size']} px: a fixed stratified "
            f"{size['group_fraction']:.0%} of the 553 field groups, automl's grouped hold-out "
            f"(20%) and {size['n_folds']} grouped folds, the same for every arm of a seed. "
            f"{size['epochs']} epochs per fold; the tuners (arms 2, 3, 5) start no trial after "
            f"{budget} epochs summed over folds and trials. Intervals: 95% bootstrap over "
            f"hold-out images ({RESAMPLES} resamples); differences paired (the same resamples "
            "for both arms). wall_seconds: tuning + ensemble (KerasTuner: + retraining).\n\n"
            + verdict_table
            + (spread_text if spread_rows else "")
            + (f"\n\nFold-0 learning curves: `{picture.name}`." if curves else "")
        ),
        rows=rows,
        columns=[*columns, "wall_seconds", "epochs", "trials", "pruned", "best_cv"],
        extra={
            "settings": {"size": size, "budget": budget},
            "verdicts": targets,
            "spread": spread_rows,
            "runs": runs,
        },
        quick=quick,
        folder=folder,
    )


if __name__ == "__main__":
    main()
