"""Model quality on a fixed grouped hold-out: automl as shipped vs the floor, seeds, KerasTuner.

Question (issue 19). On ``chula_rbc12`` (72x72 red-cell crops, 12 classes, imbalanced 32:1), with
the same wall clock, does automl's shipped workflow for small cells (``--space``, by default
``search_spaces/cells_small.yaml``: search, then its greedy ensemble) give a better classifier
than the hand-written CNN, than that CNN trained with as many seeds as fit and voting, and than
KerasTuner Hyperband over the same space? And which single changes help the hand-written CNN
(the ablation)? The answer of each comparison is one word: ahead, behind or inconclusive, by the
rule below, which was written before any run.

**Data** (``quality/data.py``), the same for every arm, seed and run: a fixed grouped hold-out
(one fold of ``StratifiedGroupKFold(5, shuffle=True, random_state=0)`` over the manifest's
``field_group``, about a fifth of the 553 groups), passed to automl as ``data.test``; a tuning
pool of ``--pool-fraction`` (0.35) of the other groups, grouped and stratified, which automl
cuts into 3 grouped folds from the study seed; ``--image-size`` 32 px.

**Arms** (``quality/arms.py``), each in fresh processes, in an order rotated per seed, each
searching for ``--budget-minutes`` of wall clock (fold-epochs are reported too):

1. ``floor``: the hand-written CNN (``harness.hand_tuned_space``: 3 conv blocks, Adam 1e-3),
   24 epochs per fold, one automl trial over the 3 folds, its fold models voting (soft);
2. ``floor_seeds``: as many floor trials (each its own trial seed) as the budget holds, all
   their fold models voting (soft): what equal compute gives a user without a tuner;
3. ``automl``: the YAML as shipped, with the benchmark's ``data`` section, study name, seed,
   ``n_trials: null`` and ``timeout`` = the budget, run by ``automl.search.tune.run_tune``
   (which sets up the device: op determinism on CPU), then ``run_ensemble``;
4. ``kerastuner``: Hyperband over the YAML's ``space`` through ``search_efficiency``'s adapter
   and k-fold trial, on automl's folds; its best trial's fold models vote on the hold-out like
   automl's best trial (nothing retrained). A secondary row retrains it on the whole pool
   (``harness.fit_on_all``, capped at the budget), labelled secondary.

A search is ended by a hard deadline at the budget (``harness.deadline``: neither Optuna's
timeout nor KerasTuner stops a running trial); only trials completed by then count, and the
trial cut short is counted in the fold-epochs. The floor alone runs its one trial to the end and
the table says when that is after the budget.

**Time to quality.** Each completed trial's hold-out probabilities are computed once from its
fold models; at every trial completion the arm's incumbent is voted again: automl's greedy
ensemble of the trials completed so far (``greedy_selection`` on their out-of-fold files, the
YAML's vote) and its best trial alone; the floor's seeds voting; KerasTuner's best trial by CV.
The table reads the incumbent at 25%, 50% and 100% of the budget; the picture
(``results/model_quality.png``) shows every completion.

**Ablation** (``quality/ablation.py``, ``--part ablation``, independent of the arms): the floor
with one change at a time (``cosine``: cosine schedule, 1 warm-up epoch; ``ema``: momentum
0.99; ``mix``: MixUp 0.2 + CutMix 1.0 on half the batches; ``resnet``: ``custom_resnet``
3 stages of 2 blocks, width 16, stem stride 1; ``balanced``: class weights from the pool's
counts; ``smoothing``: label smoothing 0.1; ``all``: every change), trained once on the whole
ablation pool (``--ablation-fraction`` of the tuning pool), at 8 and at 24 epochs, 2 seeds,
each run a fresh process with op determinism; compared with the floor at the same seed and
epochs.

**Statistics and the decision rule** (``quality/stats.py`` is this in code):

- every row: balanced accuracy (primary), macro-F1 and accuracy on the hold-out, the classes
  its predictions use, and a 95% interval of balanced accuracy;
- intervals resample the hold-out's **field groups** with replacement (crops of one field are
  correlated; resampling crops would make the intervals too narrow), 2,000 resamples,
  percentile intervals; a difference A minus B is paired (the same resamples for both);
- over seeds, a two-level bootstrap: each resample draws the seeds with replacement and one
  resample of the groups, shared by the drawn seeds (every seed is scored on the same hold-out,
  so its sampling error is common to them), and averages the drawn seeds' differences;
- with D the mean over seeds of d_s = BA(A) - BA(B) in seed s, A is **ahead** of B only when
  D >= 0.02, the 95% interval of D lies above 0, no seed has d_s < -0.02 (a seed clearly
  behind) and A's vote is not degenerate in any seed; **behind** is the mirror image (D <=
  -0.02, interval below 0, no seed with d_s > +0.02, B not degenerate); anything else is
  **inconclusive**, and the table says which condition failed;
- a vote that predicts 2 classes or fewer of the 12 is **degenerate**: it is flagged in its row
  and cannot be ahead;
- the floor must learn: in every seed the lower end of its balanced-accuracy interval must be
  above 2/12 (twice chance); otherwise every comparison with it is **void**, said in the
  results (the ablation checks its floor at each epoch count);
- decisions printed: automl vs floor, vs floor_seeds and vs kerastuner, at the full budget and
  at half of it; the greedy ensemble vs its best trial at every replay point of every seed
  (never below?) and paired at the full budget; each ablation factor vs the floor.

**Bookkeeping.** Runs accumulate in ``--work`` (``benchmarks/work/model_quality``:
``arms.json``, ``ablation.json``, the studies and the image cache), so ``--seeds``, ``--arms``
and ``--part`` rerun subsets, and ``--rescore`` scores kept studies again; a run made with other
settings (image size, budget, pools, the YAML's content) is set aside. Results:
``results/model_quality.{json,md,png}`` (arms) and ``results/model_quality_ablation.{json,md}``,
each with the commit. The plan (arms x seeds x budget, ablation runs x estimated time) is
printed at the start. ``--quick`` is a plumbing check (tiny pool and hold-out, 2-3 epochs, a
1-minute budget, seed 0) that writes ``-quick`` files.

    python -m benchmarks.model_quality                          # arms + ablation, seeds 0 1
    python -m benchmarks.model_quality --part ablation --seeds 0 1
    python -m benchmarks.model_quality --part arms --seeds 0 1 [--arms automl kerastuner]
    python -m benchmarks.model_quality --part arms --rescore    # score the kept studies again
    python -m benchmarks.model_quality --quick [--part arms|ablation]

On a GPU machine, the same question at a size that can separate the arms (5 seeds, every crop
outside the hold-out, 64 px, longer budgets)::

    python -m benchmarks.model_quality --seeds 0 1 2 3 4 --pool-fraction 1 \\
        --ablation-fraction 1 --image-size 64 --budget-minutes 30
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.quality import ablation, arms, data, report

NAME = "model_quality"
ABLATION_NAME = "model_quality_ablation"
SPACE = harness.REPO / "search_spaces" / "cells_small.yaml"
FULL: dict[str, Any] = {
    "pool_fraction": 0.35,
    "ablation_fraction": 0.25,
    "image_size": 32,
    "budget_minutes": 5.0,
    "floor_epochs": 24,
    "ablation_epochs": ablation.EPOCHS,
    "seeds": [0, 1],
    "overrides": [],
}
QUICK: dict[str, Any] = {
    "pool_fraction": 0.05,
    "ablation_fraction": 1.0,
    "image_size": 32,
    "budget_minutes": 1.0,
    "floor_epochs": 2,
    "ablation_epochs": ablation.QUICK_EPOCHS,
    "seeds": [0],
    "overrides": ["space.epochs=3"],  # the YAML's pruner needs a rung inside fold 0
}
SCORE_SECONDS = 60.0  # per arm and seed, for the plan: a fresh process predicting the hold-out


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The children
# --------------------------------------------------------------------------------------------


def quiet_child() -> None:
    """One line per trial from automl on stderr, little else (before TensorFlow starts)."""
    from automl.console import filter_stderr

    filter_stderr()  # TensorFlow's C++ start-up lines stay out of the progress
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The data checks' notes would repeat in every child; `automl audit` shows them once.
    logging.getLogger("automl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    trials = logging.getLogger("automl.search.session")  # log_trial: one line per trial
    trials.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("    %(message)s"))
    trials.addHandler(handler)


def run_one(spec: dict[str, Any]) -> None:
    """Child process: one step of one arm, one ablation run, or the data preparation."""
    quiet_child()
    step, arm, seed = spec["step"], spec.get("arm"), spec.get("seed", 0)
    if step == "prepare":
        result = arms.prepare(spec)
    elif step == "ablation":
        result = ablation.run(spec)
    elif step == "tune" and arm == "kerastuner":
        result = arms.tune_kerastuner(seed, spec)
    elif step == "tune":
        result = arms.tune_optuna(arm, seed, spec)
    elif step == "score" and arm == "kerastuner":
        result = arms.score_kerastuner(seed, spec, spec["tuned"])
    elif step == "score":
        result = arms.score_optuna(arm, seed, spec, spec["tuned"])
    else:
        result = arms.retrain_kerastuner(seed, spec, spec["params"])
    harness.child_result(result)


# --------------------------------------------------------------------------------------------
# The parent: runs kept in the work folder
# --------------------------------------------------------------------------------------------


class Store:
    """A part's runs in ``<work>/<part>.json``: the hold-out once, then one record per key.

    Read again before every write, so a second process running the other part (its own file)
    or an interrupted run loses nothing kept.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        if self.path.is_file():
            return json.loads(self.path.read_text(encoding="utf-8"))
        return {"holdout": None, "runs": {}}

    def put(self, key: str, record: dict[str, Any], holdout: dict[str, Any]) -> None:
        """Keep ``record`` (its hold-out labels replaced by the hold-out's fingerprint)."""
        kept = self.load()
        if kept["holdout"] is not None and kept["holdout"]["sha"] != holdout["sha"]:
            kept = {"holdout": None, "runs": {}}  # another hold-out: the old runs are void
        kept["holdout"] = holdout
        kept["runs"][key] = record
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(kept) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)


def child(spec: dict[str, Any], label: str, holdout: dict[str, Any] | None) -> dict[str, Any]:
    """Run one step in a fresh process; check it saw the hold-out ``holdout`` describes."""
    answer = harness.run_child(NAME, spec, label, stream_stderr=True)
    seen = answer.pop("holdout", None)
    if holdout is not None and seen is not None and seen["sha"] != holdout["sha"]:
        raise SystemExit(f"{label}: the child read another hold-out than the prepared one")
    return answer


def prepare(base: dict[str, Any]) -> dict[str, Any]:
    """Decode the crops into automl's cache once; the hold-out's labels and groups."""
    log(f"== preparing the data (decoding the crops once): started {time.strftime('%X')}")
    answer = harness.run_child(NAME, {**base, "step": "prepare"}, "prepare", stream_stderr=True)
    log(f"== data ready in {answer['seconds']} s")
    return answer["holdout"]


def arm_settings(arm: str, base: dict[str, Any]) -> dict[str, Any]:
    """What an arm's figures depend on; a kept run with other settings is set aside."""
    settings = {k: base[k] for k in ("image_size", "budget", "floor_epochs", "overrides")}
    settings["sizes"] = {k: base["sizes"][k] for k in ("holdout", "pool")}
    if arm in ("automl", "kerastuner"):
        settings["space_sha"] = hashlib.sha256(Path(base["space"]).read_bytes()).hexdigest()[:16]
    return settings


def ablation_settings(base: dict[str, Any]) -> dict[str, Any]:
    """What an ablation run's figures depend on besides its own factor, epochs and seed."""
    sizes = {k: base["sizes"][k] for k in ("holdout", "ablation_pool")}
    return {"image_size": base["image_size"], "sizes": sizes}


def run_arms(base: dict[str, Any], wanted: list[str], seeds: list[int], rescore: bool) -> None:
    """Each (seed, arm), in an order rotated per seed, through ``run_arm``."""
    holdout = prepare(base)
    store = Store(Path(base["work"]) / "arms.json")
    for index, seed in enumerate(seeds):
        shift = index % len(wanted)
        for arm in wanted[shift:] + wanted[:shift]:
            run_arm(base, arm, seed, store, holdout, rescore)


def run_arm(
    base: dict[str, Any],
    arm: str,
    seed: int,
    store: Store,
    holdout: dict[str, Any],
    rescore: bool,
) -> None:
    """Tune (unless rescoring a kept run), score, and for KerasTuner retrain; keep the run."""
    key, settings = f"{arm}:{seed}", arm_settings(arm, base)
    kept = store.load()["runs"].get(key)
    common = {**base, "arm": arm, "seed": seed}
    if rescore and kept is not None and kept["settings"] == settings:
        tuned = kept["tune"]
    else:
        log(f"== {arm} seed {seed}: tuning {base['budget']:.0f} s, {time.strftime('%X')}")
        tuned = child({**common, "step": "tune"}, f"{arm} seed {seed} tune", None)
    log(f"== {arm} seed {seed}: {tuned['stopped']} after {tuned['seconds']} s; scoring")
    scored = child({**common, "step": "score", "tuned": tuned}, f"{arm} score", holdout)
    record = {"settings": settings, "tune": tuned, "score": scored}
    if arm == "kerastuner" and scored.get("best_params") and base["retrain"]:
        log(f"== kerastuner seed {seed}: its best retrained on the whole pool (secondary)")
        spec = {**common, "step": "retrain", "params": scored["best_params"]}
        record["retrain"] = child(spec, "kerastuner retrain", holdout)
    store.put(key, record, holdout)


def run_ablation(base: dict[str, Any], seeds: list[int]) -> None:
    """Every (epochs, seed, factor) run not kept with the same settings, shortest first."""
    holdout = prepare(base)
    store = Store(Path(base["work"]) / "ablation.json")
    settings = ablation_settings(base)
    for epochs in base["ablation_epochs"]:
        for seed in seeds:
            for factor in ablation.FACTORS:
                key = f"{factor}:{epochs}:{seed}"
                kept = store.load()["runs"].get(key)
                if kept is not None and kept["settings"] == settings:
                    continue
                log(f"== ablation {factor}, {epochs} epochs, seed {seed}: {time.strftime('%X')}")
                spec = {
                    **base,
                    "step": "ablation",
                    "factor": factor,
                    "epochs": epochs,
                    "seed": seed,
                }
                answer = child(spec, f"ablation {key}", holdout)
                log(f"   balanced accuracy {answer['balanced_accuracy']} in {answer['seconds']} s")
                store.put(key, {"settings": settings, **answer}, holdout)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def save_arms(base: dict[str, Any], quick: bool, folder: Path) -> None:
    """Score every kept arm run with the current settings; write the results files and plot."""
    kept = Store(Path(base["work"]) / "arms.json").load()
    runs = {}
    for key, record in kept["runs"].items():
        arm, seed = key.split(":")
        if record["settings"] == arm_settings(arm, base):
            runs[arm, int(seed)] = record
    if not runs:
        log("no arm runs with these settings to report")
        return
    holdout = report.holdout_of(kept["holdout"])
    summary = report.arms_summary(runs, holdout, base["budget"])
    picture = harness.output_path(folder, NAME, quick, ".png")
    report.plot(runs, base["budget"], picture, 1 / holdout.n_classes)
    harness.save_results(
        NAME,
        title="Model quality on the chula_rbc12 hold-out: automl vs floor, its seeds, KerasTuner",
        description=_describe(base, runs)
        + _tables_text(summary["tables"])
        + f"\n\nPicture: `{picture.name}`.",
        rows=summary["rows"],
        columns=report.ARM_COLUMNS,
        extra={
            "settings": {k: v for k, v in base.items() if k != "files"},
            **summary["extra"],
            "runs": {f"{a}:{s}": _brief(r) for (a, s), r in runs.items()},
        },
        quick=quick,
        folder=folder,
    )


def save_ablation(base: dict[str, Any], quick: bool, folder: Path) -> None:
    """Score every kept ablation run; write ``model_quality_ablation.{json,md}``."""
    kept = Store(Path(base["work"]) / "ablation.json").load()
    settings = ablation_settings(base)
    runs = {}
    for key, record in kept["runs"].items():
        factor, epochs, seed = key.split(":")
        if record["settings"] == settings and int(epochs) in base["ablation_epochs"]:
            runs[factor, int(epochs), int(seed)] = record
    if not runs:
        log("no ablation runs with these settings to report")
        return
    holdout = report.holdout_of(kept["holdout"])
    rows = report.ablation_rows(runs, holdout)
    decided = report.ablation_decisions(runs, holdout)
    harness.save_results(
        ABLATION_NAME,
        title="Ablation around the floor on the chula_rbc12 hold-out: one factor at a time",
        description=_describe_ablation(base)
        + _tables_text({"Decisions": (decided, report.ABLATION_DECISION_COLUMNS)}),
        rows=rows,
        columns=report.ABLATION_COLUMNS,
        extra={"settings": {k: v for k, v in base.items() if k != "files"}, "decisions": decided},
        quick=quick,
        folder=folder,
        module=NAME,
    )


def _describe(base: dict[str, Any], runs: dict) -> str:
    sizes = base["sizes"]
    seeds = sorted({s for _, s in runs})
    return (
        f"chula_rbc12 at {base['image_size']} px. Fixed grouped hold-out: "
        f"{sizes['holdout']['crops']} crops in {sizes['holdout']['groups']} field groups "
        f"(`data.test`); tuning pool {sizes['pool']['crops']} crops in "
        f"{sizes['pool']['groups']} groups, 3 grouped folds from the study seed. Seeds "
        f"{seeds}; every arm {base['budget'] / 60:.1f} minutes of wall clock, ended at the "
        f"deadline (the floor runs its one trial of {base['floor_epochs']} epochs per fold to "
        f"the end). automl: `{Path(base['space']).name}` as shipped. Intervals: field-group "
        "bootstrap of the hold-out; decisions by the rule in the script's docstring."
    )


def _describe_ablation(base: dict[str, Any]) -> str:
    pool, holdout = base["sizes"]["ablation_pool"], base["sizes"]["holdout"]
    return (
        "Each factor changed alone in the hand-written CNN (`--part ablation` of "
        "`benchmarks/model_quality.py`), trained once on the ablation pool "
        f"({pool['crops']} crops in {pool['groups']} field groups) at {base['image_size']} px, "
        f"scored on the fixed hold-out ({holdout['crops']} crops, {holdout['groups']} groups); "
        "paired with the floor at the same seed and epochs. Rule and intervals: the script's "
        "docstring (field-group bootstrap, two-level over seeds, margin 0.02)."
    )


def _tables_text(tables: dict[str, tuple[list[dict], list[str]]]) -> str:
    parts = []
    for title, (rows, columns) in tables.items():
        if rows:
            parts.append(f"\n\n{title}:\n\n" + harness.markdown_table(rows, columns))
    return "".join(parts)


def _brief(record: dict[str, Any]) -> dict[str, Any]:
    """A kept run without its label lists (those stay in the work folder)."""
    points = [
        {k: v for k, v in p.items() if k not in ("ensemble", "best")}
        for p in record["score"]["points"]
    ]
    tune = {k: v for k, v in record["tune"].items() if k != "events"}
    out = {"tune": tune, "events": record["score"]["events"], "points": points}
    if "shipped" in record["score"]:
        out["shipped"] = record["score"]["shipped"]
    if "retrain" in record:
        out["retrain"] = {k: v for k, v in record["retrain"].items() if k != "predicted"}
    return out


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def print_plan(base: dict[str, Any], wanted: list[str], seeds: list[int], part: str) -> None:
    """What the run will do and about how long it takes here (costs measured on 2 cores with
    the CPUs shared: an idle machine is faster)."""
    sizes = base["sizes"]
    log(
        f"data: hold-out {sizes['holdout']['crops']} crops / {sizes['holdout']['groups']} "
        f"groups; pool {sizes['pool']['crops']} / {sizes['pool']['groups']}; ablation pool "
        f"{sizes['ablation_pool']['crops']} / {sizes['ablation_pool']['groups']}; "
        f"{base['image_size']} px"
    )
    total = 0.0
    if part in ("arms", "all"):
        total += _plan_arms(base, wanted, seeds)
    if part in ("ablation", "all"):
        crops = sizes["ablation_pool"]["crops"]
        plan = ablation.plan(crops, base["ablation_epochs"], seeds, base["image_size"])
        total += plan["seconds"] / 60
        log(
            f"plan, ablation: {plan['runs']} runs ({len(ablation.FACTORS)} factors x epochs "
            f"{base['ablation_epochs']} x seeds {seeds}) on {crops} crops, "
            f"~{plan['seconds'] / 60:.0f} min"
        )
    log(f"plan, in all: ~{total:.0f} min (ablation runs kept with these settings are skipped)")


def _plan_arms(base: dict[str, Any], wanted: list[str], seeds: list[int]) -> float:
    """Log the arms' plan and what the budget buys; return its minutes."""
    minutes = base["budget"] / 60
    searching = len(wanted) * len(seeds) * minutes
    scoring = len(wanted) * len(seeds) * SCORE_SECONDS / 60
    retrain = ("kerastuner" in wanted and base["retrain"]) * len(seeds) * minutes
    log(
        f"plan, arms: {', '.join(wanted)} x seeds {seeds} x {minutes:.1f} min = "
        f"{searching:.0f} min searching, ~{scoring:.0f} min scoring, up to {retrain:.0f} min "
        "retraining KerasTuner's best (secondary)"
    )
    pool, size = base["sizes"]["pool"]["crops"], base["image_size"]
    # A trial trains every fold on 2/3 of the pool and predicts the other third every epoch.
    crop_epochs = arms.N_FOLDS * pool * (2 / 3 + 1 / 12)
    floor = ablation.train_seconds(crop_epochs * base["floor_epochs"], "cnn", size) / 60
    log(f"  the floor's one trial: ~{floor:.0f} min here")
    if floor > minutes:
        log("  WARNING: longer than the budget: floor_seeds may complete no trial at all")
    resnet = ablation.train_seconds(crop_epochs * 18, "resnet", size) / 60
    log(
        f"  an 18-epoch custom_resnet (width 16) trial of 3 folds: ~{resnet:.0f} min; a trial "
        "still running at the deadline counts for nothing"
    )
    return searching + scoring + retrain


def parse_arguments() -> argparse.Namespace:
    parser = harness.argument_parser(
        NAME, __doc__, quick="tiny pool and hold-out, 2-3 epochs, 1-minute budget, seed 0",
        seeds="default 0 1 (quick: 0)", child=True,
    )  # fmt: skip
    add = parser.add_argument
    add("--part", choices=("arms", "ablation", "all"), default="all")
    add("--arms", nargs="+", choices=arms.ARMS, default=list(arms.ARMS))
    add("--budget-minutes", type=float, default=None, help="per arm (default 5)")
    add("--image-size", type=int, default=None, help="default 32")
    add("--pool-fraction", type=float, default=None, help="default 0.35")
    add("--ablation-fraction", type=float, default=None, help="of the pool; default 0.25")
    add("--space", type=Path, default=SPACE, help="automl's YAML (default cells_small)")
    add("--rescore", action="store_true", help="arms: score the kept studies again")
    add(
        "--no-retrain",
        dest="retrain",
        action="store_false",
        help="arms: skip the secondary row (KerasTuner's best retrained on the whole pool)",
    )
    add("--work", type=Path, default=None, help="default benchmarks/work/<name>")
    return parser.parse_args()


def settings_of(args: argparse.Namespace) -> tuple[dict[str, Any], list[int]]:
    """The settings every child gets (the data files written first), and the seeds."""
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("budget_minutes", "image_size", "pool_fraction", "ablation_fraction"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    work = (args.work or harness.WORK / f"{NAME}{'-quick' if args.quick else ''}").resolve()
    files = data.write_data(work, sizes["pool_fraction"], sizes["ablation_fraction"], args.quick)
    base = {
        "work": str(work),
        "files": {k: str(v) for k, v in files.__dict__.items()},
        "sizes": data.describe(files),
        "image_size": sizes["image_size"],
        "budget": sizes["budget_minutes"] * 60,
        "floor_epochs": sizes["floor_epochs"],
        "ablation_epochs": list(sizes["ablation_epochs"]),
        "space": str(args.space.resolve()),
        "overrides": sizes["overrides"],
        "retrain": args.retrain,
    }
    return base, args.seeds or sizes["seeds"]


def main() -> None:
    args = parse_arguments()
    if args.run_one:
        run_one(json.loads(args.run_one))
        return
    searched = {"automl", "kerastuner"} & set(args.arms)
    if args.part != "ablation" and searched and not args.space.is_file():
        raise SystemExit(
            f"--space {args.space}: no such file (the arms {sorted(searched)} need it)"
        )
    base, seeds = settings_of(args)
    print_plan(base, args.arms, seeds, args.part)
    if args.part in ("ablation", "all"):
        run_ablation(base, seeds)
        save_ablation(base, args.quick, args.results)
    if args.part in ("arms", "all"):
        run_arms(base, args.arms, seeds, args.rescore)
        save_arms(base, args.quick, args.results)


if __name__ == "__main__":
    main()
