"""``ensemble.json`` as an ``EnsembleResult``: round trip, relative model paths, old manifests.

The manifest read here is a real one: the ensemble of ``tests/fixtures/study_v0_1``, written by
automl 0.1 with absolute model paths that do not exist on this machine (see
``tests/search/test_old_study.py`` for how it was made).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from automl.ensemble.manifest import EnsembleResult, Rates, Scores
from automl.ensemble.thresholds import Threshold
from automl.errors import StudyError
from automl.metrics import METRICS
from automl.search.paths import MANIFEST, StudyPaths

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "study_v0_1"
#: Every key of ensemble.json, in the order automl writes them (users and scripts read them).
KEYS = [
    "study",
    "created",
    "metric",
    "selection",
    "vote",
    "top_k",
    "class_names",
    "image_size",
    "library_size",
    "members",
    "n_models",
    "n_votes",
    "selection_curve",
    "out_of_fold",
    "out_of_fold_best_single_trial",
    "holdout",
    "threshold",
    "shortfall",
]


@pytest.fixture
def study_copy(tmp_path: Path) -> StudyPaths:
    """The old study folder copied under ``tmp_path`` (it was built elsewhere)."""
    root = tmp_path / "studies" / "study_v0_1"
    shutil.copytree(FIXTURE, root)
    return StudyPaths(root)


def _old_manifest() -> dict:
    return json.loads((FIXTURE / "ensemble" / MANIFEST).read_text(encoding="utf-8"))


def test_an_old_manifest_with_absolute_paths_finds_its_models_here(study_copy: StudyPaths) -> None:
    old = _old_manifest()
    written_at = [Path(p) for m in old["members"] for p in m["models"]]
    assert all(p.is_absolute() and not p.exists() for p in written_at)  # built elsewhere

    result = EnsembleResult.load(study_copy)
    paths = result.model_paths()
    assert len(paths) == result.n_models == 4
    for path, original in zip(paths, written_at, strict=True):
        # Same trial folder and file name, under this copy's artifacts folder.
        assert path == study_copy.root / "trials" / original.parent.name / original.name
        assert path.is_file()
    assert [m.trial for m in result.members] == [m["trial"] for m in old["members"]]
    assert result.model_weights() == [m["weight"] for m in old["members"] for _ in m["models"]]


def test_round_trip_keeps_every_key_and_value_and_writes_relative_paths(
    study_copy: StudyPaths,
) -> None:
    result = EnsembleResult.load(study_copy)
    data = result.to_json_dict()
    old = _old_manifest()
    assert list(data) == KEYS == list(old)
    for key in KEYS:
        if key != "members":
            assert data[key] == old[key], key
    for member, before in zip(data["members"], old["members"], strict=True):
        assert list(member) == list(before)
        assert {k: v for k, v in member.items() if k != "models"} == {
            k: v for k, v in before.items() if k != "models"
        }
        number = f"{member['trial']:05d}"
        assert member["models"] == [f"trials/{number}/fold_{k}.keras" for k in range(2)]

    result.save(study_copy.ensemble / MANIFEST)
    assert EnsembleResult.load(study_copy) == result
    saved = json.loads((study_copy.ensemble / MANIFEST).read_text(encoding="utf-8"))
    assert all(not Path(p).is_absolute() for m in saved["members"] for p in m["models"])


def test_the_optional_parts_round_trip(study_copy: StudyPaths) -> None:
    result = EnsembleResult.load(study_copy)
    assert result.holdout is not None
    binary = Threshold("3", 0.25, target_recall=0.9, recall=0.92, precision=0.5)
    full = replace(
        result,
        threshold=binary,
        top_k=3,
        shortfall="top_k=3 asked for, 2 completed trials have fold models",
        holdout=replace(
            result.holdout,
            ensemble_tta=result.holdout.ensemble.summary(),
            at_threshold=Rates(recall=0.875, precision=0.6),
        ),
    )
    data = full.to_json_dict()
    assert data["threshold"] == {
        "positive_class": "3",
        "threshold": 0.25,
        "target_recall": 0.9,
        "recall": 0.92,
        "precision": 0.5,
    }
    assert data["holdout"]["at_threshold"] == {"recall": 0.875, "precision": 0.6}
    assert list(data["holdout"]["ensemble_tta"]) == list(METRICS)  # a summary only
    again = EnsembleResult.from_json_dict(json.loads(json.dumps(data)), study_copy.root)
    assert again == full


def test_a_full_report_keeps_per_class_scores_and_the_confusion_matrix(
    study_copy: StudyPaths,
) -> None:
    holdout = EnsembleResult.load(study_copy).holdout
    assert holdout is not None
    report = holdout.ensemble
    old = _old_manifest()["holdout"]["ensemble"]
    assert report.n_samples == holdout.n_images == sum(map(sum, report.confusion_matrix))
    assert list(report.per_class) == [str(d) for d in range(10)]
    assert report.per_class["7"].support == old["per_class"]["7"]["support"]
    assert report.get("accuracy") == old["accuracy"]
    assert Scores.from_json_dict(old) == report
    with pytest.raises(KeyError, match="unknown metric 'f1'"):
        report.get("f1")


def test_manifests_before_weights_and_greedy_selection_read_as_they_meant(
    study_copy: StudyPaths,
) -> None:
    data = _old_manifest()
    for key in ("selection", "library_size", "n_votes", "selection_curve"):
        del data[key]
    for member in data["members"]:
        del member["weight"], member["oof_score"]
    result = EnsembleResult.from_json_dict(data, study_copy.root)
    assert result.selection == "top_k" and result.library_size == len(data["members"])
    assert result.selection_curve == () and result.model_weights() == [1, 1, 1, 1]
    assert result.n_votes == result.n_models == 4
    assert [m.oof_score for m in result.members] == [None, None]


def test_a_missing_model_or_manifest_is_a_one_line_error(study_copy: StudyPaths) -> None:
    gone = study_copy.root / "trials" / "00000" / "fold_1.keras"
    gone.unlink()
    result = EnsembleResult.load(study_copy)  # reading works: the report needs no models
    with pytest.raises(StudyError) as caught:
        result.model_paths()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{gone}: fold model of trial 0 in the ensemble is missing")
    assert "`automl ensemble --study study_v0_1` again" in message

    (study_copy.ensemble / MANIFEST).write_text("{", encoding="utf-8")
    with pytest.raises(StudyError, match="not an ensemble automl can read"):
        EnsembleResult.load(study_copy)
    (study_copy.ensemble / MANIFEST).unlink()
    with pytest.raises(StudyError, match="has no ensemble yet .* run `automl ensemble --study"):
        EnsembleResult.load(study_copy)


def test_models_outside_the_artifacts_folder_are_kept_whole(tmp_path: Path) -> None:
    data = _old_manifest()
    elsewhere = tmp_path / "elsewhere" / "fold_0.keras"
    elsewhere.parent.mkdir()
    shutil.copy(FIXTURE / "trials" / "00000" / "fold_0.keras", elsewhere)
    data["members"][0]["models"] = [str(elsewhere)]  # an absolute path that exists here
    result = EnsembleResult.from_json_dict(data, tmp_path / "artifacts")
    assert result.members[0].models == (elsewhere,)
    assert result.to_json_dict()["members"][0]["models"] == [str(elsewhere)]
