"""The tables, decisions and picture of ``benchmarks.model_quality``, from the runs kept.

An arm's run (``arms.py``) is ``{"settings", "tune", "score"[, "retrain"]}``; its score holds
the replay points (``t``, ``trials``, ``members``, ``best_trial``, both scores, and at the
marks the labels). An ablation run (``ablation.py``) holds its hold-out labels. Every figure is
recomputed here from labels, with ``stats``: nothing is read back from automl's own reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality import stats
from benchmarks.quality.ablation import FACTORS
from benchmarks.quality.arms import ARMS, MARKS

LABELS = {
    "floor": "floor: hand-written CNN, one trial",
    "floor_seeds": "floor_seeds: floor trials of other seeds, voting",
    "automl": "automl: search_spaces YAML as shipped, greedy ensemble",
    "kerastuner": "kerastuner: Hyperband, best trial's fold models",
}
SECONDARY = {
    "automl_best": "(secondary) automl: its best trial alone",
    "kerastuner_retrained": "(secondary) kerastuner: best trial retrained on the whole pool",
}
Runs = Mapping[tuple[str, int], dict[str, Any]]
ARM_COLUMNS = [
    "arm", "seed", "balanced_accuracy", "ba_95ci", "macro_f1", "accuracy", "classes", "flag",
    "trials", "fold_epochs", "tune_s", "stopped",
]  # fmt: skip
DECISION_COLUMNS = [
    "decision",
    "at",
    "verdict",
    "mean_difference",
    "interval",
    "per_seed",
    "reason",
]
GREEDY_COLUMNS = [
    "seed", "replay_points", "points_below_best_trial", "never_below", "smallest_difference", "at",
]  # fmt: skip
ABLATION_COLUMNS = [
    "factor", "epochs", "seed", "balanced_accuracy", "ba_95ci", "macro_f1", "accuracy", "classes",
    "flag", "seconds",
]  # fmt: skip
ABLATION_DECISION_COLUMNS = [
    "decision", "epochs", "verdict", "mean_difference", "interval", "per_seed", "reason",
]  # fmt: skip


def holdout_of(record: Mapping[str, Any]) -> stats.Holdout:
    """The ``stats.Holdout`` of a child's ``holdout`` record."""
    return stats.Holdout.from_lists(record["labels"], record["groups"], len(record["class_names"]))


def mark(run: Mapping[str, Any], share: float, budget: float) -> dict[str, Any] | None:
    """The replay point a mark reads: the last completed by ``share`` of the budget (the full
    mark: the last of all); None when no trial had completed by then."""
    points = run["score"]["points"]
    if share < 1.0:
        points = [p for p in points if p["t"] <= share * budget]
    return points[-1] if points else None


def fold_epochs(run: Mapping[str, Any], share: float, budget: float) -> int:
    """Fold-epochs trained by ``share`` of the budget (full: the trial cut at the deadline
    too, as far as it got)."""
    events = run["score"]["events"]
    total = sum(
        e["fold_epochs"]
        for e in events
        if share == 1.0 or (e["t"] is not None and e["t"] <= share * budget)
    )
    return total + (run["tune"].get("fold_epochs_cut", 0) if share == 1.0 else 0)


def labels_at(run: Mapping[str, Any], share: float, budget: float, key: str = "ensemble"):
    """The incumbent's hold-out labels at a mark (``key="best"``: the best trial alone)."""
    point = mark(run, share, budget)
    return None if point is None else np.asarray(point[key])


# --- arms ----------------------------------------------------------------------------------------


def score_row(label: str, seed: Any, holdout: stats.Holdout, predicted: Any) -> dict[str, Any]:
    """The three metrics, the interval of the primary one, the classes used and the flag."""
    row: dict[str, Any] = {"arm": label, "seed": seed}
    if predicted is None:
        return {**row, "flag": "no result"}
    predicted = np.asarray(predicted)
    weights = stats.group_weights(holdout.n_groups, stats.RESAMPLES, np.random.default_rng(0))
    low, high = stats.interval(stats.resampled(holdout, predicted, weights))
    used = stats.classes_used(predicted)
    return {
        **row,
        **stats.point_scores(holdout, predicted),
        "ba_95ci": f"{low:.3f}-{high:.3f}",
        "classes": f"{used}/{holdout.n_classes}",
        "flag": "degenerate" if stats.degenerate(predicted) else "ok",
    }


def arms_summary(runs: Runs, holdout: stats.Holdout, budget: float) -> dict[str, Any]:
    """Every table of the arms: ``rows`` (the main one), ``tables`` (title -> rows, columns)
    and ``extra`` (the same for the JSON file)."""
    decided = decisions(runs, holdout, budget)
    greedy, greedy_decision = greedy_rows(runs, holdout, budget)
    decided.append(greedy_decision)
    times, means = time_rows(runs, holdout, budget), mean_rows(runs, holdout, budget)
    time_columns = ["arm", "seed", *(f"at {share:.0%}" for share in MARKS)]
    return {
        "rows": arm_rows(runs, holdout, budget),
        "tables": {
            "Decisions (the rule is in the script's docstring)": (decided, DECISION_COLUMNS),
            "Greedy ensemble vs its best trial at every replay point": (greedy, GREEDY_COLUMNS),
            "Time to quality: the incumbent's hold-out balanced accuracy (fold-epochs so far)": (
                times,
                time_columns,
            ),
            "Mean over seeds (two-level interval)": (
                means,
                ["arm", "seeds", "balanced_accuracy", "ba_95ci"],
            ),
        },
        "extra": {
            "decisions": decided,
            "greedy_vs_best_trial": greedy,
            "time_to_quality": times,
            "means": means,
        },
    }


def arm_rows(runs: Runs, holdout: stats.Holdout, budget: float) -> list[dict[str, Any]]:
    """One row per arm and seed at the full budget, then the secondary rows."""
    rows = []
    for (arm, seed), run in sorted(
        runs.items(), key=lambda item: (ARMS.index(item[0][0]), item[0][1])
    ):
        row = score_row(LABELS[arm], seed, holdout, labels_at(run, 1.0, budget))
        rows.append({**row, **_effort(run, budget)})
    for (arm, seed), run in sorted(runs.items()):
        if arm == "automl":
            best = labels_at(run, 1.0, budget, "best")
            rows.append(score_row(SECONDARY["automl_best"], seed, holdout, best))
        if arm == "kerastuner" and "retrain" in run:
            retrained = run["retrain"].get("predicted")
            row = score_row(SECONDARY["kerastuner_retrained"], seed, holdout, retrained)
            rows.append(
                {**row, "tune_s": run["retrain"]["seconds"], "stopped": run["retrain"]["stopped"]}
            )
    return rows


def _effort(run: Mapping[str, Any], budget: float) -> dict[str, Any]:
    """Trials by state, fold-epochs, wall seconds and how the search ended."""
    states = [e["state"] for e in run["score"]["events"]]
    last = mark(run, 1.0, budget)
    late = last is not None and last["t"] > budget
    return {
        "trials": f"{states.count('complete')}c/{states.count('pruned')}p/{states.count('fail')}f",
        "fold_epochs": fold_epochs(run, 1.0, budget),
        "tune_s": run["tune"]["seconds"],
        "stopped": run["tune"]["stopped"] + (" (after the budget)" if late else ""),
    }


def mean_rows(runs: Runs, holdout: stats.Holdout, budget: float) -> list[dict[str, Any]]:
    """Per arm over its seeds: mean balanced accuracy and its two-level interval."""
    rows = []
    for arm in ARMS:
        predicted = {s: labels_at(r, 1.0, budget) for (a, s), r in runs.items() if a == arm}
        predicted = {s: p for s, p in predicted.items() if p is not None}
        if len(predicted) < 2:
            continue
        mean, (low, high) = stats.mean_over_seeds(holdout, predicted)
        rows.append(
            {
                "arm": LABELS[arm],
                "seeds": len(predicted),
                "balanced_accuracy": mean,
                "ba_95ci": f"{low:.3f}-{high:.3f}",
            }
        )
    return rows


def time_rows(runs: Runs, holdout: stats.Holdout, budget: float) -> list[dict[str, Any]]:
    """The incumbent's balanced accuracy (and fold-epochs so far) at each mark."""
    rows = []
    for (arm, seed), run in sorted(
        runs.items(), key=lambda item: (ARMS.index(item[0][0]), item[0][1])
    ):
        keys = ["ensemble"] + (["best"] if arm == "automl" else [])
        for key in keys:
            label = LABELS[arm] if key == "ensemble" else SECONDARY["automl_best"]
            row: dict[str, Any] = {"arm": label, "seed": seed}
            for share in MARKS:
                point = mark(run, share, budget)
                score = None if point is None else point[f"{key}_score"]
                shown = "no trial yet" if score is None else f"{score:.3f}"
                row[f"at {share:.0%}"] = f"{shown} ({fold_epochs(run, share, budget)} fe)"
            rows.append(row)
    return rows


def decisions(runs: Runs, holdout: stats.Holdout, budget: float) -> list[dict[str, Any]]:
    """The decisions the script prints: automl against each reference, at full and half."""
    floors = {s: labels_at(r, 1.0, budget) for (a, s), r in runs.items() if a == "floor"}
    learned, why = stats.learns(holdout, {s: p for s, p in floors.items() if p is not None})
    rows = [
        {
            "decision": "the floor learns (else every comparison is void)",
            "at": "100%",
            "verdict": "yes" if learned else "no",
            "reason": why,
        },
        reproduced(runs),
    ]
    for reference in ("floor", "floor_seeds", "kerastuner"):
        for share in (1.0, 0.5):
            decision = _paired(runs, "automl", reference, share, budget, holdout)
            rows.append(
                _decision_row(f"automl vs {reference}", share, _void(decision, learned, why))
            )
    return rows


def reproduced(runs: Runs) -> dict[str, Any]:
    """Op determinism across processes: floor_seeds' trial 0 is the floor's trial (the same
    study seed, hence the same trial seed), so their CV values must be equal."""
    same = {}
    for (arm, seed), run in runs.items():
        other = runs.get(("floor_seeds", seed))
        if arm != "floor" or other is None:
            continue
        mine, theirs = (_first_value(r) for r in (run, other))
        if mine is not None and theirs is not None:
            same[seed] = mine == theirs
    shown = ", ".join(f"seed {s}: {'equal' if ok else 'different'}" for s, ok in same.items())
    return {
        "decision": "reruns agree: floor_seeds' trial 0 = the floor's trial (CV value)",
        "at": "100%",
        "verdict": ("yes" if all(same.values()) else "no") if same else "not measured",
        "reason": shown or "no seed has both with a completed trial 0",
    }


def _first_value(run: Mapping[str, Any]) -> float | None:
    first = [e for e in run["score"]["events"] if e["trial"] == 0 and e["state"] == "complete"]
    return first[0]["value"] if first else None


def _void(decision: stats.Decision, learned: bool, why: str) -> stats.Decision:
    """``decision`` marked void (its figures kept) when the floor does not learn."""
    if learned or decision.verdict == "not measured":
        return decision
    return replace(decision, verdict="void", reason=f"the floor does not learn ({why})")


def _paired(
    runs: Runs, a: str, b: str, share: float, budget: float, holdout: stats.Holdout
) -> stats.Decision:
    """``a`` minus ``b`` at a mark, over the seeds where both have an incumbent by then."""
    seeds = sorted({s for arm, s in runs if arm == a} & {s for arm, s in runs if arm == b})
    pairs = {}
    for seed in seeds:
        mine, theirs = (
            labels_at(runs[a, seed], share, budget),
            labels_at(runs[b, seed], share, budget),
        )
        if mine is not None and theirs is not None:
            pairs[seed] = (mine, theirs)
    if not pairs:
        return stats.Decision(
            "not measured", f"no seed has a result of both by {share:.0%} of the budget"
        )
    decision = stats.compare(holdout, pairs)
    missing = [s for s in seeds if s not in pairs]
    if missing:
        note = f"; seeds {missing} left out (one of the two had no trial completed by then)"
        decision = replace(decision, reason=decision.reason + note)
    return decision


def _decision_row(name: str, share: float, decision: stats.Decision) -> dict[str, Any]:
    per_seed = decision.per_seed or {}
    return {
        "decision": name,
        "at": f"{share:.0%}",
        "verdict": decision.verdict,
        "mean_difference": decision.mean,
        "interval": None
        if decision.interval is None
        else f"[{decision.interval[0]:+.3f}, {decision.interval[1]:+.3f}]",
        "per_seed": " ".join(f"s{s}: {d:+.3f}" for s, d in per_seed.items()) or None,
        "reason": decision.reason,
    }


def greedy_rows(
    runs: Runs, holdout: stats.Holdout, budget: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Greedy ensemble vs its best trial: at every replay point of every seed, and paired at
    the full budget."""
    rows = []
    pairs = {}
    for (arm, seed), run in sorted(runs.items()):
        if arm != "automl":
            continue
        points = run["score"]["points"]
        below = [p for p in points if p["ensemble_score"] < p["best_score"]]
        worst = min((p["ensemble_score"] - p["best_score"] for p in points), default=None)
        rows.append(
            {
                "seed": seed,
                "replay_points": len(points),
                "points_below_best_trial": len(below),
                "never_below": "yes" if points and not below else ("–" if not points else "no"),
                "smallest_difference": worst,
                "at": ", ".join(
                    f"{p['trials']} trials: {p['ensemble_score'] - p['best_score']:+.3f}"
                    for p in below
                )
                or None,
            }
        )
        ensemble, best = labels_at(run, 1.0, budget), labels_at(run, 1.0, budget, "best")
        if ensemble is not None:
            pairs[seed] = (ensemble, best)
    decision = stats.compare(holdout, pairs)
    return rows, _decision_row("automl greedy ensemble vs its best trial", 1.0, decision)


def plot(runs: Runs, budget: float, path: Path, chance: float) -> None:
    """Hold-out balanced accuracy of each arm's incumbent against seconds since its start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(ARMS, ("C7", "C2", "C0", "C3"), strict=True))
    styles = ("-", "--", ":", "-.")
    fig, ax = plt.subplots(figsize=(8, 5))
    for (arm, seed), run in sorted(runs.items()):
        points = run["score"]["points"]
        if not points:
            continue
        times = [p["t"] for p in points] + [max(budget, points[-1]["t"])]
        style = styles[seed % len(styles)]
        for key, width in (("ensemble", 1.8), ("best", 0.8)):
            if key == "best" and arm != "automl":
                continue
            values = [p[f"{key}_score"] for p in points]
            label = f"{arm} s{seed}" + (" best trial" if key == "best" else "")
            ax.step(
                times,
                values + values[-1:],
                where="post",
                color=colours[arm],
                linestyle=style,
                linewidth=width,
                label=label,
            )
    for share in MARKS[:-1]:
        ax.axvline(share * budget, color="grey", linewidth=0.5)
    ax.axhline(chance, color="grey", linestyle=":", linewidth=0.8, label="chance (1 / classes)")
    ax.set_xlim(left=0)
    ax.axvline(budget, color="black", linewidth=0.8)
    ax.set_xlabel("seconds since the arm started (vertical lines: 25%, 50%, 100% of the budget)")
    ax.set_ylabel("hold-out balanced accuracy of the incumbent")
    ax.set_title("Time to quality on the chula_rbc12 hold-out (same wall-clock budget)")
    ax.legend(loc="lower right", fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- ablation ------------------------------------------------------------------------------------

AblationRuns = Mapping[tuple[str, int, int], dict[str, Any]]


def ablation_rows(runs: AblationRuns, holdout: stats.Holdout) -> list[dict[str, Any]]:
    """One row per epochs, factor and seed."""
    rows = []
    for factor, epochs, seed in sorted(runs, key=_ablation_order):
        run = runs[factor, epochs, seed]
        row = score_row(factor, seed, holdout, run["predicted"])
        row.pop("arm")
        flag = "diverged" if run["diverged"] else row["flag"]
        rows.append(
            {"factor": factor, "epochs": epochs, **row, "flag": flag, "seconds": run["seconds"]}
        )
    return rows


def ablation_decisions(runs: AblationRuns, holdout: stats.Holdout) -> list[dict[str, Any]]:
    """Per epoch count: does the floor learn; then each factor minus the floor, paired."""
    rows = []
    for epochs in sorted({e for _, e, _ in runs}):
        floors = {s: _labels(r) for (f, e, s), r in runs.items() if f == "floor" and e == epochs}
        floors = {s: p for s, p in floors.items() if p is not None}
        learned, why = stats.learns(holdout, floors)
        rows.append(
            {
                "decision": "the floor learns",
                "epochs": epochs,
                "verdict": "yes" if learned else "no",
                "reason": why,
            }
        )
        for factor in FACTORS[1:]:
            pairs = {}
            for seed, floor in floors.items():
                run = runs.get((factor, epochs, seed))
                if run is not None and _labels(run) is not None:
                    pairs[seed] = (_labels(run), floor)
            decision = _void(stats.compare(holdout, pairs), learned, why)
            row = _decision_row(f"{factor} vs floor", 1.0, decision)
            row.pop("at")
            rows.append({"decision": row.pop("decision"), "epochs": epochs, **row})
    return rows


def _labels(run: Mapping[str, Any]) -> np.ndarray | None:
    return None if run["predicted"] is None else np.asarray(run["predicted"])


def _ablation_order(key: tuple[str, int, int]) -> tuple[int, int, int]:
    factor, epochs, seed = key
    return epochs, FACTORS.index(factor), seed
