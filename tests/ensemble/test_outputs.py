"""Tests for automl.ensemble.outputs, automl.files and automl.plots: table forms, atomic writes,
confusion-matrix files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from automl.ensemble.outputs import kaggle_frame, predictions_frame
from automl.ensemble.voting import Vote, majority_vote, soft_vote
from automl.errors import ConfigError
from automl.files import atomic_write_text, write_frame_csv, write_json
from automl.plots import write_confusion_matrix

BINARY_NAMES = ["normal", "tumor"]
BLOOD_NAMES = ["basophil", "eosinophil", "erythroblast"]


def _binary_vote() -> Vote:
    # Three models, four samples.
    positive = np.array(
        [[0.1, 0.7, 0.4, 0.9], [0.2, 0.6, 0.7, 0.8], [0.3, 0.4, 0.6, 0.95]], dtype=np.float32
    )
    return majority_vote(np.stack([1 - positive, positive], axis=2))


def _multiclass_vote() -> Vote:
    probabilities = np.array(
        [
            [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]],
            [[0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1]],
        ]
    )
    return soft_vote(probabilities)


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot serialise")

    __repr__ = __str__


def _leftovers(folder: Path) -> list[str]:
    # Temporary names are hidden and hold ".tmp" before the destination's suffix.
    return sorted(path.name for path in folder.iterdir() if ".tmp" in path.name)


def test_predictions_frame_columns_and_rows(tmp_path: Path) -> None:
    vote = _multiclass_vote()
    frame = predictions_frame(["a.png", "b.png", "c.png"], BLOOD_NAMES, vote)
    expected = ["id", "label", *(f"prob_{name}" for name in BLOOD_NAMES), "votes", "n_models"]
    assert list(frame.columns) == expected
    assert len(frame) == 3
    assert frame["label"].tolist() == ["basophil", "erythroblast", "eosinophil"]
    probability_columns = frame[[f"prob_{name}" for name in BLOOD_NAMES]]
    np.testing.assert_allclose(probability_columns.sum(axis=1), 1.0)

    path = tmp_path / "predictions.csv"
    write_frame_csv(path, frame)
    reread = pd.read_csv(path)
    assert list(reread.columns) == expected
    assert len(reread) == 3
    assert reread["votes"].dtype.kind == "i"
    assert (reread["n_models"] == 2).all()
    np.testing.assert_allclose(reread[probability_columns.columns].sum(axis=1), 1.0)


def test_kaggle_binary_writes_the_positive_probability() -> None:
    vote = _binary_vote()
    ids = ["p1", "p2", "p3", "p4"]
    frame = kaggle_frame(ids, BINARY_NAMES, vote)
    assert list(frame.columns) == ["id", "label"]
    assert frame["id"].tolist() == ids
    np.testing.assert_allclose(frame["label"], vote.probabilities[:, 1])
    flipped = kaggle_frame(ids, BINARY_NAMES, vote, positive_class="normal")
    np.testing.assert_allclose(flipped["label"] + frame["label"], 1.0, rtol=1e-6)


def test_kaggle_multiclass_writes_class_names() -> None:
    frame = kaggle_frame([10, 11, 12], BLOOD_NAMES, _multiclass_vote())
    assert list(frame.columns) == ["id", "label"]
    assert frame["label"].tolist() == ["basophil", "erythroblast", "eosinophil"]


def test_unknown_positive_class_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="'normal', 'tumor'.*got 'Tumor'"):
        kaggle_frame(["p1", "p2", "p3", "p4"], BINARY_NAMES, _binary_vote(), "Tumor")
    with pytest.raises(ValueError, match="class names"):
        kaggle_frame([1, 2, 3], BLOOD_NAMES, _multiclass_vote(), positive_class="monocyte")


def test_sizes_must_agree() -> None:
    with pytest.raises(ValueError, match="ids has 2 entries"):
        predictions_frame(["a", "b"], BLOOD_NAMES, _multiclass_vote())
    with pytest.raises(ValueError, match="class_names has 2 entries"):
        predictions_frame(["a", "b", "c"], BINARY_NAMES, _multiclass_vote())


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "submission.csv"
    write_frame_csv(path, pd.DataFrame({"id": [1], "label": ["old"]}))
    before = path.read_bytes()
    # Enough good rows that pandas has written part of the file before the bad one.
    broken = pd.DataFrame({"id": range(5000), "label": ["x"] * 4999 + [_Unprintable()]})
    with pytest.raises(RuntimeError, match="cannot serialise"):
        write_frame_csv(path, broken)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_atomic_write_text_replaces_and_creates_folders(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "notes.txt"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text(encoding="utf-8") == "second"
    assert _leftovers(path.parent) == []
    assert [entry.name for entry in path.parent.iterdir()] == ["notes.txt"]


def test_write_json_converts_numpy_and_nan(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_json(
        path,
        {
            "accuracy": np.float32(0.5),
            "n_samples": np.int64(7),
            "confusion_matrix": np.eye(2, dtype=np.int64),
            "roc_auc": float("nan"),
            "folder": tmp_path,
            "vote": _multiclass_vote(),
        },
    )
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text
    data = json.loads(text)
    assert data["accuracy"] == 0.5
    assert data["n_samples"] == 7
    assert data["confusion_matrix"] == [[1, 0], [0, 1]]
    assert data["roc_auc"] is None
    assert data["folder"] == str(tmp_path)
    assert data["vote"]["n_models"] == 2
    assert text.startswith('{\n  "accuracy"')


def test_write_json_rejects_unknown_types_without_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_json(path, {"ok": True})
    with pytest.raises(TypeError, match="object"):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": True}
    assert _leftovers(tmp_path) == []


def test_confusion_matrix_files(tmp_path: Path) -> None:
    confusion = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 4]])
    csv_path, png_path = tmp_path / "confusion.csv", tmp_path / "confusion.png"
    write_confusion_matrix(csv_path, png_path, confusion, BLOOD_NAMES, "Hold-out, 3 models")

    table = pd.read_csv(csv_path, index_col=0)
    assert table.index.tolist() == BLOOD_NAMES
    assert table.columns.tolist() == BLOOD_NAMES
    assert table.to_numpy().sum() == confusion.sum() == 20
    np.testing.assert_array_equal(table.to_numpy(), confusion)

    with Image.open(png_path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > 300 and height > 300
    assert _leftovers(tmp_path) == []


def test_confusion_matrix_must_match_the_class_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3x3"):
        write_confusion_matrix(
            tmp_path / "c.csv", tmp_path / "c.png", np.eye(2, dtype=int), BLOOD_NAMES, "t"
        )
    assert list(tmp_path.iterdir()) == []


def test_many_classes_still_render(tmp_path: Path) -> None:
    names = [f"class with a long name {index}" for index in range(12)]
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 50, size=(12, 12))
    write_confusion_matrix(tmp_path / "c.csv", tmp_path / "c.png", confusion, names, "Twelve")
    with Image.open(tmp_path / "c.png") as image:
        assert image.format == "PNG"
    assert pd.read_csv(tmp_path / "c.csv", index_col=0).to_numpy().sum() == confusion.sum()
