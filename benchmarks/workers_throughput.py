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

    python -m benchmarks.workers_throughput [--quick] [--n-trials 6] [--settings in-process,1,2]
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from benchmarks import harness

NAME = "workers_throughput"
SPACE = harness.REPO / "search_spaces" / "quickstart.yaml"


def run_setting(setting: str, n_trials: int, studies: Path) -> dict[str, object]:
    """One ``automl tune`` run; returns its timings and trial counts."""
    import optuna

    from automl.search.attrs import TrialSummary
    from automl.search.storage import load_study

    name = f"bench_{setting.replace('-', '_')}"
    command = [
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
    wall = harness.run_automl_cli(command, setting)
    _, study = load_study(name, studies)
    finished = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    window = (
        max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)
    ).total_seconds()
    summaries = [TrialSummary.from_trial(t) for t in finished]
    values = [t.value for t in finished if t.value is not None]
    return {
        "setting": setting,
        "trials": len(finished),
        "wall_seconds": round(wall, 1),
        "trials_per_hour_wall": round(len(finished) * 3600 / wall, 1),
        "window_seconds": round(window, 1),
        "trials_per_hour_window": round(len(finished) * 3600 / window, 1),
        "mean_train_seconds": round(sum(t.seconds or 0.0 for t in summaries) / len(finished), 1),
        "best_value": round(max(values), 4) if values else None,
        "load_average_at_start": round(load, 2),
    }


def main() -> None:
    parser = harness.argument_parser(NAME, __doc__, quick="2 trials per setting")
    parser.add_argument("--n-trials", type=int, default=None, help="default 6 (quick: 2)")
    parser.add_argument("--settings", default="in-process,1,2")
    args = parser.parse_args()
    n_trials = args.n_trials or (2 if args.quick else 6)
    rows = []
    with tempfile.TemporaryDirectory(prefix="automl_workers_bench_") as tmp:
        for setting in args.settings.split(","):
            row = run_setting(setting.strip(), n_trials, Path(tmp))
            print(json.dumps(row), flush=True)
            rows.append(row)
    harness.save_results(
        NAME,
        title=f"Trials per hour, quick-start space ({n_trials} trials, pruning off)",
        description=(
            "wall = the whole `automl tune` command; window = first trial start to last trial "
            "end. Worker processes pay a TensorFlow import per trial (one process per trial). "
            "A load average above 0 at the start means other processes shared the CPUs."
        ),
        rows=rows,
        columns=[
            "setting",
            "trials",
            "wall_seconds",
            "trials_per_hour_wall",
            "window_seconds",
            "trials_per_hour_window",
            "mean_train_seconds",
            "load_average_at_start",
        ],
        quick=args.quick,
        folder=args.results,
    )


if __name__ == "__main__":
    main()
