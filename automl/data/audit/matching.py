"""Confirm candidate duplicate pairs: align the two pictures, then compare them everywhere.

Hashes and histograms only propose pairs. On real single-cell images they propose look-alikes
by the thousand: a centred cell of the same stain and size gives the same perceptual hash and
the same correlation of its outline, whatever surrounds it. A copy (re-encoded, resized,
flipped, rotated, shifted) differs: once aligned it matches *everywhere*, neighbouring cells and
background included, while two cells of one stain match only in the centre. So every candidate
pair goes through two stages on the 64 px thumbnails of ``fingerprints.py``:

1. *Coarse alignment* (pooled to 32 px): the centre of ``i``'s detail image (gray less its
   blur over the picture only, so smooth shading and picture edges do not count), flipped 4
   ways, or in the one orientation of the dihedral group the hashes agree on (how quarter
   turns are found), and rotated by -25..25 degrees in steps of 5, slides over ``j``'s; the
   best normalised cross-correlation (``similarity``) gives the orientation, the angle and the
   shift. Pairs below ``MatchThresholds.similarity`` stop here, and so do pairs whose gray
   levels differ by more than 4 on average once aligned (most look-alikes: a cheap screen).
2. *Comparison* (64 px): the shift is refined by +-2 px and the angle in 2.5-degree steps
   while the fit improves (a round cell alone hardly fixes the angle), then the two gray
   thumbnails are compared over the whole region where both hold picture (black fill with a
   5 px band, padding and rotated-out corners left out). A pixel's residual is how far it lies
   outside the range of the other picture's 3x3 neighbourhood, so the sub-pixel misregistration
   of a resampled copy costs nothing while a missing neighbour cell, another stain or another
   outline does. A pair is confirmed when the mean residual, the worst 8x8 tile's mean residual
   (``peak``: the copy must match in every part of the picture) and the share of the smaller
   picture that overlaps are all within bounds.

Thresholds (gray levels of the 64 px thumbnail, :class:`MatchThresholds`) were set on real
single-cell crops with planted copies (re-encoded, resized, flipped, quarter-turned, rotated,
shifted, with black fill) and on scikit-learn's digits, so that the copies pass and different
cells (even two isolated round cells of one smear) and different digits do not.
``benchmarks/audit_precision.py`` measures the precision and recall of the confirmed groups on
``chula_rbc12`` (results in ``benchmarks/results/audit_precision.md``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import joblib
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from scipy.fft import irfft2, rfft2

from automl.data.audit.fingerprints import DIHEDRAL, THUMB, Features, hamming, valid_masks

ANGLES = tuple(range(-25, 26, 5))  # coarse rotations searched (degrees)
_COARSE = THUMB // 2  # edge of the coarse alignment
_CROP = _COARSE // 5  # margin cut off the query, so that shifts of up to 20% can be searched
_DETAIL_SIGMA = 2.0  # blur removed from the coarse images (px of the coarse edge)
_SMOOTH = 0.7  # blur of both thumbnails before comparing: JPEG blocks and resampling noise
_SCREEN = 4.0  # coarse mean absolute difference (gray levels) beyond which a pair is not a copy
_FINE_STEP = 2.5  # step of the angle refinement (degrees)
_FINE_STEPS = 3  # most steps the refinement takes from the coarse angle, each way
_FINE_SHIFT = 2  # refinement of the coarse shift (px of the 64 px thumbnail, each way)
_EDGE = 2  # px given up along the edges of a picture mask (fill, padding, rotation)
_TILE = 8  # edge of the tiles of the peak residual
_FLIPS = 4  # none, left-right, top-bottom, both (= a half turn)


@dataclass(frozen=True)
class MatchThresholds:
    """When a candidate pair counts as a copy (the module docstring says how they were set)."""

    similarity: float = 0.7
    residual: float = 0.5
    peak: float = 2.0
    overlap: float = 0.5


@dataclass(frozen=True, eq=False)
class Matches:
    """How each candidate pair aligned and compared (one row per pair).

    Attributes:
        similarity: best coarse correlation of the detail images, in [-1, 1].
        residual: mean residual over the aligned overlap (gray levels; NaN: not compared).
        peak: mean residual of the worst 8x8 tile (gray levels; NaN: not compared).
        overlap: share of the smaller picture covered by the aligned overlap.
        confirmed: the pair is a copy by :class:`MatchThresholds`.
    """

    similarity: np.ndarray
    residual: np.ndarray
    peak: np.ndarray
    overlap: np.ndarray
    confirmed: np.ndarray


def hash_orientations(hashes: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Index into ``DIHEDRAL`` of the orientation of ``i`` whose hash is closest to ``j``'s."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.int64)
    return hamming(hashes[pairs[:, 0]], hashes[pairs[:, 1], :1]).argmin(axis=1)


def confirm_pairs(
    features: Features,
    pairs: np.ndarray,
    thresholds: MatchThresholds = MatchThresholds(),
    *,
    orientation: np.ndarray | None = None,
) -> Matches:
    """Align and compare every pair ``(i, j)`` of ``pairs``; see the module docstring.

    Args:
        features: fingerprints with the thumbnails and picture masks.
        pairs: ``(m, 2)`` index pairs.
        thresholds: what a copy must reach.
        orientation: ``(m,)`` the orientation of ``i`` to try, as an index into ``DIHEDRAL``
            (e.g. from :func:`hash_orientations`: a quarter turn is found this way only), or
            -1 to try the 4 flips; default -1 for every pair.

    Returns:
        The :class:`Matches` of the pairs, in their order.
    """
    m = len(pairs)
    result = np.full((4, m), np.nan, dtype=np.float32)  # similarity, residual, peak, overlap
    result[[0, 3]] = 0.0
    if m:
        if orientation is None:
            orientation = np.full(m, -1, dtype=np.int64)
        order = np.argsort(pairs[:, 0], kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(pairs[order, 0]) != 0])
        bounds = list(zip(starts, np.r_[starts[1:], m], strict=True))

        def work(lo: int, hi: int) -> None:
            for first, last in bounds[lo:hi]:
                rows = order[first:last]
                i = int(pairs[rows[0], 0])
                targets, oriented = pairs[rows, 1], orientation[rows]
                result[:, rows] = _match_one(features, i, targets, oriented, thresholds)

        n_jobs = max(1, joblib.cpu_count())
        chunk = max(1, math.ceil(len(bounds) / (8 * n_jobs)))
        joblib.Parallel(n_jobs=n_jobs, backend="threading")(
            joblib.delayed(work)(lo, min(lo + chunk, len(bounds)))
            for lo in range(0, len(bounds), chunk)
        )
    similarity, residual, peak, overlap = result
    with np.errstate(invalid="ignore"):
        confirmed = (
            (similarity >= thresholds.similarity)
            & (residual <= thresholds.residual)
            & (peak <= thresholds.peak)
            & (overlap >= thresholds.overlap)
        )
    return Matches(similarity, residual, peak, overlap, confirmed)


def _match_one(
    features: Features,
    i: int,
    targets: np.ndarray,
    orientation: np.ndarray,
    thresholds: MatchThresholds,
) -> np.ndarray:
    """Align image ``i`` with each target: ``(4, t)`` similarity, residual, peak, overlap."""
    out = np.full((4, len(targets)), np.nan, dtype=np.float32)
    out[[0, 3]] = 0.0
    masks = valid_masks(features, np.r_[i, targets])
    coarse = _pooled(features.thumbs[np.r_[i, targets]])
    coarse_masks = np.asarray(masks.reshape(-1, _COARSE, 2, _COARSE, 2).all(axis=(2, 4)))
    details = _detail(coarse, coarse_masks)
    coarse_i, coarse_j = coarse[:1], coarse[1:]
    detail_i, detail_j = details[0], _Targets.of(details[1:])
    # Coarse alignment: (transpose, flip, angle) and shift of the best variant per target.
    best: list[tuple[bool, int, float]] = [(False, 0, 0.0)] * len(targets)
    shift = np.zeros((len(targets), 2), dtype=np.int64)
    for wanted in np.unique(orientation):
        rows = np.flatnonzero(orientation == wanted)
        variants = _variants(int(wanted))
        scores, chosen, moved = _correlate(
            _query_variants(detail_i, variants), detail_j.subset(rows)
        )
        out[0, rows], shift[rows] = scores, moved
        for row, k in zip(rows, chosen, strict=True):
            best[row] = variants[k]
    close = np.flatnonzero(out[0] >= thresholds.similarity)
    if len(close) == 0:
        return out
    mask_i = masks[0]
    fine_i = (_smooth(features.thumbs[i]), _inner(mask_i))
    pooled_mask_i = _inner(coarse_masks[0], 1)
    for k in close:
        mask_j = masks[1 + k]
        # Screen at 32 px first: most look-alikes differ there by several gray levels already.
        moving, inside = _warp(_smooth(coarse_i[0]), pooled_mask_i, best[k])
        target_mask = _inner(coarse_masks[1 + k], 1)
        centre = (int(shift[k, 0]), int(shift[k, 1]))
        cost, _ = _best_shift(moving, inside, _smooth(coarse_j[k]), target_mask, centre, 1)
        if not cost <= _SCREEN:
            continue
        fine_j = (_smooth(features.thumbs[targets[k]]), _inner(mask_j))
        out[1:, k] = _compare(fine_i, fine_j, best[k], (2 * centre[0], 2 * centre[1]))
    return out


@functools.lru_cache(maxsize=16)
def _variants(orientation: int) -> tuple[tuple[bool, int, float], ...]:
    """(transpose, flip, angle) searched for an orientation index (-1: the 4 flips)."""
    if orientation < 0:
        oriented = [(False, flip) for flip in range(_FLIPS)]
    else:
        transpose, flip_rows, flip_columns = DIHEDRAL[orientation]
        oriented = [(transpose, 2 * flip_rows + flip_columns)]
    return tuple((t, f, float(angle)) for t, f in oriented for angle in ANGLES)


# --- warping ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _sampler(
    size: int, transpose: bool, flip: int, angle: float, margin: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear sampling of an image transposed, flipped, then rotated about its centre.

    Returns:
        ``(p, 4)`` source pixel indices (``size * size``: outside, reads zero) and ``(p, 4)``
        weights, for the output pixels inside ``margin``, row by row.
    """
    kept = np.arange(margin, size - margin, dtype=np.float64)
    rows, columns = np.meshgrid(kept, kept, indexing="ij")
    centre = (size - 1) / 2
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # Undo the rotation (counter-clockwise as displayed), then the flips and the transpose.
    dy, dx = rows - centre, columns - centre
    y, x = centre + dy * cos + dx * sin, centre - dy * sin + dx * cos
    if flip & 1:
        x = size - 1 - x
    if flip & 2:
        y = size - 1 - y
    if transpose:
        y, x = x, y
    y0, x0 = np.floor(y), np.floor(x)
    wy, wx = y - y0, x - x0
    index, weight = [], []
    for oy, ox, w in (
        (0, 0, (1 - wy) * (1 - wx)),
        (0, 1, (1 - wy) * wx),
        (1, 0, wy * (1 - wx)),
        (1, 1, wy * wx),
    ):
        yy, xx = y0 + oy, x0 + ox
        inside = (yy >= 0) & (yy < size) & (xx >= 0) & (xx < size)
        index.append(np.where(inside, yy * size + xx, size * size).astype(np.intp).ravel())
        weight.append(w.astype(np.float32).ravel())
    return np.stack(index, axis=1), np.stack(weight, axis=1)


def _apply(image: np.ndarray, sampler: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    index, weight = sampler
    flat = np.append(image.astype(np.float32, copy=False).ravel(), np.float32(0.0))
    return (flat[index] * weight).sum(axis=-1)


def _warp(
    image: np.ndarray, mask: np.ndarray, orientation: tuple[bool, int, float]
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and its mask transposed, flipped and rotated (``orientation``); same size."""
    size = image.shape[0]
    sampler = _sampler(size, *orientation)
    moved = _apply(image, sampler).reshape(size, size)
    return moved, _apply(mask, sampler).reshape(size, size) > 0.99


# --- coarse alignment ---------------------------------------------------------------------------


def _pooled(thumbs: np.ndarray) -> np.ndarray:
    n = len(thumbs)
    return thumbs.reshape(n, _COARSE, 2, _COARSE, 2).astype(np.float32).mean(axis=(2, 4))


def _detail(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Images less their blur (sigma 2 px): outlines and texture, not smooth shading.

    The blur is a normalised convolution over the picture only, and the detail is zero outside
    it: the edge between a picture and its padding or fill is not the picture's, and it does
    not turn with it.
    """
    sigma = (0, _DETAIL_SIGMA, _DETAIL_SIGMA)
    weight = masks.astype(np.float32)
    blur = ndimage.gaussian_filter(images * weight, sigma)
    blur /= np.maximum(ndimage.gaussian_filter(weight, sigma), 1e-3)
    return (images - blur) * weight


def _query_variants(
    detail: np.ndarray, variants: tuple[tuple[bool, int, float], ...]
) -> np.ndarray:
    """Zero-mean, unit-norm centre crops of the transformed detail image: ``(v, c, c)``."""
    crop = _COARSE - 2 * _CROP
    stack = _apply(detail, _stacked_sampler(variants)).reshape(-1, crop, crop)
    stack -= stack.mean(axis=(1, 2), keepdims=True)
    stack /= np.linalg.norm(stack, axis=(1, 2), keepdims=True) + 1e-6
    return stack


@functools.lru_cache(maxsize=64)
def _stacked_sampler(
    variants: tuple[tuple[bool, int, float], ...],
) -> tuple[np.ndarray, np.ndarray]:
    """The coarse centre-crop samplers of ``variants``, one after the other (one gather)."""
    samplers = [_sampler(_COARSE, *variant, _CROP) for variant in variants]
    return np.concatenate([i for i, _ in samplers]), np.concatenate([w for _, w in samplers])


@dataclass(frozen=True, eq=False)
class _Targets:
    """What the correlation needs of the target detail images, computed once per group."""

    spectrum: np.ndarray  # (t, s, s//2+1) rfft2 of the targets
    norm: np.ndarray  # (t, w, w) norm of every zero-mean crop-sized window

    @classmethod
    def of(cls, targets: np.ndarray) -> _Targets:
        crop = _COARSE - 2 * _CROP
        # Norm of every zero-mean crop-sized window, from summed-area tables; the query
        # variants have zero mean, so the window's mean drops out of the product.
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
        return cls(rfft2(targets), norm)

    def subset(self, rows: np.ndarray) -> _Targets:
        return _Targets(self.spectrum[rows], self.norm[rows])


def _correlation(query: np.ndarray, targets: _Targets) -> np.ndarray:
    """Normalised correlation of each query variant at each shift inside each target.

    Returns:
        ``(t, v, w, w)``: target, variant, and the window's top-left corner.
    """
    spectrum = np.conj(rfft2(query, s=(_COARSE, _COARSE)))  # (variants, s, s//2+1)
    valid = targets.norm.shape[-1]
    products = targets.spectrum[:, None] * spectrum[None]
    numerator = irfft2(products, s=(_COARSE, _COARSE))[..., :valid, :valid]
    return numerator / targets.norm[:, None]


def _correlate(query: np.ndarray, targets: _Targets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best normalised correlation of any query variant at any shift inside each target.

    Returns:
        ``(t,)`` the best score per target, ``(t,)`` its variant, and ``(t, 2)`` the
        displacement (rows, columns; coarse px) that maps that variant onto the target.
    """
    ratio = _correlation(query, targets)
    valid = ratio.shape[-1]
    flat = ratio.reshape(len(ratio), len(query), -1)
    scores = flat.max(axis=2)
    best = scores.argmax(axis=1)
    where = flat[np.arange(len(ratio)), best].argmax(axis=1)
    shift = np.stack(np.unravel_index(where, (valid, valid)), axis=1) - _CROP
    return scores.max(axis=1).astype(np.float32), best, shift


# --- comparison ---------------------------------------------------------------------------------


def _smooth(thumb: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(thumb.astype(np.float32), _SMOOTH)


def _inner(mask: np.ndarray, band: int = _EDGE) -> np.ndarray:
    """The mask less a band along its edges, where fill, padding and resampling blend."""
    return ndimage.binary_erosion(mask, iterations=band, border_value=1)


def _best_shift(
    moving: np.ndarray,
    inside: np.ndarray,
    target: np.ndarray,
    target_mask: np.ndarray,
    centre: tuple[int, int],
    reach: int,
) -> tuple[float, tuple[int, int]]:
    """Lowest mean absolute difference over the shifts within ``reach`` of ``centre``.

    Shifts that leave less than a tenth of the picture overlapping cost infinity.
    """
    size = moving.shape[0]
    pad = abs(centre[0]) + abs(centre[1]) + reach + 1
    moving = np.pad(moving, pad)
    inside = np.pad(inside, pad)
    top, left = pad - centre[0] - reach, pad - centre[1] - reach
    span = 2 * reach + size
    windows = sliding_window_view(moving[top : top + span, left : left + span], (size, size))
    masks = sliding_window_view(inside[top : top + span, left : left + span], (size, size))
    both = masks & target_mask
    counts = both.sum(axis=(2, 3))
    costs = (np.abs(windows - target) * both).sum(axis=(2, 3)) / np.maximum(counts, 1)
    costs = np.where(counts >= size * size // 10, costs, np.inf)
    row, column = np.unravel_index(int(np.argmin(costs)), costs.shape)
    # Window (row, column) shows the picture moved by centre + reach - (row, column).
    return float(costs[row, column]), (
        centre[0] + reach - int(row),
        centre[1] + reach - int(column),
    )


def _compare(
    first: tuple[np.ndarray, np.ndarray],
    second: tuple[np.ndarray, np.ndarray],
    orientation: tuple[bool, int, float],
    shift: tuple[int, int],
) -> tuple[float, float, float]:
    """Refine the alignment of ``first`` onto ``second`` (thumbnail, mask) and measure the
    residual: (mean, peak, overlap)."""
    (thumb_i, mask_i), (thumb_j, mask_j) = first, second
    transpose, flip, angle = orientation
    moving, inside = _warp(thumb_i, mask_i, orientation)
    cost, shift = _best_shift(moving, inside, thumb_j, mask_j, shift, _FINE_SHIFT)
    best = (cost, angle, shift)
    # Climb from the coarse angle in steps while the fit improves: a round cell hardly fixes
    # the angle at 32 px, its surroundings do at 64.
    for step in (-_FINE_STEP, _FINE_STEP):
        for k in range(1, _FINE_STEPS + 1):
            candidate = angle + k * step
            turned, turned_inside = _warp(thumb_i, mask_i, (transpose, flip, candidate))
            cost, moved = _best_shift(turned, turned_inside, thumb_j, mask_j, best[2], 1)
            if not cost < best[0]:
                break
            best = (cost, candidate, moved)
    if not np.isfinite(best[0]):
        return math.nan, math.nan, 0.0
    moving, inside = _warp(thumb_i, mask_i, (transpose, flip, best[1]))
    moving = _shifted(moving, best[2])
    both = _shifted(inside, best[2]) & mask_j
    covered = both.sum() / max(1, min(mask_i.sum(), mask_j.sum()))
    both = ndimage.binary_erosion(both, border_value=1)
    if not both.any():
        return math.nan, math.nan, float(covered)
    gap = _envelope_gap(moving, thumb_j)
    tiles = both.reshape(THUMB // _TILE, _TILE, THUMB // _TILE, _TILE)
    sums = (gap.reshape(tiles.shape) * tiles).sum(axis=(1, 3))
    counts = tiles.sum(axis=(1, 3))
    filled = counts >= _TILE * _TILE // 2
    worst = float((sums[filled] / counts[filled]).max()) if filled.any() else math.nan
    return float(gap[both].mean()), worst, float(covered)


def _shifted(image: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """``image`` moved by ``shift`` (rows, columns); what comes in is zero."""
    out = np.zeros_like(image)
    size = image.shape[0]
    dy, dx = shift
    if abs(dy) >= size or abs(dx) >= size:
        return out
    out[max(0, dy) : size + min(0, dy), max(0, dx) : size + min(0, dx)] = image[
        max(0, -dy) : size + min(0, -dy), max(0, -dx) : size + min(0, -dx)
    ]
    return out


def _envelope_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far each pixel of either picture lies outside the other's 3x3 range (symmetric)."""
    gaps = []
    for x, y in ((a, b), (b, a)):
        high = ndimage.maximum_filter(y, 3)
        low = ndimage.minimum_filter(y, 3)
        gaps.append(np.maximum(np.maximum(x - high, low - x), 0))
    return np.maximum(gaps[0], gaps[1])
