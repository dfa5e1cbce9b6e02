"""Shared test fixtures: small layouts built in ``tmp_path`` from the real images of shared/data.

The real images live beside the repository (``<repo>/../shared/data``) and are never modified:
every helper copies or converts what it needs into a temporary folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: Three white-blood-cell classes of ``bccd_wbc_crops`` with enough images for small fixtures.
WBC_CLASSES = ("Eosinophil", "Lymphocyte", "Neutrophil")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real blood-cell images; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test images not found at {SHARED_DATA} (shared/data beside the repo)")
    return SHARED_DATA


def wbc_crops(
    shared_data: Path, per_class: int = 6, classes: Sequence[str] = WBC_CLASSES
) -> dict[str, list[Path]]:
    """The first ``per_class`` JPEGs of each class of ``bccd_wbc_crops`` (sorted by name)."""
    root = shared_data / "bccd_wbc_crops" / "BCCD_cropped"
    return {name: sorted((root / name).glob("*.jpg"))[:per_class] for name in classes}


def make_folder_layout(shared_data: Path, dest: Path, per_class: int = 6) -> Path:
    """Copy real crops into ``dest/<Class>/*.jpg``; return ``dest``."""
    for name, files in wbc_crops(shared_data, per_class).items():
        (dest / name).mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copy2(file, dest / name / file.name)
    return dest


def make_csv_layout(
    shared_data: Path, dest: Path, per_class: int = 6, extension: str = ".tif"
) -> tuple[Path, Path]:
    """Convert real crops to ``dest/images/<id><extension>`` plus ``dest/labels.csv``.

    The CSV has columns ``id``, ``label`` and ``group`` (pairs of consecutive rows share a group).

    Returns:
        The image folder and the CSV file.
    """
    images = dest / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for name, files in wbc_crops(shared_data, per_class).items():
        for file in files:
            with Image.open(file) as image:
                image.save(images / f"{file.stem}{extension}")
            rows.append({"id": file.stem, "label": name, "group": f"g{len(rows) // 2}"})
    csv_path = dest / "labels.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return images, csv_path


def tiny_cnn_params(image_size: int, **space: object) -> dict:
    """Resolved hyperparameters of a tiny fixed custom CNN (2 blocks of 4 filters, no head,
    batch 8), with ``space`` keys added or replaced: what a trial of that space would train."""
    import optuna

    from automl.config.space import parse_space

    raw = {
        "backbone": {"name": "custom_cnn", "blocks": 2, "filters": 4, "batchnorm": False},
        "head": {"layers": 0},
        "batch_size": 8,
        **space,
    }
    return parse_space(raw, image_size=image_size).suggest(optuna.trial.FixedTrial({}))


def real_image_array(
    shared_data: Path, size: int, per_class: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Real crops resized to ``size`` x ``size``: ``(n, size, size, 3)`` uint8, ``(n,)`` labels."""
    images, labels = [], []
    for label, files in enumerate(wbc_crops(shared_data, per_class).values()):
        for file in files:
            with Image.open(file) as image:
                images.append(np.asarray(image.convert("RGB").resize((size, size))))
            labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.uint8)


def make_medmnist_npz(shared_data: Path, path: Path, size: int = 28, per_class: int = 6) -> Path:
    """Write a MedMNIST-layout ``.npz`` of real crops: ``train_``/``val_``/``test_`` arrays.

    Labels have MedMNIST's ``(n, 1)`` shape. Image ``i`` goes to train, val or test for
    ``i % 3`` = 0, 1 or 2, so with 6 images per class every split holds 2 of each class.
    """
    images, labels = real_image_array(shared_data, size, per_class)
    split_of = np.arange(len(images)) % 3
    arrays = {}
    for index, split in enumerate(("train", "val", "test")):
        arrays[f"{split}_images"] = images[split_of == index]
        arrays[f"{split}_labels"] = labels[split_of == index].reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def write_study_yaml(
    path: Path,
    data_root: Path,
    studies_dir: Path,
    *,
    name: str = "cells",
    n_trials: int = 2,
    epochs: str = "2",
    pruner: str = "{name: none}",
    extra_space: str = "",
) -> Path:
    """A tiny real-image study: custom CNN on a class-folder tree, 2 folds, 32 px."""
    path.write_text(
        f"""
study:
  name: {name}
  n_trials: {n_trials}
  seed: 7
  sampler: {{name: random}}
  pruner: {pruner}
  studies_dir: {studies_dir}
data:
  format: folder
  path: {data_root}
  image_size: 32
  n_folds: 2
  holdout_fraction: 0.25
space:
  backbone:
    name: custom_cnn
    blocks: 2
    filters: {{type: categorical, choices: [4, 8]}}
    batchnorm: false
  head: {{layers: 0}}
  learning_rate: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
  batch_size: 8
  epochs: {epochs}
{extra_space}
ensemble:
  top_k: 2
""",
        encoding="utf-8",
    )
    return path


# --- data audit fixtures (tests/data/audit/test_audit.py) ----------------------------------------

#: Distinct bccd_wbc_crops images (no BCCD duplicate frames among them) per class.
AUDIT_CLASSES = {
    "Eosinophil": 8,
    "Lymphocyte": 8,
    "Neutrophil": 12,
}


def make_audit_layout(shared_data: Path, dest: Path) -> dict[str, set[str]]:
    """A class-folder tree of real crops with known problems planted in it.

    Returns the ids (``Class/name``) each detector should find: ``unreadable``, ``channels``,
    ``size``, ``exact`` (every member of an exact-copy set), ``near`` (transformed copies and
    their originals), ``conflict`` (a copy under another label, and its original), ``outlier``
    (non-WBC crops from ``bccd_cells3`` inside Neutrophil) and ``clean`` (the untouched rest).
    """
    root = shared_data / "bccd_wbc_crops" / "BCCD_cropped"
    picked: dict[str, list[Path]] = {}
    for name, count in AUDIT_CLASSES.items():
        # Every third file: BCCD holds repeated frames of one smear under consecutive numbers.
        picked[name] = sorted((root / name).glob("*.jpg"))[::3][:count]
        (dest / name).mkdir(parents=True, exist_ok=True)
        for file in picked[name]:
            shutil.copy2(file, dest / name / file.name)
    ids = {f"{n}/{f.stem}" for n, files in picked.items() for f in files}
    truth: dict[str, set[str]] = {key: set() for key in AUDIT_KEYS}

    def save(image: Image.Image, target: str, **options: object) -> str:
        path = dest / target
        image.save(path, **options)
        return f"{path.parent.name}/{path.stem}"

    neutrophil, eosinophil = picked["Neutrophil"], picked["Eosinophil"]
    # Exact: a byte copy and a PNG of the same pixels.
    a = neutrophil[0]
    shutil.copy2(a, dest / "Neutrophil" / f"{a.stem}_copy.jpg")
    with Image.open(a) as image:
        png = save(image.convert("RGB"), f"Neutrophil/{a.stem}_png.png")
    truth["exact"] |= {f"Neutrophil/{a.stem}", f"Neutrophil/{a.stem}_copy", png}
    # Near: re-encoded, resized, flipped, turned 90 degrees, small rotation plus shift.
    for k, (suffix, transform) in enumerate(
        [
            ("q40", lambda im: im),
            ("small", lambda im: im.resize((im.width * 3 // 5, im.height * 3 // 5))),
            ("flip", lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
            ("rot90", lambda im: im.transpose(Image.Transpose.ROTATE_90)),
            ("rot7", lambda im: im.rotate(7, Image.Resampling.BICUBIC, translate=(6, -4))),
        ]
    ):
        original = neutrophil[1 + k]
        with Image.open(original) as image:
            copy = save(
                transform(image.convert("RGB")),
                f"Neutrophil/{original.stem}_{suffix}.jpg",
                quality=40 if suffix == "q40" else 90,
            )
        truth["near"] |= {f"Neutrophil/{original.stem}", copy}
    # The same picture under two labels.
    b = eosinophil[0]
    shutil.copy2(b, dest / "Lymphocyte" / f"{b.stem}_relabelled.jpg")
    truth["conflict"] |= {f"Eosinophil/{b.stem}", f"Lymphocyte/{b.stem}_relabelled"}
    # Non-WBC crops inside a WBC class: red cells (outliers), a platelet (tiny: a size problem).
    cells = shared_data / "bccd_cells3"
    for file in sorted((cells / "RBC").glob("*.jpg"))[:3]:
        shutil.copy2(file, dest / "Neutrophil" / f"cells3_{file.name}")
        truth["outlier"].add(f"Neutrophil/cells3_{file.stem}")
    platelet = sorted((cells / "Platelets").glob("*.jpg"))[0]
    shutil.copy2(platelet, dest / "Neutrophil" / f"cells3_{platelet.name}")
    truth["size"].add(f"Neutrophil/cells3_{platelet.stem}")
    # File problems: junk named .jpg, a gray and an oversized image (Monocytes, used nowhere else).
    (dest / "Eosinophil" / "junk.jpg").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(2000))
    truth["unreadable"].add("Eosinophil/junk")
    monocytes = sorted((root / "Monocyte").glob("*.jpg"))
    with Image.open(monocytes[0]) as image:
        truth["channels"].add(save(image.convert("L"), "Lymphocyte/gray.png"))
    with Image.open(monocytes[5]) as image:
        big = image.resize((image.width * 4, image.height * 4))
        truth["size"].add(save(big, "Lymphocyte/big.jpg"))
    truth["exact"] |= truth["conflict"]  # the relabelled copy is also an exact copy
    touched = set().union(*truth.values())
    truth["clean"] = ids - touched
    return truth


AUDIT_KEYS = ("unreadable", "channels", "size", "exact", "near", "conflict", "outlier", "clean")


# A finished study (report, dashboard browser tests): built once per session.
STUDY = "cells"
FINISHED: dict[str, Path] = {}


def build_finished_study(shared_data: Path, base: Path) -> Path:
    """Tune (2 complete + 1 pruned) via the CLI, report, ensemble, report; return the studies dir.

    Built once per test session: later calls return the first folder.
    """
    if "studies" in FINISHED:
        return FINISHED["studies"]
    from typer.testing import CliRunner

    from automl.cli import app

    runner = CliRunner()
    data = make_folder_layout(shared_data, base / "data", per_class=8)
    studies = base / "studies"
    space = write_study_yaml(
        base / "cells.yaml",
        data,
        studies,
        name=STUDY,
        n_trials=2,
        extra_space="  augment: {flip: horizontal, rotation: 0.1, randaugment_magnitude: 0.3}",
    )
    where = ["--study", STUDY, "--studies-dir", str(studies)]
    steps = [
        ["tune", "--space", str(space), "--no-progress"],
        # No accuracy reaches 1.01: the third trial is pruned at its first report.
        ["tune", "--space", str(space), "--no-progress", "--n-trials", "3"]
        + ["--set", "study.pruner={name: threshold, lower: 1.01}"],
        ["report", *where],
        ["ensemble", *where, "--no-progress"],
        ["report", *where],
    ]
    for index, args in enumerate(steps):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        if index == 2:  # keep the report written before the ensemble existed
            report = Path(result.stdout.split("report:")[1].strip())
            shutil.copy(report, base / "report_before_ensemble.html")
    FINISHED["studies"] = studies
    FINISHED["stdout"] = base / "report_stdout.txt"
    FINISHED["stdout"].write_text(result.stdout, encoding="utf-8")
    return studies
