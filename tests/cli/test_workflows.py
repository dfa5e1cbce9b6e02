"""The users' workflows as shipped search spaces, run end to end on real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import wbc_crops
from PIL import Image
from typer.testing import CliRunner

from automl.cli.main import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _kaggle_layout(shared_data: Path, root: Path) -> Path:
    """Kaggle histopathology layout from real crops: train/<id>.tif, train_labels.csv, test/."""
    crops = wbc_crops(shared_data, per_class=20, classes=("Neutrophil", "Lymphocyte"))
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for label, files in enumerate(crops.values()):  # 1 = Lymphocyte plays the positive class
        for file in files[:16]:
            with Image.open(file) as image:
                image.save(root / "train" / f"{file.stem}.tif")
            rows.append({"id": file.stem, "label": label})
        for file in files[16:]:
            with Image.open(file) as image:
                image.save(root / "test" / f"{file.stem}.tif")
    pd.DataFrame(rows).to_csv(root / "train_labels.csv", index=False)
    return root


@pytest.mark.slow
def test_histopathology_workflow(shared_data: Path, tmp_path: Path) -> None:
    data = _kaggle_layout(shared_data, tmp_path / "histo")
    studies = tmp_path / "studies"
    common = [
        "--set",
        f"data.path={data / 'train'}",
        "--set",
        f"data.labels_csv={data / 'train_labels.csv'}",
        "--set",
        "data.image_size=32",
        "--set",
        "data.n_folds=2",
        "--set",
        "data.holdout_fraction=0.25",
        # Offline test machine: random initialisation instead of the ImageNet download.
        "--set",
        "space.backbone.choices.resnet50v2.weights=none",
        "--set",
        "space.epochs=2",
        "--set",
        "space.batch_size=8",
    ]
    space = str(REPO / "search_spaces" / "histopathology.yaml")
    validated = _invoke("validate", "--space", space, *common)
    assert "metric roc_auc" in validated.stdout
    _invoke(
        "tune",
        "--space",
        space,
        *common,
        "--n-trials",
        "2",
        "--studies-dir",
        str(studies),
        "--no-progress",
    )
    ensembled = _invoke(
        "ensemble", "--study", "histopathology", "--studies-dir", str(studies), "--no-progress"
    )
    manifest = json.loads((studies / "histopathology" / "ensemble" / "ensemble.json").read_text())
    # The hold-out figures at the chosen threshold are computed from the hold-out predictions
    # (recomputed here from the CSV the command wrote) and reported on the command's line.
    threshold = manifest["threshold"]["threshold"]
    rows = pd.read_csv(studies / "histopathology" / "ensemble" / "holdout_predictions.csv")
    called = rows["prob_1"] >= threshold
    positive = rows["true_label"].astype(str) == "1"
    recall = (called & positive).sum() / positive.sum()
    precision = (called & positive).sum() / max(called.sum(), 1)
    at = manifest["holdout"]["at_threshold"]
    assert at["recall"] == pytest.approx(recall) and at["precision"] == pytest.approx(precision)
    assert (
        f"hold-out recall {at['recall']:.4f}, precision {at['precision']:.4f}" in ensembled.stdout
    )

    submission = tmp_path / "submission.csv"
    _invoke(
        "predict",
        "--study",
        "histopathology",
        "--studies-dir",
        str(studies),
        "--input",
        str(data / "test"),
        "--out",
        str(submission),
        "--format",
        "kaggle",
        "--no-progress",
    )
    frame = pd.read_csv(submission)
    assert list(frame.columns) == ["id", "label"]
    assert sorted(frame["id"]) == sorted(p.stem for p in (data / "test").glob("*.tif"))
    assert frame["label"].between(0, 1).all()  # positive-class probability, as Kaggle scores

    labelled = tmp_path / "labelled.csv"
    predicted = _invoke(
        "predict",
        "--study",
        "histopathology",
        "--studies-dir",
        str(studies),
        "--input",
        str(data / "test"),
        "--out",
        str(labelled),
        "--no-progress",
    )
    assert "threshold: '1' at p >= " in predicted.stdout
    rows = pd.read_csv(labelled)
    threshold = manifest["threshold"]["threshold"]
    expected = (rows["prob_1"] >= threshold).map({True: 1, False: 0})
    assert (rows["label"] == expected).all()


@pytest.mark.slow
def test_small_grayscale_workflow(shared_data: Path, tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    space = str(REPO / "search_spaces" / "small_grayscale.yaml")
    quick = ["--set", "space.epochs=2", "--studies-dir", str(studies)]
    validated = _invoke("validate", "--space", space, "--set", "space.epochs=2")
    assert "backbone.custom_cnn.initializer: categorical" in validated.stdout
    _invoke("tune", "--space", space, *quick, "--n-trials", "3", "--no-progress")
    ensembled = _invoke(
        "ensemble",
        "--study",
        "small_grayscale",
        "--studies-dir",
        str(studies),
        "--tta",
        "--no-progress",
    )
    assert "hold-out (359 images)" in ensembled.stdout
    assert "ensemble + TTA (flips)" in ensembled.stdout
    images = tmp_path / "digits"
    images.mkdir()
    for file in sorted(
        (shared_data / "bccd_wbc_crops" / "BCCD_cropped" / "Basophil").glob("*.jpg")
    ):
        shutil.copy2(file, images / file.name)
    out = tmp_path / "p.csv"
    _invoke(
        "predict",
        "--study",
        "small_grayscale",
        "--studies-dir",
        str(studies),
        "--input",
        str(images),
        "--out",
        str(out),
        "--tta",
        "--no-progress",
    )
    assert len(pd.read_csv(out)) == 3


def _binary_imbalanced_folders(shared_data: Path, root: Path) -> Path:
    """benign/malignant class folders from real crops, 3:1 imbalanced (RBC vs WBC stand-ins)."""
    cells = shared_data / "bccd_cells3"
    for name, source, count in (("benign", "RBC", 24), ("malignant", "WBC", 8)):
        (root / name).mkdir(parents=True)
        for file in sorted((cells / source).glob("*.jpg"))[:count]:
            shutil.copy2(file, root / name / file.name)
    return root


@pytest.mark.slow
def test_breast_histology_workflow(shared_data: Path, tmp_path: Path) -> None:
    data = _binary_imbalanced_folders(shared_data, tmp_path / "breast")
    studies = tmp_path / "studies"
    space = str(REPO / "search_spaces" / "breast_histology.yaml")
    common = [
        "--set",
        f"data.path={data}",
        "--set",
        "data.image_size=32",
        "--set",
        "data.n_folds=2",
        "--set",
        "data.holdout_fraction=0.25",
        # Offline test machine: random initialisation instead of the ImageNet download.
        "--set",
        "space.backbone.choices.vgg16.weights=none",
        "--set",
        "space.backbone.choices.resnet50.weights=none",
        "--set",
        "space.epochs=4",
        "--set",
        "space.batch_size=8",
    ]
    validated = _invoke("validate", "--space", space, *common)
    assert "metric macro_f1" in validated.stdout
    # The portfolio runs first: the hand-written CNN, then a partial fine-tune of each backbone.
    assert "  portfolio:cnn: " in validated.stdout
    assert "  portfolio:resnet50_finetune: " in validated.stdout
    _invoke(
        "tune",
        "--space",
        space,
        *common,
        "--n-trials",
        "2",
        "--studies-dir",
        str(studies),
        "--no-progress",
    )
    from automl.search.storage import load_study

    _, study = load_study("breast_histology", studies)
    assert len(study.directions) == 2  # macro-F1 up, latency down
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    assert len(complete) == 2
    for trial in complete:
        for key in ("n_params", "model_size_mb", "latency_ms_per_image"):
            assert trial.user_attrs[key] > 0, key
        assert trial.values[1] == trial.user_attrs["latency_ms_per_image"]
        assert trial.intermediate_values == {}  # multi-objective trials are not pruned
    shown = _invoke("show", "--study", "breast_histology", "--studies-dir", str(studies))
    assert "Pareto front]" in shown.stdout
    report = _invoke("report", "--study", "breast_histology", "--studies-dir", str(studies))
    assert "report.html" in report.stdout
    _invoke(
        "ensemble", "--study", "breast_histology", "--studies-dir", str(studies), "--no-progress"
    )
    manifest = json.loads(
        (studies / "breast_histology" / "ensemble" / "ensemble.json").read_text()
    )
    per_class = manifest["holdout"]["ensemble"]["per_class"]
    assert set(per_class) == {"benign", "malignant"}
    assert per_class["malignant"]["support"] == 2 and per_class["benign"]["support"] == 6
    assert {"recall", "f1"} <= set(per_class["malignant"])
    model = tmp_path / "model.keras"
    exported = _invoke(
        "export", "--study", "breast_histology", "--studies-dir", str(studies), "--out", str(model)
    )
    assert model.is_file() and "ms per image" in exported.stdout
