"""A study folder copied to another path still predicts and exports (the original gone).

``ensemble.json`` lists fold models relative to the artifacts folder and ``load_study`` opens a
study where its ``config.yaml`` is, so nothing points back to the folder the study was tuned in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_folder_layout, wbc_crops, write_study_yaml
from typer.testing import CliRunner

from automl.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def moved(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Tune and ensemble a real-crop study, predict once, then move the studies folder.

    Returns:
        The new studies folder, a folder of new real crops, and the predictions made before
        the move.
    """
    base = tmp_path_factory.mktemp("relocation")
    data = make_folder_layout(shared_data, base / "cells", per_class=8)
    studies = base / "studies"
    space = write_study_yaml(base / "cells.yaml", data, studies, n_trials=2, epochs="1")
    where = ["--study", "cells", "--studies-dir", str(studies), "--no-progress"]
    for args in (["tune", "--space", str(space), "--no-progress"], ["ensemble", *where]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    new_images = base / "new"
    new_images.mkdir()
    for files in wbc_crops(shared_data, per_class=10).values():  # crops the study never saw
        for file in files[8:]:
            shutil.copy2(file, new_images / file.name)
    before = base / "before.csv"
    predicted = runner.invoke(
        app, ["predict", *where, "--input", str(new_images), "--out", str(before)]
    )
    assert predicted.exit_code == 0, predicted.output

    elsewhere = base / "other_disk" / "studies"
    shutil.copytree(studies / "cells", elsewhere / "cells")
    studies.rename(base / "studies_gone")  # nothing may still point to the original
    return elsewhere, new_images, before


@pytest.mark.slow
def test_a_copied_study_predicts_the_same_as_before_it_moved(
    moved: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    studies, new_images, before = moved
    manifest = json.loads((studies / "cells" / "ensemble" / "ensemble.json").read_text())
    paths = [p for m in manifest["members"] for p in m["models"]]
    assert paths and all(p.startswith("trials/") for p in paths)  # relative to the artifacts

    out = tmp_path / "after.csv"
    where = ["--study", "cells", "--studies-dir", str(studies), "--no-progress"]
    result = runner.invoke(app, ["predict", *where, "--input", str(new_images), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"predicted 6 images with {len(paths)} models" in result.stdout
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(before))


@pytest.mark.slow
def test_a_copied_study_exports(moved: tuple[Path, Path, Path], tmp_path: Path) -> None:
    studies, _, _ = moved
    out = tmp_path / "model.keras"
    where = ["--study", "cells", "--studies-dir", str(studies)]
    result = runner.invoke(app, ["export", *where, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"exported: {out.resolve()}" in result.stdout


@pytest.mark.slow
def test_a_fold_model_missing_after_the_move_is_named_in_one_line(
    moved: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    studies, new_images, _ = moved
    copy = tmp_path / "studies"
    shutil.copytree(studies / "cells", copy / "cells")
    manifest = json.loads((copy / "cells" / "ensemble" / "ensemble.json").read_text())
    member = manifest["members"][0]
    missing = copy / "cells" / member["models"][-1]
    missing.unlink()
    where = ["--study", "cells", "--studies-dir", str(copy), "--no-progress"]
    for args in (
        ["predict", *where, "--input", str(new_images), "--out", str(tmp_path / "p.csv")],
        ["export", *where[:-1], "--out", str(tmp_path / "m.keras")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr == (
            f"error: {missing}: fold model of trial {member['trial']} in the ensemble is "
            f"missing (artifacts folder {copy / 'cells'}); restore the trial's folder, or run "
            "`automl ensemble --study cells` again to choose among trials whose models exist.\n"
        )
