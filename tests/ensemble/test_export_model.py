"""``automl export``: one Keras model that plain Keras loads in safe mode and that agrees with
the ensemble's soft vote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_folder_layout, real_image_array, write_study_yaml
from typer.testing import CliRunner

from automl.cli.main import app

runner = CliRunner()


@pytest.mark.slow
def test_exported_ensemble_loads_in_plain_keras_and_matches_predict(
    shared_data: Path, tmp_path: Path
) -> None:
    data = make_folder_layout(shared_data, tmp_path / "cells", per_class=8)
    studies = tmp_path / "studies"
    space = write_study_yaml(tmp_path / "cells.yaml", data, studies, n_trials=2, epochs="1")
    for args in (
        ["tune", "--space", str(space), "--no-progress"],
        [
            "ensemble",
            "--study",
            "cells",
            "--studies-dir",
            str(studies),
            "--vote",
            "soft",
            "--no-progress",
        ],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    model_path = tmp_path / "model.keras"
    exported = runner.invoke(
        app,
        ["export", "--study", "cells", "--studies-dir", str(studies), "--out", str(model_path)],
    )
    assert exported.exit_code == 0, exported.output
    # Greedy selection (the default) decides how many trials, so read the count it saved.
    manifest = json.loads((studies / "cells" / "ensemble" / "ensemble.json").read_text())
    n_models = sum(len(m["models"]) for m in manifest["members"])
    assert f"{n_models} fold models" in exported.stdout and "ms per image" in exported.stdout

    # Plain Keras in a fresh process, no automl import: raw pixels of another size go in.
    images, _ = real_image_array(shared_data, 48, per_class=2)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, keras\n"
        "model = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
        "probabilities = model.predict(np.load(sys.argv[2]).astype('float32'), verbose=0)\n"
        "np.save(sys.argv[3], probabilities)\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(model_path),
            str(tmp_path / "images.npy"),
            str(tmp_path / "out.npy"),
        ],
        check=True,
        capture_output=True,
    )
    exported_probabilities = np.load(tmp_path / "out.npy")
    assert exported_probabilities.shape == (len(images), 3)
    np.testing.assert_allclose(exported_probabilities.sum(axis=1), 1.0, atol=1e-5)

    # The same images through `automl predict` (soft vote = mean probability) agree.
    folder = tmp_path / "new"
    folder.mkdir()
    from PIL import Image

    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"img{i:02d}.png")
    out = tmp_path / "p.csv"
    predicted = runner.invoke(
        app,
        [
            "predict",
            "--study",
            "cells",
            "--studies-dir",
            str(studies),
            "--input",
            str(folder),
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    frame = pd.read_csv(out).sort_values("id")
    ours = frame.filter(like="prob_").to_numpy()
    np.testing.assert_allclose(exported_probabilities, ours, atol=0.02)
