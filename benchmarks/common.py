"""What every benchmark shares: the real data, the search space, machine facts, result files.

The data is ``bccd_wbc_aug`` from ``../shared/data`` (the Kaggle "blood-cells" set): a seeded
random per-class subset of ``images/TRAIN`` to tune on and of ``images/TEST`` (other cells) as
the hold-out, copied into a scratch folder. TRAIN holds ~35 augmented copies of each of 277
cells, so ``groups_from_duplicates`` keeps every copy family on one side of each fold: the CV
scores are honest, not inflated by the same cell in train and validation.

The space is automl's own, over a custom CNN (pretrained backbones cannot be downloaded on the
benchmark machines, and ImageNet-size backbones are too slow on 2 CPU cores to compare tuners).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("AUTOML_SHARED_DATA", REPO.parent / "shared" / "data"))
WBC_AUG = SHARED_DATA / "bccd_wbc_aug" / "images"
WBC_CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")

# Full and --quick sizes shared by the training benchmarks. Quick mode checks that a script
# runs end to end in minutes; only full-mode figures go into the README's table.
# 48 px, not the 64 px of the issue, and 8 epochs: a complete trial (3 folds x 8 epochs over
# 480 images) then takes ~25 s on 2 cores, so three minutes of budget per tuner still hold
# several trials. (64 px, 12 epochs, 600 images measured 85 s per trial.)
FULL = {"per_class": 120, "test_per_class": 100, "image_size": 48, "n_folds": 3, "epochs": 8}
QUICK = {"per_class": 30, "test_per_class": 20, "image_size": 32, "n_folds": 2, "epochs": 3}


def sizes(quick: bool) -> dict[str, int]:
    return dict(QUICK if quick else FULL)


def wbc_subset(
    dest: Path, per_class: int, test_per_class: int, seed: int = 0
) -> tuple[Path, Path]:
    """Copy seeded random per-class subsets of TRAIN and TEST into ``dest/{train,test}``.

    Random, not the first by name: consecutive names are augmented copies of the same cell.
    """
    if not WBC_AUG.is_dir():
        raise SystemExit(
            f"{WBC_AUG}: the real blood-cell images were not found; put shared/data beside the "
            "repository or point AUTOML_SHARED_DATA at it."
        )
    rng = np.random.default_rng(seed)
    for split, n, out in (
        ("TRAIN", per_class, dest / "train"),
        ("TEST", test_per_class, dest / "test"),
    ):
        for name in WBC_CLASSES:
            files = sorted((WBC_AUG / split / name).glob("*.jpg"))
            picked = rng.choice(len(files), size=min(n, len(files)), replace=False)
            (out / name).mkdir(parents=True, exist_ok=True)
            for index in sorted(picked):
                shutil.copy2(files[index], out / name / files[index].name)
    return dest / "train", dest / "test"


def search_space(epochs: int) -> dict[str, Any]:
    """The space every tuner in the benchmarks searches (automl's YAML ``space`` section)."""
    return {
        "backbone": {
            "name": "custom_cnn",
            "blocks": {"type": "int", "low": 2, "high": 4},
            "filters": {"type": "categorical", "choices": [16, 32, 64]},
            "batchnorm": {"type": "categorical", "choices": [False, True]},
            "dropout": {"type": "float", "low": 0.0, "high": 0.4},
        },
        "head": {
            "layers": {"type": "int", "low": 0, "high": 2},
            "units": {"type": "categorical", "choices": [64, 128, 256]},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        },
        "optimizer": {
            "type": "categorical",
            "choices": {"adam": {}, "rmsprop": {}, "sgd": {"momentum": 0.9, "nesterov": True}},
        },
        "learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
        "batch_size": 32,
        "epochs": epochs,
        "augment": {"flip": "horizontal_and_vertical"},
    }


def hand_tuned_space(epochs: int) -> dict[str, Any]:
    """The notebook default users start from (the floor): fixed values, no search."""
    return {
        "backbone": {
            "name": "custom_cnn",
            "blocks": 3,
            "filters": 32,
            "batchnorm": True,
            "dropout": 0.0,
        },
        "head": {"layers": 1, "units": 128, "dropout": 0.5},
        "optimizer": "adam",
        "learning_rate": 1.0e-3,
        "batch_size": 32,
        "epochs": epochs,
        "augment": {"flip": "horizontal_and_vertical"},
    }


def study_config(
    *,
    name: str,
    studies_dir: Path,
    train: Path,
    test: Path,
    size: dict[str, int],
    space: dict[str, Any],
    seed: int = 0,
    sampler: dict[str, Any] | None = None,
    pruner: dict[str, Any] | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    top_k: int = 5,
) -> dict[str, Any]:
    """An automl configuration (as ``config_from_dict`` takes it) over the benchmark data."""
    return {
        "study": {
            "name": name,
            "metric": "accuracy",
            "n_trials": n_trials,
            "timeout": timeout,
            "seed": seed,
            "sampler": sampler or {"name": "tpe", "n_startup_trials": 5},
            "pruner": pruner or {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 3},
            "studies_dir": str(studies_dir),
        },
        "data": {
            "format": "folder",
            "path": str(train),
            "image_size": size["image_size"],
            "n_folds": size["n_folds"],
            "groups_from_duplicates": True,
            "test": {"format": "folder", "path": str(test)},
        },
        "space": space,
        "ensemble": {"top_k": top_k, "vote": "majority"},
    }


def machine_info() -> dict[str, Any]:
    """Date, CPU, load and library versions: what a reader needs to compare figures."""
    from importlib import metadata

    versions = {}
    for package in (
        "tensorflow",
        "tensorflow-cpu",
        "keras",
        "optuna",
        "keras-tuner",
        "scikit-learn",
        "numpy",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": round(os.getloadavg()[0], 2),
        "versions": versions,
    }


def gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi, or None on a CPU-only machine."""
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_child(
    script: str, spec: dict[str, Any], label: str, *, stream_stderr: bool = False
) -> dict[str, Any]:
    """Run ``script --run-one SPEC`` in a fresh process; return the JSON its last line prints.

    One process per measured setting: its imports, traced functions and peak memory are its own.
    ``stream_stderr`` shows the child's stderr (its progress) as it runs instead of keeping it.
    """
    done = subprocess.run(
        [sys.executable, script, "--run-one", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=None if stream_stderr else subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    if done.returncode != 0:
        detail = "see its stderr above" if stream_stderr else done.stderr[-3000:]
        raise SystemExit(f"{label}: the child failed:\n{detail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def save_results(
    name: str,
    *,
    title: str,
    description: str,
    rows: list[dict[str, Any]],
    columns: list[str],
    extra: dict[str, Any] | None = None,
    quick: bool = False,
) -> Path:
    """Print the table and write ``results/<name>.json`` and ``.md`` (``-quick`` in quick mode).

    Quick runs are saved under their own names so that they never overwrite the full results
    the README quotes.
    """
    machine = machine_info()
    stem = f"{name}-quick" if quick else name
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "quick": quick,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine,
        "rows": rows,
        **(extra or {}),
    }
    (RESULTS / f"{stem}.json").write_text(
        json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8"
    )
    table = markdown_table(rows, columns)
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    text = (
        f"# {title}\n\n{description}\n\n"
        f"Run {machine['date']} on {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"GPU: {machine['gpu'] or 'none'}; load average at the end {machine['load_average']}; "
        f"{versions}. Command: `python {payload['command']}`"
        f"{' (quick mode: plumbing check, not figures to quote)' if quick else ''}.\n\n"
        f"{table}\n"
    )
    (RESULTS / f"{stem}.md").write_text(text, encoding="utf-8")
    print(f"\n{title}\n\n{table}\n\nsaved {RESULTS / stem}.json and .md")
    return RESULTS / f"{stem}.md"


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
