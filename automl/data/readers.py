"""Read images and labels from folders, CSV + image folder, ``.npz`` files, digits or BloodMNIST.

Every source becomes one :class:`ImageSet`: a ``uint8`` array of RGB images already resized to
``image_size x image_size`` (the only copy of the pixels that is kept), integer labels, class
names, a stable id per image and optional groups.

Decoding runs on threads (joblib's threading backend): Pillow releases the GIL while it decodes
and resizes, so threads use every core without pickling results back from worker processes, and
they write straight into one preallocated output array (worker processes would also pay their
start-up on every one-off read). JPEGs are decoded at a reduced scale (``Image.draft``) when they
are at least twice the target size. ``benchmarks/input_pipeline.py`` times the decoding of real
JPEGs and TIFFs (``prepare_s``; results in ``benchmarks/results/input_pipeline.md``).

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
import posixpath
import shutil
import struct
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PureWindowsPath
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

_CACHE_VERSION = 3  # bump when decoding changes, so old cache entries are not reused
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
        hidden_files: image files of the source left out because a part of their path starts
            with ``.`` (``.DS_0001.jpg``, ``._cell.jpg``, ``.ipynb_checkpoints/``: system and
            editor files), relative to the source's folder.
        pixel_scaling: how pixels wider than 8 bits were brought to 0..255, one rule for the
            whole set (:func:`pixel_scale`); ``None`` when every image was 8-bit.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    ids: np.ndarray
    groups: np.ndarray | None = None
    cache_entry: Path | None = None
    hidden_files: tuple[str, ...] = ()
    pixel_scaling: str | None = None

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
            hidden_files=self.hidden_files,
            pixel_scaling=self.pixel_scaling,
        )

    def reading_notes(self) -> list[str]:
        """What reading left out or changed that the user should know, one phrase each."""
        notes = []
        if self.hidden_files:
            n = len(self.hidden_files)
            notes.append(
                f"skipped {n} hidden file{'s' if n > 1 else ''} (a name starting with '.', "
                f"e.g. {self.hidden_files[0]}: system or editor files, not data)"
            )
        if self.pixel_scaling:
            notes.append(self.pixel_scaling)
        return notes


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
            logger.info("Read %d images from the cache %s%s", len(cached), folder, _notes(cached))
            return cached
        images = plan.read()
        if _write_cache(folder, images):
            images = replace(images, cache_entry=folder)
    logger.info(
        "Read %d images of %d classes (%s) in %.1f s%s",
        len(images),
        len(images.class_names),
        source.format,
        time.perf_counter() - started,
        _notes(images),
    )
    return images


def _notes(images: ImageSet) -> str:
    notes = images.reading_notes()
    return "; " + "; ".join(notes) if notes else ""


def list_image_files(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively and sorted; hidden files and folders are skipped.

    Image files are those whose extension (any case) is in :data:`IMAGE_EXTENSIONS`.
    """
    return _walk_images(folder)[0]


def _walk_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """The image files under ``folder`` (sorted), and the hidden ones left out (sorted)."""
    found: list[Path] = []
    hidden: list[Path] = []
    for parent, _, names in os.walk(folder):
        # Hidden folders are walked too, only to count what is left out of them.
        in_hidden = any(part.startswith(".") for part in Path(parent).relative_to(folder).parts)
        for name in names:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                (hidden if in_hidden or name.startswith(".") else found).append(Path(parent, name))
    return sorted(found), sorted(hidden)


def check_utf8_names(paths: Sequence[Path], where: str) -> None:
    """Refuse file names that are not UTF-8: they would fail every report written later.

    ``where`` names what gave the files (``data.path``, ``--input``).

    Raises:
        DataError: naming the files (their bytes shown as ``\\xe9``) and the fix: rename them.
    """
    bad = [path for path in paths if not _is_utf8(str(path))]
    if bad:
        shown = ", ".join(
            f"'{os.fsencode(path).decode('utf-8', 'backslashreplace')}'" for path in bad[:_SHOWN]
        )
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise DataError(
            f"{where}: expected file and folder names in UTF-8, found {len(bad)} that are "
            f"not: {shown}{more}; rename them (e.g. convmv -f latin1 -t utf8 -r --notest "
            "FOLDER), since ids, predictions and reports are written as UTF-8."
        )


def _is_utf8(text: str) -> bool:
    # os.listdir turns undecodable bytes into lone surrogates, which UTF-8 cannot encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    images, skipped, scaling = _read_images(paths, image_size, on_unreadable, progress, "data")
    if scaling:
        logger.info("Read %d images: %s", len(images), scaling)
    return images, skipped


def _read_images(
    paths: Sequence[Path], image_size: int, on_unreadable: str, progress: bool, where: str
) -> tuple[np.ndarray, list[Path], str | None]:
    """Decode ``paths``; also return how wide pixels were scaled (:func:`pixel_scale`)."""
    _check_on_unreadable(on_unreadable, where)
    paths = list(paths)
    out = np.zeros((len(paths), image_size, image_size, 3), dtype=np.uint8)
    wide: dict[int, _WidePixels] = {}

    def decode(start: int, stop: int) -> dict[int, str]:
        errors = {}
        for index in range(start, stop):
            try:
                out[index] = _decode_file(paths[index], image_size)
            except _WidePixels as pixels:  # scaled below, once the whole set's range is known
                wide[index] = pixels
            except UnreadableImage as error:  # a bug of ours is no "unreadable file"
                errors[index] = str(error)
        return errors

    errors = _run_chunks(len(paths), decode, progress, "Reading images")
    scaling = None
    if wide:
        order = sorted(wide)
        scale = pixel_scale([(w.floating, w.high) for w in wide.values()])

        def rescale(start: int, stop: int) -> dict[int, str]:
            errors = {}
            for index in order[start:stop]:
                try:
                    pixels = _as_uint8(np.asarray(open_decoded(paths[index])), scale.factor)
                    out[index] = _resize(Image.fromarray(pixels), image_size)
                except UnreadableImage as error:  # changed since the first pass
                    errors[index] = str(error)
            return errors

        errors.update(_run_chunks(len(order), rescale, progress, "Scaling wide pixels"))
        scaling = scale.describe(len(order), len(paths))
    if not errors:
        return out, [], scaling
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
    return out[keep], [paths[i] for i in bad], scaling


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
    """One image file as ``(s, s, 1)`` gray or ``(s, s, 3)`` RGB ``uint8``.

    Decoded at full size (no JPEG draft: its reduced-scale decoding is a resize that no exported
    model can repeat on the pixels a user gives it; ``automl.nn.export`` repeats ``_resize``).
    """
    return _resize(_to_gray_or_rgb(open_decoded(path)), image_size)


def _to_gray_or_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to ``L`` or ``RGB`` (``uint8``)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("1", "LA", "La"):
        return image.convert("L")
    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        raise _WidePixels(np.asarray(image))  # one scale for the whole set: _read_images
    if image.mode in ("P", "PA") and ("transparency" in image.info or image.mode == "PA"):
        image = image.convert("RGBA")  # avoids Pillow's warning and keeps the palette colours
    return image.convert("RGB")


def _resize(image: Image.Image, image_size: int) -> np.ndarray:
    """An ``L`` or ``RGB`` image resized to ``(s, s, 1)`` or ``(s, s, 3)`` ``uint8`` pixels.

    Antialiased Lanczos-3 both ways, computed in float per channel and rounded once: the one
    resize of training, ``predict`` and the exported model, whose graph repeats it
    (``automl.nn.export.resize_like_reader``; keep the two together). Pillow's 8-bit resize
    would round between its two passes, which the graph cannot repeat.
    """
    if image.size == (image_size, image_size):
        pixels = np.asarray(image)
        return pixels if pixels.ndim == 3 else pixels[..., None]  # gray broadcasts to 3 channels
    size = (image_size, image_size)
    bands = [band.convert("F").resize(size, Image.Resampling.LANCZOS) for band in image.split()]
    resized = np.stack([np.asarray(band) for band in bands], axis=-1)
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


class _WidePixels(Exception):
    """An image with pixels wider than 8 bits, whose scale depends on the whole set."""

    def __init__(self, pixels: np.ndarray) -> None:
        super().__init__("pixels wider than 8 bits")
        self.floating = bool(np.issubdtype(pixels.dtype, np.floating))
        finite = pixels[np.isfinite(pixels)] if self.floating else pixels
        self.high = float(finite.max()) if finite.size else 0.0


@dataclass(frozen=True)
class PixelScale:
    """One factor that maps a whole set's wide pixels onto 0..255, and why that factor.

    Attributes:
        factor: multiply, round and clip to 0..255.
        rule: how the factor was chosen, for the data line and the audit.
    """

    factor: float
    rule: str

    def describe(self, n_wide: int, n_images: int) -> str:
        """One phrase: how many images had wide pixels and what was done to all of them."""
        return f"{n_wide} of {n_images} images have pixels wider than 8 bits: {self.rule}"


def pixel_scale(ranges: Sequence[tuple[bool, float]]) -> PixelScale:
    """The scale of a set's wide pixels from each image's (floating?, largest value).

    Per data set, never per image, so that the brightness of one image still compares with
    another's. Integers are read at the smallest bit depth that holds the set's largest value
    (12-bit data stored in 16-bit files: 4095 -> 255, not 4095/65535 -> 16, nearly black); at
    most 255 they are already 8-bit values. Floats within 0..1 are scaled by 255, others by
    255 over the set's largest value.
    """
    high = max((value for _, value in ranges), default=0.0)
    if any(floating for floating, _ in ranges):
        if high <= 1.0:
            return PixelScale(255.0, "floats in 0..1, scaled by 255")
        return PixelScale(
            255.0 / high, f"floats up to {high:g} (the set's largest), scaled by 255/{high:g}"
        )
    if high <= 255:
        return PixelScale(1.0, f"integers up to {high:g}, kept as 8-bit values")
    bits = int(math.ceil(math.log2(high + 1)))
    top = 2**bits - 1
    return PixelScale(
        255.0 / top,
        f"integers up to {high:g} (the set's largest), read as {bits}-bit: scaled by 255/{top}",
    )


def _array_range(array: np.ndarray) -> tuple[bool, float]:
    """(floating?, largest finite value) of an array of pixels, for :func:`pixel_scale`."""
    floating = bool(np.issubdtype(array.dtype, np.floating))
    finite = array[np.isfinite(array)] if floating else array
    return floating, float(finite.max()) if finite.size else 0.0


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


@dataclass(frozen=True, eq=False)
class SourceFiles:
    """The image files of a ``folder`` or ``csv`` source, listed as ``tune`` reads them.

    Attributes:
        root: the source's folder.
        paths: one file per image.
        ids: the id of each image: its path relative to ``root`` without the extension
            (folders), or the CSV's id in normal form (``./a/../b`` -> ``b``).
        labels: index into ``class_names`` per image; ``-1`` when the CSV row has no label.
        class_names: the class folders, or the CSV's labels sorted.
        groups: the CSV's group per image, or ``None``.
        hidden_files: hidden image files left out, relative to ``root``.
        csv_path: the labels CSV of a ``csv`` source, else ``None``.
    """

    root: Path
    paths: list[Path]
    ids: list[str]
    labels: np.ndarray
    class_names: tuple[str, ...]
    groups: list[str] | None = None
    hidden_files: tuple[str, ...] = ()
    csv_path: Path | None = None


def list_source_files(source: DataSource, where: str = "data") -> SourceFiles:
    """List (and check, without decoding) the image files of a ``folder`` or ``csv`` source.

    Raises:
        DataError: the folder or CSV is missing or malformed, a file name is not UTF-8, a CSV
            id leaves the folder, or two ids name one file.
    """
    if source.format == "folder":
        return _folder_files(source, where)
    if source.format == "csv":
        return _csv_files(source, where)
    raise DataError(
        f"{where}.format: expected folder or csv for a listing of files, found "
        f"{source.format!r}; array sources hold no files."
    )


def _plan_folder(source: DataSource, image_size: int, progress: bool, where: str) -> _Plan:
    return _files_plan(source, _folder_files(source, where), image_size, progress, where)


def _folder_files(source: DataSource, where: str) -> SourceFiles:
    root = _existing_folder(source.path, where, "a folder with one subfolder per class")
    entries = sorted(root.iterdir())
    class_folders = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not class_folders:
        raise DataError(
            f"{where}.path: expected a folder with one subfolder per class, found no subfolders "
            f"in {root}; point {where}.path at the folder that holds the class folders."
        )
    loose = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if loose:
        logger.warning(
            "Ignoring %d image files directly in %s: only images inside class folders are read.",
            len(loose),
            root,
        )
    hidden: list[Path] = []
    for entry in entries:  # hidden class folders (.ipynb_checkpoints) hold no class
        if entry.is_dir() and entry.name.startswith("."):
            found, also_hidden = _walk_images(entry)
            hidden.extend(found + also_hidden)
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(class_folders):
        files, hidden_here = _walk_images(folder)
        hidden.extend(hidden_here)
        if not files:
            raise DataError(
                f"{where}.path: expected images ({', '.join(IMAGE_EXTENSIONS)}) in every class "
                f"folder, found none in {folder}; add images or remove the folder."
            )
        paths.extend(files)
        labels.extend([label] * len(files))
    check_utf8_names(paths, f"{where}.path")
    ids = [path.relative_to(root).with_suffix("").as_posix() for path in paths]
    _check_unique_ids(
        ids, f"{where}.path", "rename one of the files that differ only in extension"
    )
    return SourceFiles(
        root=root,
        paths=paths,
        ids=ids,
        labels=np.array(labels, dtype=np.int64),
        class_names=tuple(folder.name for folder in class_folders),
        hidden_files=tuple(path.relative_to(root).as_posix() for path in sorted(hidden)),
    )


def _plan_csv(source: DataSource, image_size: int, progress: bool, where: str) -> _Plan:
    files = _csv_files(source, where)
    csv_path = files.csv_path
    assert csv_path is not None  # set for every csv source
    plan = _files_plan(source, files, image_size, progress, where)
    return _Plan(lambda: [_file_stamp(csv_path), plan.fingerprint()], plan.read)


def _csv_files(source: DataSource, where: str) -> SourceFiles:
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
    ids = _normal_ids(table[source.id_column].astype(str).tolist(), csv_path, where)
    raw_labels = table[source.label_column]
    labeled = raw_labels.notna().to_numpy()
    class_names = _sorted_labels(raw_labels[labeled].astype(str).unique().tolist())
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[v] if ok else -1 for v, ok in zip(raw_labels, labeled, strict=True)])
    groups = table[source.group_column].astype(str).tolist() if source.group_column else None
    paths = [root / f"{image_id}{source.extension}" for image_id in ids]
    check_utf8_names(paths, f"{where}.path")
    missing = [path for path in paths if not path.is_file()]
    if missing:
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        raise DataError(
            f"{where}.path: expected an image file for every id in {csv_path}, found "
            f"{len(missing)} of {len(paths)} missing: "
            f"{', '.join(str(path) for path in missing[:_SHOWN])}{more}; check {where}.path and "
            f"{where}.extension ({source.extension!r}), or remove those rows from the CSV."
        )
    _check_one_id_per_file(paths, ids, csv_path)
    return SourceFiles(
        root=root,
        paths=paths,
        ids=ids,
        labels=labels.astype(np.int64),
        class_names=class_names,
        groups=groups,
        csv_path=csv_path,
    )


def _normal_ids(raw: list[str], csv_path: Path, where: str) -> list[str]:
    """CSV ids in normal form (``./a`` -> ``a``); refuse absolute ones and ones that leave."""
    ids = [posixpath.normpath(text) for text in raw]
    outside = [
        i
        for i, (text, norm) in enumerate(zip(raw, ids, strict=True))
        if text.startswith(("/", "\\"))
        or PureWindowsPath(text).drive
        or norm == ".."
        or norm.startswith("../")
        or norm == "."
    ]
    if outside:
        shown = ", ".join(f"line {i + 2}: {raw[i]!r}" for i in outside[:_SHOWN])
        raise DataError(
            f"{csv_path}: expected ids that name files inside {where}.path, found "
            f"{len(outside)} absolute or leaving it ({shown}); write each id relative to "
            f"{where}.path, without a leading '/' or '..'."
        )
    first: dict[str, int] = {}
    for i, norm in enumerate(ids):
        if norm in first:
            j = first[norm]
            raise DataError(
                f"{csv_path}: expected one row per image, found {raw[j]!r} (line {j + 2}) and "
                f"{raw[i]!r} (line {i + 2}) naming the same image {norm!r}; remove one row, "
                "or that image could be trained on and scored on."
            )
        first[norm] = i
    return ids


def _check_one_id_per_file(paths: list[Path], ids: list[str], csv_path: Path) -> None:
    """Refuse two ids whose files are one file (a symbolic or hard link, a case-blind disk)."""
    first: dict[tuple[int, int], int] = {}
    for i, path in enumerate(paths):
        stat = path.stat()
        key = (stat.st_dev, stat.st_ino)
        if key in first:
            j = first[key]
            raise DataError(
                f"{csv_path}: expected one row per image, found ids {ids[j]!r} and {ids[i]!r} "
                f"naming one file ({paths[j]} is {path}); remove one row, or that image "
                "could be trained on and scored on."
            )
        first[key] = i


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
    source: DataSource, files: SourceFiles, image_size: int, progress: bool, where: str
) -> _Plan:
    """Plan reading image files; the fingerprint lists every file's path, size and mtime."""
    root, paths = files.root, files.paths

    def fingerprint() -> list[Any]:
        stats = [path.stat() for path in paths]
        return [str(root.resolve())] + [
            [path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns]
            for path, stat in zip(paths, stats, strict=True)
        ]

    def read() -> ImageSet:
        images, skipped, scaling = _read_images(
            paths, image_size, source.on_unreadable, progress, where
        )
        keep = np.ones(len(paths), dtype=bool)
        if skipped:
            position = {path: i for i, path in enumerate(paths)}
            keep[[position[path] for path in skipped]] = False
        return ImageSet(
            images=images,
            labels=files.labels[keep],
            class_names=files.class_names,
            ids=np.array(files.ids, dtype=str)[keep],
            groups=None if files.groups is None else np.array(files.groups, dtype=str)[keep],
            hidden_files=files.hidden_files,
            pixel_scaling=scaling,
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
            images=_resize_arrays([pixels], image_size, progress)[0],
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
        pixels, scaling = _resize_arrays(images, image_size, progress)
        return ImageSet(
            images=pixels,
            labels=all_labels,
            class_names=class_names,
            ids=np.array(ids, dtype=str),
            pixel_scaling=scaling,
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


def _resize_arrays(
    parts: Sequence[np.ndarray], image_size: int, progress: bool
) -> tuple[np.ndarray, str | None]:
    """Stack arrays of images into one ``(n, s, s, 3)`` ``uint8`` array, converting each image.

    Returns:
        The images, and how wide pixels were scaled (one factor for every part).
    """
    target = (image_size, image_size, 3)
    if len(parts) == 1 and parts[0].dtype == np.uint8 and parts[0].shape[1:] == target:
        return parts[0], None  # already in final form: no copy
    wide = [part for part in parts if part.dtype not in (np.uint8, np.bool_)]
    shared = pixel_scale([_array_range(part) for part in wide]) if wide else None
    total = sum(len(part) for part in parts)
    out = np.empty((total, *target), dtype=np.uint8)
    start = 0
    for part in parts:
        scale: float | None = None  # uint8: as it is
        if part.dtype == np.bool_:
            scale = 255.0
        elif shared is not None and part.dtype != np.uint8:
            scale = shared.factor

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
    n_wide = sum(len(part) for part in wide)
    return out, None if shared is None else shared.describe(n_wide, total)


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
            hidden_files=tuple(meta.get("hidden_files", ())),
            pixel_scaling=meta.get("pixel_scaling"),
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
            "hidden_files": list(images.hidden_files),
            "pixel_scaling": images.pixel_scaling,
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
