"""Dashboard material and ``automl report`` on a finished real-image study.

One small study is built once (and shared with ``tests/cli/test_dashboard_browser.py``): two
completed trials with augmentation, one trial the threshold pruner stops at its first report, an
ensemble, and a report before and after the ensemble. The tests then check what the dashboard and
the report show: user attributes, artifacts, notes and the report's sections.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import optuna
import optuna_dashboard
import pandas as pd
import pytest
from conftest import FINISHED, STUDY, build_finished_study
from optuna.artifacts import download_artifact, get_all_artifact_meta
from optuna.trial import TrialState
from PIL import Image
from typer.testing import CliRunner

from automl.cli.main import app
from automl.nn.memory import PeakMemory
from automl.search.artifacts import TRIAL_PICTURES, trial_note
from automl.search.paths import (
    AUGMENTATION_PREVIEW,
    LEARNING_CURVES,
    OOF_CONFUSION_CSV,
    OOF_CONFUSION_PNG,
    PREVIEWS_DIR,
)
from automl.search.storage import load_study


@pytest.fixture(scope="module")
def studies(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_finished_study(shared_data, tmp_path_factory.mktemp("finished"))


@pytest.fixture(scope="module")
def study(studies: Path) -> optuna.Study:
    return load_study(STUDY, studies)[1]


def _completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_the_study_has_completed_and_pruned_trials(study: optuna.Study) -> None:
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.PRUNED,
    ]
    assert study.metric_names == ["accuracy"]  # the dashboard names the objective


def test_every_trial_records_folds_time_parameters_and_peak_memory(study: optuna.Study) -> None:
    for trial in study.trials:
        attrs = trial.user_attrs
        assert attrs["n_params"] > 0 and attrs["n_trainable_params"] > 0
        assert attrs["train_seconds"] > 0
        assert attrs["peak_rss_mb"] > 50  # a process running TensorFlow holds far more
        assert 0 <= attrs["peak_rss_delta_mb"] <= attrs["peak_rss_mb"]
    for trial in _completed(study):
        attrs = trial.user_attrs
        assert len(attrs["fold_scores"]) == 2
        assert np.mean(attrs["fold_scores"]) == pytest.approx(trial.value, abs=1e-5)
        assert attrs["cv_std"] == pytest.approx(np.std(attrs["fold_scores"]), abs=1e-5)
        assert attrs["epochs_per_fold"] == [2, 2]
    pruned = study.trials[2].user_attrs
    assert pruned["pruned_at_step"] == 0 and pruned["epochs_per_fold"] == [1]


def test_completed_trials_carry_their_pictures_as_artifacts(
    study: optuna.Study, studies: Path, tmp_path: Path
) -> None:
    from automl.search.artifacts import artifact_store

    store = artifact_store(studies / STUDY)
    for trial in _completed(study):
        metas = get_all_artifact_meta(trial, storage=study._storage)
        assert sorted(m.filename for m in metas) == sorted(TRIAL_PICTURES)
        assert {m.mimetype for m in metas} == {"image/png"}
        for meta in metas:
            copy = tmp_path / f"{trial.number}_{meta.filename}"
            download_artifact(
                artifact_store=store, file_path=str(copy), artifact_id=meta.artifact_id
            )
            with Image.open(copy) as image:
                image.verify()
            with Image.open(copy) as image:
                assert image.format == "PNG" and min(image.size) > 200
        folder = Path(trial.user_attrs["trial_dir"])
        for name in TRIAL_PICTURES:  # the same pictures stay in the trial's folder
            assert (folder / name).is_file()
    assert get_all_artifact_meta(study.trials[2], storage=study._storage) == []  # pruned


def test_the_oof_confusion_matrix_counts_every_out_of_fold_sample(study: optuna.Study) -> None:
    for trial in _completed(study):
        folder = Path(trial.user_attrs["trial_dir"])
        matrix = pd.read_csv(folder / OOF_CONFUSION_CSV, index_col=0)
        with np.load(folder / "oof.npz") as oof:
            probabilities = oof["probabilities"]
        assert (
            list(matrix.index)
            == list(matrix.columns)
            == ["Eosinophil", "Lymphocyte", "Neutrophil"]
        )
        assert int(matrix.to_numpy().sum()) == len(probabilities) == 18
        assert matrix.to_numpy().sum(axis=1).tolist() == [6, 6, 6]  # true class counts
        predicted = np.bincount(probabilities.argmax(axis=1), minlength=3)
        assert matrix.to_numpy().sum(axis=0).tolist() == predicted.tolist()
        with Image.open(folder / OOF_CONFUSION_PNG) as image:
            assert image.format == "PNG"


def test_learning_curves_and_augmentation_preview_open_as_images(study: optuna.Study) -> None:
    folder = Path(_completed(study)[0].user_attrs["trial_dir"])
    with Image.open(folder / LEARNING_CURVES) as curves:
        assert (
            curves.format == "PNG" and curves.size[0] > curves.size[1]
        )  # two panels side by side
    with Image.open(folder / AUGMENTATION_PREVIEW) as preview:
        # 4 rows (one image per class first) x (original + 3 augmented): taller than wide.
        assert preview.format == "PNG" and preview.size[1] > preview.size[0] * 0.9


def test_augmentation_preview_is_drawn_once_per_setting(study: optuna.Study) -> None:
    # Both completed trials share the study's fixed augmentation: one drawing, copied to both.
    folders = [Path(t.user_attrs["trial_dir"]) for t in _completed(study)]
    assert len(folders) == 2
    drawn = sorted((folders[0].parents[1] / PREVIEWS_DIR).iterdir())
    assert [p.suffix for p in drawn] == [".png"]  # no half-written temporary left beside it
    pictures = {(folder / AUGMENTATION_PREVIEW).read_bytes() for folder in folders}
    assert pictures == {drawn[0].read_bytes()}


def _note(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    return optuna_dashboard.get_note(optuna.trial.Trial(study, trial._trial_id))


def test_every_trial_has_a_note_saying_how_it_went(study: optuna.Study) -> None:
    for trial in _completed(study):
        note = _note(study, trial)
        assert note.startswith(f"## Trial {trial.number}: complete")
        assert f"**accuracy {trial.value:.4f} ± {trial.user_attrs['cv_std']:.4f}**" in note
        for fold, score in enumerate(trial.user_attrs["fold_scores"]):
            assert f"| {fold} | {score:.4f} | 2 |" in note
        assert "| `learning_rate` |" in note and "peak memory" in note
    pruned = _note(study, study.trials[2])
    assert pruned.startswith("## Trial 2: pruned")
    assert "Pruned** by the threshold pruner at step 0 (fold 0, epoch 1)" in pruned
    assert "| 0 | (not finished) | 1 |" in pruned


def test_the_ensemble_leaves_a_study_note(study: optuna.Study, studies: Path) -> None:
    manifest = json.loads((studies / STUDY / "ensemble" / "ensemble.json").read_text())
    note = optuna_dashboard.get_note(study)
    assert note.startswith("## Ensemble")
    assert f"**{manifest['n_models']} models**, **majority** vote, **greedy** selection" in note
    for member in manifest["members"]:
        weight, cv = member["weight"], member["cv_value"]
        assert (
            f"| {member['trial']} | {weight} | {cv:.4f} | {member['oof_score']:.4g} | 2 |" in note
        )
    assert manifest["selection_curve"], "greedy selection records at least its first step"
    for step in manifest["selection_curve"]:
        assert f"| {step['step']} | {step['trial']} | {step['score']:.4f} |" in note
    accuracy = manifest["holdout"]["ensemble"]["accuracy"]
    assert f"| hold-out (6 images): ensemble | {accuracy:.4g} |" in note
    assert "best single trial" in note and "| true \\ predicted |" in note


def test_a_failed_trial_note_gives_the_reason() -> None:
    trial = optuna.trial.create_trial(
        state=TrialState.FAIL,
        params={"learning_rate": 1e36},
        distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e40)},
        user_attrs={"fail_reason": "loss became NaN in fold 0 after 1 epoch(s)"},
    )
    note = trial_note(trial, "fail", metric="accuracy", stride=2, pruner="median")
    assert "**Failed:** loss became NaN in fold 0 after 1 epoch(s)" in note
    assert "| `learning_rate` | 1e+36 |" in note


def test_peak_memory_sees_an_allocation_made_during_the_trial() -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("per-trial peak memory needs Linux's /proc/self/clear_refs")
    meter = PeakMemory()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MB, touched
    del block
    attrs = meter.user_attrs()
    assert attrs["peak_rss_delta_mb"] >= 60


_SECTIONS = (
    "summary",
    "optimization-history",
    "param-importances",
    "parallel-coordinates",
    "intermediate-values",
    "leaderboard",
    "ensemble-vs-single",
    "holdout-confusion-matrix",
    "per-class",
    "roc-curves",
)


_SAME_VALUES = "importances need completed trials with at least two different values"


def _section(page: str, section_id: str) -> str:
    match = re.search(f'<section id="{section_id}">(.*?)</section>', page, re.S)
    assert match, f"section {section_id} missing"
    return match.group(1)


def test_the_report_is_one_html_page_with_every_section(studies: Path) -> None:
    folder = studies / STUDY / "report"
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert f"report:   {folder / 'report.html'}" in FINISHED["stdout"].read_text()
    pictures = [
        "optimization_history.png",
        "param_importances.png",
        "parallel_coordinates.png",
        "intermediate_values.png",
        "holdout_confusion_matrix.png",
        "roc_curves.png",
    ]
    for section_id in _SECTIONS:
        body = _section(page, section_id)
        if section_id == "param-importances" and _SAME_VALUES in body:
            # Tiny trials at chance level may tie; then the report says why there is no plot.
            pictures.remove("param_importances.png")
            assert not (folder / "param_importances.png").exists()
            continue
        assert "Not available" not in body, (section_id, body[:300])
    assert page.count('src="data:image/png;base64,') == len(pictures)  # self-contained
    assert "<img" not in page.replace('<img alt="', "")  # no image loads from elsewhere
    for name in pictures:
        with Image.open(folder / name) as image:  # and the PNGs lie beside it
            assert image.format == "PNG"


def test_the_report_tables_hold_the_study_numbers(study: optuna.Study, studies: Path) -> None:
    page = (studies / STUDY / "report" / "report.html").read_text(encoding="utf-8")
    leaderboard = _section(page, "leaderboard")
    ranked = sorted(_completed(study), key=lambda t: (-t.value, t.number))
    for rank, trial in enumerate(ranked, start=1):
        mean_std = f"{trial.value:.4f} ± {trial.user_attrs['cv_std']:.4f}"
        folds = " ".join(f"{s:.3f}" for s in trial.user_attrs["fold_scores"])
        row = f"<td>{rank}</td><td>{trial.number}</td><td>complete</td><td>{mean_std}</td>"
        assert row + f"<td>{folds}</td>" in leaderboard
    assert '<tr class="pruned"><td></td><td>2</td><td>pruned</td>' in leaderboard
    assert "(last report)" in leaderboard and "pruned at step 0" in leaderboard
    assert "step 0 (fold 0, epoch 1)" in _section(page, "intermediate-values")
    manifest = json.loads((studies / STUDY / "ensemble" / "ensemble.json").read_text())
    per_class = _section(page, "per-class")
    for name, scores in manifest["holdout"]["ensemble"]["per_class"].items():
        assert f"<th>{name}</th><td>{scores['precision']:.4f}</td>" in per_class
    comparison = _section(page, "ensemble-vs-single")
    assert "hold-out (6 images): ensemble" in comparison
    assert f"best single trial #{manifest['holdout']['best_single_trial']['trial']}" in comparison
    assert "greedy selection from 2 trials" in comparison
    for member in manifest["members"]:
        assert f"#{member['trial']} x{member['weight']} ({member['cv_value']:.4f})" in comparison
    curve = comparison.split('class="selection-curve"')[1]
    for step in manifest["selection_curve"]:
        row = f"<tr><td>{step['step']}</td><td>{step['trial']}</td><td>{step['score']:.4f}</td>"
        assert row in curve
    assert "One-vs-rest" in _section(page, "roc-curves")


def test_show_and_the_report_rank_the_trials_alike(studies: Path) -> None:
    # One ranking (search/ranking.py): completed best first, the pruned trial after them.
    import re

    page = (studies / STUDY / "report" / "report.html").read_text(encoding="utf-8")
    in_report = [
        int(n)
        for n in re.findall(r"<tr[^>]*><td>\d*</td><td>(\d+)</td>", _section(page, "leaderboard"))
    ]
    shown = CliRunner().invoke(app, ["show", "--study", STUDY, "--studies-dir", str(studies)])
    assert shown.exit_code == 0, shown.output
    in_show = [
        int(m.group(1))
        for m in re.finditer(r"^\s*(\d+)  (?:complete|pruned|fail|running)", shown.stdout, re.M)
    ]
    assert in_show == in_report and len(in_show) == 3
    assert in_show[-1] == 2  # the pruned trial


def test_a_report_before_the_ensemble_says_how_to_get_one(studies: Path) -> None:
    page = (studies.parent / "report_before_ensemble.html").read_text(encoding="utf-8")
    assert f"No ensemble yet: run <code>automl ensemble --study {STUDY}</code>" in page
    assert '<section id="roc-curves">' not in page
    assert '<section id="leaderboard">' in page


def test_a_plot_that_fails_fails_the_report_command(
    studies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only "not enough trials" may become a "Not available" sentence; a real error (here a
    # broken plot function) must stop the command with a non-zero status.
    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib backend exploded")

    monkeypatch.setattr(optuna.visualization.matplotlib, "plot_optimization_history", broken)
    result = CliRunner().invoke(app, ["report", "--study", STUDY, "--studies-dir", str(studies)])
    assert result.exit_code != 0
    assert isinstance(result.exception, RuntimeError)
