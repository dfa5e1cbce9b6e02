"""The shipped search spaces: they load, validate on real data, and the quick start runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import make_medmnist_npz
from typer.testing import CliRunner

from automl.cli.main import app
from automl.config.schema import load_config

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.mark.parametrize("name", ["quickstart", "bloodcells"])
def test_shipped_spaces_load(name: str) -> None:
    config = load_config(REPO / "search_spaces" / f"{name}.yaml")
    assert config.study.name == name


def test_bloodcells_enqueues_the_seed_configuration_first() -> None:
    config = load_config(REPO / "search_spaces" / "bloodcells.yaml")
    seed = config.study.enqueue[0]
    assert seed["backbone"] == "convnext_tiny"
    assert seed["backbone.convnext_tiny.unfrozen_layers"] == 15
    assert [seed[f"head.units_{i}"] for i in range(3)] == [512, 256, 128]
    assert seed["optimizer"] == "lion" and seed["learning_rate"] == pytest.approx(1.0e-3)


def test_bloodcells_validates_on_a_local_medmnist_file(shared_data: Path, tmp_path: Path) -> None:
    # The offline route the file documents: a local copy in the MedMNIST layout.
    npz = make_medmnist_npz(shared_data, tmp_path / "bloodmnist_64.npz", size=64, per_class=24)
    result = runner.invoke(
        app,
        [
            "validate",
            "--space",
            str(REPO / "search_spaces" / "bloodcells.yaml"),
            "--set",
            "data.format=npz",
            "--set",
            f"data.path={npz}",
            "--set",
            "data.test.format=npz",
            "--set",
            f"data.test.path={npz}",
            "--samples",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "5 folds" in result.stdout
    assert "backbone.convnext_tiny.unfrozen_layers: int [0, 40]" in result.stdout


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    space = str(REPO / "search_spaces" / "quickstart.yaml")
    tuned = runner.invoke(app, ["tune", "--space", space, "--n-trials", "3", "--no-progress"])
    assert tuned.exit_code == 0, tuned.output
    assert (tmp_path / "studies" / "quickstart" / "study.journal").is_file()
    ensembled = runner.invoke(app, ["ensemble", "--study", "quickstart", "--no-progress"])
    assert ensembled.exit_code == 0, ensembled.output
    holdout = pd.read_csv(
        tmp_path / "studies" / "quickstart" / "ensemble" / "holdout_predictions.csv"
    )
    accuracy = (holdout["label"].astype(str) == holdout["true_label"].astype(str)).mean()
    assert len(holdout) == 360 or len(holdout) == 359
    assert accuracy > 0.8  # real digits: a working pipeline learns them; chance is 0.1
