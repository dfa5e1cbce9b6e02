"""A study folder made by automl 0.1, before the restructure, still works with this version.

``tests/fixtures/study_v0_1/`` was made once with the previous version (git commit 129fa34),
in a worktree, at a path that no longer exists::

    git -C /work/main worktree add /tmp/automl_prev 129fa34
    cd /tmp/automl_prev
    PYTHONPATH=/tmp/automl_prev python -m automl.cli tune \\
        --space /tmp/automl_v0_1_build/study_v0_1.yaml --no-progress
    PYTHONPATH=/tmp/automl_prev python -m automl.cli ensemble --study study_v0_1 \\
        --studies-dir /tmp/automl_v0_1_build/studies --no-progress
    git -C /work/main worktree remove --force /tmp/automl_prev

with ``study_v0_1.yaml`` equal to :data:`SPACE` (scikit-learn's digits at 8 px, 2 folds, a
hold-out, 2 random-sampled trials of a one-block CNN with 4 filters, 1 epoch, soft vote; greedy
selection weighted the trials 1 and 2). Kept: ``config.yaml``, ``splits.json``,
``study.journal``, ``trials/<number>/`` (fold models, ``oof.npz``, ``history.json``, the
out-of-fold confusion CSV) and ``ensemble/`` (``ensemble.json`` and its CSVs), about 0.5 MB. Left
out: the PNG pictures, the dashboard's ``artifacts/`` and ``previews/``, and the decoded-image
``.cache/`` beside the studies. Paths inside it (``config.yaml``'s ``studies_dir``, the trials'
``trial_dir`` attributes, ``ensemble.json``'s absolute model paths) point to
``/tmp/automl_v0_1_build/studies``, where it was built: that is the point of the test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from automl.cli.main import app

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "study_v0_1"
BUILT_AT = Path("/tmp/automl_v0_1_build/studies")
SPACE = """
study:
  name: study_v0_1
  n_trials: 2
  seed: 5
  sampler: {name: random}
  pruner: {name: none}
  studies_dir: /tmp/automl_v0_1_build/studies
data:
  format: digits
  image_size: 8
  n_folds: 2
  holdout_fraction: 0.2
space:
  backbone:
    name: custom_cnn
    blocks: 1
    filters: 4
    batchnorm: false
    pooling: flatten
  head: {layers: 0}
  learning_rate: {type: float, low: 1.0e-2, high: 5.0e-2, log: true}
  batch_size: 32
  epochs: 1
ensemble:
  vote: soft
"""

runner = CliRunner()


def _holdout_images(folder: Path) -> list[str]:
    """The study's hold-out digits as PNG files named by their ids; return the ids."""
    splits = json.loads((FIXTURE / "splits.json").read_text(encoding="utf-8"))
    ids = splits["holdout_ids"]
    # As automl's digits reader makes them: 0..16 scaled to 0..255.
    pixels = np.rint(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
    folder.mkdir()
    for image_id in ids:
        Image.fromarray(pixels[int(image_id.split("_")[1])]).save(folder / f"{image_id}.png")
    return ids


def _predict(studies: Path, images: Path, out: Path) -> pd.DataFrame:
    where = ["--study", "study_v0_1", "--studies-dir", str(studies), "--no-progress"]
    result = runner.invoke(app, ["predict", *where, "--input", str(images), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return pd.read_csv(out).set_index("id")


@pytest.mark.slow
def test_a_study_of_automl_0_1_predicts_resumes_and_ensembles(tmp_path: Path) -> None:
    assert not BUILT_AT.exists(), f"{BUILT_AT} exists: the test would not show relocation"
    studies = tmp_path / "studies"
    folder = studies / "study_v0_1"
    shutil.copytree(FIXTURE, folder)
    images = tmp_path / "holdout"
    ids = _holdout_images(images)
    old = pd.read_csv(FIXTURE / "ensemble" / "holdout_predictions.csv").set_index("id")

    # The old ensemble.json (absolute paths into BUILT_AT): the models are found here and give
    # the predictions automl 0.1 wrote for the hold-out.
    before = _predict(studies, images, tmp_path / "old_manifest.csv").loc[old.index]
    assert len(before) == len(ids) == 359
    np.testing.assert_allclose(
        before.filter(like="prob_").to_numpy(), old.filter(like="prob_").to_numpy(), atol=1e-5
    )
    assert (before["label"] == old["label"]).all() and (before["n_models"] == 6).all()

    # Resume: one more trial in this folder, written beside the old ones.
    config = folder / "config.yaml"
    tuned = runner.invoke(
        app,
        ["tune", "--space", str(config), "--studies-dir", str(studies), "--n-trials", "3"]
        + ["--no-progress"],
    )
    assert tuned.exit_code == 0, tuned.output
    assert "study:    study_v0_1 (resumed)" in tuned.stdout
    assert "3 complete, 0 pruned, 0 failed (1 run now)" in tuned.stdout
    assert sorted(p.name for p in (folder / "trials" / "00002").glob("fold_*.keras")) == [
        "fold_0.keras",
        "fold_1.keras",
    ]

    where = ["--study", "study_v0_1", "--studies-dir", str(studies), "--no-progress"]
    ensembled = runner.invoke(app, ["ensemble", *where])
    assert ensembled.exit_code == 0, ensembled.output
    assert "greedy selection from 3 trials" in ensembled.stdout
    manifest = json.loads((folder / "ensemble" / "ensemble.json").read_text(encoding="utf-8"))
    assert all(p.startswith("trials/") for m in manifest["members"] for p in m["models"])

    # The new ensemble on the hold-out images: the accuracy `ensemble` reported for them.
    after = _predict(studies, images, tmp_path / "new_manifest.csv")
    truth = load_digits().target[after.index.str.split("_").str[1].astype(int)]
    accuracy = float(np.mean(after["label"].to_numpy() == truth))
    assert accuracy == pytest.approx(manifest["holdout"]["ensemble"]["accuracy"])
    assert accuracy > 0.5  # ten classes: far above chance, so the models really ran
