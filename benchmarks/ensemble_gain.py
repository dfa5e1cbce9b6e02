"""What the ensemble adds: top-K majority vote vs the best single trial vs retraining on all data.

On one finished study over the benchmark data (``common.py``), every model is scored on the
hold-out (``bccd_wbc_aug`` TEST: other cells than the tuning images):

- ``top-K vote``: majority vote of the fold models of the K best trials (K = 1, 3, 5, 10;
  K = 1 is the best trial's own fold models), what ``automl ensemble --top K`` builds;
- ``best single model``: the best trial's fold-0 model alone, what a hand-tuner would ship;
- ``best params, retrained on all data``: the best trial's hyperparameters trained once on all
  tuning images (no validation fold held back), 3 seeds, median and range.

Accuracy and macro-F1 (scikit-learn) per row; soft-vote accuracy alongside for reference.

The study is either tuned here (``n_trials`` unpruned trials so that K = 10 has ten complete
trials) or reused from ``pruning.py --work DIR`` with ``--reuse-study DIR/studies/unpruned``.

    python benchmarks/ensemble_gain.py [--quick] [--reuse-study STUDIES_DIR/NAME] [--n-trials 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

TOP_K = (1, 3, 5, 10)
RETRAIN_SEEDS = (0, 1, 2)


def tune_study(work: Path, size: dict[str, int], n_trials: int, seed: int) -> Path:
    """Tune an unpruned study over the benchmark data; return its folder."""
    from automl.config.schema import config_from_dict
    from automl.search.tune import run_tune

    train, test = common.wbc_subset(work / "data", size["per_class"], size["test_per_class"], seed)
    config = config_from_dict(
        common.study_config(
            name="ensemble_gain",
            studies_dir=work / "studies",
            train=train,
            test=test,
            size=size,
            space=common.search_space(size["epochs"]),
            seed=seed,
            pruner={"name": "none"},
            n_trials=n_trials,
        ),
        source="benchmarks/ensemble_gain.py",
    )
    run_tune(config, progress=False)
    return work / "studies" / "ensemble_gain"


def score(labels: np.ndarray, probabilities: np.ndarray, names: tuple[str, ...]) -> dict:
    """Majority-vote accuracy and macro-F1 (and soft-vote accuracy) of stacked probabilities."""
    from automl.ensemble.voting import vote
    from automl.metrics import classification_report

    majority = vote(probabilities, "majority")
    soft = vote(probabilities, "soft")
    report = classification_report(labels, majority.labels, majority.probabilities, names)
    return {
        "accuracy": round(report["accuracy"], 4),
        "macro_f1": round(report["macro_f1"], 4),
        "soft_vote_accuracy": round(float(np.mean(soft.labels == labels)), 4),
    }


def retrain_on_all(params: dict, splits, image_size: int, seed: int) -> np.ndarray:
    """Hold-out probabilities of the best parameters trained on every tuning image."""
    import keras

    from automl.nn.models import build_model
    from automl.nn.pipeline import make_dataset

    tuning, holdout = splits.tuning, splits.holdout
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_model(params, n_classes=splits.n_classes, image_size=image_size)
    train = make_dataset(
        tuning.images,
        tuning.labels,
        np.arange(len(tuning)),
        n_classes=splits.n_classes,
        batch_size=int(params["batch_size"]),
        training=True,
        augment=params["augment"],
        seed=seed,
    )
    model.fit(train, epochs=int(params["epochs"]), shuffle=False, verbose=0)
    test = make_dataset(
        holdout.images, None, np.arange(len(holdout)), n_classes=splits.n_classes, batch_size=256
    )
    return model.predict(test, verbose=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 4 trials")
    parser.add_argument("--reuse-study", type=Path, default=None, help="STUDIES_DIR/NAME")
    parser.add_argument("--n-trials", type=int, default=None, help="default 12 (quick: 4)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from automl.ensemble.build import select_members
    from automl.nn.inference import predict_probabilities
    from automl.search.paths import trial_folder
    from automl.search.storage import load_study
    from automl.search.tune import prepare_splits

    with tempfile.TemporaryDirectory(prefix="automl_ensemble_bench_") as tmp:
        if args.reuse_study is not None:
            study_dir = args.reuse_study
        else:
            size = common.sizes(args.quick)
            n_trials = args.n_trials or (4 if args.quick else 12)
            study_dir = tune_study(Path(tmp), size, n_trials, args.seed)
        config, study = load_study(study_dir.name, study_dir.parent)
        splits = prepare_splits(config)
        names = splits.tuning.class_names
        labels = splits.holdout.labels
        members = select_members(study, max(TOP_K), lambda n: trial_folder(config, n))
        models = [path for member in members for path in member.models]
        print(f"{len(members)} trials, {len(models)} fold models; predicting the hold-out")
        probabilities = predict_probabilities(models, splits.holdout.images, progress=True)
        rows = []
        start = 0
        per_trial = []
        for member in members:
            per_trial.append(probabilities[start : start + len(member.models)])
            start += len(member.models)
        for k in TOP_K:
            if k > len(members):
                print(f"top-{k}: the study has only {len(members)} complete trials; skipped")
                continue
            stacked = np.concatenate(per_trial[:k])
            rows.append(
                {
                    "model": f"top-{k} majority vote",
                    "trials": k,
                    "n_models": len(stacked),
                    **score(labels, stacked, names),
                }
            )
        rows.append(
            {
                "model": "best single model (best trial, fold 0)",
                "trials": 1,
                "n_models": 1,
                **score(labels, per_trial[0][:1], names),
            }
        )
        best = study.trials[members[0].trial]
        params = best.user_attrs["hyperparameters"]
        retrained = []
        for seed in RETRAIN_SEEDS:
            result = score(
                labels,
                retrain_on_all(params, splits, config.data.image_size, seed)[None],
                names,
            )
            print(f"retrained on all data, seed {seed}: {json.dumps(result)}", flush=True)
            retrained.append(result)
        rows.append(
            {
                "model": f"best params retrained on all data (median of {len(RETRAIN_SEEDS)})",
                "trials": 1,
                "n_models": 1,
                **{
                    key: statistics.median(r[key] for r in retrained)
                    for key in ("accuracy", "macro_f1", "soft_vote_accuracy")
                },
                "accuracy_range": [
                    min(r["accuracy"] for r in retrained),
                    max(r["accuracy"] for r in retrained),
                ],
            }
        )
        best_cv = round(float(best.value), 4)
    common.save_results(
        "ensemble_gain",
        title="Ensemble gain on the hold-out: top-K majority vote vs single models",
        description=(
            f"Study `{study_dir}`: {len(study.trials)} trials, best CV accuracy {best_cv} "
            f"(trial {best.number}); hold-out = {len(labels)} bccd_wbc_aug TEST images "
            f"({config.data.image_size} px), cells the tuning never saw. One vote per fold "
            "model; soft-vote accuracy (mean probabilities) for reference."
        ),
        rows=rows,
        columns=["model", "trials", "n_models", "accuracy", "macro_f1", "soft_vote_accuracy"],
        extra={
            "study": str(study_dir),
            "best_trial": best.number,
            "best_params": params,
            "retrained_per_seed": retrained,
        },
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
