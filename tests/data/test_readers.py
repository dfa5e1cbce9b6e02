"""Tests for automl.data.readers on small layouts of real blood-cell images."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import (
    WBC_CLASSES,
    make_csv_layout,
    make_folder_layout,
    make_medmnist_npz,
    real_image_array,
    wbc_crops,
)
from PIL import Image

from automl.config.sources import DataSource
from automl.data.readers import ImageSet, list_image_files, read_images, read_source
from automl.errors import DataError

SIZE = 32


@pytest.fixture
def folder(shared_data: Path, tmp_path: Path) -> Path:
    return make_folder_layout(shared_data, tmp_path / "cells")


def _assert_images(images: ImageSet, n: int, size: int = SIZE) -> None:
    assert len(images) == n
    assert images.images.shape == (n, size, size, 3)
    assert images.images.dtype == np.uint8
    assert images.labels.dtype == np.int64
    assert images.ids.shape == (n,)
    assert len(set(images.ids.tolist())) == n
    assert images.images.std() > 10  # real cells, not a blank array


# --- listing and decoding files ---------------------------------------------------------------


def test_list_image_files_is_recursive_sorted_and_skips_hidden(folder: Path) -> None:
    cls = folder / "Lymphocyte"
    first = sorted(cls.iterdir())[0]
    (cls / "deeper").mkdir()
    shutil.copy(first, cls / "deeper" / "UPPER.JPG")
    shutil.copy(first, cls / ".hidden.jpg")
    (cls / ".ipynb_checkpoints").mkdir()
    shutil.copy(first, cls / ".ipynb_checkpoints" / "copy.jpg")
    (cls / "notes.txt").write_text("not an image")

    files = list_image_files(cls)

    assert files == sorted(files)
    assert cls / "deeper" / "UPPER.JPG" in files
    assert len(files) == 7
    assert all(not part.startswith(".") for f in files for part in f.relative_to(cls).parts)


def test_read_images_resizes_real_jpegs_of_varied_sizes(shared_data: Path) -> None:
    paths = [p for files in wbc_crops(shared_data, 3).values() for p in files]
    assert len({Image.open(p).size for p in paths}) > 1  # the crops differ in size

    images, skipped = read_images(paths, 48)

    assert images.shape == (len(paths), 48, 48, 3) and images.dtype == np.uint8
    assert skipped == []
    # Decoded at reduced JPEG scale and resized, each image still matches Pillow's plain resize.
    for path, image in zip(paths, images, strict=True):
        reference = np.asarray(Image.open(path).convert("RGB").resize((48, 48)), dtype=float)
        assert np.abs(reference - image).mean() < 8


@pytest.mark.parametrize("mode", ["L", "LA", "P", "P+transparency", "RGBA", "I;16", "CMYK", "1"])
def test_every_pixel_mode_becomes_3_channel_uint8(
    shared_data: Path, tmp_path: Path, mode: str
) -> None:
    source = wbc_crops(shared_data, 1)["Neutrophil"][0]
    rgb = Image.open(source).convert("RGB")
    gray = np.asarray(rgb.convert("L"))
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)  # full 16-bit range
        assert image.mode == "I;16"
    else:
        image = rgb.convert(mode.split("+")[0])
    path = tmp_path / ("cell.jpg" if mode == "CMYK" else "cell.png")
    if mode == "P+transparency":
        image.save(path, transparency=0)
        assert "transparency" in Image.open(path).info
    else:
        image.save(path)

    images, _ = read_images([path], SIZE)

    assert images.shape == (1, SIZE, SIZE, 3) and images.dtype == np.uint8
    if mode in ("L", "LA", "I;16", "1"):
        assert (images == images[..., :1]).all()  # R == G == B
    if mode in ("L", "LA", "I;16"):
        expected = np.asarray(Image.fromarray(gray).resize((SIZE, SIZE), Image.Resampling.LANCZOS))
        assert np.abs(images[0, ..., 0].astype(int) - expected).max() <= 1
    else:
        assert images.std() > 10


def test_unreadable_files_raise_with_names_and_fix(folder: Path) -> None:
    cls = folder / "Eosinophil"
    (cls / "junk.jpg").write_bytes(b"this is not a JPEG")
    real = sorted(cls.glob("Blood*.jpg"))[0]
    (cls / "cut.jpg").write_bytes(real.read_bytes()[:2000])  # a real JPEG, truncated
    source = DataSource(format="folder", path=str(folder))

    with pytest.raises(
        DataError, match=r"found 2 unreadable of 20: .*cut\.jpg.*junk\.jpg"
    ) as info:
        read_source(source, SIZE)
    assert "on_unreadable: skip" in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_files_are_skipped_with_a_warning(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (folder / "Eosinophil" / "junk.jpg").write_bytes(b"this is not a JPEG")
    source = DataSource(format="folder", path=str(folder), on_unreadable="skip")

    with caplog.at_level(logging.WARNING, logger="automl.data.readers"):
        images = read_source(source, SIZE)

    _assert_images(images, 18)
    assert "Eosinophil/junk" not in images.ids
    assert "junk.jpg" in caplog.text
    paths = list_image_files(folder)
    decoded, skipped = read_images(paths, SIZE, on_unreadable="skip")
    assert skipped == [folder / "Eosinophil" / "junk.jpg"] and len(decoded) == 18


def test_a_bug_while_reading_is_raised_never_skipped_as_unreadable(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under on_unreadable: skip, an error of automl's own code must not silently drop images.
    import automl.data.readers

    def broken_resize(image: Image.Image, size: int) -> np.ndarray:
        raise TypeError("resize() got an unexpected keyword argument")

    monkeypatch.setattr(automl.data.readers, "_resize", broken_resize)
    with pytest.raises(TypeError, match="unexpected keyword"):
        read_images(list_image_files(folder), SIZE, on_unreadable="skip")


# --- folder ------------------------------------------------------------------------------------


def test_folder_reads_classes_labels_and_ids(folder: Path) -> None:
    nested = folder / "Neutrophil" / "slide2"
    nested.mkdir()
    moved = sorted((folder / "Neutrophil").glob("*.jpg"))[0]
    moved.rename(nested / moved.name)

    images = read_source(DataSource(format="folder", path=str(folder)), SIZE)

    _assert_images(images, 18)
    assert images.class_names == WBC_CLASSES
    assert np.bincount(images.labels).tolist() == [6, 6, 6]
    assert images.groups is None
    assert f"Neutrophil/slide2/{moved.stem}" in images.ids
    for image_id, label in zip(images.ids, images.labels, strict=True):
        assert image_id.split("/")[0] == images.class_names[label]


def test_folder_without_class_folders_is_explained(folder: Path) -> None:
    flat = folder / "Eosinophil"
    with pytest.raises(DataError, match=r"data\.path: expected a folder with one subfolder per "):
        read_source(DataSource(format="folder", path=str(flat)), SIZE)
    (folder / "Basophil").mkdir()
    with pytest.raises(DataError, match=r"found none in .*Basophil; add images or remove"):
        read_source(DataSource(format="folder", path=str(folder)), SIZE)
    with pytest.raises(DataError, match=r"data\.test\.path: .* found nothing at .*nowhere"):
        read_source(
            DataSource(format="folder", path=str(folder / "nowhere")), SIZE, where="data.test"
        )


def test_invalid_arguments_are_explained(folder: Path) -> None:
    with pytest.raises(DataError, match="data.format: expected one of folder, csv"):
        read_source(DataSource(format="parquet", path=str(folder)), SIZE)
    with pytest.raises(DataError, match="data.on_unreadable: expected 'error' or 'skip'"):
        read_source(DataSource(format="folder", path=str(folder), on_unreadable="ignore"), SIZE)
    with pytest.raises(DataError, match="image_size: expected a positive"):
        read_source(DataSource(format="folder", path=str(folder)), 0)


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_with_tif_files(shared_data: Path, tmp_path: Path) -> None:
    image_dir, csv_path = make_csv_layout(shared_data, tmp_path)
    source = DataSource(
        format="csv",
        path=str(image_dir),
        labels_csv=str(csv_path),
        extension=".tif",
        group_column="group",
    )

    images = read_source(source, SIZE)

    _assert_images(images, 18)
    table = pd.read_csv(csv_path)
    assert images.class_names == tuple(sorted(WBC_CLASSES))
    assert images.ids.tolist() == table["id"].tolist()
    assert [images.class_names[i] for i in images.labels] == table["label"].tolist()
    assert images.groups is not None and images.groups.tolist() == table["group"].tolist()
    # The same cells read from their JPEGs look the same.
    jpegs = [p for files in wbc_crops(shared_data).values() for p in files]
    from_jpeg, _ = read_images(jpegs, SIZE)
    assert np.abs(from_jpeg.astype(int) - images.images).mean() < 8


def test_csv_numeric_and_missing_labels(shared_data: Path, tmp_path: Path) -> None:
    image_dir, csv_path = make_csv_layout(shared_data, tmp_path, per_class=4, extension=".png")
    table = pd.read_csv(csv_path)
    table["label"] = [10, 2, 2, 10, 0, 0] + [""] * 6  # the last 6 rows are unlabeled
    table.to_csv(csv_path, index=False)
    source = DataSource(
        format="csv", path=str(image_dir), labels_csv=str(csv_path), extension=".png"
    )

    images = read_source(source, SIZE)

    assert images.class_names == ("0", "2", "10")
    assert images.labels.tolist() == [2, 1, 1, 2, 0, 0] + [-1] * 6


def test_csv_problems_name_the_file_column_and_fix(shared_data: Path, tmp_path: Path) -> None:
    image_dir, csv_path = make_csv_layout(shared_data, tmp_path)
    base: dict[str, Any] = {"format": "csv", "path": str(image_dir), "labels_csv": str(csv_path)}

    with pytest.raises(
        DataError,
        match=r"data\.label_column: expected a column 'class' in .*"
        r"labels\.csv, found columns 'id', 'label', 'group'; set data\.label_c",
    ):
        read_source(DataSource(**base, extension=".tif", label_column="class"), SIZE)

    with pytest.raises(
        DataError,
        match=r"found 18 of 18 missing: .*\.jpg.* and 15 more; check "
        r"data\.path and data\.extension \('\.jpg'\)",
    ):
        read_source(DataSource(**base, extension=".jpg"), SIZE)

    for tif in sorted(image_dir.glob("*.tif"))[:2]:
        tif.unlink()
    with pytest.raises(DataError, match="found 2 of 18 missing"):
        read_source(DataSource(**base, extension=".tif"), SIZE)

    csv_path.write_text("")
    with pytest.raises(DataError, match=r"data\.labels_csv: expected a header .* empty file"):
        read_source(DataSource(**base, extension=".tif"), SIZE)
    csv_path.write_text("id,label\n")
    with pytest.raises(DataError, match="found only a header"):
        read_source(DataSource(**base, extension=".tif"), SIZE)
    csv_path.write_text("id,label\na,x\na,y\n")
    with pytest.raises(
        DataError, match=r"expected one row per image, found 'a' \(line 2\) and 'a' \(line 3\)"
    ):
        read_source(DataSource(**base, extension=".tif"), SIZE)


# --- arrays ------------------------------------------------------------------------------------


def test_npz_images_and_labels_layout(shared_data: Path, tmp_path: Path) -> None:
    pixels, labels = real_image_array(shared_data, 40)
    path = tmp_path / "cells.npz"
    np.savez(path, images=pixels, labels=labels, class_names=np.array(WBC_CLASSES))

    images = read_source(DataSource(format="npz", path=str(path)), SIZE)

    _assert_images(images, 18)
    assert images.class_names == WBC_CLASSES
    assert images.labels.tolist() == labels.tolist()
    assert images.ids[:2].tolist() == ["train_0", "train_1"]

    same_size = read_source(DataSource(format="npz", path=str(path)), 40)
    assert np.array_equal(same_size.images, pixels)


def test_npz_medmnist_layout_and_splits(shared_data: Path, tmp_path: Path) -> None:
    path = make_medmnist_npz(shared_data, tmp_path / "cells.npz", size=28)
    names = ("eos", "lym", "neu")

    train = read_source(DataSource(format="npz", path=str(path), class_names=names), SIZE)
    both = read_source(DataSource(format="npz", path=str(path), split="train+val"), 28)

    _assert_images(train, 6)
    assert train.class_names == names
    assert np.bincount(train.labels).tolist() == [2, 2, 2]
    assert train.ids.tolist()[:2] == ["train_0", "train_1"]
    _assert_images(both, 12, size=28)
    assert both.class_names == ("0", "1", "2")
    assert both.ids[6] == "val_0"
    with np.load(path) as archive:
        assert np.array_equal(both.images[6:], archive["val_images"])
        assert both.labels[6:].tolist() == archive["val_labels"].ravel().tolist()


def test_npz_grayscale_and_float_arrays(shared_data: Path, tmp_path: Path) -> None:
    pixels, labels = real_image_array(shared_data, 28, per_class=2)
    gray = pixels.mean(axis=3) / 255.0  # (n, h, w) floats in 0..1
    path = tmp_path / "gray.npz"
    np.savez(path, test_images=gray.astype(np.float32), test_labels=labels.reshape(-1, 1))

    images = read_source(DataSource(format="npz", path=str(path), split="test"), 28)

    _assert_images(images, 6, size=28)
    assert (images.images[..., 0] == images.images[..., 2]).all()
    assert np.abs(images.images[..., 0] - np.rint(gray * 255)).max() <= 1


def test_npz_problems_are_explained(shared_data: Path, tmp_path: Path) -> None:
    pixels, labels = real_image_array(shared_data, 28, per_class=2)
    path = tmp_path / "cells.npz"
    np.savez(path, x=pixels, y=labels)
    with pytest.raises(
        DataError,
        match=r"expected an array 'images' or 'train_images' in .*"
        r"found arrays x, y; set data\.images_key",
    ):
        read_source(DataSource(format="npz", path=str(path)), SIZE)

    images = read_source(
        DataSource(format="npz", path=str(path), images_key="x", labels_key="y"), 28
    )
    assert images.labels.tolist() == labels.tolist()

    with pytest.raises(
        DataError, match=r"data\.class_names: expected a name for every label 0\.\.2"
    ):
        read_source(
            DataSource(
                format="npz",
                path=str(path),
                images_key="x",
                labels_key="y",
                class_names=("a", "b"),
            ),
            28,
        )
    np.savez(path, images=pixels, labels=np.eye(3)[labels])
    with pytest.raises(DataError, match=r"shape \(6,\) or \(6, 1\), found shape \(6, 3\)"):
        read_source(DataSource(format="npz", path=str(path)), 28)


def test_npz_without_labels_is_unlabeled(shared_data: Path, tmp_path: Path) -> None:
    pixels, _ = real_image_array(shared_data, 28, per_class=2)
    path = tmp_path / "predict.npz"
    np.savez(path, images=pixels)

    images = read_source(DataSource(format="npz", path=str(path)), 28)

    assert images.labels.tolist() == [-1] * 6 and images.class_names == ()


def test_digits() -> None:
    images = read_source(DataSource(format="digits"), 16)

    _assert_images(images, 1797, size=16)
    assert images.class_names == tuple(str(i) for i in range(10))
    assert images.ids[0] == "digits_0"
    assert images.images.max() == 255
    assert (images.images[..., 0] == images.images[..., 1]).all()


def test_subset_keeps_rows_together(folder: Path) -> None:
    images = read_source(DataSource(format="folder", path=str(folder)), SIZE)

    part = images.subset([5, 0, 17])

    assert part.ids.tolist() == images.ids[[5, 0, 17]].tolist()
    assert np.array_equal(part.images[1], images.images[0])
    assert part.labels.tolist() == images.labels[[5, 0, 17]].tolist()
    assert len(images.subset(images.labels == 1)) == 6


# --- cache -------------------------------------------------------------------------------------


def test_cache_is_reused_then_rebuilt_when_files_change(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    source = DataSource(format="folder", path=str(folder))

    first = read_source(source, SIZE, cache_dir=cache)
    second = read_source(source, SIZE, cache_dir=cache)

    assert not isinstance(first.images, np.memmap)
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    assert np.array_equal(first.images, second.images)
    assert second.ids.tolist() == first.ids.tolist()
    assert second.class_names == first.class_names
    assert second.labels.tolist() == first.labels.tolist()
    entries = list(cache.iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".")  # no temporary leftovers

    changed = sorted((folder / "Lymphocyte").glob("*.jpg"))[0]
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    third = read_source(source, SIZE, cache_dir=cache)
    assert not isinstance(third.images, np.memmap)
    assert len(list(cache.iterdir())) == 2
    assert not isinstance(read_source(source, 24, cache_dir=cache).images, np.memmap)


def test_cache_entry_that_is_damaged_is_rebuilt(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    source = DataSource(format="folder", path=str(folder))
    read_source(source, SIZE, cache_dir=cache)
    (entry,) = cache.iterdir()
    (entry / "images.npy").write_bytes(b"garbage")

    rebuilt = read_source(source, SIZE, cache_dir=cache)

    _assert_images(rebuilt, 18)
    assert isinstance(read_source(source, SIZE, cache_dir=cache).images, np.memmap)


# --- names and ids that would break later -----------------------------------------------------


def _non_utf8_copy(source: Path, folder: Path) -> Path:
    """Copy ``source`` into ``folder`` under a Latin-1 name (bytes that are not UTF-8)."""
    name = os.fsencode(folder) + b"/caf\xe9.jpg"
    try:
        with open(name, "wb") as handle:
            handle.write(source.read_bytes())
    except (OSError, UnicodeError) as error:  # e.g. a file system that stores UTF-8 only
        pytest.skip(f"this file system refuses non-UTF-8 names ({error})")
    return Path(os.fsdecode(name))


def test_a_file_name_that_is_not_utf8_is_refused_when_read(folder: Path) -> None:
    real = sorted((folder / "Eosinophil").glob("*.jpg"))[0]
    _non_utf8_copy(real, folder / "Lymphocyte")
    source = DataSource(format="folder", path=str(folder))

    with pytest.raises(
        DataError,
        match=r"data\.path: expected file and folder names in UTF-8, found 1 that are not: "
        r"'.*/Lymphocyte/caf\\xe9\.jpg'; rename them",
    ) as info:
        read_source(source, SIZE)
    str(info.value).encode("utf-8")  # the message itself prints anywhere


def test_a_non_utf8_name_is_refused_by_the_audit_too(folder: Path) -> None:
    from automl.config.schema import config_from_dict
    from automl.data.audit.report import run_audit

    _non_utf8_copy(sorted((folder / "Eosinophil").glob("*.jpg"))[0], folder / "Eosinophil")
    data = config_from_dict({"data": {"format": "folder", "path": str(folder), "n_folds": 2}})
    with pytest.raises(DataError, match=r"names in UTF-8, found 1 .*caf\\xe9\.jpg"):
        run_audit(data.data)


def _csv_source(images: Path, csv_path: Path, ids: list[str]) -> DataSource:
    table = pd.read_csv(csv_path, dtype=str)
    table["id"] = ids + table["id"].tolist()[len(ids) :]
    table.to_csv(csv_path, index=False)
    return DataSource(format="csv", path=str(images), labels_csv=str(csv_path), extension=".tif")


@pytest.mark.parametrize(
    ("first", "problem"),
    [
        ("../outside", r"line 2: '\.\./outside'"),
        ("sub/../../outside", r"line 2: 'sub/\.\./\.\./outside'"),
        ("/etc/outside", r"line 2: '/etc/outside'"),
        ("C:/outside", r"line 2: 'C:/outside'"),
        (".", r"line 2: '\.'"),
    ],
)
def test_csv_ids_that_leave_the_image_folder_are_refused(
    shared_data: Path, tmp_path: Path, first: str, problem: str
) -> None:
    images, csv_path = make_csv_layout(shared_data, tmp_path, per_class=2)
    outside = tmp_path / "outside.tif"  # a real image there, so only the check can refuse it
    shutil.copy2(sorted(images.glob("*.tif"))[0], outside)
    source = _csv_source(images, csv_path, [first])
    with pytest.raises(
        DataError,
        match=rf"labels\.csv: expected ids that name files inside data\.path, found 1 "
        rf"absolute or leaving it \({problem}\); write each id relative to data\.path",
    ):
        read_source(source, SIZE)


def test_two_ids_for_one_file_are_refused(shared_data: Path, tmp_path: Path) -> None:
    images, csv_path = make_csv_layout(shared_data, tmp_path, per_class=2)
    table = pd.read_csv(csv_path, dtype=str)
    first = table["id"][0]
    source = _csv_source(images, csv_path, [first, f"./{first}"])
    with pytest.raises(
        DataError,
        match=rf"expected one row per image, found '{first}' \(line 2\) and '\./{first}' "
        rf"\(line 3\) naming the same image '{first}'",
    ):
        read_source(source, SIZE)

    # A symbolic link is another name for the same file.
    (images / "alias.tif").symlink_to(images / f"{first}.tif")
    source = _csv_source(images, csv_path, [first, "alias"])
    with pytest.raises(DataError, match=rf"found ids '{first}' and 'alias' naming one file"):
        read_source(source, SIZE)


def test_csv_ids_are_read_in_normal_form(shared_data: Path, tmp_path: Path) -> None:
    images, csv_path = make_csv_layout(shared_data, tmp_path, per_class=2)
    (images / "sub").mkdir()
    first = pd.read_csv(csv_path, dtype=str)["id"][0]
    shutil.move(images / f"{first}.tif", images / "sub" / f"{first}.tif")
    source = _csv_source(images, csv_path, [f"./sub//{first}"])
    read = read_source(source, SIZE)
    assert read.ids[0] == f"sub/{first}"
    assert len(read) == 6


# --- hidden files -----------------------------------------------------------------------------


def _plant_hidden(folder: Path) -> list[str]:
    """Two real images under hidden names in class folders; their relative paths."""
    real = sorted((folder / "Eosinophil").glob("*.jpg"))[0]
    shutil.copy2(real, folder / "Eosinophil" / ".DS_0001.jpg")
    (folder / "Neutrophil" / ".ipynb_checkpoints").mkdir()
    shutil.copy2(real, folder / "Neutrophil" / ".ipynb_checkpoints" / "cell.jpg")
    return ["Eosinophil/.DS_0001.jpg", "Neutrophil/.ipynb_checkpoints/cell.jpg"]


def test_hidden_files_are_skipped_and_counted(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    planted = _plant_hidden(folder)
    source = DataSource(format="folder", path=str(folder))
    with caplog.at_level(logging.INFO, logger="automl.data.readers"):
        images = read_source(source, SIZE, cache_dir=tmp_path / "cache")
    assert len(images) == 18  # the 18 real images only
    assert images.hidden_files == tuple(planted)
    assert images.reading_notes() == [
        "skipped 2 hidden files (a name starting with '.', e.g. Eosinophil/.DS_0001.jpg: "
        "system or editor files, not data)"
    ]
    assert "Read 18 images of 3 classes (folder)" in caplog.text
    assert "skipped 2 hidden files" in caplog.text
    # The cached set says it too, and so do its subsets (the tuning set, the hold-out).
    cached = read_source(source, SIZE, cache_dir=tmp_path / "cache")
    assert isinstance(cached.images, np.memmap)
    assert cached.hidden_files == tuple(planted)
    assert cached.subset([0, 1]).reading_notes() == images.reading_notes()


def test_audit_reports_the_hidden_files_it_skipped(folder: Path) -> None:
    from automl.config.schema import config_from_dict
    from automl.data.audit.report import run_audit, summary_lines

    planted = _plant_hidden(folder)
    data = config_from_dict({"data": {"format": "folder", "path": str(folder), "n_folds": 2}})
    result = run_audit(data.data)
    assert result.summary["images"] == 18
    assert result.summary["hidden_files_skipped"] == 2
    assert result.summary["hidden_files"] == planted
    files_line = next(line for line in summary_lines(result) if line.startswith("files:"))
    assert "hidden files skipped: 2 (a name starting with '.'" in files_line


# --- pixels wider than 8 bits -----------------------------------------------------------------


def _gray_crops(shared_data: Path, n: int = 3) -> list[np.ndarray]:
    """Real crops as 8-bit gray arrays, each resized to SIZE (so decoding adds no resize)."""
    files = wbc_crops(shared_data, n)["Neutrophil"]
    return [np.asarray(Image.open(f).convert("L").resize((SIZE, SIZE))) for f in files]


def test_12_bit_data_in_16_bit_files_keeps_its_brightness(
    shared_data: Path, tmp_path: Path
) -> None:
    grays = _gray_crops(shared_data)
    paths = []
    for i, gray in enumerate(grays):
        twelve = (gray.astype(np.uint16) << 4) | (gray.astype(np.uint16) >> 4)  # 0..4095
        path = tmp_path / f"cell{i}.{'png' if i % 2 else 'tif'}"
        Image.fromarray(twelve).save(path)
        assert Image.open(path).mode == "I;16"
        paths.append(path)

    images, _ = read_images(paths, SIZE)

    for gray, image in zip(grays, images, strict=True):
        # 4095 -> 255: the 8-bit picture back, not 4095/65535 of it (nearly black).
        assert np.abs(image[..., 0].astype(int) - gray).max() <= 1
        assert (image == image[..., :1]).all()


def test_wide_pixels_get_one_scale_for_the_whole_set(shared_data: Path, tmp_path: Path) -> None:
    bright, dim = (gray.astype(np.int64) for gray in _gray_crops(shared_data, 2))
    folder = tmp_path / "cells"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
    # 32-bit integer TIFFs of 12-bit data: one well exposed, one 16 times darker.
    Image.fromarray(bright.astype(np.int32) * 16).save(folder / "a" / "bright.tif")
    Image.fromarray(dim.astype(np.int32)).save(folder / "b" / "dim.tif")
    assert Image.open(folder / "b" / "dim.tif").mode == "I"

    images = read_source(DataSource(format="folder", path=str(folder)), SIZE)

    got_bright, got_dim = images.images[0, ..., 0], images.images[1, ..., 0]
    top = int(bright.max()) * 16
    bits = int(np.ceil(np.log2(top + 1)))
    assert np.abs(got_bright.astype(int) - np.rint(bright * 16 * 255 / (2**bits - 1))).max() <= 1
    # The dark image stays dark (per image it would have been stretched to look like the other).
    assert np.abs(got_dim.astype(int) - np.rint(dim * 255 / (2**bits - 1))).max() <= 1
    assert got_dim.mean() < got_bright.mean() / 8
    assert images.pixel_scaling == (
        f"2 of 2 images have pixels wider than 8 bits: integers up to {top} (the set's "
        f"largest), read as {bits}-bit: scaled by 255/{2**bits - 1}"
    )


def test_float_pixels_get_one_scale_for_the_whole_set(shared_data: Path, tmp_path: Path) -> None:
    first, second = _gray_crops(shared_data, 2)
    paths = [tmp_path / "one.tif", tmp_path / "two.tif"]
    Image.fromarray(first.astype(np.float32) / 255).save(paths[0])  # 0..1
    Image.fromarray(second.astype(np.float32) / 255 * 2).save(paths[1])  # 0..2: overexposed
    assert Image.open(paths[1]).mode == "F"

    images, _ = read_images(paths, SIZE)

    high = second.max() / 255 * 2
    assert np.abs(images[0, ..., 0] - np.rint(first / 255 * 255 / high)).max() <= 1
    assert np.abs(images[1, ..., 0] - np.rint(second / 255 * 2 * 255 / high)).max() <= 1


def test_npz_12_bit_arrays_keep_their_brightness(shared_data: Path, tmp_path: Path) -> None:
    pixels, labels = real_image_array(shared_data, 28, per_class=2)
    twelve = pixels.astype(np.uint16) * 16  # 0..4080
    path = tmp_path / "cells.npz"
    np.savez(
        path,
        train_images=twelve[:3],
        train_labels=labels[:3],
        val_images=twelve[3:],
        val_labels=labels[3:],
    )

    images = read_source(DataSource(format="npz", path=str(path), split="train+val"), 28)

    assert np.abs(images.images.astype(int) - pixels).max() <= 1
    assert images.pixel_scaling is not None and "read as 12-bit" in images.pixel_scaling


def test_validate_and_tune_say_how_many_hidden_files_were_skipped(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from automl.cli.main import app

    _plant_hidden(folder)
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "study.yaml"
    space.write_text(
        f"study: {{name: hidden}}\ndata: {{format: folder, path: {folder}, n_folds: 2, "
        "image_size: 16}\nspace: {backbone: {name: custom_cnn, blocks: 2}}\n"
    )
    result = CliRunner().invoke(app, ["validate", "--space", str(space), "--samples", "0"])
    assert result.exit_code == 0, result.output
    note = "skipped 2 hidden files (a name starting with '.', e.g. Eosinophil/.DS_0001.jpg"
    assert f"data:     {note}" in result.stdout
    # The line tune prints when it reads the data (stderr) says it too.
    assert "Read 18 images of 3 classes (folder)" in result.stderr
    assert note in result.stderr
