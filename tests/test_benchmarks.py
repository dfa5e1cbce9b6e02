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
    """Every file below ``folder`` with its size and modification time.

    Bytecode caches aside, and ``work/``: a benchmark running meanwhile (they take an hour)
    writes its runs there.
    """
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.relative_to(folder).parts[0] != "work"
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


# --- model_quality's parts ---------------------------------------------------------------------

QUALITY_PARTS = sorted(
    path.stem for path in (BENCHMARKS / "quality").glob("*.py") if path.stem != "__init__"
)
LIGHT_PROBE = """
import json, sys
import benchmarks.quality.{name}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


@pytest.mark.parametrize("name", QUALITY_PARTS)
def test_model_qualitys_parts_import_without_heavy_modules(name: str) -> None:
    done = _run(["-c", LIGHT_PROBE.format(name=name, heavy=HEAVY)])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [], f"benchmarks.quality.{name} loads heavy modules"


def test_the_decision_rule_needs_margin_interval_and_every_seed() -> None:
    from benchmarks.quality.stats import rule

    def verdict(mean, span, per_seed, a=False, b=False):
        return rule(mean, span, per_seed, a_degenerate=a, b_degenerate=b)[0]

    both = {0: 0.03, 1: 0.03}
    assert verdict(0.03, (0.01, 0.05), both) == "ahead"
    assert verdict(-0.03, (-0.05, -0.01), {0: -0.03, 1: -0.03}) == "behind"
    assert verdict(0.015, (0.01, 0.02), both) == "inconclusive"  # under the 0.02 margin
    assert verdict(0.03, (-0.01, 0.05), both) == "inconclusive"  # the interval includes 0
    assert verdict(0.03, (0.01, 0.05), {0: 0.09, 1: -0.03}) == "inconclusive"  # seed 1 behind
    assert verdict(0.03, (0.01, 0.05), both, a=True) == "inconclusive"  # A degenerate
    assert verdict(-0.03, (-0.05, -0.01), {0: -0.03, 1: -0.03}, b=True) == "inconclusive"
    reason = rule(0.03, (0.01, 0.05), {0: 0.09, 1: -0.03}, a_degenerate=False, b_degenerate=False)
    assert "seed 1" in reason[1]


def _real_holdout(harness: ModuleType):
    """The benchmark's fixed hold-out: real labels and field groups of chula_rbc12."""
    import numpy as np

    from benchmarks.quality import data, stats

    holdout, _ = data.holdout_and_rest(quick=False)
    names = sorted(holdout["class_name"].unique())
    labels = np.array([names.index(n) for n in holdout["class_name"]])
    return stats.Holdout.from_lists(labels, holdout["field_group"], len(names))


def test_the_bootstrap_resamples_whole_field_groups(
    harness: ModuleType, shared_data: Path
) -> None:
    import numpy as np
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    from benchmarks.quality import stats

    holdout = _real_holdout(harness)
    rng = np.random.default_rng(0)
    predicted = np.where(rng.random(len(holdout.labels)) < 0.6, holdout.labels, 0)
    point = stats.point_scores(holdout, predicted)
    assert point["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(holdout.labels, predicted), abs=1e-4
    )
    assert point["macro_f1"] == pytest.approx(
        f1_score(holdout.labels, predicted, average="macro"), abs=1e-4
    )
    assert point["accuracy"] == pytest.approx(accuracy_score(holdout.labels, predicted), abs=1e-4)
    weights = stats.group_weights(holdout.n_groups, 3, rng)
    assert (weights.sum(axis=1) == holdout.n_groups).all()
    resampled = stats.resampled(holdout, predicted, weights)
    for row, value in zip(weights, resampled, strict=True):  # the crops of the drawn groups
        crops = np.concatenate(
            [np.repeat(np.flatnonzero(holdout.groups == g), n) for g, n in enumerate(row)]
        )
        expected = balanced_accuracy_score(holdout.labels[crops], predicted[crops])
        assert value == pytest.approx(expected)


def test_compare_pairs_the_arms_and_a_degenerate_vote_is_never_ahead(
    harness: ModuleType, shared_data: Path
) -> None:
    import numpy as np

    from benchmarks.quality import stats

    holdout = _real_holdout(harness)
    y, rng = holdout.labels, np.random.default_rng(1)
    noisy = {s: np.where(rng.random(len(y)) < 0.5, y, (y + 1) % 12) for s in (0, 1)}
    perfect = {s: (y, noisy[s]) for s in (0, 1)}
    assert stats.compare(holdout, perfect).verdict == "ahead"
    assert stats.compare(holdout, {s: (b, a) for s, (a, b) in perfect.items()}).verdict == "behind"
    same = stats.compare(holdout, {s: (noisy[s], noisy[s]) for s in (0, 1)})
    assert same.mean == 0 and same.interval == (0.0, 0.0) and same.verdict == "inconclusive"
    one_class = np.zeros_like(y)  # balanced accuracy 1/12 against a vote that is always wrong
    degenerate = stats.compare(holdout, {0: (one_class, (y + 1) % 12)})
    assert degenerate.mean > stats.MARGIN and degenerate.verdict == "inconclusive"
    assert "degenerate" in degenerate.reason
    learned, _ = stats.learns(holdout, {0: noisy[0]})
    assert learned and not stats.learns(holdout, {0: one_class})[0]


def test_the_hold_out_and_the_pools_are_fixed_disjoint_field_groups(
    harness: ModuleType, shared_data: Path, tmp_path: Path
) -> None:
    import pandas as pd

    from benchmarks.quality import data

    files = data.write_data(
        tmp_path / "a", pool_fraction=0.35, ablation_fraction=0.25, quick=False
    )
    again = data.write_data(
        tmp_path / "b", pool_fraction=0.35, ablation_fraction=0.25, quick=False
    )
    frames = {n: pd.read_csv(getattr(files, n)) for n in ("holdout", "pool", "ablation_pool")}
    for name, frame in frames.items():
        assert frame.equals(pd.read_csv(getattr(again, name)))  # the same in every run
        assert frame["label"].nunique() == 12  # stratified: every class
    groups = {n: set(f["field_group"]) for n, f in frames.items()}
    assert not groups["holdout"] & groups["pool"]
    assert groups["ablation_pool"] <= groups["pool"]
    every = harness.chula_manifest()["field_group"].nunique()
    assert 0.15 < len(groups["holdout"]) / every < 0.25
    assert 0.30 < len(groups["pool"]) / (every - len(groups["holdout"])) < 0.40


def test_every_ablation_factor_is_an_automl_space_changing_one_thing() -> None:
    import optuna

    from automl.config.space import parse_space
    from benchmarks.quality.ablation import FACTORS, factor_space

    def params(factor: str) -> dict:
        space = parse_space(factor_space(factor, 8), image_size=32)
        return space.suggest(optuna.trial.FixedTrial({}))

    floor = params("floor")
    changed = {}
    for factor in FACTORS[1:-1]:
        mine = params(factor)
        changed[factor] = sorted(k for k in floor if mine[k] != floor[k])
    assert changed == {
        "cosine": ["schedule", "warmup_epochs"],
        "ema": ["ema"],
        "mix": ["augment"],
        "resnet": ["backbone"],
        "balanced": ["class_weight"],
        "smoothing": ["label_smoothing"],
    }
    every = params("all")
    assert sorted(k for k in floor if every[k] != floor[k]) == sorted(
        k for keys in changed.values() for k in keys
    )


def test_a_deadline_answers_the_parent_then_ends_the_child() -> None:
    code = (
        "import time\n"
        "from benchmarks import harness\n"
        "with harness.deadline(0.5, lambda: {'stopped': 'deadline'}):\n"
        "    time.sleep(30)\n"
    )
    done = _run(["-c", code])
    assert done.returncode == 0
    assert done.stdout.strip() == 'RESULT {"stopped": "deadline"}'


def test_results_record_the_commit(harness: ModuleType) -> None:
    state = harness.git_state()
    assert state["commit"] is None or len(state["commit"]) == 40
    assert state["dirty"] in (True, False, None)


def test_collect_marks_results_made_before_the_harness_rewrite(harness: ModuleType) -> None:
    from benchmarks.collect import stale_note

    assert "Stale" in stale_note("overhead", {"command": "benchmarks/overhead.py"})
    assert stale_note("overhead", {"command": "python -m benchmarks.overhead"}) is None
    old_design = {"command": "python -m benchmarks.model_quality"}
    assert "previous design" in stale_note("model_quality", old_design)


def test_the_replay_votes_automls_greedy_members_with_their_weights() -> None:
    from types import SimpleNamespace

    import numpy as np

    from automl.ensemble.manifest import EnsembleMember
    from benchmarks.quality import arms, stats

    rng = np.random.default_rng(0)
    classes, tuning, holdout = 12, rng.integers(0, 12, 600), rng.integers(0, 12, 300)

    def probabilities(labels: np.ndarray, strength: float) -> np.ndarray:
        p = rng.random((len(labels), classes))
        p[np.arange(len(labels)), labels] += strength
        return p / p.sum(axis=1, keepdims=True)

    strengths = (0.25, 0.3, 0.28, 0.05)
    oof = {t: probabilities(tuning, s) for t, s in enumerate(strengths)}
    folds = {
        t: np.stack([probabilities(holdout, s) for _ in range(3)]) for t, s in enumerate(strengths)
    }
    members = [
        EnsembleMember(
            t, float((oof[t].argmax(1) == tuning).mean()), (Path("m"),) * 3, oof_path=Path("o")
        )
        for t in oof
    ]
    config = SimpleNamespace(
        study=SimpleNamespace(metric="balanced_accuracy", direction="maximize"),
        ensemble=SimpleNamespace(vote="soft"),
    )
    scored = stats.Holdout.from_lists(holdout, rng.integers(0, 20, 300), classes)
    chosen = arms.greedy_members(config, members, oof, tuning)
    assert len(chosen) > 1  # weak, different trials: greedy takes several
    point = arms.replay_point(1.0, 4, chosen, 1, folds, config, scored)
    stack = np.concatenate([folds[t] for t in chosen])
    weights = np.repeat(list(chosen.values()), 3)[:, None, None]
    assert point["ensemble"] == (stack * weights).sum(axis=0).argmax(axis=1).tolist()
    assert point["best"] == folds[1].mean(axis=0).argmax(axis=1).tolist()
    assert point["ensemble_score"] >= point["best_score"]
