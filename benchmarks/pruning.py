"""What pruning saves: the same study with automl's median pruner and without, at equal trials.

Two studies over the benchmark data and space (``harness.py``): the same seed, sampler (TPE),
folds and number of trials; one with automl's default pruner (median, 3 start-up trials, 3
warm-up steps), one with ``pruner: none``. Reported per study: trials complete/pruned, epochs
trained in total, wall time, best CV accuracy and the hold-out score of the top-5 majority-vote
ensemble (``automl ensemble``); and for the pruned study the epochs a pruned trial spent as a
share of a complete trial's (``n_folds x epochs``), median and maximum. Target: <= 30 %.

The two studies draw the same first parameters (same seed) and part ways once pruning changes
what TPE has seen, so the comparison is of the whole procedure, as a user would run it.

    python -m benchmarks.pruning [--quick] [--n-trials 14] [--work DIR]

``--work DIR`` keeps the studies (``DIR/studies``) to look at afterwards.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import harness

NAME = "pruning"
PRUNED = {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 3}
UNPRUNED = {"name": "none"}


def run_study(
    name: str, pruner: dict, work: Path, size: dict[str, int], n_trials: int, seed: int
) -> dict[str, object]:
    """Tune ``n_trials`` trials, build the top-5 ensemble; return the study's figures."""
    import optuna

    from automl.config.schema import config_from_dict
    from automl.ensemble.build import run_ensemble
    from automl.search.tune import run_tune

    train, test = work / "data" / "train", work / "data" / "test"
    config = config_from_dict(
        harness.study_config(
            name=name,
            studies_dir=work / "studies",
            train=train,
            test=test,
            size=size,
            space=harness.search_space(size["epochs"]),
            seed=seed,
            pruner=pruner,
            n_trials=n_trials,
        ),
        source=f"benchmarks/pruning.py:{name}",
    )
    started = time.perf_counter()
    result = run_tune(config, progress=False)
    wall = time.perf_counter() - started
    trials = result.study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    full_epochs = size["n_folds"] * size["epochs"]
    shares = [t.user_attrs["epochs_total"] / full_epochs for t in pruned]
    ensemble = run_ensemble(config, result.study, top_k=5)
    holdout = ensemble.holdout.ensemble
    return {
        "study": name,
        "pruner": pruner["name"],
        "trials": len(complete) + len(pruned),
        "complete": len(complete),
        "pruned": len(pruned),
        "epochs_total": sum(t.user_attrs.get("epochs_total", 0) for t in trials),
        "epochs_if_all_complete": full_epochs * (len(complete) + len(pruned)),
        "pruned_epoch_share_median": round(statistics.median(shares), 3) if shares else None,
        "pruned_epoch_share_max": round(max(shares), 3) if shares else None,
        "wall_seconds": round(wall, 1),
        "best_cv_accuracy": round(max(t.value for t in complete), 4) if complete else None,
        "ensemble_members": len(ensemble.members),
        "ensemble_holdout_accuracy": round(holdout.accuracy, 4),
        "ensemble_holdout_macro_f1": round(holdout.macro_f1, 4),
    }


def main() -> None:
    parser = harness.argument_parser(NAME, __doc__, quick="small data, 4 trials", seed=True)
    parser.add_argument("--n-trials", type=int, default=None, help="default 14 (quick: 4)")
    parser.add_argument("--work", type=Path, default=None, help="keep data and studies here")
    args = parser.parse_args()
    size = harness.sizes(args.quick)
    n_trials = args.n_trials or (4 if args.quick else 14)
    pruned = dict(PRUNED, n_startup_trials=2, n_warmup_steps=1) if args.quick else PRUNED
    with tempfile.TemporaryDirectory(prefix="automl_pruning_bench_") as tmp:
        work = args.work or Path(tmp)
        if args.work is not None and (work / "studies").exists():
            raise SystemExit(f"{work / 'studies'} exists; pass an empty --work folder")
        harness.wbc_subset(work / "data", size["per_class"], size["test_per_class"], args.seed)
        rows = []
        for name, pruner in (("pruned", pruned), ("unpruned", UNPRUNED)):
            row = run_study(name, pruner, work, size, n_trials, args.seed)
            print(json.dumps(row), flush=True)
            rows.append(row)
    with_pruner, without = rows
    share = with_pruner["pruned_epoch_share_median"]
    harness.save_results(
        NAME,
        title=f"Pruning: median pruner vs none, {n_trials} trials each",
        description=(
            f"bccd_wbc_aug subset: {size['per_class']} TRAIN images per class in "
            f"{size['n_folds']} grouped folds, {size['test_per_class']} TEST images per class "
            f"as the hold-out, {size['image_size']} px, {size['epochs']} epochs per fold; TPE, "
            f"seed {args.seed}. A complete trial trains {size['n_folds'] * size['epochs']} "
            "epochs. Pruned-trial epoch share target <= 0.30: "
            f"{'met' if share is not None and share <= 0.30 else 'not met'} (median {share}). "
            f"Epochs with the pruner / without: "
            f"{with_pruner['epochs_total'] / max(without['epochs_total'], 1):.2f}."
        ),
        rows=rows,
        columns=[
            "pruner",
            "trials",
            "complete",
            "pruned",
            "epochs_total",
            "pruned_epoch_share_median",
            "pruned_epoch_share_max",
            "wall_seconds",
            "best_cv_accuracy",
            "ensemble_holdout_accuracy",
            "ensemble_holdout_macro_f1",
        ],
        extra={
            "sizes": size,
            "target_pruned_epoch_share": 0.30,
            "epochs_ratio": round(
                with_pruner["epochs_total"] / max(without["epochs_total"], 1), 3
            ),
        },
        quick=args.quick,
        folder=args.results,
    )


if __name__ == "__main__":
    main()
