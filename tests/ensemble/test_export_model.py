"""``automl export``: one Keras model that plain Keras loads in safe mode and that agrees with
``automl predict`` on real images of other sizes than the model's, at a tight tolerance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_study_yaml
from typer.testing import CliRunner

from automl.cli.main import app

runner = CliRunner()

# Plain Keras in a fresh process, no automl import: every file decoded at its own size with PIL
# (as a user would), one image per call since the sizes differ.
_PLAIN_KERAS = """
import json, sys
import numpy as np, keras
from PIL import Image
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
rows = {}
for path in sys.argv[3:]:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype="float32")[None]
    output = model.predict(pixels, verbose=0)
    rows[path] = {k: np.asarray(v)[0].tolist() for k, v in output.items()} if isinstance(
        output, dict) else {"probs": np.asarray(output)[0].tolist()}
json.dump(rows, open(sys.argv[2], "w"))
"""


def _cells3_layout(
    shared_data: Path,
    dest: Path,
    per_class: int = 20,
    classes: tuple[str, ...] = ("Platelets", "RBC", "WBC"),
) -> Path:
    """Red cells, white cells and platelets of ``bccd_cells3``: classes a tiny CNN tells apart."""
    for name in classes:
        (dest / name).mkdir(parents=True)
        for file in sorted((shared_data / "bccd_cells3" / name).glob("*.jpg"))[:per_class]:
            shutil.copy2(file, dest / name / file.name)
    return dest


def _learning(space: Path) -> Path:
    """One trial of a 16-filter CNN at a fixed, brisk learning rate: it learns in seconds."""
    space.write_text(
        space.read_text()
        .replace("n_trials: 2", "n_trials: 1")
        .replace("{type: float, low: 1.0e-3, high: 1.0e-2, log: true}", "1.0e-2")
        .replace("{type: categorical, choices: [4, 8]}", "16")
    )
    return space


def _new_images(shared_data: Path, folder: Path) -> list[Path]:
    """Real JPEGs no fold model trained on, none of them 32x32: larger WBC crops (131-367 px),
    72 px red cells, and platelets smaller than the model's size in one or both edges."""
    folder.mkdir()
    crops = shared_data / "bccd_wbc_crops" / "BCCD_cropped"
    picked = [
        *sorted((crops / "Neutrophil").glob("*.jpg"))[20:26],
        *sorted((crops / "Eosinophil").glob("*.jpg"))[20:24],
        *sorted((crops / "Lymphocyte").glob("*.jpg"))[20:24],
        *sorted((shared_data / "chula_rbc12").glob("*/*.jpg"))[:4],
        *sorted((shared_data / "bccd_cells3" / "Platelets").glob("*.jpg"))[40:44],
    ]
    copies = []
    for index, source in enumerate(picked):
        copies.append(folder / f"img{index:02d}.jpg")
        shutil.copy2(source, copies[-1])
    return copies


def _export_and_predict(
    shared_data: Path, tmp_path: Path, studies: Path
) -> tuple[dict[str, dict[str, list[float]]], pd.DataFrame, Path]:
    """Export the study's ensemble; run it in plain Keras and `automl predict` on new images."""
    model_path = tmp_path / "model.keras"
    where = ["--study", "cells", "--studies-dir", str(studies)]
    exported = runner.invoke(app, ["export", *where, "--out", str(model_path)])
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((studies / "cells" / "ensemble" / "ensemble.json").read_text())
    n_models = sum(len(m["models"]) for m in manifest["members"])
    assert f"{n_models} fold models" in exported.stdout and "ms per image" in exported.stdout

    files = _new_images(shared_data, tmp_path / "new")
    rows = tmp_path / "exported.json"
    done = subprocess.run(
        [sys.executable, "-c", _PLAIN_KERAS, str(model_path), str(rows), *map(str, files)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    by_path = json.loads(rows.read_text())
    exported_rows = {Path(path).name: row for path, row in by_path.items()}

    out = tmp_path / "p.csv"
    predicted = runner.invoke(
        app,
        ["predict", *where, "--input", str(tmp_path / "new"), "--out", str(out), "--no-progress"],
    )
    assert predicted.exit_code == 0, predicted.output
    return exported_rows, pd.read_csv(out), model_path


@pytest.mark.slow
def test_exported_ensemble_agrees_with_predict_on_real_images_of_other_sizes(
    shared_data: Path, tmp_path: Path
) -> None:
    data = _cells3_layout(shared_data, tmp_path / "cells")
    studies = tmp_path / "studies"
    # Trained long enough that the probabilities depend on the pixels (checked below): a
    # near-uniform model would agree with anything.
    space = _learning(write_study_yaml(tmp_path / "cells.yaml", data, studies, epochs="40"))
    tuned = runner.invoke(app, ["tune", "--space", str(space), "--no-progress"])
    assert tuned.exit_code == 0, tuned.output
    built = runner.invoke(
        app,
        ["ensemble", "--study", "cells", "--studies-dir", str(studies), "--vote", "soft"]
        + ["--no-progress"],
    )
    assert built.exit_code == 0, built.output

    exported_rows, frame, _ = _export_and_predict(shared_data, tmp_path, studies)
    names = json.loads((studies / "cells" / "ensemble" / "ensemble.json").read_text())[
        "class_names"
    ]
    ours = frame.set_index("id")
    ids = sorted(ours.index)
    predicted = ours.loc[ids, [f"prob_{n}" for n in names]].to_numpy()
    exported = np.array([exported_rows[f"{i}.jpg"]["probs"] for i in ids])
    assert exported.shape == predicted.shape == (22, 3)
    np.testing.assert_allclose(exported.sum(axis=1), 1.0, atol=1e-5)
    # The model is trained: its probabilities move with the image.
    assert np.ptp(predicted, axis=0).max() > 0.08, predicted
    difference = np.abs(exported - predicted)
    assert difference.max() < 1e-3, (difference.max(), difference.mean())
    assert (exported.argmax(axis=1) == predicted.argmax(axis=1)).all()


@pytest.mark.slow
def test_the_decision_threshold_is_exported_as_the_label_output(
    shared_data: Path, tmp_path: Path
) -> None:
    data = _cells3_layout(shared_data, tmp_path / "cells", per_class=16, classes=("RBC", "WBC"))
    studies = tmp_path / "studies"
    space = _learning(write_study_yaml(tmp_path / "cells.yaml", data, studies, epochs="20"))
    space.write_text(
        space.read_text().replace("ensemble:\n  top_k: 2", "ensemble:\n  target_recall: 0.9")
    )
    for args in (
        ["tune", "--space", str(space), "--no-progress"],
        ["ensemble", "--study", "cells", "--studies-dir", str(studies), "--no-progress"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    manifest = json.loads((studies / "cells" / "ensemble" / "ensemble.json").read_text())
    threshold = manifest["threshold"]
    assert threshold["positive_class"] == "WBC"

    exported_rows, frame, _ = _export_and_predict(shared_data, tmp_path, studies)
    ours = frame.set_index("id").sort_index()
    probs = np.array([exported_rows[f"{i}.jpg"]["probs"] for i in ours.index])
    labels = np.array([exported_rows[f"{i}.jpg"]["label"] for i in ours.index])
    names = manifest["class_names"]
    # The graph's label is the threshold's decision, and the one `automl predict` wrote.
    assert (labels == np.where(probs[:, 1] >= threshold["threshold"], 1, 0)).all()
    assert [names[int(k)] for k in labels] == ours["label"].tolist()
