"""Every class of one-line error the README promises, through the CLI as a user meets it.

Each case is a real mistake (a YAML typo, data that cannot be tuned, an environment that is
missing something) run through ``automl tune`` or ``automl validate``. The promise, checked for
every case: exit status 2, nothing on stdout, exactly one ``error:`` line on stderr naming where
(file or key), what was expected and found, and how to fix it, and no study folder written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder_layout, real_image_array
from typer.testing import CliRunner

from automl.cli.main import app

DIGITS = "data: {format: digits, image_size: 8, n_folds: 2}\n"
SPACE = "space: {backbone: {name: custom_cnn, blocks: 1, filters: 4}, head: {layers: 0}}\n"


def _folder_with(shared_data: Path, root: Path, extra: dict[str, bytes]) -> Path:
    data = make_folder_layout(shared_data, root / "cells", per_class=6)
    for name, content in extra.items():
        (data / name).write_bytes(content)
    return data


def _cases(shared_data: Path, root: Path) -> dict[str, tuple[str, list[str], list[str]]]:
    """name -> (YAML text, extra CLI arguments, fragments the error line must contain)."""
    images, _ = real_image_array(shared_data, 16, per_class=4)
    np.savez(root / "unlabelled.npz", images=images)
    junk = _folder_with(shared_data, root / "junk", {"Eosinophil/broken.jpg": b"not a JPEG"})
    small = make_folder_layout(shared_data, root / "small", per_class=3)
    conflict = make_folder_layout(shared_data, root / "conflict", per_class=6)
    copy = next((conflict / "Eosinophil").glob("*.jpg"))
    shutil.copy2(copy, conflict / "Lymphocyte" / "copy_of_an_eosinophil.jpg")
    folder = "data: {{format: folder, path: {}, image_size: 16, n_folds: 2}}\n"
    return {
        "unknown key": (DIGITS + "space: {lr: 0.01}\n", [], ["space.lr", "valid keys here"]),
        "number without a dot": (
            DIGITS + "space: {learning_rate: 1e-3}\n",
            [],
            ["space.learning_rate", "'1e-3' (str)", "write it with a dot: 1.0e-3"],
        ),
        "wrong type": (DIGITS + "study: {n_trials: many}\n", [], ["study.n_trials", "many"]),
        "key written twice": (
            DIGITS + "space:\n  epochs: 2\n  epochs: 3\n",
            [],
            ["key 'epochs' is written twice", "lines 3 and 4", "Delete one"],
        ),
        "sampler option value": (
            DIGITS + "study: {sampler: {name: tpe, n_startup_trials: -1}}\n",
            [],
            ["study.sampler.n_startup_trials", ">= 0", "got -1"],
        ),
        "recipe key": (
            DIGITS + "space: {schedule: linear}\n",
            [],
            ["space.schedule", "constant, cosine, cosine_restarts, plateau", "'linear'"],
        ),
        "override": (DIGITS + SPACE, ["--set", "data.n_folds=one"], ["data.n_folds", "one"]),
        "missing data folder": (
            folder.format(root / "nowhere") + SPACE,
            [],
            ["data.path", "does not exist", "check the path"],
        ),
        "unreadable image": (
            folder.format(junk) + SPACE,
            [],
            ["data.path", "broken.jpg", "on_unreadable: skip"],
        ),
        "too many folds": (
            folder.format(small).replace("n_folds: 2", "n_folds: 5") + SPACE,
            [],
            ["data.n_folds=5", "has 2 images", "use n_folds <="],
        ),
        "unlabelled npz": (
            f"data: {{format: npz, path: {root / 'unlabelled.npz'}, image_size: 16}}\n" + SPACE,
            [],
            ["data: 12 of 12 images have no label", "labels_key"],
        ),
        "identical images, different labels": (
            folder.format(conflict) + SPACE,
            [],
            ["copy_of_an_eosinophil", "automl audit"],
        ),
        "target recall on 10 classes": (
            DIGITS + SPACE + "ensemble: {target_recall: 0.9}\n",
            [],
            ["ensemble.target_recall", "10 classes", "remove ensemble.target_recall"],
        ),
        "missing database driver": (
            DIGITS + SPACE,
            ["--storage", "mysql+pymysql://user:s3cret@127.0.0.1/automl"],
            ["study.storage", "no database driver", "user:***@"],
        ),
        "offline ImageNet weights": (
            DIGITS.replace("image_size: 8", "image_size: 32")
            + "space: {backbone: {name: mobilenetv3_small, weights: imagenet}}\n",
            [],
            ["weights_mobilenet_v3_small", "could not be downloaded", "weights: none"],
        ),
    }


CASE_NAMES = [
    "unknown key",
    "number without a dot",
    "wrong type",
    "key written twice",
    "sampler option value",
    "recipe key",
    "override",
    "missing data folder",
    "unreadable image",
    "too many folds",
    "unlabelled npz",
    "identical images, different labels",
    "target recall on 10 classes",
    "missing database driver",
    "offline ImageNet weights",
]


@pytest.fixture(scope="module")
def cases(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _cases(shared_data, tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_each_promised_error_is_one_line_exit_2_and_writes_nothing(
    cases: dict, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, extra, fragments = cases[name]
    # No cached ImageNet weights: the offline case must really try the download.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    space = tmp_path / "study.yaml"
    space.write_text(text, encoding="utf-8")
    studies = tmp_path / "studies"
    result = CliRunner().invoke(
        app,
        ["tune", "--space", str(space), "--studies-dir", str(studies), "--no-progress", *extra],
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, (name, result.output, result.exception)
    assert result.stdout == "" and len(errors) == 1, (name, result.stderr)
    for fragment in fragments:
        assert fragment in errors[0], (name, fragment, errors[0])
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
    assert not (studies / "study").exists()  # the default study name is the file's stem


def test_every_case_built_is_run(cases: dict) -> None:
    assert sorted(cases) == sorted(CASE_NAMES)
