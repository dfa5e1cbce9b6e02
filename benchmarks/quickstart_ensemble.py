"""The quick start's ensemble against its own best trial, over study seeds and two recipes.

The README's quick start (``search_spaces/quickstart.yaml``: scikit-learn's digits, 16 px, 8
trials of 3 folds) ends with ``automl ensemble``, which prints the ensemble's hold-out score next
to its best single trial's. One run of it cannot say whether the ensemble helps: its hold-out
has 359 images, so one image is 0.28 points. This script runs the quick start as a user does
(``automl tune`` then ``automl ensemble``, each in its own process) for several study seeds
(each seed draws its own hold-out, folds and trials) and two recipes:

- ``constant``: the space as shipped (constant learning rate);
- ``cosine``: the same plus ``schedule: cosine`` with one warm-up epoch.

For each study it scores the greedy ensemble (majority and soft vote) and the best trial alone
(``--selection top_k --top 1``: the best CV trial's fold models voting the same way) on the
hold-out, image by image. Reported per recipe and vote: mean accuracies, in how many seeds the
ensemble is at least as good as the best trial, the images it gains or loses, and a 95% paired
bootstrap interval of the difference over all hold-out images of all seeds.

    python -m benchmarks.quickstart_ensemble [--quick] [--seeds 42 0 1 2 3]
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness

NAME = "quickstart_ensemble"
SPACE = harness.REPO / "search_spaces" / "quickstart.yaml"
RECIPES = {
    "constant": [],
    "cosine": ["--set", "space.schedule=cosine", "--set", "space.warmup_epochs=1"],
}
VOTES = ("majority", "soft")
RESAMPLES = 2000
QUICK_SETTINGS = ["--set", "study.n_trials=2", "--set", "space.epochs=2"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def holdout_predictions(study_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids, true labels and predicted labels of the ensemble ``automl ensemble`` just wrote."""
    import pandas as pd

    frame = pd.read_csv(study_dir / "ensemble" / "holdout_predictions.csv", dtype=str)
    return (
        frame["id"].tolist(),
        frame["true_label"].to_numpy(),
        frame["label"].to_numpy(),
    )


def run_study(recipe: str, seed: int, work: Path, quick: bool) -> dict[str, Any]:
    """Tune one quick start, then score greedy and best-trial votes on its hold-out."""
    studies = work / f"{recipe}_seed{seed}"
    shutil.rmtree(studies, ignore_errors=True)
    settings = [
        "--set",
        f"study.seed={seed}",
        *RECIPES[recipe],
        *(QUICK_SETTINGS if quick else []),
    ]
    tune_seconds = harness.run_automl_cli(
        ["tune", "--space", str(SPACE), "--studies-dir", str(studies), *settings],
        f"{recipe} seed {seed}",
    )
    record: dict[str, Any] = {"recipe": recipe, "seed": seed, "tune_seconds": round(tune_seconds)}
    for vote in VOTES:
        for kind, selection in (("ensemble", ["--selection", "greedy"]), ("best", ["--top", "1"])):
            harness.run_automl_cli(
                ["ensemble", "--study", "quickstart", "--studies-dir", str(studies)]
                + ["--vote", vote, "--no-progress", *selection],
                f"{recipe} seed {seed} {vote} {kind}",
            )
            ids, truth, predicted = holdout_predictions(studies / "quickstart")
            manifest = json.loads((studies / "quickstart/ensemble/ensemble.json").read_text())
            record[f"{vote}_{kind}"] = {
                "correct": (truth == predicted).astype(int).tolist(),
                "members": [[m["trial"], m["weight"]] for m in manifest["members"]],
            }
            record.setdefault("ids", ids)
            if record["ids"] != ids:
                raise SystemExit(f"{studies}: the hold-out changed between ensembles")
    shutil.rmtree(studies / "quickstart" / "trials", ignore_errors=True)  # models: ~MBs each
    return record


def summarise(records: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Per-study rows, and per recipe and vote the verdict over every seed."""
    rows, summary = [], []
    rng = np.random.default_rng(0)
    for recipe in RECIPES:
        mine = [r for r in records if r["recipe"] == recipe]
        if not mine:
            continue
        for vote in VOTES:
            ensemble = [np.array(r[f"{vote}_ensemble"]["correct"]) for r in mine]
            best = [np.array(r[f"{vote}_best"]["correct"]) for r in mine]
            for r, e, b in zip(mine, ensemble, best, strict=True):
                rows.append(
                    {
                        "recipe": recipe,
                        "vote": vote,
                        "seed": r["seed"],
                        "members (trial x weight)": " ".join(
                            f"#{t}x{w}" for t, w in r[f"{vote}_ensemble"]["members"]
                        ),
                        "ensemble": round(float(e.mean()), 4),
                        "best trial": round(float(b.mean()), 4),
                        "images gained": int(e.sum() - b.sum()),
                        "tune s": r["tune_seconds"],
                    }
                )
            difference = np.concatenate(ensemble) - np.concatenate(best)
            index = rng.integers(0, len(difference), size=(RESAMPLES, len(difference)))
            low, high = np.percentile(difference[index].mean(axis=1), [2.5, 97.5])
            gained = [int(e.sum() - b.sum()) for e, b in zip(ensemble, best, strict=True)]
            verdict = "inside the noise"
            if low > 0:
                verdict = "ensemble ahead"
            elif high < 0:
                verdict = "ensemble behind"
            summary.append(
                {
                    "recipe": recipe,
                    "vote": vote,
                    "seeds": len(mine),
                    "ensemble (mean)": round(
                        statistics.mean(float(e.mean()) for e in ensemble), 4
                    ),
                    "best trial (mean)": round(statistics.mean(float(b.mean()) for b in best), 4),
                    "seeds ensemble >= best": f"{sum(g >= 0 for g in gained)}/{len(mine)}",
                    "images gained per seed": " ".join(f"{g:+d}" for g in gained),
                    "difference, 95% paired CI": f"[{low:+.4f}, {high:+.4f}]",
                    "verdict": verdict,
                    "tune s (median)": statistics.median(r["tune_seconds"] for r in mine),
                }
            )
    return rows, summary


def main() -> None:
    parser = harness.argument_parser(
        NAME,
        __doc__ or "",
        quick="2 trials of 2 epochs, seed 0 only",
        seeds="study seeds (default 42 0 1 2 3; 42 is the shipped one)",
    )
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    args = parser.parse_args()
    seeds = args.seeds or ([0] if args.quick else [42, 0, 1, 2, 3])
    work = harness.REPO / "benchmarks" / "work" / (NAME + ("-quick" if args.quick else ""))
    records = []
    for seed in seeds:
        for recipe in args.recipes:
            log(f"== {recipe}, seed {seed}")
            records.append(run_study(recipe, seed, work, args.quick))
            last = records[-1]
            log(
                "   "
                + ", ".join(
                    f"{vote}: ensemble {np.mean(last[f'{vote}_ensemble']['correct']):.4f} "
                    f"best {np.mean(last[f'{vote}_best']['correct']):.4f}"
                    for vote in VOTES
                )
            )
    rows, summary = summarise(records)
    harness.save_results(
        NAME,
        title="Quick start: greedy ensemble vs its best trial on the hold-out",
        description=(
            f"`automl tune --space search_spaces/quickstart.yaml` then `automl ensemble` per "
            f"study seed ({', '.join(map(str, seeds))}); hold-out of 359 digits per seed, drawn "
            f"from the seed. Difference = ensemble minus best trial accuracy, paired bootstrap "
            f"over all hold-out images of all seeds ({RESAMPLES} resamples).\n\n"
            + harness.markdown_table(rows, list(rows[0]))
        ),
        rows=summary,
        columns=list(summary[0]),
        extra={"studies": rows},
        quick=args.quick,
        folder=args.results,
    )


if __name__ == "__main__":
    main()
