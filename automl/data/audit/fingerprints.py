"""Per-image fingerprints for the data audit: pixel digests, perceptual hashes, tones, thumbnails.

Every image is read once, turned into a few fixed-size arrays and dropped, so memory grows with
the number of images, never with their resolution (a few kilobytes per image, the arrays below):

- ``digest``: SHA-1 of the decoded pixels (mode, size and bytes): equal digests are exact
  duplicates, whatever the file format or name.
- ``hashes``: a 63-bit perceptual hash (signs of the 8x8 lowest DCT coefficients of a 32x32 gray
  thumbnail, without the DC term) of each of the 8 dihedral orientations. Flipping an image
  negates the odd-frequency coefficients and a transpose swaps them, so the 8 hashes are exact bit
  operations of one DCT; comparing one image's 8 hashes with another's identity hash finds flipped
  and 90-degree-rotated copies. The hash also survives resizing, re-encoding and small shifts and
  rotations (Hamming distance of a few bits out of 63; unrelated images differ in about 31), but
  so do look-alikes: two centred cells of one stain are often only a few bits apart. A hash pair
  is a candidate, never a verdict (``matching.py`` confirms it).
- ``colour``: square roots of an 8x8x8 RGB histogram (Hellinger embedding), and ``tones``: soft
  48-bin gray-level histograms of the whole picture and of its central disc. Flips, rotations
  and shifts keep them, so their nearest neighbours are the candidates for augmented copies
  (rotated, shifted, flipped with black fill) that the hash misses.
- ``hue``: square roots of a 12-bin hue histogram weighted by saturation, for outliers: what
  stains a picture (a purple-nucleus white cell, a pink red cell) more than how bright it is.
- ``thumbs`` and ``valid``: a 64 px gray thumbnail that keeps the aspect ratio (centred, padded),
  and the mask of its pixels that are picture (not padding, not augmentation fill), to confirm a
  candidate pair by aligning the two pictures (``matching.py``).

Black fill from rotation/shift augmentation (near-black regions touching the border of an
otherwise bright image) is replaced by the median colour first, so it changes no histogram and
no hash, and it is left out of ``valid``. Decoding runs on threads, as in ``data/readers.py``:
Pillow, NumPy and the FFT release the GIL.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import joblib
import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.fft import dctn
from tqdm.auto import tqdm

from automl.data.readers import DECODE_ERRORS

HASH_EDGE = 32  # edge of the gray thumbnail the perceptual hash is computed from
THUMB = 64  # edge of the aspect-preserving gray thumbnail kept to confirm candidate pairs
_WORK = 64  # edge of the colour image the histograms and the hash are computed from
_BINS = 8  # colour histogram bins per channel
_HUES = 12  # hue histogram bins
TONES = 48  # gray-level bins of each tone histogram
_TONE_SIGMA = 0.55  # smoothing of the tone histograms, in bins: re-encoding moves levels a little
_DISC = 0.375  # radius of the central disc of the second tone histogram, as a share of THUMB
_FILL_LEVEL = 16  # a pixel whose channels are all below this may be augmentation fill
# Thumbnail pixels given up next to fill: resampling and JPEG ringing (8 px blocks) smear the
# black edge over several pixels.
_FILL_BAND = 5
_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_BIT_WEIGHTS = np.left_shift(np.uint64(1), np.arange(63, dtype=np.uint64))
# Dihedral orientations as (transpose, flip rows, flip columns); index 0 is the image itself.
DIHEDRAL = tuple((t, r, c) for t in (False, True) for r in (False, True) for c in (False, True))


@dataclass(frozen=True, eq=False)
class Features:
    """Fingerprints of ``n`` images (rows of unreadable images hold zeros).

    Attributes:
        ok: ``(n,)`` whether the image could be decoded.
        reason: ``(n,)`` why it could not (empty when ``ok``).
        width, height: ``(n,)`` size in pixels as stored.
        channels: ``(n,)`` bands as stored (1 gray, 3 RGB or palette, 4 RGBA/CMYK, ...).
        digest: ``(n,)`` hex SHA-1 of the decoded pixels.
        hashes: ``(n, 8)`` ``uint64`` perceptual hash of each dihedral orientation.
        colour: ``(n, 512)`` ``float16`` square-rooted RGB histogram.
        tones: ``(n, 2, 48)`` ``float16`` square-rooted soft gray-level histograms of the whole
            picture and of its central disc.
        hue: ``(n, 12)`` ``float32`` square-rooted hue histogram weighted by saturation.
        thumbs: ``(n, 64, 64)`` ``uint8`` gray thumbnails, aspect ratio kept (padding and fill
            hold the median gray).
        valid: ``(n, 512)`` ``uint8``: bit-packed ``(64, 64)`` masks of the thumbnail pixels that
            are picture; :func:`valid_masks` unpacks them.
    """

    ok: np.ndarray
    reason: np.ndarray
    width: np.ndarray
    height: np.ndarray
    channels: np.ndarray
    digest: np.ndarray
    hashes: np.ndarray
    colour: np.ndarray
    tones: np.ndarray
    hue: np.ndarray
    thumbs: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.ok)


def valid_masks(features: Features, indices: np.ndarray) -> np.ndarray:
    """``(len(indices), 64, 64)`` boolean picture masks of the thumbnails at ``indices``."""
    bits = np.unpackbits(features.valid[indices], axis=-1)
    return bits.reshape(-1, THUMB, THUMB).astype(bool)


def compute_features(
    n_items: int,
    load: Callable[[int], Image.Image],
    *,
    progress: bool = False,
) -> Features:
    """Fingerprint ``n_items`` images, ``load(i)`` giving the ``i``-th as an opened Pillow image.

    A ``load`` or decode error marks that image unreadable (``ok`` false, ``reason`` set).
    """
    ok = np.zeros(n_items, dtype=bool)
    reason = np.full(n_items, "", dtype=object)
    width = np.zeros(n_items, dtype=np.int64)
    height = np.zeros(n_items, dtype=np.int64)
    channels = np.zeros(n_items, dtype=np.int64)
    digest = np.full(n_items, "", dtype=object)
    hashes = np.zeros((n_items, len(DIHEDRAL)), dtype=np.uint64)
    colour = np.zeros((n_items, _BINS**3), dtype=np.float16)
    tones = np.zeros((n_items, 2, TONES), dtype=np.float16)
    hue = np.zeros((n_items, _HUES), dtype=np.float32)
    thumbs = np.zeros((n_items, THUMB, THUMB), dtype=np.uint8)
    valid = np.zeros((n_items, THUMB * THUMB // 8), dtype=np.uint8)

    def work(start: int, stop: int) -> None:
        for i in range(start, stop):
            # Only decoding may mark a file unreadable: an error in the fingerprint code below
            # is a bug and must surface, not silently drop the image from the audit.
            try:
                with load(i) as image:
                    image.load()
                    width[i], height[i] = image.size
                    channels[i] = 3 if image.mode in ("P", "PA") else len(image.getbands())
                    digest[i] = _pixel_digest(image)
                    rgb = image if image.mode == "RGB" else image.convert("RGB")
            except DECODE_ERRORS as error:
                reason[i] = _reason(error)
                continue
            hashes[i], colour[i], hue[i] = _fingerprint(rgb)
            thumbs[i], mask, tones[i] = _thumbnail(rgb)
            valid[i] = np.packbits(mask)
            ok[i] = True

    n_jobs = max(1, joblib.cpu_count())
    chunk = max(1, min(64, math.ceil(n_items / (4 * n_jobs))))
    starts = range(0, n_items, chunk)
    with tqdm(
        total=n_items, desc="Auditing images", unit="img", file=sys.stderr, disable=not progress
    ) as bar:
        for done in joblib.Parallel(
            n_jobs=min(n_jobs, len(starts)) or 1,
            backend="threading",
            return_as="generator_unordered",
        )(joblib.delayed(_counted)(work, s, min(s + chunk, n_items)) for s in starts):
            bar.update(done)
    return Features(
        ok, reason, width, height, channels, digest, hashes, colour, tones, hue, thumbs, valid
    )


def _counted(work: Callable[[int, int], None], start: int, stop: int) -> int:
    work(start, stop)
    return stop - start


def _reason(error: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "not a recognised image format"
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _pixel_digest(image: Image.Image) -> str:
    digest = hashlib.sha1(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _fingerprint(rgb: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dihedral hashes, colour and hue histograms of one RGB image (squeezed to a square)."""
    pixels = np.asarray(rgb.resize((_WORK, _WORK), Image.Resampling.BILINEAR, reducing_gap=2.0))
    pixels = pixels.astype(np.float32)
    fill = _fill_mask(pixels)
    kept = pixels[~fill] if fill.any() else pixels.reshape(-1, 3)
    if fill.any():
        pixels[fill] = np.median(kept, axis=0)
    bins = np.minimum(kept.astype(np.int64) * _BINS // 256, _BINS - 1)
    counts = np.bincount((bins[:, 0] * _BINS + bins[:, 1]) * _BINS + bins[:, 2], minlength=512)
    colour = np.sqrt(counts / max(1, len(kept)))
    hsv = np.asarray(Image.fromarray(pixels.astype(np.uint8)).convert("HSV"), dtype=np.float32)
    weights = hsv[..., 1].ravel()
    hues = np.bincount(
        (hsv[..., 0].ravel() * _HUES / 256).astype(np.int64), weights=weights, minlength=_HUES
    )
    hue = np.sqrt(hues / max(float(weights.sum()), 1e-6)).astype(np.float32)
    gray = Image.fromarray(pixels @ _GRAY).resize(
        (HASH_EDGE, HASH_EDGE), Image.Resampling.BILINEAR
    )
    return dihedral_hashes(np.asarray(gray)), colour, hue


def _thumbnail(rgb: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gray thumbnail with the aspect ratio kept, its picture mask, and its tone histograms.

    Unlike the hash's squeezed square, a rotation of the picture is a rotation of this
    thumbnail, so that the alignment in ``matching.py`` can undo it.
    """
    scale = THUMB / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    pixels = np.asarray(rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    pixels = pixels.astype(np.float32)
    fill = _fill_mask(pixels)
    gray = pixels @ _GRAY
    median = float(np.median(gray[~fill])) if (~fill).any() else float(np.median(gray))
    thumb = np.full((THUMB, THUMB), median, dtype=np.float32)
    mask = np.zeros((THUMB, THUMB), dtype=bool)
    top, left = (THUMB - size[1]) // 2, (THUMB - size[0]) // 2
    thumb[top : top + size[1], left : left + size[0]] = np.where(fill, median, gray)
    if fill.any():
        fill = ndimage.binary_dilation(fill, iterations=_FILL_BAND)
    mask[top : top + size[1], left : left + size[0]] = ~fill
    rows, columns = np.mgrid[:THUMB, :THUMB] - (THUMB - 1) / 2
    disc = mask & (rows**2 + columns**2 < (_DISC * THUMB) ** 2)
    tones = np.stack([_tone_histogram(thumb[mask]), _tone_histogram(thumb[disc])])
    return np.clip(np.rint(thumb), 0, 255).astype(np.uint8), mask, tones


def _tone_histogram(levels: np.ndarray) -> np.ndarray:
    """Square-rooted, linearly interpolated and slightly smoothed histogram of gray levels."""
    if levels.size == 0:
        return np.zeros(TONES, dtype=np.float32)
    position = np.clip(levels * ((TONES - 1) / 255), 0, TONES - 1)
    low = np.floor(position).astype(np.int64)
    weight = position - low
    counts = np.bincount(low, 1 - weight, TONES)
    counts += np.bincount(np.minimum(low + 1, TONES - 1), weight, TONES)
    counts = ndimage.gaussian_filter1d(counts, _TONE_SIGMA)
    return np.sqrt(counts / counts.sum()).astype(np.float32)


def _fill_mask(pixels: np.ndarray) -> np.ndarray:
    """Near-black regions touching the border of a mostly bright image (augmentation fill)."""
    dark = pixels.max(axis=2) < _FILL_LEVEL
    if not dark.any() or dark.mean() > 0.4:  # dark images (digits, fluorescence) keep theirs
        return np.zeros(dark.shape, dtype=bool)
    regions, _ = ndimage.label(dark)
    border = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    return np.isin(regions, border[border > 0])


def dihedral_hashes(gray: np.ndarray) -> np.ndarray:
    """The 63-bit DCT-sign hash of each of the 8 dihedral orientations of a square gray image."""
    coefficients = dctn(np.asarray(gray, dtype=np.float64), norm="ortho")[:8, :8]
    odd = (np.arange(8) % 2).astype(bool)
    out = np.empty(len(DIHEDRAL), dtype=np.uint64)
    for k, (transpose, flip_rows, flip_columns) in enumerate(DIHEDRAL):
        c = coefficients.T.copy() if transpose else coefficients.copy()
        if flip_rows:
            c[odd, :] *= -1
        if flip_columns:
            c[:, odd] *= -1
        bits = c.ravel()[1:] > 0
        out[k] = np.bitwise_or.reduce(_BIT_WEIGHTS[bits]) if bits.any() else 0
    return out


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences between ``uint64`` hashes (broadcast)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def hash_candidates(
    hashes: np.ndarray, max_distance: int, *, n_tables: int = 24, bits: int = 16, seed: int = 0
) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, whose hashes differ in at most ``max_distance`` bits.

    Bit-sampling LSH: each table keys every image's identity hash by ``bits`` random bit
    positions and looks up all 8 orientations of every image, so only images sharing a key are
    compared (no all-pairs loop). A pair ``d`` bits apart shares a key in one table with
    probability about ``(1 - d/63) ** bits``, so 24 tables of 16 bits find nearly every pair a
    few bits apart, while unrelated images (~31 bits) almost never meet.

    Args:
        hashes: ``(n, 8)`` dihedral hashes from :class:`Features`.
        max_distance: largest accepted Hamming distance over the 8 orientations.

    Returns:
        ``(m, 2)`` sorted, unique index pairs.
    """
    n = len(hashes)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    rng = np.random.default_rng(seed)
    found: list[np.ndarray] = []
    for _ in range(n_tables):
        positions = np.sort(rng.choice(63, size=bits, replace=False)).astype(np.uint64)
        keys = ((hashes[..., None] >> positions) & np.uint64(1)) << np.arange(
            bits, dtype=np.uint64
        )
        keys = keys.sum(axis=-1, dtype=np.uint64)  # (n, 8)
        order = np.argsort(keys[:, 0], kind="stable")
        index_keys = keys[order, 0]
        query = keys.ravel()
        left = np.searchsorted(index_keys, query, side="left")
        right = np.searchsorted(index_keys, query, side="right")
        counts = right - left
        if counts.sum() == 0:
            continue
        owner = np.repeat(np.arange(query.size) // len(DIHEDRAL), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        partner = order[np.repeat(left, counts) + offsets]
        keep = owner != partner
        found.append(np.stack([owner[keep], partner[keep]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.unique(np.sort(np.concatenate(found), axis=1), axis=0)
    distance = hash_distance(hashes, pairs)
    return pairs[distance <= max_distance]


def hash_distance(hashes: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Smallest Hamming distance between ``i``'s orientations and ``j``'s identity hash."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.int64)
    return hamming(hashes[pairs[:, 0]], hashes[pairs[:, 1], :1]).min(axis=1)
