"""Ensemble selection on out-of-fold probabilities: the greedy guarantee, ties, weights, speed.

The pure-numpy tests use seeded synthetic probability stacks (arrays of model outputs, not
images); the last test runs the whole ``automl ensemble`` on a tiny real study of scikit-learn's
digits.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from automl.config.methods import VoteMethod
from automl.ensemble.selection import (
    MAX_STEPS,
    Selection,
    SelectionStep,
    greedy_selection,
    top_k_selection,
)
from automl.ensemble.voting import vote
from automl.metrics import METRICS, score_predictions

VOTES = VoteMethod.names()


def _library(
    seed: int, n_trials: int = 8, n_samples: int = 400, n_classes: int = 4
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Out-of-fold-like probabilities of trials of varied skill, labels and CV values.

    Each trial's softmax puts an extra logit on the true class, more for better trials, plus
    noise, so trials disagree in places and a vote can beat its best member.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_samples)
    skill = rng.uniform(0.2, 2.0, n_trials)
    logits = rng.normal(size=(n_trials, n_samples, n_classes))
    logits[:, np.arange(n_samples), labels] += skill[:, np.newaxis]
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=2, keepdims=True)
    values = (skill + rng.normal(scale=0.3, size=n_trials)).tolist()  # CV value ~ skill
    return probabilities.astype(np.float32), labels, values


def _score(metric: str, labels: np.ndarray, stack: np.ndarray, method: str, weights=None) -> float:
    """The reference score: voting.vote, then scikit-learn's metric."""
    result = vote(stack, method, weights)
    return score_predictions(metric, labels, result.labels, result.probabilities)


@pytest.mark.parametrize("method", VOTES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", range(4))
def test_greedy_never_scores_below_the_best_single_trial(
    seed: int, metric: str, method: str
) -> None:
    probabilities, labels, values = _library(seed)
    trials = list(range(10, 10 + len(values)))
    chosen = greedy_selection(
        probabilities, labels, trials, values, metric=metric, vote_method=method
    )
    singles = [_score(metric, labels, p[np.newaxis], method) for p in probabilities]
    assert chosen.best_single_score == pytest.approx(max(singles), abs=1e-12)
    assert chosen.score >= max(singles) - 1e-12
    # Each step strictly improves on the one before; the weights are the repetitions.
    scores = [step.score for step in chosen.curve]
    assert all(b > a for a, b in zip(scores, scores[1:], strict=False))
    assert [step.step for step in chosen.curve] == list(range(1, len(scores) + 1))
    assert sum(w for _, w in chosen.weights) == len(chosen.curve) <= MAX_STEPS
    assert chosen.curve[0].trial == chosen.best_single_trial == chosen.members[0]
    # The incremental scores are what voting.vote and scikit-learn give for the members.
    index = {t: i for i, t in enumerate(trials)}
    stack = probabilities[[index[t] for t in chosen.members]]
    weights = [w for _, w in chosen.weights]
    assert chosen.score == pytest.approx(_score(metric, labels, stack, method, weights), abs=1e-9)
    assert chosen.library_size == len(trials) and chosen.method == "greedy"


def test_greedy_keeps_out_a_weak_majority_that_top_k_lets_in() -> None:
    # One strong trial and four identical weak ones ranked above it by CV value (a fixed top 5
    # lets them outvote the strong one); greedy adds none of them.
    probabilities, labels, _ = _library(0, n_trials=2)
    strong = probabilities[0].copy()
    strong[np.arange(len(labels)), labels] += 3.0
    strong /= strong.sum(axis=1, keepdims=True)
    weak = np.roll(np.eye(4, dtype=np.float32)[labels], 1, axis=1) * 0.7 + 0.075  # always wrong
    stack = np.stack([strong, weak, weak, weak, weak])
    values = [0.8, 0.9, 0.9, 0.9, 0.9]
    trials = [0, 1, 2, 3, 4]
    top = top_k_selection(
        stack, labels, trials, values, 5, metric="accuracy", vote_method="majority"
    )
    assert top.members == (1, 2, 3, 4, 0) and top.score == 0.0
    greedy = greedy_selection(
        stack, labels, trials, values, metric="accuracy", vote_method="majority"
    )
    assert greedy.weights == ((0, 1),)
    assert greedy.score == pytest.approx(
        _score("accuracy", labels, strong[np.newaxis], "majority")
    )
    assert greedy.score > 0.9


def test_one_trial_is_the_whole_ensemble() -> None:
    probabilities, labels, values = _library(1, n_trials=1)
    for metric in METRICS:
        chosen = greedy_selection(
            probabilities, labels, [7], values, metric=metric, vote_method="majority"
        )
        # Adding the only trial again changes no vote: no strict improvement, one step.
        assert chosen.weights == ((7, 1),)
        assert len(chosen.curve) == 1 and chosen.library_size == 1
        assert chosen.score == chosen.best_single_score


def test_ties_go_to_the_better_study_value_then_the_lower_trial_number() -> None:
    probabilities, labels, _ = _library(2, n_trials=1)
    same = np.repeat(probabilities, 3, axis=0)  # three trials with identical predictions
    by_value = greedy_selection(
        same, labels, [3, 4, 5], [0.5, 0.7, 0.6], metric="accuracy", vote_method="soft"
    )
    assert by_value.weights == ((4, 1),)
    by_number = greedy_selection(
        same, labels, [5, 4, 3], [0.6, 0.6, 0.6], metric="accuracy", vote_method="soft"
    )
    assert by_number.weights == ((3, 1),)
    minimized = greedy_selection(
        same,
        labels,
        [3, 4, 5],
        [0.5, 0.7, 0.6],
        metric="accuracy",
        vote_method="soft",
        direction="minimize",
    )
    assert minimized.members[0] == 3


def test_a_strong_trial_can_be_chosen_more_than_once() -> None:
    # Soft vote of a confident strong trial and two middling ones: weighting the strong one up
    # fixes samples the middling ones would otherwise outvote.
    found = False
    for seed in range(10):
        probabilities, labels, values = _library(seed, n_trials=6)
        chosen = greedy_selection(
            probabilities, labels, list(range(6)), values, metric="accuracy", vote_method="soft"
        )
        found = found or any(weight > 1 for _, weight in chosen.weights)
    assert found, "no library in ten made greedy repeat a trial"


def test_max_steps_caps_the_selection() -> None:
    probabilities, labels, values = _library(3, n_trials=10)
    chosen = greedy_selection(
        probabilities,
        labels,
        list(range(10)),
        values,
        metric="roc_auc",
        vote_method="soft",
        max_steps=3,
    )
    assert len(chosen.curve) <= 3


def test_top_k_takes_the_best_values_and_records_the_curve() -> None:
    probabilities, labels, values = _library(4, n_trials=6)
    trials = [20, 21, 22, 23, 24, 25]
    chosen = top_k_selection(
        probabilities, labels, trials, values, 3, metric="macro_f1", vote_method="majority"
    )
    ranked = [t for _, t in sorted(zip(values, trials, strict=True), key=lambda p: -p[0])]
    assert chosen.members == tuple(ranked[:3])
    assert all(w == 1 for _, w in chosen.weights)
    for step in chosen.curve:
        members = [trials.index(t) for t in ranked[: step.step]]
        expected = _score("macro_f1", labels, probabilities[members], "majority")
        assert step.score == pytest.approx(expected, abs=1e-12)
    singles = [_score("macro_f1", labels, p[np.newaxis], "majority") for p in probabilities]
    assert chosen.best_single_score == pytest.approx(max(singles))


def test_selection_round_trips_through_json() -> None:
    probabilities, labels, values = _library(5)
    chosen = greedy_selection(
        probabilities, labels, list(range(8)), values, metric="roc_auc", vote_method="majority"
    )
    again = Selection.from_dict(json.loads(json.dumps(chosen.to_dict())))
    assert again == chosen
    assert isinstance(again.curve[0], SelectionStep)
    assert again.weight_of(chosen.members[0]) >= 1 and again.weight_of(-1) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trials": [0, 1]}, "one of each per trial"),
        ({"metric": "f2"}, "metric must be one of"),
        ({"vote_method": "hard"}, "vote_method must be one of majority, soft"),
        ({"direction": "up"}, "direction must be"),
        ({"labels": np.zeros(3, dtype=int)}, "labels must be 400 integer"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict, message: str) -> None:
    probabilities, labels, values = _library(6, n_trials=3)
    arguments = {
        "labels": labels,
        "trials": [0, 1, 2],
        "values": values,
        "metric": "accuracy",
        "vote_method": "majority",
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        greedy_selection(probabilities, **arguments)


def test_every_study_metric_has_a_greedy_formula_and_a_new_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from automl.ensemble import selection

    computed = selection._Scorer.FROM_LABELS + selection._Scorer.FROM_PROBABILITIES
    assert set(METRICS) <= set(computed), "a study metric greedy selection cannot score"
    # Two trials, three images: a metric added to METRICS without a formula is refused by
    # name, never scored as macro-F1.
    stack = np.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [[0.7, 0.3], [0.4, 0.6], [0.3, 0.7]]])
    monkeypatch.setattr(selection, "METRICS", (*METRICS, "log_loss"))
    with pytest.raises(ValueError, match="greedy selection cannot score metric 'log_loss'"):
        greedy_selection(
            stack, np.array([0, 1, 1]), [0, 1], [0.9, 0.8], metric="log_loss", vote_method="soft"
        )


def test_a_large_library_takes_seconds() -> None:
    # 30 trials x 16,000 out-of-fold samples x 12 classes, ROC AUC (the slowest metric); on a
    # shared 2-core machine the full 50 steps take ~6 s, so 10 steps should be well under 15 s.
    probabilities, labels, values = _library(7, n_trials=30, n_samples=16_000, n_classes=12)
    started = time.perf_counter()
    chosen = greedy_selection(
        probabilities,
        labels,
        list(range(30)),
        values,
        metric="roc_auc",
        vote_method="majority",
        max_steps=10,
    )
    assert time.perf_counter() - started < 15
    assert len(chosen.curve) == 10


# --- a real study ----------------------------------------------------------------------------


DIGITS_STUDY = """
study:
  name: digits_sel
  n_trials: 3
  seed: 3
  sampler: {{name: random}}
  pruner: {{name: none}}
  studies_dir: {studies}
data:
  format: digits
  image_size: 8
  n_folds: 2
  holdout_fraction: 0.2
space:
  backbone:
    name: custom_cnn
    blocks: 1
    filters: {{type: categorical, choices: [2, 4, 8]}}
    batchnorm: false
    pooling: flatten
  head: {{layers: 0}}
  learning_rate: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
  batch_size: 64
  epochs: 1
ensemble:
  vote: soft
"""


@pytest.fixture(scope="module")
def digits_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tuned 3-trial study on scikit-learn's digits (1 epoch, 2 folds, 8 px) and its ensemble.

    Returns the studies folder and the stdout of ``automl ensemble`` (default: greedy).
    """
    from automl.cli.main import app

    base = tmp_path_factory.mktemp("digits_selection")
    studies = base / "studies"
    space = base / "digits_sel.yaml"
    space.write_text(DIGITS_STUDY.format(studies=studies), encoding="utf-8")
    runner = CliRunner()
    tuned = runner.invoke(app, ["tune", "--space", str(space), "--no-progress"])
    assert tuned.exit_code == 0, tuned.output
    where = ["--study", "digits_sel", "--studies-dir", str(studies), "--no-progress"]
    ensembled = runner.invoke(app, ["ensemble", *where])
    assert ensembled.exit_code == 0, ensembled.output
    return studies, ensembled.stdout


def test_greedy_on_a_real_study_beats_or_ties_every_single_trial(
    digits_study: tuple[Path, str],
) -> None:
    from automl.ensemble.build import load_manifest
    from automl.search.paths import trial_folder
    from automl.search.storage import load_study
    from automl.search.tune import prepare_splits

    studies, out = digits_study
    config, study = load_study("digits_sel", studies)
    manifest = load_manifest(config)
    assert "greedy selection from 3 trials" in out
    assert manifest.selection == "greedy" and manifest.library_size == 3
    assert manifest.top_k is None
    curve = manifest.selection_curve
    assert [step.step for step in curve] == list(range(1, len(curve) + 1))
    for step in curve:  # one printed line per step
        assert f"step {step.step:>2}: +trial {step.trial}" in out
    for member in manifest.members:
        assert f"#{member.trial} x{member.weight} " in out
    assert sum(m.weight for m in manifest.members) == len(curve)
    assert manifest.n_votes == sum(m.weight * len(m.models) for m in manifest.members)
    assert "hold-out (" in out and "best trial #" in out

    # Every trial's own out-of-fold accuracy, from its oof.npz: the ensemble is not below any.
    labels = prepare_splits(config).tuning.labels
    singles = []
    for trial in study.trials:
        with np.load(trial_folder(config, trial.number) / "oof.npz") as archive:
            singles.append(np.mean(archive["probabilities"].argmax(axis=1) == labels))
    assert manifest.out_of_fold is not None and manifest.holdout is not None
    assert manifest.out_of_fold.accuracy >= max(singles) - 1e-12
    assert curve[0].score == pytest.approx(max(singles))
    best = manifest.out_of_fold_best_single_trial
    assert best is not None and best.trial == manifest.holdout.best_single_trial.trial
    assert manifest.out_of_fold.accuracy >= best.scores.accuracy


def test_top_k_and_option_checks_on_the_cli(digits_study: tuple[Path, str]) -> None:
    from automl.cli.main import app

    studies, _ = digits_study
    where = ["--study", "digits_sel", "--studies-dir", str(studies), "--no-progress"]
    runner = CliRunner()
    conflict = runner.invoke(app, ["ensemble", *where, "--selection", "greedy", "--top", "2"])
    assert conflict.exit_code == 2 and conflict.stdout == ""
    assert conflict.stderr.startswith("error: top_k (--top) sets the size of a top_k ensemble")
    bad = runner.invoke(app, ["ensemble", *where, "--selection", "best"])
    assert bad.exit_code == 2
    assert bad.stderr == "error: --selection must be one of greedy, top_k, got 'best'.\n"
    # --top alone means top_k, as before greedy selection existed; the greedy run is restored.
    try:
        top = runner.invoke(app, ["ensemble", *where, "--top", "2"])
        assert top.exit_code == 0, top.output
        assert "2 trials x folds = 4 models (4 votes), soft vote, top_k selection" in top.stdout
        assert "step  2: +trial" in top.stdout and "step  3" not in top.stdout
        assert "note:" not in top.stdout
        # More members asked for than trials exist: said on the summary and in the manifest.
        many = runner.invoke(app, ["ensemble", *where, "--top", "5"])
        assert many.exit_code == 0, many.output
        assert "note:     top_k=5 asked for, 3 completed trials have fold models" in many.stdout
        manifest = json.loads((studies / "digits_sel" / "ensemble" / "ensemble.json").read_text())
        assert manifest["shortfall"] == "top_k=5 asked for, 3 completed trials have fold models"
    finally:
        again = runner.invoke(app, ["ensemble", *where])
        assert again.exit_code == 0, again.output


def test_weights_reach_predict_and_export_and_old_manifests_mean_weight_1(
    digits_study: tuple[Path, str], tmp_path: Path
) -> None:
    import keras
    import pandas as pd
    from PIL import Image
    from sklearn.datasets import load_digits

    from automl.data.readers import read_images
    from automl.ensemble.build import load_manifest, trial_library
    from automl.ensemble.export_model import export_ensemble
    from automl.ensemble.manifest import EnsembleMember
    from automl.ensemble.predict import run_predict
    from automl.files import write_json
    from automl.nn.inference import predict_probabilities
    from automl.search.paths import MANIFEST, paths_for, trial_folder
    from automl.search.storage import load_study

    studies, _ = digits_study
    config, study = load_study("digits_sel", studies)
    path = paths_for(config).ensemble / MANIFEST
    saved = load_manifest(config)
    # Two members weighted 3 and 1, written as `automl ensemble` writes them.
    library = trial_library(study, lambda number: trial_folder(config, number))[:2]
    weighted = replace(
        saved,
        members=tuple(
            EnsembleMember(m.trial, m.cv_value, m.models, weight=w)
            for m, w in zip(library, (3, 1), strict=True)
        ),
    )
    folder = tmp_path / "digits"
    folder.mkdir()
    pixels = np.rint(load_digits().images[:6] * (255.0 / 16.0)).astype(np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"d{i}.png")
    images, _ = read_images(sorted(folder.glob("*.png")), config.data.image_size)
    models = [p for m in library for p in m.models]
    per_model = predict_probabilities([Path(p) for p in models], images)
    repeats = [w for m, w in zip(library, (3, 1), strict=True) for _ in m.models]
    try:
        weighted.save(path)
        out = tmp_path / "weighted.csv"
        result = run_predict(config, folder, out)
        frame = pd.read_csv(out).sort_values("id")
        probabilities = frame.filter(like="prob_").to_numpy()
        np.testing.assert_allclose(
            probabilities, np.average(per_model, axis=0, weights=repeats), atol=1e-9
        )
        assert result.n_models == len(models)  # fold model files; the CSV counts votes
        assert frame["n_models"].eq(sum(repeats)).all()

        exported = export_ensemble(config, tmp_path / "model.keras", latency_runs=1)
        assert exported.n_models == len(models)
        model = keras.saving.load_model(exported.path, safe_mode=True)
        from_export = model.predict(images.astype("float32"), verbose=0)
        np.testing.assert_allclose(from_export, probabilities, atol=1e-5)

        # A manifest from before weights existed: every fold model votes once.
        old = weighted.to_json_dict()
        for member in old["members"]:
            del member["weight"]
        write_json(path, old)
        run_predict(config, folder, tmp_path / "old.csv")
        old_frame = pd.read_csv(tmp_path / "old.csv").sort_values("id")
        np.testing.assert_allclose(
            old_frame.filter(like="prob_").to_numpy(), per_model.mean(axis=0), atol=1e-9
        )
        assert old_frame["n_models"].eq(len(models)).all()
    finally:
        saved.save(path)


def test_trials_without_oof_are_not_candidates_and_none_at_all_is_an_error(
    digits_study: tuple[Path, str],
) -> None:
    from automl.cli.main import app
    from automl.search.paths import MANIFEST, paths_for, trial_folder
    from automl.search.storage import load_study

    studies, _ = digits_study
    config, study = load_study("digits_sel", studies)
    manifest_path = paths_for(config).ensemble / MANIFEST
    saved = manifest_path.read_text(encoding="utf-8")
    first = json.loads(saved)["selection_curve"][0]["trial"]  # the best trial out-of-fold
    hidden = {t.number: trial_folder(config, t.number) / "oof.npz" for t in study.trials}
    where = ["--study", "digits_sel", "--studies-dir", str(studies), "--no-progress"]
    runner = CliRunner()
    try:
        hidden[first].rename(hidden[first].with_suffix(".hidden"))
        result = runner.invoke(app, ["ensemble", *where])
        assert result.exit_code == 0, result.output
        assert f"trials {first} have no usable oof.npz" in result.stderr
        members = json.loads(manifest_path.read_text())["members"]
        assert first not in [m["trial"] for m in members]
        assert "greedy selection from 2 trials" in result.stdout
        for number, path in hidden.items():
            if number != first:
                path.rename(path.with_suffix(".hidden"))
        result = runner.invoke(app, ["ensemble", *where])
        assert result.exit_code == 2 and result.stdout == ""
        error = result.stderr.strip().splitlines()[-1]  # after the data-loading log lines
        assert error.startswith("error: study 'digits_sel': no completed trial has usable ")
        assert "out-of-fold predictions (oof.npz)" in error and "--selection top_k" in error
    finally:
        for path in hidden.values():
            if path.with_suffix(".hidden").exists():
                path.with_suffix(".hidden").rename(path)
        manifest_path.write_text(saved, encoding="utf-8")


def test_the_rule_between_selection_and_top_k_lives_in_the_library() -> None:
    from automl.config.methods import SelectionMethod
    from automl.config.schema import config_from_dict
    from automl.ensemble.build import choose_selection
    from automl.errors import ConfigError

    greedy = config_from_dict({"data": {"format": "digits"}}, source="t.yaml", default_name="t")
    assert choose_selection(greedy, None, None) is SelectionMethod.GREEDY  # the file's
    assert choose_selection(greedy, None, 3) is SelectionMethod.TOP_K  # top_k alone: top_k
    assert choose_selection(greedy, "top_k", 3) is SelectionMethod.TOP_K
    with pytest.raises(ConfigError, match=r"top_k \(--top\) sets the size of a top_k ensemble"):
        choose_selection(greedy, "greedy", 3)  # refused, never silently ignored
    with pytest.raises(ConfigError, match="selection .* must be one of greedy, top_k"):
        choose_selection(greedy, "best", None)
