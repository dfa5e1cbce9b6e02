"""``automl predict`` refuses, before any inference, what it could not finish: two files with
one id, nothing readable, an ``--out`` it cannot write."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from ensemble_study import copy_study, tuned_study, where
from PIL import Image
from typer.testing import CliRunner

from automl.cli.main import app

__all__ = ["tuned_study"]  # fixture

runner = CliRunner()


@pytest.fixture(scope="module")
def ensembled(tuned_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tuned study with its ensemble built."""
    base = copy_study(tuned_study, tmp_path_factory.mktemp("predict") / "study")
    result = runner.invoke(app, ["ensemble", *where(base), "--no-progress"])
    assert result.exit_code == 0, result.output
    return base


@pytest.fixture
def no_inference(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records any image reading or model inference ``predict`` starts."""
    import automl.ensemble.predict as predict_module
    import automl.nn.inference as inference

    started: list[str] = []
    reader, infer = predict_module.read_images, inference.predict_probabilities

    def read(*args: object, **kwargs: object) -> object:
        started.append("read")
        return reader(*args, **kwargs)

    def predict(*args: object, **kwargs: object) -> object:
        started.append("predict")
        return infer(*args, **kwargs)

    monkeypatch.setattr(predict_module, "read_images", read)
    monkeypatch.setattr(inference, "predict_probabilities", predict)
    return started


def _crops(shared_data: Path, folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    crops = sorted((shared_data / "bccd_wbc_crops" / "BCCD_cropped" / "Neutrophil").glob("*.jpg"))
    return [Path(shutil.copy2(f, folder / f.name)) for f in crops[30 : 30 + n]]


def _predict(base: Path, images: Path, out: Path, *extra: str) -> object:
    args = ["predict", *where(base), "--input", str(images), "--out", str(out), "--no-progress"]
    return runner.invoke(app, [*args, *extra])


def test_two_files_with_one_id_are_refused_before_reading(
    ensembled: Path, shared_data: Path, tmp_path: Path, no_inference: list[str]
) -> None:
    first = _crops(shared_data, tmp_path / "new")[0]
    with Image.open(first) as image:
        image.save(first.with_suffix(".png"))  # a.jpg and a.png
    out = tmp_path / "p.csv"
    result = _predict(ensembled, tmp_path / "new", out)
    assert result.exit_code == 2, result.output
    assert f"got {first.name} and {first.stem}.png both as '{first.stem}'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert no_inference == [] and not out.exists()


def test_nothing_readable_under_skip_unreadable_is_a_clear_error(
    ensembled: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "junk"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):  # the bytes of a Finder .DS_Store, named as images
        (folder / name).write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(2000))
    result = _predict(ensembled, folder, tmp_path / "p.csv", "--skip-unreadable")
    assert result.exit_code == 2, result.output
    assert "got 2 image files and none of them readable" in result.stderr
    assert isinstance(result.exception, SystemExit)  # our error, not a crash in Keras


def test_an_unwritable_out_fails_before_any_inference(
    ensembled: Path, shared_data: Path, tmp_path: Path, no_inference: list[str]
) -> None:
    _crops(shared_data, tmp_path / "new")
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder is expected\n")
    result = _predict(ensembled, tmp_path / "new", blocker / "p.csv")
    assert result.exit_code == 2, result.output
    assert f"--out {blocker / 'p.csv'}: expected a writable place" in result.stderr
    assert no_inference == []
    # The same images with a writable --out: predicted (so the recorder does see the work).
    result = _predict(ensembled, tmp_path / "new", tmp_path / "ok" / "p.csv")
    assert result.exit_code == 0, result.output
    assert no_inference == ["read", "predict"]


def test_a_file_name_that_is_not_utf8_is_refused_before_reading(
    ensembled: Path, shared_data: Path, tmp_path: Path, no_inference: list[str]
) -> None:
    folder = tmp_path / "new"
    first = _crops(shared_data, folder)[0]
    latin1 = os.fsdecode(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"))
    try:
        os.rename(first, latin1)
    except (OSError, UnicodeError) as error:  # a file system that stores UTF-8 names only
        pytest.skip(f"this file system refuses non-UTF-8 names ({error})")
    out = tmp_path / "p.csv"
    result = _predict(ensembled, folder, out)
    assert result.exit_code == 2, result.output
    assert "expected file and folder names in UTF-8, found 1" in result.stderr
    assert "caf\\xe9.jpg" in result.stderr and "rename" in result.stderr
    assert no_inference == [] and not out.exists()
