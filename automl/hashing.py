"""Per-image fingerprints for the data audit: pixel digests, perceptual hashes, colour histograms.

Every image is read once, turned into a few fixed-size vectors and dropped, so memory grows with
the number of images, never with their resolution (about 3 KB per image):

- ``digest``: SHA-1 of the decoded pixels (mode, size and bytes): equal digests are exact
  duplicates, whatever the file format or name.
- ``hashes``: a 63-bit perceptual hash (signs of the 8x8 lowest DCT coefficients of a 32x32 gray
  thumbnail, without the DC term) of each of the 8 dihedral orientations. Flipping an image
  negates the odd-frequency coefficients and a transpose swaps them, so the 8 hashes are exact bit
  operations of one DCT; comparing one image's 8 hashes with another's identity hash finds flipped
  and 90-degree-rotated copies. The hash also survives resizing, re-encoding and small shifts and
  rotations (Hamming distance of a few bits out of 63; unrelated images differ in about 31).
- ``colour``: square roots of an 8x8x8 RGB histogram (Hellinger embedding), for finding
  augmented copies, whose colour cast matches even when the geometry does not.
- ``hue``: square roots of a 12-bin hue histogram weighted by saturation, for outliers: what
  stains a picture (a purple-nucleus white cell, a pink red cell) more than how bright it is.
- ``thumbs``: a 32x32 gray thumbnail, to verify augmented copies by normalised cross-correlation
  over flips, rotations and shifts (:func:`aligned_similarity`).

Black fill from rotation/shift augmentation (near-black regions touching the border of an
otherwise bright image) is replaced by the median colour first, so it changes no fingerprint.
Decoding runs on threads, as in ``data.py``: Pillow, NumPy and the FFT release the GIL.
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
from scipy.fft import dctn, irfft2, rfft2
from tqdm.auto import tqdm

THUMB = 32  # edge of the gray thumbnail that the hash and the verification use
_WORK = 64  # edge of the colour image the features are computed from
_BINS = 8  # colour histogram bins per channel
_HUES = 12  # hue histogram bins
_FILL_LEVEL = 16  # a pixel whose channels are all below this may be augmentation fill
_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_BIT_WEIGHTS = np.left_shift(np.uint64(1), np.arange(63, dtype=np.uint64))
# Dihedral orientations as (transpose, flip rows, flip columns); index 0 is the image itself.
DIHEDRAL = tuple((t, r, c) for t in (False, True) for r in (False, True) for c in (False, True))
# Flips and small rotations searched when verifying an augmented copy (degrees).
_ANGLES = tuple(range(-25, 26, 5))
_CROP = THUMB // 5  # margin cut off the query thumbnail, so that shifts can be searched
_DETAIL_SIGMA = 2.0


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
        colour: ``(n, 512)`` ``float32`` square-rooted RGB histogram.
        hue: ``(n, 12)`` ``float32`` square-rooted hue histogram weighted by saturation.
        thumbs: ``(n, 32, 32)`` ``uint8`` gray thumbnails.
    """

    ok: np.ndarray
    reason: np.ndarray
    width: np.ndarray
    height: np.ndarray
    channels: np.ndarray
    digest: np.ndarray
    hashes: np.ndarray
    colour: np.ndarray
    hue: np.ndarray
    thumbs: np.ndarray

    def __len__(self) -> int:
        return len(self.ok)


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
    colour = np.zeros((n_items, _BINS**3), dtype=np.float32)
    hue = np.zeros((n_items, _HUES), dtype=np.float32)
    thumbs = np.zeros((n_items, THUMB, THUMB), dtype=np.uint8)

    def work(start: int, stop: int) -> None:
        for i in range(start, stop):
            try:
                with load(i) as image:
                    image.load()
                    width[i], height[i] = image.size
                    channels[i] = 3 if image.mode in ("P", "PA") else len(image.getbands())
                    digest[i] = _pixel_digest(image)
                    rgb = image if image.mode == "RGB" else image.convert("RGB")
                    hashes[i], colour[i], hue[i], thumbs[i] = _fingerprint(rgb)
                ok[i] = True
            # Broken files raise all kinds of errors; each one means "this file is unreadable".
            except Exception as error:
                reason[i] = _reason(error)

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
    return Features(ok, reason, width, height, channels, digest, hashes, colour, hue, thumbs)


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


def _fingerprint(rgb: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dihedral hashes, colour and hue histograms and thumbnail of one RGB image."""
    pixels = np.asarray(rgb.resize((_WORK, _WORK), Image.Resampling.BILINEAR, reducing_gap=2.0))
    pixels = pixels.astype(np.float32)
    fill = _fill_mask(pixels)
    kept = pixels[~fill] if fill.any() else pixels.reshape(-1, 3)
    if fill.any():
        pixels[fill] = np.median(kept, axis=0)
    bins = np.minimum(kept.astype(np.int64) * _BINS // 256, _BINS - 1)
    counts = np.bincount((bins[:, 0] * _BINS + bins[:, 1]) * _BINS + bins[:, 2], minlength=512)
    colour = np.sqrt(counts / max(1, len(kept))).astype(np.float32)
    hsv = np.asarray(Image.fromarray(pixels.astype(np.uint8)).convert("HSV"), dtype=np.float32)
    weights = hsv[..., 1].ravel()
    hues = np.bincount(
        (hsv[..., 0].ravel() * _HUES / 256).astype(np.int64), weights=weights, minlength=_HUES
    )
    hue = np.sqrt(hues / max(float(weights.sum()), 1e-6)).astype(np.float32)
    gray = Image.fromarray(pixels @ _GRAY).resize((THUMB, THUMB), Image.Resampling.BILINEAR)
    thumb = np.asarray(gray)
    return dihedral_hashes(thumb), colour, hue, np.clip(np.rint(thumb), 0, 255).astype(np.uint8)


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
    probability about ``(1 - d/63) ** bits``; 24 tables of 16 bits find 99% of pairs 4 bits
    apart and 88% of pairs 8 bits apart, while unrelated images (~31 bits) almost never meet.

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


def aligned_similarity(thumbs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Best normalised cross-correlation of each pair's thumbnails over flips, rotations, shifts.

    The centre of ``i``'s thumbnail, flipped (4 ways) and rotated by -25..25 degrees in steps of
    5, slides over ``j``'s whole thumbnail; the result is the highest correlation found (1.0 for
    the same picture). This is what augmentation by rotation, shift and flip leaves intact.

    Args:
        thumbs: ``(n, 32, 32)`` thumbnails from :class:`Features`.
        pairs: ``(m, 2)`` index pairs to score.

    Returns:
        ``(m,)`` scores in [-1, 1].
    """
    scores = np.zeros(len(pairs), dtype=np.float32)
    if len(pairs) == 0:
        return scores
    order = np.argsort(pairs[:, 0], kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(pairs[order, 0]) != 0])
    bounds = list(zip(starts, np.r_[starts[1:], len(order)], strict=True))

    def work(lo: int, hi: int) -> None:
        for first, last in bounds[lo:hi]:
            rows = order[first:last]
            query = _query_variants(_detail(thumbs[pairs[rows[:1], 0]])[0])
            scores[rows] = _correlate(query, _detail(thumbs[pairs[rows, 1]]))

    n_jobs = max(1, joblib.cpu_count())
    chunk = max(1, math.ceil(len(bounds) / (8 * n_jobs)))
    joblib.Parallel(n_jobs=n_jobs, backend="threading")(
        joblib.delayed(work)(lo, min(lo + chunk, len(bounds)))
        for lo in range(0, len(bounds), chunk)
    )
    return scores


def _detail(thumbs: np.ndarray) -> np.ndarray:
    """Thumbnails less their blur (sigma 2 px): smooth look-alikes (two round dark cells)
    correlate highly in plain gray, but only copies of one picture share its detail."""
    smooth = thumbs.astype(np.float32)
    return smooth - ndimage.gaussian_filter(smooth, (0, _DETAIL_SIGMA, _DETAIL_SIGMA))


def _query_variants(thumb: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm centre crops of the flipped and rotated thumbnail: ``(v, c, c)``."""
    image = Image.fromarray(thumb.astype(np.float32))
    background = 0.0  # the detail image's background
    variants = []
    for flip in range(4):
        flipped = image
        if flip & 1:
            flipped = flipped.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if flip & 2:
            flipped = flipped.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        for angle in _ANGLES:
            turned = flipped.rotate(angle, Image.Resampling.BILINEAR, fillcolor=background)
            variants.append(np.asarray(turned)[_CROP:-_CROP, _CROP:-_CROP])
    stack = np.stack(variants)
    stack -= stack.mean(axis=(1, 2), keepdims=True)
    stack /= np.linalg.norm(stack, axis=(1, 2), keepdims=True) + 1e-6
    return stack


def _correlate(query: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Highest normalised correlation of any query variant at any shift inside each target."""
    size = targets.shape[-1]
    crop = query.shape[-1]
    spectrum = np.conj(rfft2(query, s=(size, size)))  # (variants, s, s//2+1), complex64
    products = rfft2(targets)[:, None] * spectrum[None]
    valid = size - crop + 1
    numerator = irfft2(products, s=(size, size))[..., :valid, :valid]
    # Norm of every zero-mean crop-sized window of each target, from summed-area tables; the
    # query variants have zero mean, so the window's mean drops out of the product.
    padded = np.pad(targets, ((0, 0), (1, 0), (1, 0)))
    sums = padded.cumsum(1).cumsum(2)
    squares = (padded * padded).cumsum(1).cumsum(2)

    def window(table: np.ndarray) -> np.ndarray:
        return (
            table[:, crop:, crop:]
            - table[:, :-crop, crop:]
            - table[:, crop:, :-crop]
            + table[:, :-crop, :-crop]
        )

    total = window(sums)
    norm = np.sqrt(np.maximum(window(squares) - total * total / (crop * crop), 1e-3))
    return (numerator.max(axis=1) / norm).max(axis=(1, 2)).astype(np.float32)
