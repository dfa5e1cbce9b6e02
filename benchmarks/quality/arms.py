"""The four arms of ``benchmarks.model_quality``, each step a child process of the parent.

Steps, in this order per (arm, seed):

- ``tune``: the arm's search from a fresh study, ended by ``harness.deadline`` at the budget
  (the floor alone runs its one trial to the end). automl, the floor and its seeds run
  ``automl.search.tune.run_tune`` as shipped (it sets up the device: op determinism on CPU);
  KerasTuner runs Hyperband through ``search_efficiency``'s adapter and k-fold trial.
- ``score``: the trials completed by the deadline, in completion order. Each trial's hold-out
  probabilities are computed once from its fold models; at every completion the arm's
  incumbent is voted again (``replay``): automl's greedy ensemble of the trials completed so
  far (``greedy_selection`` on their out-of-fold files, ``ensemble.vote`` of the YAML) and its
  best trial alone; all the floor's seeds voting; KerasTuner's best trial by CV. automl's own
  ``run_ensemble`` runs too, as the cross-check of the replay's last point.
- ``retrain`` (KerasTuner only, the secondary row): its best configuration trained on the whole
  pool (``harness.fit_on_all``), cut off at the same budget.

The clock of an arm starts when its child starts the search, before TensorFlow is imported,
with the decoded crops already cached (``prepare``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.quality import data, stats
from benchmarks.quality.ablation import holdout_record

ARMS = ("floor", "floor_seeds", "automl", "kerastuner")
N_FOLDS = 3
MARKS = (0.25, 0.5, 1.0)  # the shares of the budget the time-to-quality table reads


def arm_config(arm: str, seed: int, spec: dict[str, Any]) -> Any:
    """The automl configuration of an arm (KerasTuner's: automl's, for its space and data)."""
    from automl.config.schema import config_from_dict, load_config

    files = spec["files"]
    section = data.data_section(
        Path(files["pool"]), Path(files["holdout"]), spec["image_size"], N_FOLDS
    )
    studies = str(Path(spec["work"]) / "studies")
    name = f"{arm}_s{seed}"
    if arm in ("floor", "floor_seeds"):
        alone = arm == "floor"
        raw = {
            "study": {
                "name": name,
                "metric": "balanced_accuracy",
                "seed": seed,
                "n_trials": 1 if alone else None,
                "timeout": None if alone else spec["budget"],
                "pruner": {"name": "none"},
                "studies_dir": studies,
            },
            "data": section,
            "space": harness.hand_tuned_space(spec["floor_epochs"]),
            "ensemble": {"selection": "top_k", "vote": "soft"},
        }
        return config_from_dict(raw, source=f"benchmarks/quality/arms.py:{arm}")
    overrides = [
        f"data={json.dumps(section)}",
        f"study.name={name}",
        f"study.studies_dir={json.dumps(studies)}",
        f"study.seed={seed}",
        "study.n_trials=null",
        f"study.timeout={spec['budget']}",
        *spec["overrides"],
    ]
    return load_config(spec["space"], overrides)


def fresh_study_folder(config: Any) -> None:
    """Remove an earlier run's study and create its folder (automl reads the image cache only
    when the study folder exists)."""
    from automl.search.paths import paths_for

    root = paths_for(config).root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)


# --- prepare -------------------------------------------------------------------------------------


def prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Decode the pool, the ablation pool and the hold-out once into automl's image cache."""
    from benchmarks.quality.ablation import pool_and_params

    started = time.perf_counter()
    floor = {**spec, "factor": "floor", "epochs": 2}
    splits, _ = pool_and_params(floor, pool="pool")
    pool_and_params(floor, pool="ablation_pool")
    return {"seconds": round(time.perf_counter() - started, 1), **holdout_record(splits)}


# --- tune ----------------------------------------------------------------------------------------


def tune_optuna(arm: str, seed: int, spec: dict[str, Any]) -> dict[str, Any]:
    """floor, floor_seeds, automl: ``run_tune`` on a fresh study until the deadline."""
    from automl.search.tune import run_tune

    config = arm_config(arm, seed, spec)
    fresh_study_folder(config)
    started = time.time()
    budget = None if arm == "floor" else spec["budget"]

    def answer(stopped: str) -> dict[str, Any]:
        return {"started": started, "stopped": stopped, "seconds": round(time.time() - started, 1)}

    with harness.deadline(budget, lambda: answer("deadline")):
        run_tune(config, progress=False)
    return answer("finished")


def tune_kerastuner(seed: int, spec: dict[str, Any]) -> dict[str, Any]:
    """KerasTuner Hyperband over the YAML's space and automl's folds until the deadline."""
    started = time.time()
    events: list[dict[str, Any]] = []
    epochs = [0]  # fold-epochs trained, the trial running at the deadline included

    def answer(stopped: str) -> dict[str, Any]:
        done = sum(e["fold_epochs"] for e in events)
        return {
            "started": started,
            "stopped": stopped,
            "seconds": round(time.time() - started, 1),
            "events": list(events),
            "fold_epochs_cut": epochs[0] - done,
        }

    with harness.deadline(spec["budget"], lambda: answer("deadline")):
        tuner = _hyperband(seed, spec, started, events, epochs)
        tuner.search(verbose=0)
    return answer("finished")


def _hyperband(seed: int, spec: dict[str, Any], started: float, events: list, epochs: list) -> Any:
    """The KerasTuner Hyperband tuner whose trials are automl's k-fold fits (``events``)."""
    import keras_tuner as kt

    from automl.nn.fit import configure_device
    from automl.nn.models import build_model
    from automl.search.session import prepare_splits
    from benchmarks.search_efficiency import HpAsOptunaTrial, keras_tuner_folds

    config = arm_config("kerastuner", seed, spec)
    fresh_study_folder(config)
    splits = prepare_splits(config)
    configure_device(config.training.mixed_precision, config.training.deterministic)
    space, metric, size = config.space, config.study.metric, config.data.image_size
    checkpoints = Path(spec["work"]) / "kt_weights" / f"s{seed}"
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True)

    def count(epoch: int, score: float) -> bool:
        epochs[0] += 1
        return False

    class HyperModel(kt.HyperModel):
        def build(self, hp):  # KerasTuner builds once to learn the space; run_trial trains
            params = space.suggest(HpAsOptunaTrial(hp))
            return build_model(params, n_classes=splits.n_classes, image_size=size)

    class Tuner(kt.Hyperband):
        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            params = space.suggest(HpAsOptunaTrial(hp))
            base = seed * 10_000 + len(events) * 10
            scores, trained = keras_tuner_folds(
                params, hp.values, splits, image_size=size,
                seeds=[base + fold for fold in range(len(splits.folds))],
                checkpoints=checkpoints, trial_id=trial.trial_id, save=True, metric=metric,
                on_epoch=count,
            )  # fmt: skip
            events.append(
                {
                    "trial": trial.trial_id,
                    "t": round(time.time() - started, 2),
                    "value": float(np.mean(scores)),
                    "fold_epochs": trained,
                    "tuner_epochs": int(hp.values.get("tuner/epochs", params["epochs"])),
                    "params": params,
                    "models": [
                        str(checkpoints / f"{trial.trial_id}_fold{k}.keras")
                        for k in range(len(splits.folds))
                    ],
                }
            )
            return events[-1]["value"]

    return Tuner(
        hypermodel=HyperModel(),
        objective=kt.Objective(f"val_{metric}", direction="max"),
        max_epochs=int(space.max_epochs()),
        factor=3,
        hyperband_iterations=1000,  # the deadline ends the search
        seed=seed,
        directory=str(Path(spec["work"]) / "kt"),
        project_name=f"s{seed}",
        overwrite=True,
    )


# --- score ---------------------------------------------------------------------------------------


def score_optuna(arm: str, seed: int, spec: dict[str, Any], tuned: dict[str, Any]) -> dict:
    """The replay of an automl-run arm: its incumbent on the hold-out at every completion."""
    from automl.ensemble.build import trial_library
    from automl.ensemble.library import load_oof
    from automl.errors import StudyError
    from automl.nn.inference import predict_probabilities
    from automl.search.paths import trial_folder
    from automl.search.session import prepare_splits
    from automl.search.storage import create_or_load

    config = arm_config(arm, seed, spec)
    splits = prepare_splits(config)
    study = create_or_load(config)
    events = trial_events(study, tuned["started"])
    try:
        library = trial_library(study, lambda number: trial_folder(config, number))
    except StudyError:  # no trial completed by the deadline
        library = []
    probabilities = {
        m.trial: predict_probabilities(m.models, splits.holdout.images) for m in library
    }
    oof = load_oof(library, splits.tuning.ids, splits.n_classes) if arm == "automl" else {}
    finished = {e["trial"]: e["t"] for e in events if e["t"] is not None}
    order = sorted(library, key=lambda m: (finished[m.trial], m.trial))
    holdout = _holdout(splits)
    points = []
    for k in range(1, len(order) + 1):
        done = order[:k]
        if arm == "automl":
            chosen = greedy_members(config, done, oof, splits.tuning.labels)
        else:
            chosen = {m.trial: 1 for m in done}
        best = min(done, key=library.index)  # the library is best CV first
        points.append(
            replay_point(
                finished[done[-1].trial], k, chosen, best.trial, probabilities, config, holdout
            )
        )
    result = {
        "events": events,
        "points": _marked(points, spec["budget"]),
        **holdout_record(splits),
    }
    if arm == "automl" and library:
        result["shipped"] = _shipped(config, study)
    return result


def trial_events(study: Any, started: float) -> list[dict[str, Any]]:
    """Every trial: number, state, value, seconds from the start to its end, fold-epochs.

    Fold-epochs are the trial's ``epochs_per_fold`` (pruned trials' too); a trial without them
    (failed, or running at the deadline) counts its reported epochs.
    """
    from automl.search.attrs import TrialSummary

    events = []
    for trial in study.get_trials(deepcopy=False):
        summary = TrialSummary.from_trial(trial)
        end = trial.datetime_complete
        epochs = sum(summary.epochs_per_fold) or len(trial.intermediate_values)
        events.append(
            {
                "trial": trial.number,
                "state": summary.state,
                "value": summary.value,
                "t": None if end is None else round(end.timestamp() - started, 2),
                "fold_epochs": int(epochs),
            }
        )
    return events


def greedy_members(config: Any, done: list, oof: dict, labels: np.ndarray) -> dict[int, int]:
    """automl's greedy selection over the trials ``done`` (weights by trial number)."""
    from automl.ensemble.selection import greedy_selection

    candidates = [m for m in done if m.trial in oof]
    if not candidates:  # automl then has no greedy ensemble; its best trial stands alone
        return {}
    selection = greedy_selection(
        np.stack([oof[m.trial] for m in candidates]),
        labels,
        [m.trial for m in candidates],
        [m.cv_value for m in candidates],
        metric=config.study.metric,
        vote_method=config.ensemble.vote,
        direction=config.study.direction,
    )
    return dict(selection.weights)


def _vote(probabilities: dict, weights: dict[int, int], method: str) -> np.ndarray:
    """The hold-out labels of the trials' fold models voting with their trial's weight."""
    from automl.ensemble.voting import vote

    stack = np.concatenate([probabilities[t] for t in weights])
    per_model = [w for t, w in weights.items() for _ in range(len(probabilities[t]))]
    return vote(stack, method, per_model).labels


def replay_point(
    t: float,
    n_trials: int,
    chosen: dict[int, int],
    best: int,
    probabilities: dict,
    config: Any,
    holdout: stats.Holdout,
) -> dict[str, Any]:
    """One replay point: the incumbent ensemble and the best trial alone, on the hold-out."""
    method = config.ensemble.vote
    single = _vote(probabilities, {best: 1}, method)
    ensemble = _vote(probabilities, chosen, method) if chosen else single
    return {
        "t": t,
        "trials": n_trials,
        "members": [[trial, weight] for trial, weight in chosen.items()] or [[best, 1]],
        "best_trial": best,
        "ensemble": ensemble.tolist(),
        "best": single.tolist(),
        "ensemble_score": stats.point_scores(holdout, ensemble)[stats.PRIMARY],
        "best_score": stats.point_scores(holdout, single)[stats.PRIMARY],
    }


def _marked(points: list[dict[str, Any]], budget: float) -> list[dict[str, Any]]:
    """``points`` with the labels kept only where a mark of ``MARKS`` reads them.

    A mark reads the last point completed by its share of the budget; the full mark reads the
    last point of all (the floor's one trial may end after the budget: the table says so).
    """
    keep = set()
    for share in MARKS:
        inside = [i for i, p in enumerate(points) if share == 1.0 or p["t"] <= share * budget]
        if inside:
            keep.add(inside[-1])
    for i, point in enumerate(points):
        if i not in keep:
            point.pop("ensemble")
            point.pop("best")
    return points


def _shipped(config: Any, study: Any) -> dict[str, Any]:
    """automl's own ``run_ensemble`` (as ``automl ensemble`` runs it): members and scores."""
    from automl.ensemble.build import run_ensemble

    result = run_ensemble(config, study)
    holdout = result.holdout
    return {
        "members": [[m.trial, m.weight] for m in result.members],
        "balanced_accuracy": holdout.ensemble.balanced_accuracy if holdout else None,
        "best_single_trial": holdout.best_single_trial.trial if holdout else None,
    }


def _holdout(splits: Any) -> stats.Holdout:
    holdout = splits.holdout
    return stats.Holdout.from_lists(holdout.labels, holdout.groups, splits.n_classes)


def score_kerastuner(seed: int, spec: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """KerasTuner's incumbent (best CV so far) on the hold-out at every completed trial.

    Its fold models vote as automl's best trial's do (the YAML's ``ensemble.vote``); nothing is
    retrained here (``retrain_kerastuner`` is the secondary row).
    """
    from automl.nn.inference import predict_probabilities
    from automl.search.session import prepare_splits

    config = arm_config("kerastuner", seed, spec)
    splits = prepare_splits(config)
    holdout = _holdout(splits)
    probabilities: dict[str, np.ndarray] = {}
    points, best = [], None
    events = sorted(tuned["events"], key=lambda e: e["t"])
    for index, event in enumerate(events):
        if best is None or event["value"] > best["value"]:  # a tie keeps the earlier trial
            best = event
            models = [Path(m) for m in event["models"]]
            probabilities[event["trial"]] = predict_probabilities(models, splits.holdout.images)
        points.append(
            replay_point(event["t"], index + 1, {}, best["trial"], probabilities, config, holdout)
        )
    brief = [
        {k: e[k] for k in ("trial", "t", "value", "fold_epochs", "tuner_epochs")} for e in events
    ]
    return {
        "events": [{**e, "state": "complete"} for e in brief],
        "points": _marked(points, spec["budget"]),
        "best_params": best["params"] if best else None,
        **holdout_record(splits),
    }


# --- retrain -------------------------------------------------------------------------------------


def retrain_kerastuner(seed: int, spec: dict[str, Any], params: dict[str, Any]) -> dict:
    """KerasTuner's best configuration trained on the whole pool (secondary; capped)."""
    from automl.nn.fit import configure_device
    from automl.search.session import prepare_splits

    started = time.time()
    config = arm_config("kerastuner", seed, spec)

    def answer() -> dict[str, Any]:
        return {"stopped": "deadline", "seconds": round(time.time() - started, 1)}

    with harness.deadline(spec["budget"], answer):
        splits = prepare_splits(config)
        configure_device(config.training.mixed_precision, config.training.deterministic)
        probabilities = harness.fit_on_all(
            params, splits, image_size=config.data.image_size, seed=seed
        )
    return {
        "stopped": "finished",
        "seconds": round(time.time() - started, 1),
        "predicted": probabilities.argmax(axis=1).tolist(),
        **holdout_record(splits),
    }
