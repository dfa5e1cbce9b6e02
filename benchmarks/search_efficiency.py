"""Search efficiency: best CV accuracy over wall-clock time, automl vs the tools users would pick.

Same data, same folds, same search space, same wall-clock budget, 3 seeds each:

- ``automl``: TPE + median pruner + k-fold, what ``automl tune`` runs (automl's ``Objective``);
- ``optuna_random``: Optuna random sampling, no pruning, the same k-fold objective;
- ``kt_hyperband``: KerasTuner ``Hyperband`` (max_epochs = the space's epochs, factor 3);
- ``kt_random``: KerasTuner ``RandomSearch``;
- ``floor``: the hand-tuned notebook CNN (``harness.hand_tuned_space``), one trial per seed.

The KerasTuner tuners draw automl's exact space: an adapter hands KerasTuner's ``hp`` to
automl's ``SearchSpace.suggest`` as if it were an Optuna trial (``hp.Int``/``Float``/``Choice``
for ``suggest_int``/``float``/``categorical``, log scale kept). Their ``run_trial`` trains the
same k folds with automl's own fold fit (``automl.nn.fit.fit_fold``: model builder, ``tf.data``
pipeline, the validation fold scored after every epoch, as KerasTuner users run it with
``validation_data`` and as automl's pruning reports need) and returns the mean fold accuracy,
so the tools differ only in how they search. Hyperband continues a promoted trial from each
fold's saved model, as KerasTuner does for its single model (``resume_fold``: the one fit
``fit_fold`` cannot do, since it always starts from new weights).

Each (tool, seed) runs in its own process, one after another, with the clock starting when the
tuner starts (data already decoded, the same arrays for all). The process reports and ends when
the budget is spent; a trial still running then does not count. A trial's CV score counts when
it finishes every fold (a Hyperband trial at fewer epochs counts: its models exist). Reported
per tool, medians over seeds: best CV accuracy at the budget, time to reach the floor's CV
score, and time to get within 0.01 (1 point) of the best score any run found. Target:
automl <= 0.5x KerasTuner Hyperband's time. The curves go to ``results/search_efficiency.png``.

    python -m benchmarks.search_efficiency [--quick] [--budget 300] [--seeds 0 1 2]
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness

NAME = "search_efficiency"
METHODS = ("automl", "optuna_random", "kt_hyperband", "kt_random")
WITHIN = 0.01  # "within 1 point" of the best score any run found, in accuracy


# --------------------------------------------------------------------------------------------
# One run (in its own process)
# --------------------------------------------------------------------------------------------


def _config(method: str, seed: int, work: Path, size: dict[str, int], budget: float):
    from automl.config.schema import config_from_dict

    if method == "floor":
        space, sampler, pruner, n_trials = harness.hand_tuned_space(size["epochs"]), None, None, 1
    else:
        space, n_trials = harness.search_space(size["epochs"]), None
        sampler = {"name": "random"} if method != "automl" else None  # automl: harness's TPE
        pruner = {"name": "none"} if method != "automl" else None  # automl: harness's median
    raw = harness.study_config(
        name=f"{method}_seed{seed}",
        studies_dir=work / "studies",
        train=work / "data" / "train",
        test=work / "data" / "test",
        size=size,
        space=space,
        seed=seed,
        sampler=sampler,
        pruner=pruner,
        n_trials=n_trials,
        timeout=None if method == "floor" else budget,
    )
    return config_from_dict(raw, source=f"benchmarks/search_efficiency.py:{method}")


def _fixed_splits(work: Path, size: dict[str, int]):
    """The folds every tool and seed uses: those of the seed-0 configuration."""
    from automl.search.session import prepare_splits

    return prepare_splits(_config("automl", 0, work, size, budget=1.0))


def run_optuna(
    method: str, seed: int, work: Path, size: dict[str, int], budget: float, spec: dict
) -> dict:
    """automl, Optuna random or the floor: automl's own k-fold objective on the fixed folds."""
    import optuna

    from automl.search.attrs import TrialSummary
    from automl.search.session import optimize
    from automl.search.storage import create_or_load

    config = _config(method, seed, work, size, budget)
    splits = _fixed_splits(work, size)
    study = create_or_load(config)
    events: list[dict[str, Any]] = []
    started = time.perf_counter()
    if method != "floor":
        _stop_at_budget(spec, events, budget)

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        events.append(
            {
                "t": round(time.perf_counter() - started, 2),
                "value": trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None,
                "state": trial.state.name.lower(),
                "epochs": TrialSummary.from_trial(trial).epochs or 0,
            }
        )

    # What `automl tune` runs in its process (timeout = the budget, from the configuration).
    optimize(
        study, config, splits, n_trials=config.study.n_trials, callbacks=[record], progress=False
    )
    return {"events": events}


class HpAsOptunaTrial:
    """KerasTuner's ``hp`` behind the ``suggest_*`` calls automl's ``SearchSpace`` makes."""

    def __init__(self, hp: Any) -> None:
        self.hp = hp

    def suggest_float(self, name, low, high, *, log=False, step=None):
        sampling = "log" if log else "linear"
        return self.hp.Float(name, low, high, step=step, sampling=sampling)

    def suggest_int(self, name, low, high, *, log=False, step=1):
        sampling = "log" if log else "linear"
        return self.hp.Int(name, low, high, step=step or 1, sampling=sampling)

    def suggest_categorical(self, name, choices):
        return self.hp.Choice(name, list(choices))


def keras_tuner_folds(
    params: dict[str, Any],
    hp_values: dict[str, Any],
    splits: Any,
    *,
    image_size: int,
    seeds: list[int],
    checkpoints: Path,
    trial_id: str,
    save: bool,
    metric: str = "accuracy",
    on_epoch: Callable[[int, float], bool] | None = None,
) -> tuple[list[float], int]:
    """A KerasTuner trial over the k folds: each fold's validation ``metric``, epochs trained.

    A trial that trains the whole recipe from new weights is automl's own fold fit
    (``fit_fold``). Hyperband's other trials train part of it: a first rung stops after
    ``tuner/epochs`` of the ``params["epochs"]`` the schedule spans, and a promoted trial goes
    on from the model its earlier rung saved (``<checkpoints>/<trial id>_fold<k>.keras``,
    written when ``save``); ``partial_fold`` trains those. A fold whose loss diverged scores
    0, as a model that learned nothing. ``on_epoch(epoch, score)`` hears every scored epoch
    (``fit_fold``'s hook; return False to go on), e.g. to count the epochs of a trial that a
    time budget cuts short.
    """
    from automl.nn.fit import fit_fold

    tuning = splits.tuning
    epochs = int(hp_values.get("tuner/epochs", params["epochs"]))
    initial = int(hp_values.get("tuner/initial_epoch", 0))
    resume = hp_values.get("tuner/trial_id")
    whole = resume is None and initial == 0 and epochs == int(params["epochs"])
    scores, trained = [], 0
    for fold, (train_idx, val_idx) in enumerate(splits.folds):
        path = checkpoints / f"{trial_id}_fold{fold}.keras" if save else None
        if whole:
            fit = fit_fold(
                params, tuning.images, tuning.labels, train_idx, val_idx,
                n_classes=splits.n_classes, image_size=image_size, seed=seeds[fold],
                metric=metric, save_to=path, on_epoch=on_epoch,
            )  # fmt: skip
            scores.append(0.0 if fit.nan_loss else fit.score)
            trained += fit.epochs_run + int(fit.nan_loss)  # the epoch that diverged trained too
            continue
        previous = checkpoints / f"{resume}_fold{fold}.keras" if resume is not None else None
        scores.append(
            partial_fold(
                params, tuning.images, tuning.labels, train_idx, val_idx,
                n_classes=splits.n_classes, image_size=image_size, seed=seeds[fold],
                epochs=epochs, initial_epoch=initial, weights=previous, save_to=path,
                metric=metric, on_epoch=on_epoch,
            )
        )  # fmt: skip
        trained += epochs - initial
    return scores, trained


def partial_fold(
    params: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    n_classes: int,
    image_size: int,
    seed: int,
    epochs: int,
    initial_epoch: int = 0,
    weights: Path | None = None,
    save_to: Path | None = None,
    metric: str = "accuracy",
    on_epoch: Callable[[int, float], bool] | None = None,
) -> float:
    """Train epochs ``initial_epoch`` to ``epochs`` of a fold's ``params["epochs"]``-epoch recipe.

    What ``automl.nn.fit.fit_fold`` does for a whole fold (the same seeds, weight averaging and
    schedule, the validation rows scored after every epoch), for the parts of it Hyperband
    trains and ``fit_fold`` cannot: stopping before the schedule's end with the model saved,
    and going on from ``weights`` with the schedule at ``initial_epoch``. Class weights are
    left out (the benchmark spaces draw none). Returns the last epoch's validation ``metric``
    (0 if the loss diverged); ``on_epoch`` hears each epoch's score, as ``fit_fold``'s hook.
    """
    import keras

    from automl.metrics import compute_metric
    from automl.nn.inference import PREDICT_BATCH_SIZE
    from automl.nn.models import build_model
    from automl.nn.pipeline import make_dataset
    from automl.nn.schedules import (
        VAL_METRIC_LOG,
        StepLearningRate,
        WeightAveraging,
        training_callbacks,
    )

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_model(params, n_classes=n_classes, image_size=image_size)
    if weights is not None:
        model.load_weights(weights)
    batch_size = int(params["batch_size"])
    train = make_dataset(
        images, labels, train_idx, n_classes=n_classes, batch_size=batch_size, training=True,
        augment=params["augment"], seed=seed,
    )  # fmt: skip
    val = make_dataset(images, None, val_idx, n_classes=n_classes, batch_size=PREDICT_BATCH_SIZE)
    scores: list[float] = []

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            probabilities = self.model.predict(val, verbose=0)
            finite = bool(np.isfinite(probabilities).all())
            scores.append(
                compute_metric(metric, labels[val_idx], probabilities) if finite else 0.0
            )
            (logs if logs is not None else {})[VAL_METRIC_LOG] = scores[-1]  # for plateau
            self.model.stop_training = not finite
            if finite and on_epoch is not None:
                on_epoch(epoch, scores[-1])

    steps = math.ceil(len(train_idx) / batch_size)
    schedule = training_callbacks(params, steps_per_epoch=steps, epochs=int(params["epochs"]))
    for callback in schedule:  # the rate goes on from where the earlier rung left it
        if isinstance(callback, StepLearningRate):
            callback.step = initial_epoch * steps
    averaging = [WeightAveraging()] if params.get("ema", {}).get("momentum", 0) > 0 else []
    model.fit(
        train,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=[*averaging, Score(), *schedule],  # averaged weights first: they are scored
        shuffle=False,
        verbose=0,
    )
    if save_to is not None:
        model.save(save_to)
    return scores[-1] if scores else 0.0


def run_keras_tuner(
    method: str, seed: int, work: Path, size: dict[str, int], budget: float, spec: dict
) -> dict:
    """KerasTuner Hyperband or RandomSearch over automl's space, k folds per trial."""
    import keras_tuner as kt

    from automl.nn.models import build_model

    config = _config("automl", seed, work, size, budget)
    splits = _fixed_splits(work, size)
    space, n_classes, image_size = config.space, splits.n_classes, config.data.image_size
    checkpoints = work / "kt_weights" / f"{method}_seed{seed}"
    checkpoints.mkdir(parents=True, exist_ok=True)
    events: list[dict[str, Any]] = []

    class HyperModel(kt.HyperModel):
        def build(self, hp):
            params = space.suggest(HpAsOptunaTrial(hp))
            return build_model(params, n_classes=n_classes, image_size=image_size)

    class KFoldMixin:
        def pre_create_trial(self):
            # KerasTuner has no time budget: stop asking the oracle for trials once it is spent.
            if time.perf_counter() - started >= budget:
                self.oracle.max_trials = len(self.oracle.trials)
            super().pre_create_trial()

        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            params = space.suggest(HpAsOptunaTrial(hp))
            trial_seed = seed * 10_000 + len(events)
            scores, trained = keras_tuner_folds(
                params,
                hp.values,
                splits,
                image_size=image_size,
                seeds=[trial_seed + fold for fold in range(len(splits.folds))],
                checkpoints=checkpoints,
                trial_id=trial.trial_id,
                save=method == "kt_hyperband",
            )
            value = float(np.mean(scores))
            events.append(
                {
                    "t": round(time.perf_counter() - started, 2),
                    "value": value,
                    "state": "complete",
                    "epochs": trained,
                    "trial_epochs": int(hp.values.get("tuner/epochs", params["epochs"])),
                }
            )
            return value

    common_args = {
        "hypermodel": HyperModel(),
        "objective": kt.Objective("val_accuracy", direction="max"),
        "seed": seed,
        "directory": str(work / "kt"),
        "project_name": f"{method}_seed{seed}",
        "overwrite": True,
    }
    started = time.perf_counter()
    _stop_at_budget(spec, events, budget)
    if method == "kt_hyperband":

        class Tuner(KFoldMixin, kt.Hyperband):
            pass

        tuner = Tuner(
            max_epochs=int(space.max_epochs()),
            factor=3,
            hyperband_iterations=1000,  # the budget ends the search, not the iterations
            **common_args,
        )
    else:

        class Tuner(KFoldMixin, kt.RandomSearch):  # type: ignore[no-redef]
            pass

        tuner = Tuner(max_trials=100_000, **common_args)
    tuner.search(verbose=0)
    return {"events": events}


def run_one(spec: dict[str, Any]) -> None:
    """Child process: one (tool, seed) run; answers the parent with its trial events."""
    work, size = Path(spec["work"]), spec["size"]
    runner = run_keras_tuner if spec["method"].startswith("kt_") else run_optuna
    result = runner(spec["method"], spec["seed"], work, size, spec["budget"], spec)
    harness.child_result({**spec, **result})


def _stop_at_budget(spec: dict[str, Any], events: list[dict[str, Any]], budget: float) -> None:
    """Report and end the process when the budget is spent, instead of finishing the trial.

    Neither Optuna's ``timeout`` nor our KerasTuner stop interrupts a running trial, and a trial
    that ends after the budget does not count anyway: the time is saved, the result is the same.
    """
    import os
    import threading

    def stop() -> None:
        harness.child_result({**spec, "events": list(events)})
        os._exit(0)

    timer = threading.Timer(budget + 1.0, stop)
    timer.daemon = True
    timer.start()


# --------------------------------------------------------------------------------------------
# The comparison (parent process)
# --------------------------------------------------------------------------------------------


def curve(events: list[dict[str, Any]], budget: float) -> list[tuple[float, float]]:
    """Best CV score so far at each improvement, within the budget."""
    points, best = [], -math.inf
    for event in sorted(events, key=lambda e: e["t"]):
        if event["t"] > budget or event["value"] is None:
            continue
        if event["value"] > best:
            best = event["value"]
            points.append((event["t"], best))
    return points


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, value in points if value >= target - 1e-12), None)


def median_time(times: list[float | None]) -> float | None:
    """Median over seeds, a run that never got there counting as infinitely slow."""
    value = statistics.median(math.inf if t is None else t for t in times)
    return None if math.isinf(value) else round(value, 1)


def summarise(runs: list[dict[str, Any]], budget: float) -> tuple[list[dict], dict[str, Any]]:
    floor_values = [r["events"][0]["value"] for r in runs if r["method"] == "floor"]
    floor = statistics.median(v for v in floor_values if v is not None)
    searched = [r for r in runs if r["method"] != "floor"]
    for run in searched:
        run["curve"] = curve(run["events"], budget)
    best_any = max(p[-1][1] for p in (r["curve"] for r in searched) if p)
    target = best_any - WITHIN
    rows = []
    for method in METHODS:
        mine = [r for r in searched if r["method"] == method]
        if not mine:
            continue
        to_target = [time_to(r["curve"], target) for r in mine]
        to_floor = [time_to(r["curve"], floor) for r in mine]
        in_budget = [[e for e in r["events"] if e["t"] <= budget] for r in mine]
        rows.append(
            {
                "method": method,
                "seeds": len(mine),
                "best_cv_at_budget": round(
                    statistics.median(r["curve"][-1][1] if r["curve"] else 0.0 for r in mine), 4
                ),
                "trials_scored": round(
                    statistics.mean(sum(e["value"] is not None for e in ev) for ev in in_budget),
                    1,
                ),
                "trials_pruned": round(
                    statistics.mean(sum(e["state"] == "pruned" for e in ev) for ev in in_budget),
                    1,
                ),
                "epochs_trained": round(
                    statistics.mean(sum(e["epochs"] for e in ev) for ev in in_budget), 1
                ),
                "reached_target": f"{sum(t is not None for t in to_target)}/{len(mine)}",
                "seconds_to_target": median_time(to_target),
                "reached_floor": f"{sum(t is not None for t in to_floor)}/{len(mine)}",
                "seconds_to_floor": median_time(to_floor),
            }
        )
    rows.append(
        {
            "method": "floor (hand-tuned CNN)",
            "seeds": len(floor_values),
            "best_cv_at_budget": round(floor, 4),
            "trials_scored": 1,
        }
    )
    by_method = {row["method"]: row for row in rows}
    ratio = None
    automl_time = by_method.get("automl", {}).get("seconds_to_target")
    hyperband_time = by_method.get("kt_hyperband", {}).get("seconds_to_target")
    if automl_time is not None and hyperband_time:
        ratio = round(automl_time / hyperband_time, 3)
    summary = {
        "best_any": round(best_any, 4),
        "target": round(target, 4),
        "floor": round(floor, 4),
        "ratio_automl_to_kt_hyperband": ratio,
    }
    return rows, summary


def plot(runs: list[dict[str, Any]], budget: float, summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(METHODS, ("C0", "C1", "C2", "C3"), strict=True))
    fig, ax = plt.subplots(figsize=(8, 5))
    labelled = set()
    for run in runs:
        if run["method"] == "floor" or not run.get("curve"):
            continue
        times = [t for t, _ in run["curve"]] + [budget]
        values = [v for _, v in run["curve"]] + [run["curve"][-1][1]]
        label = None if run["method"] in labelled else run["method"]
        labelled.add(run["method"])
        ax.step(times, values, where="post", color=colours[run["method"]], label=label, alpha=0.8)
    ax.axhline(summary["floor"], color="grey", linestyle=":", label="hand-tuned floor")
    ax.axhline(summary["target"], color="black", linestyle="--", label="best any - 0.01")
    ax.set_xlabel("seconds since the tuner started")
    ax.set_ylabel("best CV accuracy so far")
    ax.set_xlim(0, budget)
    ax.set_title("Search efficiency, bccd_wbc_aug, same space, folds and budget (3 seeds)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = harness.argument_parser(
        NAME,
        __doc__,
        quick="small data, 40 s budget, 1 seed",
        seeds="default 0 1 2 (quick: 0)",
        child=True,
    )
    parser.add_argument("--budget", type=float, default=None, help="seconds (default 300)")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    if args.run_one:
        run_one(json.loads(args.run_one))
        return
    size = harness.sizes(args.quick)
    budget = args.budget or (40.0 if args.quick else 300.0)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    methods = [m.strip() for m in args.methods.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="automl_search_bench_") as tmp:
        work = Path(tmp)
        harness.wbc_subset(work / "data", size["per_class"], size["test_per_class"], seed=0)
        # Seeds outermost: slow drift of the machine spreads over every tool alike.
        for seed in seeds:
            for method in ["floor", *methods]:
                spec = {
                    "method": method,
                    "seed": seed,
                    "work": str(work),
                    "size": size,
                    "budget": budget,
                }
                run = harness.run_child(NAME, spec, f"{method} seed {seed}")
                scored = [e for e in run["events"] if e["value"] is not None]
                best = max((e["value"] for e in scored), default=None)
                print(
                    f"{method:14s} seed {seed}: {len(run['events'])} trials, "
                    f"{len(scored)} scored, best {best}",
                    flush=True,
                )
                runs.append(run)
    rows, summary = summarise(runs, budget)
    picture = harness.output_path(args.results, NAME, args.quick, ".png")
    plot(runs, budget, summary, picture)
    ratio = summary["ratio_automl_to_kt_hyperband"]
    verdict = "not measurable" if ratio is None else ("met" if ratio <= 0.5 else "not met")
    harness.save_results(
        NAME,
        title=f"Search efficiency: {budget:.0f} s per tool and seed, seeds {seeds}",
        description=(
            f"bccd_wbc_aug subset: {size['per_class']} TRAIN images per class, "
            f"{size['n_folds']} grouped folds (the same for every run), {size['image_size']} "
            f"px, {size['epochs']} epochs per fold. Best CV accuracy any run found: "
            f"{summary['best_any']}; target = within 0.01 of it ({summary['target']}); floor "
            f"(hand-tuned CNN, median of seeds) {summary['floor']}. Times are medians over "
            "seeds (a seed that never got there counts as slowest). automl / KerasTuner "
            f"Hyperband time to target: {ratio} (target <= 0.5: {verdict}). Curves: "
            f"`{picture.name}`."
        ),
        rows=rows,
        columns=[
            "method",
            "seeds",
            "best_cv_at_budget",
            "trials_scored",
            "trials_pruned",
            "epochs_trained",
            "reached_target",
            "seconds_to_target",
            "reached_floor",
            "seconds_to_floor",
        ],
        extra={
            "budget_seconds": budget,
            "sizes": size,
            "summary": summary,
            "runs": [{k: r[k] for k in ("method", "seed", "events") if k in r} for r in runs],
        },
        quick=args.quick,
        folder=args.results,
    )


if __name__ == "__main__":
    main()
