"""Trials per hour of the quick-start space: in one process, and with 1 or 2 worker processes.

Runs ``automl tune --space search_spaces/quickstart.yaml`` (scikit-learn's digits, offline) in a
fresh studies folder once per setting, with pruning off so that every trial does the same work
(3 folds x 8 epochs) and the counts compare. Each setting is its own study (``bench_<setting>``)
with the same seed. Records the wall time of the whole command (start-up, data, every trial)
and the trial window (first trial start to last trial end, from the storage), and writes a
table to stdout and ``benchmarks/results/workers_throughput.{json,md}``.

Worker processes pay a TensorFlow import (~5-10 s here) per trial, the price of returning all
memory after every trial; on a 2-core machine two workers also share the same two cores, so
expect little gain from the second worker on CPU. The load average at the start is recorded:
other processes running on the machine slow every setting.

    python benchmarks/workers_throughput.py [--n-trials 6] [--settings in-process,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SPACE = REPO / "search_spaces" / "quickstart.yaml"


def run_setting(setting: str, n_trials: int, studies: Path) -> dict[str, object]:
    """One ``automl tune`` run; returns its timings and trial counts."""
    import optuna

    from automl.study import load_study

    name = f"bench_{setting.replace('-', '_')}"
    command = [
        sys.executable,
        "-m",
        "automl.cli",
        "--quiet",
        "tune",
        "--space",
        str(SPACE),
        "--study-name",
        name,
        "--studies-dir",
        str(studies),
        "--n-trials",
        str(n_trials),
        "--set",
        "study.pruner={name: none}",
        "--no-progress",
    ]
    if setting != "in-process":
        command += ["--workers", setting]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{setting}: automl tune failed:\n{done.stderr[-2000:]}")
    _, study = load_study(name, studies)
    finished = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    window = (
        max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)
    ).total_seconds()
    values = [t.value for t in finished if t.value is not None]
    return {
        "setting": setting,
        "trials": len(finished),
        "wall_seconds": round(wall, 1),
        "trials_per_hour_wall": round(len(finished) * 3600 / wall, 1),
        "window_seconds": round(window, 1),
        "trials_per_hour_window": round(len(finished) * 3600 / window, 1),
        "mean_train_seconds": round(
            sum(t.user_attrs.get("train_seconds", 0.0) for t in finished) / len(finished), 1
        ),
        "best_value": round(max(values), 4) if values else None,
        "load_average_at_start": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=6)
    parser.add_argument("--settings", default="in-process,1,2")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="automl_workers_bench_") as tmp:
        for setting in args.settings.split(","):
            row = run_setting(setting.strip(), args.n_trials, Path(tmp))
            print(json.dumps(row), flush=True)
            rows.append(row)
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "workers_throughput.json").write_text(
        json.dumps({"machine": machine, "n_trials": args.n_trials, "rows": rows}, indent=2) + "\n",
        encoding="utf-8",
    )
    lines = [
        f"# Trials per hour, quick-start space ({args.n_trials} trials, pruning off)",
        "",
        f"{machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}; "
        "wall = the whole `automl tune` command; window = first trial start to last trial end.",
        "A load average above 0 at the start means other processes shared the CPUs.",
        "",
        "| setting | trials | wall s | trials/h (wall) | window s | trials/h (window) "
        "| mean train s/trial | load avg at start |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['trials']} | {r['wall_seconds']} | "
            f"{r['trials_per_hour_wall']} | {r['window_seconds']} | "
            f"{r['trials_per_hour_window']} | {r['mean_train_seconds']} | "
            f"{r['load_average_at_start']} |"
        )
    table = "\n".join(lines) + "\n"
    (RESULTS / "workers_throughput.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
