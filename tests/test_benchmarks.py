"""The benchmark scripts as a package: ``python -m benchmarks.<name>`` from the repository root.

Each module must import without doing anything (no output, no files, no TensorFlow: its work
starts in ``main()``), answer ``--help`` through the shared argument parser, and none may edit
``sys.path`` to find its neighbours. The harness's own helpers are checked on real images.
No benchmark is run here: they time wall clock and take minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
MODULES = sorted(path.stem for path in BENCHMARKS.glob("*.py") if path.stem != "__init__")
HEAVY = ("tensorflow", "keras", "keras_tuner", "optuna", "matplotlib")
# What a fresh interpreter reports after importing one benchmark module.
PROBE = """
import json, sys
import benchmarks.{name} as module
print(json.dumps({{
    "main": callable(getattr(module, "main", None)),
    "heavy": sorted(m for m in {heavy!r} if m in sys.modules),
}}))
"""


def _files_under(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` (bytecode caches aside) with its size and modification time."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def _run(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *arguments], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks.harness``, importable as from the repository root (where scripts run)."""
    monkeypatch.syspath_prepend(str(REPO))
    import benchmarks.harness

    return benchmarks.harness


def test_the_package_holds_the_scripts_and_their_harness() -> None:
    assert (BENCHMARKS / "__init__.py").is_file()
    assert "harness" in MODULES
    assert not (BENCHMARKS / "common.py").exists()  # one shared module, not two
    assert len(MODULES) >= 12


@pytest.mark.parametrize("name", MODULES)
def test_a_benchmark_module_imports_without_side_effects_and_has_main(name: str) -> None:
    before = _files_under(BENCHMARKS)
    done = _run(["-c", PROBE.format(name=name, heavy=HEAVY)])
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"importing benchmarks.{name} printed: {done.stdout!r}"
    report = json.loads(lines[0])
    assert report["heavy"] == [], f"importing benchmarks.{name} loaded {report['heavy']}"
    assert report["main"], f"benchmarks.{name} has no main()"
    assert _files_under(BENCHMARKS) == before, f"importing benchmarks.{name} wrote files"


@pytest.mark.parametrize("name", MODULES)
def test_every_script_answers_help_as_a_module_of_the_package(name: str) -> None:
    done = _run(["-m", f"benchmarks.{name}", "--help"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m benchmarks.{name}")
    if name not in ("collect", "harness"):  # they measure nothing: no sizes, no results
        assert "--quick" in done.stdout
        assert "--results" in done.stdout


def test_no_file_in_benchmarks_edits_sys_path() -> None:
    sources = [
        path
        for path in BENCHMARKS.rglob("*")
        if path.suffix in (".py", ".md")
        and not {"work", "results"} & set(path.relative_to(BENCHMARKS).parts)
    ]
    assert len(sources) > len(MODULES)  # the scripts and the README at least
    offenders = [str(p.relative_to(REPO)) for p in sources if "sys.path" in p.read_text()]
    assert offenders == []


def test_usage_lines_name_the_module_command() -> None:
    for name in MODULES:
        text = (BENCHMARKS / f"{name}.py").read_text(encoding="utf-8")
        assert "python benchmarks/" not in text, f"{name}.py quotes the old command"
        assert f"python -m benchmarks.{name}" in text, f"{name}.py has no usage line"


def test_seeds_take_spaces_or_commas(harness: ModuleType) -> None:
    parser = harness.argument_parser("x", "Doc.", quick="q", seeds="help")
    assert parser.parse_args(["--seeds", "0", "1,2"]).seeds == [0, 1, 2]
    assert parser.parse_args([]).seeds is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--seeds", "one"])


def test_quick_results_never_replace_the_full_ones(harness: ModuleType, tmp_path: Path) -> None:
    rows = [{"setting": "a", "seconds": 1.23456}, {"setting": "b", "seconds": None}]
    for quick in (False, True):
        harness.save_results(
            "demo",
            title="Demo",
            description="Two rows.",
            rows=rows,
            columns=["setting", "seconds"],
            quick=quick,
            folder=tmp_path,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo-quick.json",
        "demo-quick.md",
        "demo.json",
        "demo.md",
    ]
    full = json.loads((tmp_path / "demo.json").read_text())
    assert full["quick"] is False and full["rows"] == rows
    assert full["command"].startswith("python -m benchmarks.demo")
    markdown = (tmp_path / "demo.md").read_text()
    assert f"on {full['machine']['cpus']} CPUs" in markdown
    assert "Command: `python -m benchmarks.demo" in markdown
    assert "| a | 1.235 |" in markdown and "| b | – |" in markdown
    assert "quick mode" in (tmp_path / "demo-quick.md").read_text()
    assert "quick mode" not in markdown


def test_wbc_subset_is_a_seeded_per_class_sample_of_real_images(
    harness: ModuleType, shared_data: Path, tmp_path: Path
) -> None:
    def picked(dest: Path, seed: int) -> dict[str, list[str]]:
        train, test = harness.wbc_subset(dest, per_class=3, test_per_class=2, seed=seed)
        return {
            f"{split.name}/{cls.name}": sorted(f.name for f in cls.glob("*.jpg"))
            for split in (train, test)
            for cls in sorted(split.iterdir())
        }

    first, again = picked(tmp_path / "a", 0), picked(tmp_path / "b", 0)
    other = picked(tmp_path / "c", 1)
    assert len(first) == 2 * len(harness.WBC_CLASSES)
    assert all(len(files) == (3 if key.startswith("train") else 2) for key, files in first.items())
    assert first == again
    assert first != other


def test_chula_group_subset_keeps_whole_field_groups(
    harness: ModuleType, shared_data: Path, tmp_path: Path
) -> None:
    import pandas as pd

    labels = pd.read_csv(harness.chula_group_subset(tmp_path, fraction=0.1))
    manifest = pd.read_csv(harness.CHULA / "manifest.csv")
    kept = set(labels["field_group"])
    whole = manifest[manifest["field_group"].isin(kept)]
    assert len(labels) == len(whole)  # every crop of a kept field, none of the others
    assert 0.05 < len(kept) / manifest["field_group"].nunique() < 0.15
    assert set(labels["label"]) == set(manifest["class_name"])  # stratified: every class
    assert (harness.CHULA / (labels["id"].iloc[0] + ".jpg")).is_file()


def test_a_failing_child_stops_the_parent_with_its_error(harness: ModuleType) -> None:
    with pytest.raises(SystemExit, match="the child failed"):
        harness.run_child("collect", {}, "collect as a child")  # collect takes no --run-one


def test_hyperbands_partial_fit_trains_as_automls_fold_fit(
    harness: ModuleType, shared_data: Path, tmp_path: Path
) -> None:
    """``partial_fold`` over a whole recipe gives the weights ``fit_fold`` gives (no drift)."""
    import keras
    import numpy as np
    import optuna
    from conftest import real_image_array

    from automl.config.space import parse_space
    from automl.nn.fit import fit_fold
    from benchmarks.search_efficiency import partial_fold

    images, labels = real_image_array(shared_data, size=32, per_class=8)
    space = {
        "backbone": {"name": "custom_cnn", "blocks": 1, "filters": 4},
        "head": {"layers": 0},
        "learning_rate": 3.0e-3,
        "batch_size": 8,
        "epochs": 2,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "ema": {"momentum": 0.9},
        # No augmentation: tf.data's parallel random flips differ from run to run even between
        # two fit_fold calls, and this compares weights exactly.
        "augment": {"flip": "none"},
    }
    params = parse_space(space, image_size=32).suggest(optuna.trial.FixedTrial({}))
    train, val = np.arange(0, len(labels), 2), np.arange(1, len(labels), 2)
    common = {"n_classes": 3, "image_size": 32, "seed": 5}
    fit = fit_fold(
        params,
        images,
        labels,
        train,
        val,
        metric="accuracy",
        save_to=tmp_path / "a.keras",
        **common,
    )
    score = partial_fold(
        params, images, labels, train, val, epochs=2, save_to=tmp_path / "b.keras", **common
    )
    assert score == pytest.approx(fit.score)
    ours, automls = (keras.saving.load_model(tmp_path / f"{n}.keras") for n in "ba")
    for mine, theirs in zip(ours.get_weights(), automls.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
