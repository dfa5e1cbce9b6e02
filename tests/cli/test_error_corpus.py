"""Every class of one-line error the README promises, through the CLI as a user meets it.

Each case is a real mistake (a YAML typo, data that cannot be tuned, an environment that is
missing something) run through ``automl tune``. The promise, checked for every case: exit status
2, nothing on stdout, exactly one ``error:`` line on stderr naming where (file or key), what was
expected and found, and how to fix it, and no study folder written. Run again with ``--debug``,
the same case raises the library's own exception, of the class the case names, whose message is
that line: the CLI rewords nothing, and the corpus meets every class of input error.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_csv_layout, make_folder_layout, real_image_array
from typer.testing import CliRunner

import automl.errors
from automl.cli.main import app
from automl.errors import AutoMLError, ConfigError, DataError, SpaceError, StudyError
from automl.nn.models import WeightsUnavailableError

DIGITS = "data: {format: digits, image_size: 8, n_folds: 2}\n"
SPACE = "space: {backbone: {name: custom_cnn, blocks: 1, filters: 4}, head: {layers: 0}}\n"


def _folder_with(shared_data: Path, root: Path, extra: dict[str, bytes]) -> Path:
    data = make_folder_layout(shared_data, root / "cells", per_class=6)
    for name, content in extra.items():
        (data / name).write_bytes(content)
    return data


Case = tuple[str, list[str], list[str], type[AutoMLError]]


def _non_utf8_folder(shared_data: Path, root: Path) -> Path | None:
    data = make_folder_layout(shared_data, root / "latin1", per_class=6)
    real = next((data / "Eosinophil").glob("*.jpg"))
    try:
        with open(os.fsencode(data / "Lymphocyte") + b"/caf\xe9.jpg", "wb") as handle:
            handle.write(real.read_bytes())
    except (OSError, UnicodeError):  # a file system that stores UTF-8 names only
        return None
    return data


def _grouped_csv(shared_data: Path, root: Path) -> tuple[Path, Path]:
    """Real Chula crops, 12 per class, the teardrops from 2 smear fields only."""
    chula = shared_data / "chula_rbc12"
    manifest = pd.read_csv(chula / "manifest.csv")
    rows = []
    for name, n_groups in (("normal_cell", 6), ("teardrop", 2)):
        cells = manifest[manifest.class_name == name]
        sizes = cells.groupby("field_group").size()
        for field in [g for g in sizes.index if sizes[g] >= 12 // n_groups][:n_groups]:
            for file in sorted(cells[cells.field_group == field].file)[: 12 // n_groups]:
                rows.append({"id": file.removesuffix(".jpg"), "label": name, "group": field})
    csv_path = root / "grouped.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return chula, csv_path


def _cases(shared_data: Path, root: Path) -> dict[str, Case]:
    """name -> (YAML text, extra CLI arguments, fragments the error line must contain, the
    exception the library raises)."""
    images, _ = real_image_array(shared_data, 16, per_class=4)
    np.savez(root / "unlabelled.npz", images=images)
    junk = _folder_with(shared_data, root / "junk", {"Eosinophil/broken.jpg": b"not a JPEG"})
    small = make_folder_layout(shared_data, root / "small", per_class=3)
    conflict = make_folder_layout(shared_data, root / "conflict", per_class=6)
    copy = next((conflict / "Eosinophil").glob("*.jpg"))
    shutil.copy2(copy, conflict / "Lymphocyte" / "copy_of_an_eosinophil.jpg")
    folder = "data: {{format: folder, path: {}, image_size: 16, n_folds: 2}}\n"
    latin1 = _non_utf8_folder(shared_data, root)
    chula, grouped = _grouped_csv(shared_data, root)
    images_csv, labels_csv = make_csv_layout(shared_data, root / "csv", per_class=4)
    table = pd.read_csv(labels_csv, dtype=str)
    table.loc[0, "id"] = "../outside"
    table.to_csv(labels_csv, index=False)
    csv = (
        f"data: {{format: csv, path: {images_csv}, labels_csv: {labels_csv}, extension: .tif, "
        "image_size: 16, n_folds: 2}\n"
    )
    return {
        "unknown key": (
            DIGITS + "space: {lr: 0.01}\n",
            [],
            ["space.lr", "valid keys here"],
            SpaceError,
        ),
        "number without a dot": (
            DIGITS + "space: {learning_rate: 1e-3}\n",
            [],
            ["space.learning_rate", "'1e-3' (str)", "write it with a dot: 1.0e-3"],
            SpaceError,
        ),
        "wrong type": (
            DIGITS + "study: {n_trials: many}\n",
            [],
            ["study.n_trials", "many"],
            ConfigError,
        ),
        "key written twice": (
            DIGITS + "space:\n  epochs: 2\n  epochs: 3\n",
            [],
            ["key 'epochs' is written twice", "lines 3 and 4", "Delete one"],
            ConfigError,
        ),
        "sampler option value": (
            DIGITS + "study: {sampler: {name: tpe, n_startup_trials: -1}}\n",
            [],
            ["study.sampler.n_startup_trials", ">= 0", "got -1"],
            ConfigError,
        ),
        "recipe key": (
            DIGITS + "space: {schedule: linear}\n",
            [],
            ["space.schedule", "constant, cosine, cosine_restarts, plateau", "'linear'"],
            SpaceError,
        ),
        "override": (
            DIGITS + SPACE,
            ["--set", "data.n_folds=one"],
            ["data.n_folds", "one"],
            ConfigError,
        ),
        "missing data folder": (
            folder.format(root / "nowhere") + SPACE,
            [],
            ["data.path", "does not exist", "check the path"],
            ConfigError,
        ),
        "unreadable image": (
            folder.format(junk) + SPACE,
            [],
            ["data.path", "broken.jpg", "on_unreadable: skip"],
            DataError,
        ),
        "too many folds": (
            folder.format(small).replace("n_folds: 2", "n_folds: 5") + SPACE,
            [],
            ["data.n_folds=5", "has 2 images", "use n_folds <="],
            DataError,
        ),
        "unlabelled npz": (
            f"data: {{format: npz, path: {root / 'unlabelled.npz'}, image_size: 16}}\n" + SPACE,
            [],
            ["data: 12 of 12 images have no label", "labels_key"],
            DataError,
        ),
        "identical images, different labels": (
            folder.format(conflict) + SPACE,
            [],
            ["copy_of_an_eosinophil", "automl audit"],
            DataError,
        ),
        "target recall on 10 classes": (
            DIGITS + SPACE + "ensemble: {target_recall: 0.9}\n",
            [],
            ["ensemble.target_recall", "10 classes", "remove ensemble.target_recall"],
            ConfigError,
        ),
        "missing database driver": (
            DIGITS + SPACE,
            ["--storage", "mysql+pymysql://user:s3cret@127.0.0.1/automl"],
            ["study.storage", "no database driver", "user:***@"],
            StudyError,
        ),
        "offline ImageNet weights": (
            DIGITS.replace("image_size: 8", "image_size: 32")
            + "space: {backbone: {name: mobilenetv3_small, weights: imagenet}}\n",
            [],
            ["weights_mobilenet_v3_small", "could not be downloaded", "weights: none"],
            WeightsUnavailableError,
        ),
        "not a number": (
            DIGITS + SPACE + "study: {timeout: .nan}\n",
            [],
            ["study.timeout must be a finite number, got nan", ".nan and .inf"],
            ConfigError,
        ),
        "a boolean for a class name": (
            DIGITS + SPACE + "ensemble: {positive_class: no}\n",
            [],
            ["ensemble.positive_class must be a name, got False", "quote the name"],
            ConfigError,
        ),
        "file name not in UTF-8": (
            folder.format(latin1) + SPACE if latin1 else "",
            [],
            ["data.path: expected file and folder names in UTF-8", "caf\\xe9.jpg", "rename"],
            DataError,
        ),
        "CSV id outside the folder": (
            csv + SPACE,
            [],
            ["expected ids that name files inside data.path", "'../outside'", "relative"],
            DataError,
        ),
        "class in too few groups for the folds": (
            f"data: {{format: csv, path: {chula}, labels_csv: {grouped}, extension: .jpg, "
            "group_column: group, image_size: 16, n_folds: 3, holdout_fraction: 0.0}\n" + SPACE,
            [],
            ["data.n_folds=3", "class 'teardrop' is in only 2 groups", "use n_folds <= 2"],
            DataError,
        ),
    }


# Input errors the corpus does not meet through tune: a DownloadError needs a network to fail on.
NOT_MET_BY_TUNE = {automl.errors.DownloadError}


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
    "not a number",
    "a boolean for a class name",
    "file name not in UTF-8",
    "CSV id outside the folder",
    "class in too few groups for the folds",
]


@pytest.fixture(scope="module")
def cases(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _cases(shared_data, tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_each_promised_error_is_one_line_exit_2_and_writes_nothing(
    cases: dict, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, extra, fragments, raised = cases[name]
    if not text:
        pytest.skip("this file system refuses names that are not UTF-8")
    # No cached ImageNet weights: the offline case must really try the download.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    space = tmp_path / "study.yaml"
    space.write_text(text, encoding="utf-8")
    studies = tmp_path / "studies"
    command = ["tune", "--space", str(space), "--studies-dir", str(studies), "--no-progress"]
    result = CliRunner().invoke(app, [*command, *extra])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, (name, result.output, result.exception)
    assert result.stdout == "" and len(errors) == 1, (name, result.stderr)
    for fragment in fragments:
        assert fragment in errors[0], (name, fragment, errors[0])
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
    assert not (studies / "study").exists()  # the default study name is the file's stem

    # The same mistake with --debug: the library's own exception, its message that line.
    debug = CliRunner().invoke(app, ["--debug", *command, *extra])
    assert type(debug.exception) is raised, (name, repr(debug.exception))
    assert errors[0] == f"error: {debug.exception}"


def test_the_corpus_meets_every_class_of_input_error(cases: dict) -> None:
    # Every class automl.errors defines for bad input, found there (not listed here).
    defined = {
        cls
        for cls in vars(automl.errors).values()
        if isinstance(cls, type) and issubclass(cls, AutoMLError) and issubclass(cls, ValueError)
    }
    # Each case's class of automl.errors (WeightsUnavailableError, an environment error, is
    # none of them: it is no ValueError).
    met = {
        next((cls for cls in raised.__mro__ if cls in defined), None)
        for _, _, _, raised in cases.values()
    }
    assert {ConfigError, SpaceError, DataError, StudyError} <= defined
    assert met - {None} == defined - NOT_MET_BY_TUNE
    assert sorted(cases) == sorted(CASE_NAMES)  # and every case built is run
