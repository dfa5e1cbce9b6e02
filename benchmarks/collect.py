"""Write the latest full results into ``benchmarks/README.md``: the targets, then every table.

Each benchmark saves ``results/<name>.json`` and ``.md``; this script reads them (never the
``-quick`` files), checks each issue target against the saved figures, and replaces the part of
the README between the ``results`` markers with a targets table and every result file's text
(its date, machine, versions and table), so the README always quotes what the files hold.

    python -m benchmarks.collect
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from benchmarks import harness

README = harness.REPO / "benchmarks" / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
ORDER = (
    "search_efficiency",
    "pruning",
    "input_pipeline",
    "overhead",
    "workers_throughput",
    "gpu_throughput",
    "audit_speed",
    "audit_scaling",
    "audit_precision",
    "model_quality",
    "model_quality_ablation",
    "augment_cost",
    "quickstart_ensemble",
)
# A results file whose command is not `python -m benchmarks.<name>` was measured before the
# harness rewrite (scripts run as files); a model_quality file without decisions by the script's
# previous design (issue 13). Both are marked stale in the README until rerun.
CURRENT_COMMAND = "python -m benchmarks."


def load(name: str) -> dict[str, Any] | None:
    path = harness.RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target of the issue: what was measured and whether it is met."""
    rows = []

    def add(
        question: str, target: str, measured: str | None, met: bool | None, verdict: str = ""
    ) -> None:
        verdict = verdict or ("not measured" if met is None else ("met" if met else "not met"))
        rows.append(
            {"question": question, "target": target, "measured": measured, "verdict": verdict}
        )

    search = results.get("search_efficiency")
    goal = "automl time to best-0.01 <= 0.5x KerasTuner Hyperband's"
    if search is None:
        add("1. search efficiency", goal, None, None)
    else:
        times = {r["method"]: r.get("seconds_to_target") for r in search["rows"]}
        mine, theirs = times.get("automl"), times.get("kt_hyperband")
        if mine is not None and theirs is not None:
            add("1. search efficiency", goal, f"{mine / theirs:.2f}x ({mine} s vs {theirs} s)",
                mine / theirs <= 0.5)  # fmt: skip
        else:  # a median that never got there: whoever did get there wins outright
            shown = f"automl {_seconds(mine)}, Hyperband {_seconds(theirs)} (medians)"
            if mine is None and theirs is None:
                add("1. search efficiency", goal, shown, None, "inconclusive: neither got there")
            else:
                add("1. search efficiency", goal, shown, mine is not None)
        floors = {r["method"]: r for r in search["rows"] if "reached_floor" in r}
        add(
            "1. search efficiency",
            "(context) median time to the hand-tuned floor; seeds that reached it",
            ", ".join(
                f"{m} {_seconds(r['seconds_to_floor'])} ({r['reached_floor']})"
                for m, r in floors.items()
            ),
            None,
            "–",
        )
    pruning = results.get("pruning")
    share = None
    if pruning:
        share = next(
            (r["pruned_epoch_share_median"] for r in pruning["rows"] if r["pruner"] != "none"),
            None,
        )
    add(
        "3. pruning",
        "epochs of a pruned trial <= 30% of a complete one (median)",
        None if share is None else f"{share:.0%}",
        None if share is None else share <= 0.30,
    )
    pipeline = results.get("input_pipeline")
    if pipeline:
        speedups = pipeline["speedup_train"]
        shown = ", ".join(f"{k}: {v:.2f}x" for k, v in speedups.items())
        add(
            "4. input pipeline",
            "training images/s >= 3x ImageDataGenerator's",
            shown,
            all(v >= 3.0 for v in speedups.values()),
        )
    else:
        add("4. input pipeline", "training images/s >= 3x ImageDataGenerator's", None, None)
    overhead = results.get("overhead")
    add(
        "5. overhead",
        "one trial, one fold <= 1.10x a plain model.fit script",
        None
        if overhead is None
        else f"{overhead['ratio']:.2f}x first trial"
        + (f", {overhead['ratio_warm']:.2f}x warm" if "ratio_warm" in overhead else ""),
        None if overhead is None else overhead["ratio"] <= 1.10,
    )
    rows += quality_targets(results)
    quick_start = results.get("quickstart_ensemble")
    goal = (
        "quick start's greedy ensemble >= its best trial on the hold-out, every seed (soft vote)"
    )
    soft = [r for r in (quick_start or {}).get("rows", []) if r["vote"] == "soft"]
    shipped = next((r for r in soft if r["recipe"] == "constant"), None)
    if shipped is None:
        add("10. quick-start ensemble (issue 13)", goal, None, None)
    else:
        won, seeds = shipped["seeds ensemble >= best"].split("/")
        measured = (
            f"{won}/{seeds} seeds; images gained {shipped['images gained per seed']}; "
            f"paired CI {shipped['difference, 95% paired CI']}"
        )
        add("10. quick-start ensemble (issue 13)", goal, measured, won == seeds)
    gpu = results.get("gpu_throughput")
    on_gpu = bool(gpu and gpu["machine"].get("gpu"))
    add(
        "7. GPU",
        "images/s, utilisation, mixed precision, one trial per GPU",
        gpu["machine"]["gpu"] if on_gpu else None,
        True if on_gpu else None,
    )
    return rows


def quality_targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The decisions ``model_quality.py`` printed (issue 19), as judged by its own rule."""
    rows = []
    for name, question in (
        ("model_quality", "8. model quality (issue 19)"),
        ("model_quality_ablation", "8. model quality: ablation (issue 19)"),
    ):
        saved = results.get(name)
        if saved is None or "decisions" not in saved:
            verdict = "not measured" if saved is None else "stale: rerun with the new script"
            rows.append(
                {"question": question, "target": "decisions", "measured": None, "verdict": verdict}
            )
            continue
        for row in saved["decisions"]:
            where = f"at {row['at']} of the budget" if "at" in row else f"{row['epochs']} epochs"
            measured = row.get("reason")
            if row.get("mean_difference") is not None:
                measured = f"{row['mean_difference']:+.3f} {row['interval']} ({row['per_seed']})"
            rows.append(
                {
                    "question": question,
                    "target": f"{row['decision']}, {where}",
                    "measured": measured,
                    "verdict": row["verdict"],
                }
            )
    return rows


def stale_note(name: str, data: dict[str, Any]) -> str | None:
    """Why a results file no longer describes the script, or None when it is current."""
    command = data.get("command", "")
    if not command.startswith(CURRENT_COMMAND):
        return (
            f"*Stale: measured before the harness rewrite (`{command}`); rerun "
            f"`python -m benchmarks.{name}`.*"
        )
    if name == "model_quality" and "decisions" not in data:
        return "*Stale: made by the script's previous design (issue 13); rerun it.*"
    return None


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value} s"


def section(results: dict[str, dict[str, Any]], summary: str) -> str:
    parts = [
        "Written by `python -m benchmarks.collect` from `results/*.json` and `.md`; each table "
        "below says when, on what machine and with which versions it was measured.",
        "",
        summary,
    ]
    for name in ORDER:
        markdown = harness.RESULTS / f"{name}.md"
        if name in results and markdown.is_file():
            text = re.sub(r"^# ", "### ", markdown.read_text(encoding="utf-8").strip(), count=1)
            note = stale_note(name, results[name])
            if note is not None:  # under the heading, before the description
                heading, _, body = text.partition("\n")
                text = f"{heading}\n\n{note}\n{body}"
            parts += ["", text]
            picture = harness.RESULTS / f"{name}.png"
            if picture.is_file():
                parts += ["", f"![{name}](results/{picture.name})"]
        else:
            parts += ["", f"### {name}", "", "Not run yet with full settings."]
    return "\n".join(parts)


def main() -> None:
    argparse.ArgumentParser(
        prog="python -m benchmarks.collect", description=__doc__.splitlines()[0]
    ).parse_args()
    results = {name: data for name in ORDER if (data := load(name)) is not None}
    text = README.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{README}: the markers {START} and {END} are missing; add them.")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    summary = harness.markdown_table(
        targets(results), ["question", "target", "measured", "verdict"]
    )
    README.write_text(f"{head}{START}\n{section(results, summary)}\n{END}{tail}", encoding="utf-8")
    print(summary)
    print(f"\nwrote {README}")


if __name__ == "__main__":
    main()
