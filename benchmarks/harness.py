"""What every benchmark shares: data, study settings, machine facts, memory, children, results.

Every script of this package runs from the repository root as ``python -m benchmarks.<name>``
and takes from here:

- **data**: a seeded per-class subset of ``bccd_wbc_aug`` (``wbc_subset``), a stratified share of
  ``chula_rbc12``'s field groups (``chula_group_subset``) or random decoded crops of it
  (``chula_sample``), all read from ``../shared/data`` (or ``AUTOML_SHARED_DATA``);
- **study settings**: the search space every tuner searches (``search_space``), the hand-tuned
  floor (``hand_tuned_space``), an automl configuration over the data (``study_config``) and
  a configuration's training on every tuning image (``fit_on_all``, automl's own fold fit);
- **machine facts**: ``machine_info`` and the header line every results file prints;
- **memory**: ``memory_meter``, automl's own ``PeakMemory`` (peak resident memory and, once
  TensorFlow is loaded, the GPU peak), the one way a benchmark reads a peak;
- **processes**: ``run_child`` measures one setting in a fresh ``python -m benchmarks.<name>
  --run-one SPEC`` process that answers through ``child_result``; ``run_automl_cli`` times an
  ``automl`` command; ``deadline`` ends a child at its wall-clock budget after answering;
- **command line**: ``argument_parser`` (``--quick``, seeds, ``--results``, ``--run-one``);
- **results**: ``save_results`` prints the table and writes ``<results>/<name>.json`` and ``.md``,
  with the commit they were measured at (``git_state``: ``git rev-parse HEAD`` and whether the
  working tree had uncommitted changes).

``python -m benchmarks.harness`` prints the machine facts a results file would record here.

``bccd_wbc_aug`` TRAIN holds ~35 augmented copies of each of 277 cells, so every study over it
uses ``groups_from_duplicates``: every copy family stays on one side of each fold and the CV
scores are not inflated by the same cell in train and validation. The space is automl's own,
over a custom CNN (pretrained backbones cannot be downloaded on the benchmark machines, and
ImageNet-size backbones are too slow on 2 CPU cores to compare tuners).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from automl.nn.memory import PeakMemory

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work"
SHARED_DATA = Path(os.environ.get("AUTOML_SHARED_DATA", REPO.parent / "shared" / "data"))
WBC_AUG = SHARED_DATA / "bccd_wbc_aug" / "images"
WBC_CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
CHULA = SHARED_DATA / "chula_rbc12"
# A child answers on the last stdout line that starts with this; anything else it prints
# (a library's progress, a warning) is not mistaken for the answer.
RESULT_PREFIX = "RESULT "

# Full and --quick sizes shared by the training benchmarks. Quick mode checks that a script
# runs end to end in minutes; only full-mode figures go into the README's table.
# 48 px, not the 64 px of the issue, and 8 epochs: a complete trial (3 folds x 8 epochs over
# 480 images) then takes ~25 s on 2 cores, so three minutes of budget per tuner still hold
# several trials. (64 px, 12 epochs, 600 images measured 85 s per trial.)
FULL = {"per_class": 120, "test_per_class": 100, "image_size": 48, "n_folds": 3, "epochs": 8}
QUICK = {"per_class": 30, "test_per_class": 20, "image_size": 32, "n_folds": 2, "epochs": 3}


def sizes(quick: bool) -> dict[str, int]:
    """The data and training sizes of the ``bccd_wbc_aug`` benchmarks (a copy)."""
    return dict(QUICK if quick else FULL)


# --- data --------------------------------------------------------------------------------------


def require(path: Path, what: str) -> Path:
    """``path``, or stop with how to provide the real images it should hold."""
    if not path.exists():
        raise SystemExit(
            f"{path}: {what} was not found; put shared/data beside the repository or point "
            "AUTOML_SHARED_DATA at it."
        )
    return path


def wbc_subset(
    dest: Path, per_class: int, test_per_class: int, seed: int = 0
) -> tuple[Path, Path]:
    """Copy seeded random per-class subsets of TRAIN and TEST into ``dest/{train,test}``.

    Random, not the first by name: consecutive names are augmented copies of the same cell.
    """
    require(WBC_AUG, "bccd_wbc_aug (the real blood-cell images)")
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


def chula_manifest() -> Any:
    """chula_rbc12's ``manifest.csv`` as a pandas frame (one row per crop)."""
    import pandas as pd

    return pd.read_csv(require(CHULA / "manifest.csv", "chula_rbc12"))


def chula_group_subset(work: Path, fraction: float) -> Path:
    """``<work>/labels.csv`` over a stratified ``fraction`` of chula_rbc12's field groups.

    One fold of a seeded ``StratifiedGroupKFold`` (``1 / fraction`` folds): whole smear fields,
    every class in proportion. Written by ``write_chula_labels``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    manifest = chula_manifest()
    splitter = StratifiedGroupKFold(n_splits=round(1 / fraction), shuffle=True, random_state=0)
    _, keep = next(splitter.split(manifest, manifest["class_name"], manifest["field_group"]))
    return write_chula_labels(manifest.iloc[np.sort(keep)], work / "labels.csv")


def write_chula_labels(rows: Any, path: Path) -> Path:
    """Write manifest ``rows`` as the labels CSV automl's ``format: csv`` reads; return ``path``.

    Columns ``id`` (path below ``chula_rbc12`` without ``.jpg``), ``label``, ``field_group``.
    The file is rewritten only when it changes, so automl's decoded-image cache of it stays
    valid.
    """
    import pandas as pd

    text = pd.DataFrame(
        {
            "id": rows["file"].str.removesuffix(".jpg"),
            "label": rows["class_name"],
            "field_group": rows["field_group"],
        }
    ).to_csv(index=False)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path


def chula_sample(n_images: int, seed: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random sample of chula_rbc12 crops decoded at ``image_size``: images, labels."""
    import pandas as pd
    from PIL import Image

    manifest = pd.read_csv(require(CHULA / "manifest.csv", "chula_rbc12"))
    rows = manifest.sample(n=min(n_images, len(manifest)), random_state=seed)
    images = np.stack(
        [
            np.asarray(Image.open(CHULA / f).convert("RGB").resize((image_size, image_size)))
            for f in rows["file"]
        ]
    )
    return images, rows["class_code"].to_numpy()


# --- study settings ----------------------------------------------------------------------------


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


def fit_on_all(params: dict[str, Any], splits: Any, *, image_size: int, seed: int) -> np.ndarray:
    """Hold-out probabilities of ``params`` trained on every tuning image (no fold held back).

    automl's own fold fit (``automl.nn.fit.fit_fold``) with the hold-out as its validation
    rows: they are scored after every epoch but decide nothing (no early stopping, and a drawn
    ``plateau`` schedule keeps its rate, as with nothing to watch), so the last epoch's
    probabilities are the trained model's predictions. A fit whose loss diverged predicts
    every class alike.
    """
    from automl.nn.fit import fit_fold

    if params.get("class_weight", "none") != "none":
        raise SystemExit("fit_on_all: class weights would count the hold-out's labels too")
    tuning, holdout = splits.tuning, splits.holdout
    params = {**params, "schedule": "constant"} if params.get("schedule") == "plateau" else params
    fit = fit_fold(
        params,
        np.concatenate([tuning.images, holdout.images]),
        np.concatenate([tuning.labels, holdout.labels]),
        np.arange(len(tuning)),
        np.arange(len(tuning), len(tuning) + len(holdout)),
        n_classes=splits.n_classes,
        image_size=image_size,
        seed=seed,
        metric="accuracy",
    )
    if fit.probabilities is None:
        return np.full((len(holdout), splits.n_classes), 1.0 / splits.n_classes)
    return fit.probabilities


# --- machine facts -----------------------------------------------------------------------------

VERSIONED = ("tensorflow", "tensorflow-cpu", "keras", "optuna", "keras-tuner", "scikit-learn")


def machine_info() -> dict[str, Any]:
    """Date, CPU, load and library versions: what a reader needs to compare figures."""
    from importlib import metadata

    versions = {}
    for package in (*VERSIONED, "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    names = gpu_names()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": names[0] if names else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": round(os.getloadavg()[0], 2),
        "versions": versions,
    }


def machine_line(
    machine: dict[str, Any], command: str, quick: bool, git: dict[str, Any] | None = None
) -> str:
    """The header line of a results file: when, on what, under which load, with what, how."""
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    commit = ""
    if git is not None:
        dirty = " with uncommitted changes" if git["dirty"] else ""
        commit = f" at commit {(git['commit'] or 'unknown')[:12]}{dirty}"
    return (
        f"Run {machine['date']} on {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"GPU: {machine['gpu'] or 'none'}; load average at the end {machine['load_average']}; "
        f"{versions}. Command: `{command}`{commit}"
        f"{' (quick mode: plumbing check, not figures to quote)' if quick else ''}."
    )


def git_state() -> dict[str, Any]:
    """The commit of the repository (``git rev-parse HEAD``) and whether the tree was dirty.

    ``dirty``: tracked or untracked files differ from the commit (``git status --porcelain``),
    so the figures may come from code that no commit holds. ``commit`` is None outside git.
    """

    def git(*arguments: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *arguments], capture_output=True, text=True, cwd=REPO, check=False
            )
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


def command_line(name: str) -> str:
    """How this run of ``benchmarks.<name>`` was started, typed from the repository root."""
    return " ".join(["python", "-m", f"benchmarks.{name}", *sys.argv[1:]])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def gpu_names() -> list[str]:
    """The name of every GPU ``nvidia-smi`` lists; empty on a CPU-only machine."""
    if shutil.which("nvidia-smi") is None:
        return []
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip().splitlines() if done.returncode == 0 else []


# --- memory ------------------------------------------------------------------------------------


def memory_meter() -> PeakMemory:
    """Start measuring this process's peak memory; ``.read()`` gives the peaks so far.

    automl's own trial meter (``automl.nn.memory``): ``peak_rss_mb`` (the resident high-water
    mark since now, or of the process where it cannot be reset) and, when TensorFlow was
    imported before this call, ``peak_gpu_memory_mb``. Started first thing in a child, its
    ``peak_rss_mb`` is the process's peak.
    """
    from automl.nn.memory import PeakMemory

    return PeakMemory()


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux), e.g. what the imports alone take."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


# --- processes ---------------------------------------------------------------------------------


def run_child(
    name: str, spec: dict[str, Any], label: str, *, stream_stderr: bool = False
) -> dict[str, Any]:
    """Run ``python -m benchmarks.<name> --run-one SPEC`` and return what it answered.

    One process per measured setting: its imports, traced functions and peak memory are its own.
    The child answers with ``child_result``; an answer counts even when the child then ended
    itself abruptly (a time budget that stops a trial mid-way). ``stream_stderr`` shows the
    child's stderr (its progress) as it runs instead of keeping it for an error message.
    """
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--run-one", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=None if stream_stderr else subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ},  # TensorFlow's start-up noise
    )
    answers = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if answers:
        return json.loads(answers[-1][len(RESULT_PREFIX) :])
    detail = "see its stderr above" if stream_stderr else done.stderr[-3000:]
    raise SystemExit(f"{label}: the child failed (exit {done.returncode}):\n{detail}")


def child_result(result: dict[str, Any]) -> None:
    """Answer the parent's ``run_child`` (on stdout, flushed at once)."""
    print(RESULT_PREFIX + json.dumps(result, default=_json_default), flush=True)


@contextlib.contextmanager
def deadline(seconds: float | None, answer: Callable[[], dict[str, Any]]) -> Iterator[None]:
    """End this child ``seconds`` from now, after answering the parent with ``answer()``.

    For a time budget that must not be overrun: neither Optuna's ``timeout`` nor a tuner's own
    stop interrupts a running trial, and a trial that would end after the budget does not count
    anyway. The process ends with ``os._exit`` (no clean-up: a trial running then stays
    ``RUNNING`` in its study's storage). Leaving the block first cancels the deadline; ``None``
    sets none.
    """
    if seconds is None:
        yield
        return

    def stop() -> None:
        child_result(answer())
        os._exit(0)

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def run_automl_cli(arguments: Sequence[str], label: str) -> float:
    """Run ``python -m automl.cli --quiet ARGUMENTS`` from the repository; its wall seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "automl.cli", "--quiet", *arguments],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{label}: automl {arguments[0]} failed:\n{done.stderr[-2000:]}")
    return seconds


# --- command line ------------------------------------------------------------------------------


def argument_parser(
    name: str,
    doc: str,
    *,
    quick: str,
    seed: bool = False,
    seeds: str | None = None,
    child: bool = False,
) -> argparse.ArgumentParser:
    """The options every benchmark shares; the script adds its own.

    Args:
        name: the script's module name below ``benchmarks``.
        doc: the script's docstring; its first line describes the command.
        quick: what ``--quick`` shrinks (its help).
        seed: add ``--seed N`` (default 0).
        seeds: add ``--seeds`` (``0 1 2`` or ``0,1,2``; default None), with this help.
        child: add the hidden ``--run-one SPEC`` that ``run_child`` passes.
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{name}", description=doc.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help=f"plumbing check: {quick}")
    if seed:
        parser.add_argument("--seed", type=int, default=0)
    if seeds is not None:
        parser.add_argument("--seeds", nargs="+", action=_SeedList, default=None, help=seeds)
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="folder of the results files (default benchmarks/results; --quick runs write "
        "<name>-quick.*, which never replace the full figures)",
    )
    if child:
        parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    return parser


class _SeedList(argparse.Action):
    """``--seeds 0 1 2`` or ``--seeds 0,1,2``: a list of ints."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        given = [values] if isinstance(values, str) else list(values or [])
        try:
            seeds = [int(s) for value in given for s in str(value).split(",") if s]
        except ValueError:
            parser.error(f"{option_string}: whole numbers, e.g. 0 1 2; got {' '.join(given)}")
        setattr(namespace, self.dest, seeds)


# --- results -----------------------------------------------------------------------------------


def output_path(folder: Path, name: str, quick: bool, suffix: str) -> Path:
    """``<folder>/<name>[-quick]<suffix>``: quick runs never replace the full figures."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}{'-quick' if quick else ''}{suffix}"


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table of ``columns`` (a missing value shows as a dash)."""
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
    folder: Path = RESULTS,
    module: str | None = None,
) -> Path:
    """Print the table and write ``<folder>/<name>.json`` and ``.md`` (``-quick`` in quick mode).

    The Markdown file holds the title, the description, the machine line (with the commit) and
    the table; the JSON file the same facts and every row, plus ``extra``. ``module``: the
    script that wrote them, when its name is not ``name`` (a script with two results files).
    """
    machine = machine_info()
    command = command_line(module or name)
    git = git_state()
    payload = {
        "benchmark": name,
        "quick": quick,
        "command": command,
        "git": git,
        "machine": machine,
        "rows": rows,
        **(extra or {}),
    }
    json_path = output_path(folder, name, quick, ".json")
    json_path.write_text(
        json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8"
    )
    table = markdown_table(rows, columns)
    markdown = json_path.with_suffix(".md")
    markdown.write_text(
        f"# {title}\n\n{description}\n\n{machine_line(machine, command, quick, git)}\n\n{table}\n",
        encoding="utf-8",
    )
    print(f"\n{title}\n\n{table}\n\nsaved {json_path} and {markdown.name}")
    return markdown


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def main() -> None:
    """Print the machine facts a results file would record here, as JSON."""
    argparse.ArgumentParser(
        prog="python -m benchmarks.harness",
        description="Print the machine facts every results file records, as JSON.",
    ).parse_args()
    print(json.dumps(machine_info(), indent=2))


if __name__ == "__main__":
    main()
