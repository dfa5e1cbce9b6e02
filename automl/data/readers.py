"""Read images and labels from folders, CSV + image folder, ``.npz`` files, digits or BloodMNIST.

Every source becomes one :class:`ImageSet`: a ``uint8`` array of RGB images already resized to
``image_size x image_size`` (the only copy of the pixels that is kept), integer labels, class
names, a stable id per image and optional groups.

Decoding runs on threads (joblib's threading backend): Pillow releases the GIL while it decodes
and resizes, so threads use every core without pickling results back from worker processes, and
they write straight into one preallocated output array. JPEGs are decoded at a reduced scale
(``Image.draft``) when they are at least twice the target size. Measured on the 2-core development
machine with 400 real BCCD JPEGs (131-367 px), median images/s at 64 / 128 / 224 px: threads
2400 / 1490 / 1080; one thread 1800 / 1030 / 760; joblib's ``loky`` processes 500 / 460 / 310
including their start-up (2900 / 1350 / 860 once warm, which a one-off read never is).

With ``cache_dir`` the decoded set is stored under ``cache_dir/<key>/`` (``images.npy``,
``labels.npy``, ``meta.json``); the key hashes the source description, the image size and, for
file-based sources, every file's relative path, size and modification time, so any change to the
data makes a new key. A cached set is opened with ``np.load(mmap_mode="r")``: processes reading
the same set share its pages instead of each holding a copy. Entries are written to a temporary
folder and renamed into place, so a crash never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from automl.config.sources import MEDMNIST_SPLITS, SOURCE_FORMATS, DataSource
from automl.data.download import BLOODMNIST_CLASS_NAMES, bloodmnist_file, fetch_bloodmnist
from automl.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")
ON_UNREADABLE = ("error", "skip")

_CACHE_VERSION = 1  # bump when decoding changes, so old cache entries are not reused
_SHOWN = 3  # how many offending files or values an error message names


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Decoded images with their labels, ready for training or prediction.

    Attributes:
        images: ``(n, s, s, 3)`` ``uint8`` RGB images (a read-only memmap when read from the
            cache).
        labels: ``(n,)`` ``int64`` indices into ``class_names``; ``-1`` marks an unlabeled image.
        class_names: name of each label index.
        ids: ``(n,)`` stable id per image: the relative path without extension (folders), the id
            column (CSV) or ``<split>_<index>`` (arrays).
        groups: ``(n,)`` group per image (images of one group stay on one side of a split), or
            ``None``.
        cache_entry: the cache folder these exact images were read from or written to, where
            results derived from them may be kept too (the audit's screening); ``None`` when
            not cached, and for any subset.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    ids: np.ndarray
    groups: np.ndarray | None = None
    cache_entry: Path | None = None

    def __post_init__(self) -> None:
        lengths = {len(self.images), len(self.labels), len(self.ids)}
        if self.groups is not None:
            lengths.add(len(self.groups))
        if len(lengths) != 1:
            raise ValueError(f"ImageSet arrays differ in length: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        """The images at ``indices`` (integer positions or a boolean mask), in that order."""
        indices = np.asarray(indices)
        return ImageSet(
            images=self.images[indices],
            labels=self.labels[indices],
            class_names=self.class_names,
            ids=self.ids[indices],
            groups=None if self.groups is None else self.groups[indices],
        )


@dataclass(frozen=True)
class _Plan:
    """What a source will produce: a fingerprint for the cache key and how to read it."""

    # JSON-able; with the source and the image size it decides the result. A function, so that
    # reading without a cache never stats every file.
    fingerprint: Callable[[], Any]
    read: Callable[[], ImageSet]


def read_source(
    source: DataSource,
    image_size: int,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    where: str = "data",
) -> ImageSet:
    """Read every image of ``source``, resized to ``image_size`` x ``image_size`` RGB ``uint8``.

    Args:
        source: where the images and labels are and how they are laid out.
        image_size: edge in pixels of the returned images.
        cache_dir: keep the decoded set here and reuse it while the data is unchanged.
        progress: show progress bars on stderr.
        where: configuration key of ``source`` used in error messages (``data``, ``data.test``).

    Returns:
        The decoded :class:`ImageSet`.

    Raises:
        DataError: the source is missing, malformed or holds unreadable images.
        DownloadError: a BloodMNIST download failed.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(
            f"image_size: expected a positive whole number of pixels, found {image_size!r}; "
            "pass e.g. 64."
        )
    if source.format not in _PLANNERS:
        raise DataError(
            f"{where}.format: expected one of {', '.join(SOURCE_FORMATS)}, found "
            f"{source.format!r}; pick one of them."
        )
    _check_on_unreadable(source.on_unreadable, where)
    started = time.perf_counter()
    plan = _PLANNERS[source.format](source, image_size, progress, where)
    if cache_dir is None:
        images = plan.read()
    else:
        folder = Path(cache_dir).expanduser() / _cache_key(source, image_size, plan.fingerprint())
        cached = _load_cache(folder)
        if cached is not None:
            logger.info("Read %d images from the cache %s", len(cached), folder)
            return cached
        images = plan.read()
        if _write_cache(folder, images):
            images = replace(images, cache_entry=folder)
    logger.info(
        "Read %d images of %d classes (%s) in %.1f s",
        len(images),
        len(images.class_names),
        source.format,
        time.perf_counter() - started,
    )
    return images


def list_image_files(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively and sorted; hidden files and folders are skipped.

    Image files are those whose extension (any case) is in :data:`IMAGE_EXTENSIONS`.
    """
    found: list[Path] = []
    for parent, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found.extend(
            Path(parent, name)
            for name in names
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        )
    return sorted(found)


def read_images(
    paths: Sequence[Path],
    image_size: int,
    *,
    on_unreadable: str = "error",
    progress: bool = False,
) -> tuple[np.ndarray, list[Path]]:
    """Decode image files in parallel into one ``(n, s, s, 3)`` ``uint8`` RGB array.

    Grayscale, palette, RGBA and 16-bit images become 3-channel ``uint8``; EXIF orientation is
    applied; every image is resized to ``image_size`` x ``image_size`` (aspect ratio not kept).

    Args:
        paths: image files to read.
        image_size: edge in pixels of the returned images.
        on_unreadable: ``error`` raises on any unreadable file; ``skip`` leaves them out with a
            warning.
        progress: show a progress bar on stderr.

    Returns:
        The images of the readable files in the order of ``paths``, and the skipped files.

    Raises:
        DataError: a file cannot be read and ``on_unreadable`` is ``error``.
    """
    return _read_images(paths, image_size, on_unreadable, progress, "data")


def _read_images(
    paths: Sequence[Path], image_size: int, on_unreadable: str, progress: bool, where: str
) -> tuple[np.ndarray, list[Path]]:
    _check_on_unreadable(on_unreadable, where)
    paths = list(paths)
    out = np.zeros((len(paths), image_size, image_size, 3), dtype=np.uint8)

    def decode(start: int, stop: int) -> dict[int, str]:
        errors = {}
        for index in range(start, stop):
            try:
                out[index] = _decode_file(paths[index], image_size)
            except UnreadableImage as error:  # a bug of ours is no "unreadable file"
                errors[index] = str(error)
        return errors

    errors = _run_chunks(len(paths), decode, progress, "Reading images")
    if not errors:
        return out, []
    bad = sorted(errors)
    named = ", ".join(f"{paths[i]} ({errors[i]})" for i in bad[:_SHOWN])
    more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    if on_unreadable == "error":
        raise DataError(
            f"{where}.path: expected readable image files, found {len(bad)} unreadable of "
            f"{len(paths)}: {named}{more}; remove them or set {where}.on_unreadable: skip."
        )
    logger.warning(
        "Skipped %d unreadable image files of %d: %s",
        len(bad),
        len(paths),
        ", ".join(f"{paths[i]} ({errors[i]})" for i in bad),
    )
    keep = np.ones(len(paths), dtype=bool)
    keep[bad] = False
    return out[keep], [paths[i] for i in bad]


def _check_on_unreadable(value: str, where: str) -> None:
    if value not in ON_UNREADABLE:
        raise DataError(
            f"{where}.on_unreadable: expected 'error' or 'skip', found {value!r}; use one of them."
        )


def _reason(error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):
        return "not a recognised image format"
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# What Pillow's decoders raise on a broken, truncated or hostile file (OSError includes
# UnidentifiedImageError; SyntaxError, struct.error and zlib.error come from format plug-ins).
DECODE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


class UnreadableImage(Exception):
    """A file Pillow cannot decode; the message says why, in a few words."""


def open_decoded(path: Path, draft_size: int | None = None) -> Image.Image:
    """Open, fully decode and EXIF-orient one image file.

    Raises:
        UnreadableImage: the file cannot be decoded (only then: errors of the code around it
            are not turned into "unreadable files", which ``on_unreadable: skip`` would drop).
    """
    try:
        with Image.open(path) as opened:
            if draft_size is not None:
                # JPEG only: decode at 1/2, 1/4 or 1/8 scale while still at least this size.
                opened.draft(None, (draft_size, draft_size))
            opened.load()
            return ImageOps.exif_transpose(opened)
    except DECODE_ERRORS as error:
        raise UnreadableImage(_reason(error)) from error


def _decode_file(path: Path, image_size: int) -> np.ndarray:
    """One image file as ``(s, s, 1)`` gray or ``(s, s, 3)`` RGB ``uint8``."""
    return _resize(_to_gray_or_rgb(open_decoded(path, image_size)), image_size)


def _to_gray_or_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to ``L`` or ``RGB`` (``uint8``)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("1", "LA", "La"):
        return image.convert("L")
    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        pixels = np.asarray(image)
        return Image.fromarray(_as_uint8(pixels, _intensity_scale(pixels)))
    if image.mode in ("P", "PA") and ("transparency" in image.info or image.mode == "PA"):
        image = image.convert("RGBA")  # avoids Pillow's warning and keeps the palette colours
    return image.convert("RGB")


def _resize(image: Image.Image, image_size: int) -> np.ndarray:
    """An ``L`` or ``RGB`` image resized to ``(s, s, 1)`` or ``(s, s, 3)`` ``uint8`` pixels."""
    if image.size != (image_size, image_size):
        upscale = image.width < image_size or image.height < image_size
        resample = Image.Resampling.BICUBIC if upscale else Image.Resampling.LANCZOS
        image = image.resize((image_size, image_size), resample)
    pixels = np.asarray(image)
    return pixels if pixels.ndim == 3 else pixels[..., None]  # gray broadcasts to 3 channels


def _intensity_scale(array: np.ndarray) -> float | None:
    """Factor mapping the array's values onto 0..255, decided once for a whole array.

    ``None`` for ``uint8``; ``255`` for booleans and floats within 0..1; ``255/65535`` for 16-bit
    integers (and wider integers above 255); otherwise 1 (values are clipped to 0..255).
    """
    if array.dtype == np.uint8:
        return None
    if array.dtype == np.bool_:
        return 255.0
    high = float(np.nanmax(array)) if array.size else 0.0
    if np.issubdtype(array.dtype, np.floating):
        return 255.0 if high <= 1.0 else 1.0
    if array.dtype.itemsize == 2 or (array.dtype.itemsize > 2 and high > 255):
        return 255.0 / 65535.0
    return 1.0


def _as_uint8(array: np.ndarray, scale: float | None) -> np.ndarray:
    if scale is None:
        return array
    scaled = np.nan_to_num(array.astype(np.float32) * scale)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _run_chunks(
    n_items: int, work: Callable[[int, int], dict[int, str]], progress: bool, description: str
) -> dict[int, str]:
    """Run ``work(start, stop)`` over ``range(n_items)`` in chunks on threads; merge the errors."""
    n_jobs = max(1, joblib.cpu_count())
    chunk = max(1, min(64, math.ceil(n_items / (4 * n_jobs))))
    starts = range(0, n_items, chunk)
    errors: dict[int, str] = {}
    with tqdm(
        total=n_items, desc=description, unit="img", file=sys.stderr, disable=not progress
    ) as bar:
        results = joblib.Parallel(
            n_jobs=min(n_jobs, len(starts)) or 1,
            backend="threading",
            return_as="generator_unordered",
        )(joblib.delayed(_counted)(work, start, min(start + chunk, n_items)) for start in starts)
        for done, chunk_errors in results:
            errors.update(chunk_errors)
            bar.update(done)
    return errors


def _counted(
    work: Callable[[int, int], dict[int, str]], start: int, stop: int
) -> tuple[int, dict[int, str]]:
    return stop - start, work(start, stop)


# --- folder and CSV sources -------------------------------------------------------------------


def _plan_folder(source: DataSource, image_size: int, progress: bool, where: str) -> _Plan:
    root = _existing_folder(source.path, where, "a folder with one subfolder per class")
    class_folders = sorted(
        entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    if not class_folders:
        raise DataError(
            f"{where}.path: expected a folder with one subfolder per class, found no subfolders "
            f"in {root}; point {where}.path at the folder that holds the class folders."
        )
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if loose:
        logger.warning(
            "Ignoring %d image files directly in %s: only images inside class folders are read.",
            len(loose),
            root,
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(class_folders):
        files = list_image_files(folder)
        if not files:
            raise DataError(
                f"{where}.path: expected images ({', '.join(IMAGE_EXTENSIONS)}) in every class "
                f"folder, found none in {folder}; add images or remove the folder."
            )
        paths.extend(files)
        labels.extend([label] * len(files))
    ids = [path.relative_to(root).with_suffix("").as_posix() for path in paths]
    _check_unique_ids(
        ids, f"{where}.path", "rename one of the files that differ only in extension"
    )
    class_names = tuple(folder.name for folder in class_folders)
    return _files_plan(
        source, root, paths, np.array(labels), class_names, ids, None, image_size, progress, where
    )


def _plan_csv(source: DataSource, image_size: int, progress: bool, where: str) -> _Plan:
    root = _existing_folder(source.path, where, "the folder holding the images named in the CSV")
    if not source.labels_csv:
        raise DataError(
            f"{where}.labels_csv: expected the CSV file of image ids and labels, found none set; "
            f"set {where}.labels_csv."
        )
    csv_path = Path(source.labels_csv).expanduser()
    table = _read_csv(csv_path, where)
    columns = {"id_column": source.id_column, "label_column": source.label_column}
    if source.group_column:
        columns["group_column"] = source.group_column
    for key, column in columns.items():
        if column not in table.columns:
            raise DataError(
                f"{where}.{key}: expected a column {column!r} in {csv_path}, found columns "
                f"{', '.join(map(repr, table.columns))}; set {where}.{key} to one of them."
            )
    for name in (source.id_column, source.group_column):
        if name and table[name].isna().any():
            rows = (np.flatnonzero(table[name].isna().to_numpy()) + 2)[:_SHOWN]
            raise DataError(
                f"{csv_path}: expected a value in column {name!r} on every row, found empty "
                f"cells on lines {', '.join(map(str, rows))}; fill them in or remove those rows."
            )
    ids = table[source.id_column].astype(str).tolist()
    _check_unique_ids(ids, str(csv_path), "remove the duplicate rows")
    raw_labels = table[source.label_column]
    labeled = raw_labels.notna().to_numpy()
    class_names = _sorted_labels(raw_labels[labeled].astype(str).unique().tolist())
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[v] if ok else -1 for v, ok in zip(raw_labels, labeled, strict=True)])
    groups = table[source.group_column].astype(str).tolist() if source.group_column else None
    paths = [root / f"{image_id}{source.extension}" for image_id in ids]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        raise DataError(
            f"{where}.path: expected an image file for every id in {csv_path}, found "
            f"{len(missing)} of {len(paths)} missing: "
            f"{', '.join(str(path) for path in missing[:_SHOWN])}{more}; check {where}.path and "
            f"{where}.extension ({source.extension!r}), or remove those rows from the CSV."
        )
    plan = _files_plan(
        source, root, paths, labels, class_names, ids, groups, image_size, progress, where
    )
    return _Plan(lambda: [_file_stamp(csv_path), plan.fingerprint()], plan.read)


def _read_csv(csv_path: Path, where: str) -> pd.DataFrame:
    try:
        # Everything as text, so ids keep leading zeros and labels are compared as written;
        # only empty cells count as missing (a class called "NA" stays a class).
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError as error:
        raise DataError(
            f"{where}.labels_csv: expected a CSV file, found nothing at {csv_path}; fix the path."
        ) from error
    except pd.errors.EmptyDataError as error:
        raise DataError(
            f"{where}.labels_csv: expected a header and one row per image, found an empty file "
            f"{csv_path}; fill it in or point {where}.labels_csv at the right file."
        ) from error
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise DataError(
            f"{where}.labels_csv: expected a readable CSV file, found {csv_path} unreadable "
            f"({str(error).splitlines()[0]}); fix or re-export the file."
        ) from error
    if table.empty:
        raise DataError(
            f"{where}.labels_csv: expected one row per image, found only a header in {csv_path}; "
            "add the rows or point it at the right file."
        )
    return table


def _sorted_labels(values: Sequence[str]) -> tuple[str, ...]:
    """Sorted class names; numerically when all are whole numbers (so "2" comes before "10")."""
    try:
        return tuple(sorted(values, key=int))
    except ValueError:
        return tuple(sorted(values))


def _check_unique_ids(ids: Sequence[str], where: str, fix: str) -> None:
    counts = pd.Series(ids).value_counts()
    duplicated = counts[counts > 1]
    if len(duplicated):
        shown = ", ".join(map(repr, duplicated.index[:_SHOWN]))
        raise DataError(
            f"{where}: expected a unique id per image, found {len(duplicated)} ids used more than "
            f"once ({shown}); {fix}."
        )


def _existing_folder(path: str | None, where: str, expected: str) -> Path:
    if not path:
        raise DataError(f"{where}.path: expected {expected}, found no path; set {where}.path.")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        found = "a file" if folder.exists() else "nothing"
        raise DataError(
            f"{where}.path: expected {expected}, found {found} at {folder}; fix {where}.path."
        )
    return folder


def _files_plan(
    source: DataSource,
    root: Path,
    paths: list[Path],
    labels: np.ndarray,
    class_names: tuple[str, ...],
    ids: list[str],
    groups: list[str] | None,
    image_size: int,
    progress: bool,
    where: str,
) -> _Plan:
    """Plan reading image files; the fingerprint lists every file's path, size and mtime."""

    def fingerprint() -> list[Any]:
        stats = [path.stat() for path in paths]
        return [str(root.resolve())] + [
            [path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns]
            for path, stat in zip(paths, stats, strict=True)
        ]

    def read() -> ImageSet:
        images, skipped = _read_images(paths, image_size, source.on_unreadable, progress, where)
        keep = np.ones(len(paths), dtype=bool)
        if skipped:
            position = {path: i for i, path in enumerate(paths)}
            keep[[position[path] for path in skipped]] = False
        return ImageSet(
            images=images,
            labels=labels.astype(np.int64)[keep],
            class_names=class_names,
            ids=np.array(ids, dtype=str)[keep],
            groups=None if groups is None else np.array(groups, dtype=str)[keep],
        )

    return _Plan(fingerprint, read)


# --- array sources -----------------------------------------------------------------------------


def _plan_npz(source: DataSource, image_size: int, progress: bool, where: str) -> _Plan:
    if not source.path:
        raise DataError(f"{where}.path: expected an .npz file, found no path; set {where}.path.")
    path = Path(source.path).expanduser()
    if not path.is_file():
        raise DataError(
            f"{where}.path: expected an .npz file, found nothing at {path}; fix {where}.path."
        )
    return _Plan(
        lambda: _file_stamp(path),
        lambda: _read_npz(path, source, image_size, progress, where, None),
    )


def _plan_bloodmnist(source: DataSource, image_size: int, progress: bool, where: str) -> _Plan:
    published_md5 = bloodmnist_file(source.size, where)[1]

    def read() -> ImageSet:
        path = fetch_bloodmnist(
            source.size, source.path, url=source.url, progress=progress, where=where
        )
        return _read_npz(path, source, image_size, progress, where, BLOODMNIST_CLASS_NAMES)

    # The published MD5 pins the file's content, so no download is needed to build the key.
    return _Plan(lambda: [published_md5], read)


def _plan_digits(source: DataSource, image_size: int, progress: bool, where: str) -> _Plan:
    def read() -> ImageSet:
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values are 0..16
        labels = digits.target.astype(np.int64)
        return ImageSet(
            images=_resize_arrays([pixels], image_size, progress),
            labels=labels,
            class_names=_class_names(source, None, tuple(map(str, range(10))), labels, where),
            ids=np.array([f"digits_{i}" for i in range(len(labels))]),
        )

    return _Plan(list, read)


def _read_npz(
    path: Path,
    source: DataSource,
    image_size: int,
    progress: bool,
    where: str,
    default_names: tuple[str, ...] | None,
) -> ImageSet:
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{where}.path: expected an .npz file (a zip of arrays), found {path} in another "
            "format; save the arrays with numpy.savez(path, images=..., labels=...)."
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(
            f"{where}.path: expected an .npz file of arrays, found {path} unreadable "
            f"({str(error).splitlines()[0]}); save it again with numpy.savez."
        ) from error
    with archive:
        parts = _npz_parts(archive, source, path, where)
        images: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        ids: list[str] = []
        for prefix, images_key, labels_key in parts:
            array = _load_array(archive, images_key, path, where)
            _check_image_array(array, images_key, path, where)
            images.append(array)
            if labels_key is None:
                labels.append(np.full(len(array), -1, dtype=np.int64))
            else:
                labels.append(
                    _check_labels(
                        _load_array(archive, labels_key, path, where),
                        len(array),
                        labels_key,
                        path,
                        where,
                    )
                )
            ids.extend(f"{prefix}_{i}" for i in range(len(array)))
        file_names = None
        if "class_names" in archive.files:
            file_names = tuple(str(name) for name in archive["class_names"].ravel())
        all_labels = np.concatenate(labels)
        class_names = _class_names(source, file_names, default_names, all_labels, where)
        return ImageSet(
            images=_resize_arrays(images, image_size, progress),
            labels=all_labels,
            class_names=class_names,
            ids=np.array(ids, dtype=str),
        )


def _npz_parts(
    archive: Any, source: DataSource, path: Path, where: str
) -> list[tuple[str, str, str | None]]:
    """(id prefix, images key, labels key or None) for each part of the requested split."""
    files = set(archive.files)
    if source.images_key is not None or "images" in files:
        images_key = source.images_key or "images"
        labels_key = source.labels_key or ("labels" if "labels" in files else None)
        return [(source.split, images_key, labels_key)]
    if source.split not in MEDMNIST_SPLITS:
        raise DataError(
            f"{where}.split: expected one of {', '.join(MEDMNIST_SPLITS)}, found "
            f"{source.split!r}; pick one of them."
        )
    parts = []
    for split in source.split.split("+"):
        if f"{split}_images" not in files:
            raise DataError(
                f"{where}.images_key: expected an array 'images' or '{split}_images' in {path}, "
                f"found arrays {', '.join(sorted(files))}; set {where}.images_key and "
                f"{where}.labels_key."
            )
        labels_key = source.labels_key or (
            f"{split}_labels" if f"{split}_labels" in files else None
        )
        parts.append((split, f"{split}_images", labels_key))
    return parts


def _load_array(archive: Any, key: str, path: Path, where: str) -> np.ndarray:
    if key not in archive.files:
        raise DataError(
            f"{where}: expected an array {key!r} in {path}, found arrays "
            f"{', '.join(sorted(archive.files))}; set {where}.images_key / {where}.labels_key."
        )
    try:
        return archive[key]
    except ValueError as error:  # object arrays need pickle, which is never enabled here
        raise DataError(
            f"{where}: expected a numeric array {key!r} in {path}, found an object array; "
            "save it as a numeric array (no Python objects)."
        ) from error


def _check_image_array(array: np.ndarray, key: str, path: Path, where: str) -> None:
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[3] in (1, 3, 4))):
        raise DataError(
            f"{where}.images_key: expected {key!r} in {path} of shape (n, h, w) or (n, h, w, c) "
            f"with c in 1, 3, 4, found shape {array.shape}; save the images channels-last."
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(
            f"{where}.images_key: expected numeric pixels in {key!r} of {path}, found dtype "
            f"{array.dtype}; save the images as uint8."
        )


def _check_labels(labels: np.ndarray, n: int, key: str, path: Path, where: str) -> np.ndarray:
    if labels.shape not in ((n,), (n, 1)):
        raise DataError(
            f"{where}.labels_key: expected {key!r} in {path} with one label per image, shape "
            f"({n},) or ({n}, 1), found shape {labels.shape}; save one class index per image "
            "(argmax of one-hot rows; multi-label data is not supported)."
        )
    labels = labels.reshape(-1)
    if not np.issubdtype(labels.dtype, np.number):
        found = f"dtype {labels.dtype}"
    elif not np.all(np.mod(labels, 1) == 0):
        found = "non-integer values"
    elif labels.size and labels.min() < -1:
        found = f"the value {labels.min()}"
    else:
        return labels.astype(np.int64)
    raise DataError(
        f"{where}.labels_key: expected class indices 0..C-1 (or -1 for unlabeled) in {key!r} of "
        f"{path}, found {found}; store integer class indices and put the names in "
        f"{where}.class_names."
    )


def _class_names(
    source: DataSource,
    from_file: tuple[str, ...] | None,
    default: tuple[str, ...] | None,
    labels: np.ndarray,
    where: str,
) -> tuple[str, ...]:
    """Names from the configuration, else from the file, else the default, else "0".."C-1"."""
    n_classes = int(labels.max()) + 1 if labels.size else 0
    names = source.class_names or from_file or default
    if names is None:
        return tuple(str(i) for i in range(n_classes))
    if n_classes > len(names):
        raise DataError(
            f"{where}.class_names: expected a name for every label 0..{n_classes - 1}, found "
            f"{len(names)} names; list {n_classes} names or fix the labels."
        )
    return tuple(names)


def _resize_arrays(parts: Sequence[np.ndarray], image_size: int, progress: bool) -> np.ndarray:
    """Stack arrays of images into one ``(n, s, s, 3)`` ``uint8`` array, converting each image."""
    target = (image_size, image_size, 3)
    if len(parts) == 1 and parts[0].dtype == np.uint8 and parts[0].shape[1:] == target:
        return parts[0]  # already in final form: no copy
    total = sum(len(part) for part in parts)
    out = np.empty((total, *target), dtype=np.uint8)
    start = 0
    for part in parts:
        scale = _intensity_scale(part)  # one factor per array keeps images comparable

        def convert(
            lo: int,
            hi: int,
            part: np.ndarray = part,
            offset: int = start,
            scale: float | None = scale,
        ) -> dict[int, str]:
            for i in range(lo, hi):
                pixels = _as_uint8(part[i], scale)
                if pixels.ndim == 3:
                    pixels = pixels[..., 0] if pixels.shape[2] == 1 else pixels[..., :3]
                out[offset + i] = _resize(
                    Image.fromarray(np.ascontiguousarray(pixels)), image_size
                )
            return {}

        _run_chunks(len(part), convert, progress, "Resizing images")
        start += len(part)
    return out


# --- cache -------------------------------------------------------------------------------------


def _file_stamp(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _cache_key(source: DataSource, image_size: int, fingerprint: Any) -> str:
    text = json.dumps(
        [_CACHE_VERSION, source.to_dict(), image_size, fingerprint], sort_keys=True, default=str
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return f"{source.format}-{image_size}px-{digest}"


def _load_cache(folder: Path) -> ImageSet | None:
    if not (folder / "meta.json").is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return ImageSet(
            images=np.load(folder / "images.npy", mmap_mode="r"),
            labels=np.load(folder / "labels.npy"),
            class_names=tuple(meta["class_names"]),
            ids=np.array(meta["ids"], dtype=str),
            groups=None if meta["groups"] is None else np.array(meta["groups"], dtype=str),
            cache_entry=folder,
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("Ignoring the damaged cache entry %s (%s); rebuilding it.", folder, error)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _write_cache(folder: Path, images: ImageSet) -> bool:
    """Write ``images`` to ``folder`` atomically; a failure only costs the cache (and warns).

    Returns:
        Whether ``folder`` now holds the entry (written here or by another process).
    """
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    except OSError as error:
        logger.warning(
            "Cannot write the image cache in %s (%s); going on without it.", folder.parent, error
        )
        return False
    try:
        meta = {
            "version": _CACHE_VERSION,
            "class_names": list(images.class_names),
            "ids": images.ids.tolist(),
            "groups": None if images.groups is None else images.groups.tolist(),
        }
        for name, array in (("images.npy", images.images), ("labels.npy", images.labels)):
            with open(temp / name, "wb") as handle:
                np.save(handle, np.asarray(array))
                handle.flush()
                os.fsync(handle.fileno())
        # meta.json last: its presence is what marks an entry as complete.
        (temp / "meta.json").write_text(json.dumps(meta))
        try:
            temp.rename(folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
            logger.debug("Another process wrote the cache entry %s first", folder)
    except OSError as error:
        logger.warning("Cannot write the image cache %s (%s); going on without it.", folder, error)
        return False
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return True


_PLANNERS: dict[str, Callable[[DataSource, int, bool, str], _Plan]] = {
    "folder": _plan_folder,
    "csv": _plan_csv,
    "npz": _plan_npz,
    "digits": _plan_digits,
    "bloodmnist": _plan_bloodmnist,
}
