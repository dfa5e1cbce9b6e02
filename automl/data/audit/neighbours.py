"""Approximate nearest neighbours in near-linear time: a forest of random-projection trees.

The audit looks for each image's few nearest neighbours among tens of thousands by a histogram
descriptor. scikit-learn's ``NearestNeighbors`` answers that by brute force once the descriptor
has more than ~15 dimensions (its trees degrade there): all pairs, so four times the images take
sixteen times as long. Here each tree splits the points recursively at the median of their
projection on a random direction until a leaf holds at most ``leaf_size`` points; the candidates
of a point are the other members of its leaf in each tree, and the ``k`` closest of them (exact
distances) are returned. Cost: ``n_trees * n * (log2(n / leaf_size) + leaf_size)`` distance-sized
steps, linear in ``n`` up to the logarithm. Neighbours that a split separates in one tree are
kept together by another; with 8 trees of 64-point leaves, most of the true 5 nearest
neighbours of the audit's descriptors are found (``tests/data/audit/test_neighbours.py`` checks
the recall on real crops; ``benchmarks/audit_scaling.py`` times the search).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits


def nearest_neighbours(
    points: np.ndarray,
    k: int,
    *,
    n_trees: int = 8,
    leaf_size: int = 64,
    refine: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """The (approximately) ``k`` nearest other points of every point, by Euclidean distance.

    Args:
        points: ``(n, d)`` coordinates.
        k: neighbours per point.
        n_trees: random-projection trees; more find more true neighbours, linearly slower.
        leaf_size: most points per leaf (the exact search within a leaf is quadratic in it).
        refine: rounds of neighbours-of-neighbours search after the trees.
        seed: seeds the random directions.

    Returns:
        ``(n, k)`` indices, nearest first; ``-1`` pads rows with fewer than ``k`` candidates.
    """
    points = np.asarray(points, dtype=np.float32)
    n = len(points)
    if n < 2 or k < 1:
        return np.full((n, max(k, 0)), -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    # Thousands of tiny matrix products: BLAS threads cost more than they give, most of all on
    # cores shared with other work.
    with threadpool_limits(1):
        found = [_tree_neighbours(points, k, leaf_size, rng) for _ in range(n_trees)]
    index = np.concatenate([f[0] for f in found], axis=1)
    distance = np.concatenate([f[1] for f in found], axis=1)
    # The same neighbour found by several trees has the same distance: sort by (distance,
    # index) so that its copies sit side by side, and drop all but the first.
    order = np.lexsort((index, distance), axis=-1)
    index = np.take_along_axis(index, order, axis=1)
    distance = np.take_along_axis(distance, order, axis=1)
    repeated = np.zeros_like(index, dtype=bool)
    repeated[:, 1:] = index[:, 1:] == index[:, :-1]
    distance[repeated | (index < 0)] = np.inf
    order = np.argsort(distance, axis=1, kind="stable")[:, :k]
    index = np.take_along_axis(index, order, axis=1)
    index[~np.isfinite(np.take_along_axis(distance, order, axis=1))] = -1
    for _ in range(refine):
        index = _refined(points, index)
    return index


def _refined(points: np.ndarray, index: np.ndarray) -> np.ndarray:
    """One round of "a neighbour of my neighbour is likely my neighbour" (NN-descent).

    Each point's candidates become its neighbours and theirs (``k + k*k`` points), of which the
    ``k`` closest are kept: a true neighbour that every tree split off is usually next to one
    that was found.
    """
    n, k = index.shape
    second = index[np.maximum(index, 0)].reshape(n, k * k)
    second[np.repeat(index < 0, k, axis=1)] = -1
    candidates = np.concatenate([index, second], axis=1)
    candidates[candidates == np.arange(n)[:, None]] = -1
    distance = np.full(candidates.shape, np.inf, dtype=np.float32)
    for start in range(0, n, 4096):  # bounded memory: (rows, k + k*k, d) at a time
        rows = slice(start, start + 4096)
        block = candidates[rows]
        gaps = points[np.maximum(block, 0)] - points[rows, None]
        distance[rows] = np.where(block >= 0, np.einsum("rcd,rcd->rc", gaps, gaps), np.inf)
    order = np.lexsort((candidates, distance), axis=-1)
    candidates = np.take_along_axis(candidates, order, axis=1)
    distance = np.take_along_axis(distance, order, axis=1)
    distance[:, 1:][candidates[:, 1:] == candidates[:, :-1]] = np.inf
    order = np.argsort(distance, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(candidates, order, axis=1)
    best[~np.isfinite(np.take_along_axis(distance, order, axis=1))] = -1
    return best


def _tree_neighbours(
    points: np.ndarray, k: int, leaf_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Within-leaf ``k`` nearest neighbours of one random-projection tree: indices, distances.

    The nodes of a level are the rows of one ``(nodes, width)`` block of point indices (-1:
    empty), so that a level is split in one vectorised step: each row is partitioned (not
    sorted) at its median projection. A level costs ``O(n)``; the tree, ``O(n log n)`` with
    a small constant on the logarithm (one number per point and level).
    """
    n, dims = points.shape
    members = np.arange(n, dtype=np.int64)[None, :]
    # One random direction per level, shared by its nodes: every projection in one product,
    # and a level gathers one number per point instead of a whole row of ``points``.
    levels = max(1, int(np.ceil(np.log2(max(n / leaf_size, 1.0)))))
    projections = points @ rng.standard_normal((dims, levels)).astype(np.float32)
    level = 0
    while members.shape[1] > leaf_size:
        projection = projections[np.maximum(members, 0), level]
        projection[members < 0] = np.inf  # empty slots go to the upper half
        half = members.shape[1] // 2
        order = np.argpartition(projection, half - 1, axis=1)
        members = np.take_along_axis(members, order, axis=1)
        width = members.shape[1] - half
        lower = np.pad(members[:, :half], ((0, 0), (0, width - half)), constant_values=-1)
        members = np.concatenate([lower, members[:, half:]])
        level += 1
    block = points[np.maximum(members, 0)]
    squares = np.einsum("lwd,lwd->lw", block, block)
    distance = squares[:, :, None] + squares[:, None, :] - 2 * block @ block.transpose(0, 2, 1)
    empty = members < 0
    width = members.shape[1]
    distance[empty[:, :, None] | empty[:, None, :]] = np.inf
    distance[:, np.arange(width), np.arange(width)] = np.inf
    take = min(k, width - 1)
    index = np.full((n, k), -1, dtype=np.int64)
    gap = np.full((n, k), np.inf, dtype=np.float32)
    if take > 0:
        nearest = np.argpartition(distance, take - 1, axis=2)[:, :, :take]
        rows = members.ravel() >= 0
        chosen = np.take_along_axis(distance, nearest, axis=2).reshape(-1, take)[rows]
        neighbour = np.take_along_axis(members[:, None, :], nearest, axis=2)
        owner = members.ravel()[rows]
        index[owner, :take] = neighbour.reshape(-1, take)[rows]
        gap[owner, :take] = np.maximum(chosen, 0)
        index[~np.isfinite(gap)] = -1
    return index, gap
