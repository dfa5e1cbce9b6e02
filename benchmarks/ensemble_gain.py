"""What the ensemble adds: top-K majority vote vs the best single trial vs retraining on all data.

On one finished study over the benchmark data (``harness.py``), every model is scored on the
hold-out (``bccd_wbc_aug`` TEST: other cells than the tuning images):

- ``top-K vote``: majority vote of the fold models of the K best trials (K = 1, 3, 5, 10;
  K = 1 is the best trial's own fold models), what ``automl ensemble --top K`` builds;
- ``best single model``: the best trial's fold-0 model alone, what a hand-tuner would ship;
- ``best params, retrained on all data``: the best trial's hyperparameters trained once on all
  tuning images (no validation fold held back; ``harness.fit_on_all``, automl's own fold fit),
  3 seeds, median and range.

Accuracy and macro-F1 (scikit-learn) per row; soft-vote accuracy alongside for reference.

The study is either tuned here (``n_trials`` unpruned trials so that K = 10 has ten complete
trials) or reused from ``benchmarks.pruning --work DIR`` with ``--reuse-study
DIR/studies/unpruned``.

    python -m benchmarks.ensemble_gain [--quick] [--reuse-study STUDIES_DIR/NAME] [--n-trials 12]
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness

NAME = "ensemble_gain"
TOP_K = (1, 3, 5, 10)
RETRAIN_SEEDS = (0, 1, 2)


def tune_study(work: Path, size: dict[str, int], n_trials: int, seed: int) -> Path:
    """Tune an unpruned study over the benchmark data; return its folder."""
    from automl.config.schema import config_from_dict
    from automl.search.tune import run_tune

    train, test = harness.wbc_subset(
        work / "data", size["per_class"], size["test_per_class"], seed
    )
    config = config_from_dict(
        harness.study_config(
            name="ensemble_gain",
            studies_dir=work / "studies",
            train=train,
            test=test,
            size=size,
            space=harness.search_space(size["epochs"]),
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


def vote_rows(study, config, splits) -> tuple[list[dict[str, Any]], Any]:
    """Rows of the top-K votes and of the best single model; the best trial's member."""
    from automl.ensemble.library import select_members
    from automl.nn.inference import predict_probabilities
    from automl.search.paths import trial_folder

    names, labels = splits.tuning.class_names, splits.holdout.labels
    members = select_members(study, max(TOP_K), lambda n: trial_folder(config, n))
    models = [path for member in members for path in member.models]
    print(f"{len(members)} trials, {len(models)} fold models; predicting the hold-out")
    probabilities = predict_probabilities(models, splits.holdout.images, progress=True)
    ends = np.cumsum([len(member.models) for member in members])[:-1]
    per_trial = np.split(probabilities, ends)
    rows = []
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
    return rows, members[0]


def retrained_row(params: dict[str, Any], splits, image_size: int) -> tuple[dict, list[dict]]:
    """The best parameters trained on all tuning images, once per seed: median row, each run."""
    names, labels = splits.tuning.class_names, splits.holdout.labels
    retrained = []
    for seed in RETRAIN_SEEDS:
        probabilities = harness.fit_on_all(params, splits, image_size=image_size, seed=seed)
        result = score(labels, probabilities[None], names)
        print(f"retrained on all data, seed {seed}: {json.dumps(result)}", flush=True)
        retrained.append(result)
    row = {
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
    return row, retrained


def main() -> None:
    parser = harness.argument_parser(NAME, __doc__, quick="small data, 4 trials", seed=True)
    parser.add_argument("--reuse-study", type=Path, default=None, help="STUDIES_DIR/NAME")
    parser.add_argument("--n-trials", type=int, default=None, help="default 12 (quick: 4)")
    args = parser.parse_args()

    from automl.search.attrs import HYPERPARAMETERS
    from automl.search.session import prepare_splits
    from automl.search.storage import load_study

    with tempfile.TemporaryDirectory(prefix="automl_ensemble_bench_") as tmp:
        if args.reuse_study is not None:
            study_dir = args.reuse_study
        else:
            size = harness.sizes(args.quick)
            n_trials = args.n_trials or (4 if args.quick else 12)
            study_dir = tune_study(Path(tmp), size, n_trials, args.seed)
        config, study = load_study(study_dir.name, study_dir.parent)
        splits = prepare_splits(config)
        rows, best_member = vote_rows(study, config, splits)
        best = study.trials[best_member.trial]
        params = best.user_attrs[HYPERPARAMETERS]
        row, retrained = retrained_row(params, splits, config.data.image_size)
        rows.append(row)
    harness.save_results(
        NAME,
        title="Ensemble gain on the hold-out: top-K majority vote vs single models",
        description=(
            f"Study `{study_dir}`: {len(study.trials)} trials, best CV accuracy "
            f"{round(float(best.value), 4)} (trial {best.number}); hold-out = "
            f"{len(splits.holdout.labels)} bccd_wbc_aug TEST images "
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
        folder=args.results,
    )


if __name__ == "__main__":
    main()
