"""Data audit: unreadable files, class balance, duplicates, leakage and outliers, before tuning.

``automl audit`` lists the images exactly as ``tune`` would (same formats, class folders, ids
and labels), fingerprints each one (``fingerprints.py``: a few fixed-size arrays per image,
pixels are dropped; ``benchmarks/audit_memory.py`` measures the whole process) and reports:

- files: unreadable or not images, channel counts unlike the majority, sizes far from the
  median (edge ratio above ``size_factor``);
- classes: counts, imbalance ratio, classes too small for the hold-out and ``n_folds``;
- duplicates, grouped (union-find over three kinds of link): *exact* (same decoded pixels),
  *near* (perceptual hashes within ``hash_candidates`` bits over the 8 flips/90-degree
  rotations; found by bit-sampling LSH, never all pairs) and *augmented* (the ``neighbours``
  nearest images by each of three histograms: colour, gray tones and gray tones of the central
  disc; found by random-projection trees, never all pairs). A hash or a histogram only proposes
  a pair: every near and augmented link is confirmed by aligning the two pictures (flips,
  quarter turns, -25..25 degree rotations, shifts) and comparing them everywhere, surroundings
  included (``matching.py``). Two centred cells of one stain share a hash and an outline but not
  their neighbours; on the ``chula_rbc12`` crops unconfirmed links grouped many different cells
  (``benchmarks/audit_precision.py`` compares the groups before and after confirmation).
  The augmented kind finds ImageDataGenerator-style copies (rotation, shift, flips, black fill)
  such as the TRAIN folder of the Kaggle blood-cells set;
- groups whose labels disagree, and leakage: groups that cross the hold-out/tuning boundary
  (``data.test`` or ``holdout_fraction``) or the folds, with the share of images affected;
- outliers: robust z-scores (median/MAD) of the hue histogram against the image's class and
  against the whole set; an image is flagged when both reach ``outlier_z`` (ranked by the
  smaller). On the real BCCD sets that flags a small share of the images, and it finds the
  red-cell crops planted among white cells in ``tests/data/audit/test_audit.py``.

The same machinery serves ``tune`` (:func:`screen_data`): ``data.exclude`` drops listed images,
``data.groups_from_duplicates`` turns duplicate groups into split groups, exact copies with
different labels stop the run, and leakage and outliers are logged as warnings. Nothing in the
user's data is ever moved or deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from threadpoolctl import threadpool_limits

from automl.config.schema import DataConfig
from automl.data.audit.fingerprints import (
    Features,
    compute_features,
    hash_candidates,
    hash_distance,
)
from automl.data.audit.matching import MatchThresholds, confirm_pairs, hash_orientations
from automl.data.audit.neighbours import nearest_neighbours
from automl.data.readers import ImageSet, list_source_files, read_source
from automl.data.splits import Splits
from automl.errors import DataError
from automl.files import atomic_write

logger = logging.getLogger(__name__)

_SHOWN = 3
_SCREEN_VERSION = 1  # bump when fingerprints, matching or the kept screening fields change
_SURE_ORIENTATION = 5  # hash bits within which the hashes' best orientation is trusted
_QUARTER_TURNS = 4  # DIHEDRAL indices from here on are transposed (quarter turns)
_DIMENSIONS = 24  # principal axes of a histogram kept for its neighbour search


@dataclass(frozen=True)
class AuditOptions:
    """Thresholds of the audit's detectors (defaults set on the BCCD and Chula sets).

    ``hash_candidates``: largest Hamming distance of a hash pair worth confirming;
    ``neighbours``: nearest images per histogram worth confirming (augmented search);
    ``matching``: what a confirmed copy must reach (``matching.MatchThresholds``).
    """

    hash_candidates: int = 10
    augmented: bool = True
    neighbours: int = 5
    matching: MatchThresholds = MatchThresholds()
    outlier_z: float = 3.5
    size_factor: float = 2.5


@dataclass(frozen=True, eq=False)
class Items:
    """The images an audit looks at: the pool (``data``) followed by ``data.test``."""

    ids: np.ndarray
    labels: np.ndarray  # class names; "" when unlabeled
    sets: np.ndarray  # "data" or "data.test"
    files: np.ndarray  # file paths; "" for array sources
    groups: np.ndarray | None
    load: Callable[[int], Image.Image]
    # Hidden image files left out as tune leaves them out ("data: .../.DS_0001.jpg").
    hidden_files: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, eq=False)
class Duplicates:
    """Duplicate groups: ``group[i]`` numbers the group of image ``i`` (``-1``: none)."""

    group: np.ndarray
    exact: np.ndarray  # image shares its pixels with another
    links: dict[str, int] = field(default_factory=dict)  # verified links per kind

    def members(self) -> list[np.ndarray]:
        """Indices of each group, in group order."""
        members = np.flatnonzero(self.group >= 0)
        order = members[np.argsort(self.group[members], kind="stable")]
        starts = np.searchsorted(self.group[order], np.arange(self.group.max(initial=-1) + 1))
        return np.split(order, starts[1:]) if len(starts) else []


# --- listing the data -------------------------------------------------------------------------


def collect_items(data: DataConfig, *, progress: bool = False) -> Items:
    """List the pool and ``data.test`` as ``tune`` reads them, without decoding files."""
    parts = [_source_items(data.source, data.image_size, "data", progress)]
    if data.test is not None:
        parts.append(_source_items(data.test, data.image_size, "data.test", progress))
    loaders = [part.load for part in parts]
    offsets = np.cumsum([0] + [len(part) for part in parts])

    def load(i: int) -> Image.Image:
        k = int(np.searchsorted(offsets, i, side="right")) - 1
        return loaders[k](i - int(offsets[k]))

    groups = None
    if any(part.groups is not None for part in parts):
        groups = np.concatenate(
            [p.groups if p.groups is not None else p.ids.astype(object) for p in parts]
        )
    return Items(
        ids=np.concatenate([p.ids for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        sets=np.concatenate([p.sets for p in parts]),
        files=np.concatenate([p.files for p in parts]),
        groups=groups,
        load=load,
        hidden_files=tuple(name for part in parts for name in part.hidden_files),
    )


def _source_items(source: Any, image_size: int, where: str, progress: bool) -> Items:
    if source.format in ("folder", "csv"):
        # The listing and checks of tune's reader: names, normal ids, hidden files.
        files = list_source_files(source, where)
        names = np.array(files.class_names + ("",), dtype=object)  # -1: unlabeled
        return _file_items(
            files.ids,
            names[files.labels].tolist(),
            files.paths,
            files.groups,
            where,
            files.hidden_files,
        )
    # Array sources hold no files: decode them as tune does and fingerprint the arrays.
    images = read_source(source, image_size, progress=progress, where=where)
    names = np.array(images.class_names + ("",), dtype=object)
    return Items(
        ids=images.ids.astype(object),
        labels=names[images.labels],
        sets=np.full(len(images), where, dtype=object),
        files=np.full(len(images), "", dtype=object),
        groups=None if images.groups is None else images.groups.astype(object),
        load=lambda i: Image.fromarray(np.asarray(images.images[i])),
    )


def _file_items(
    ids: list[str],
    labels: list[str],
    paths: list[Path],
    groups: Any,
    where: str,
    hidden_files: tuple[str, ...] = (),
) -> Items:
    return Items(
        ids=np.array(ids, dtype=object),
        labels=np.array(labels, dtype=object),
        sets=np.full(len(ids), where, dtype=object),
        files=np.array([str(p) for p in paths], dtype=object),
        groups=None if groups is None else np.asarray(groups, dtype=object),
        load=lambda i: Image.open(paths[i]),
        hidden_files=hidden_files,
    )


# --- detectors ----------------------------------------------------------------------------------


def find_duplicates(
    features: Features, options: AuditOptions = AuditOptions(), *, augmented: bool | None = None
) -> Duplicates:
    """Group exact, near and (optionally) augmented copies among the readable images.

    Near and augmented candidates are linked only when :func:`matching.confirm_pairs` confirms
    them.
    """
    n = len(features)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    def link(pairs: np.ndarray) -> int:
        for a, b in pairs:
            ra, rb = root(int(a)), root(int(b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        return len(pairs)

    readable = np.flatnonzero(features.ok)
    _, first, inverse = np.unique(
        features.digest[readable].astype(str), return_index=True, return_inverse=True
    )
    exact_pairs = np.stack([readable[first[inverse]], readable], axis=1)
    exact_pairs = exact_pairs[exact_pairs[:, 0] != exact_pairs[:, 1]]
    links = {"exact": link(exact_pairs)}
    exact = np.zeros(n, dtype=bool)
    exact[exact_pairs.ravel()] = True
    # One representative per set of identical pixels is enough for the other searches.
    unique = np.setdiff1d(readable, exact_pairs[:, 1])
    searches = [
        ("near", unique[hash_candidates(features.hashes[unique], options.hash_candidates)])
    ]
    if options.augmented if augmented is None else augmented:
        searches.append(("augmented", _neighbour_candidates(features, unique, options)))
    seen = np.zeros((0, 2), dtype=np.int64)
    for kind, pairs in searches:
        pairs = _without_pairs(pairs, seen)
        seen = np.concatenate([seen, pairs])
        links[kind] = 0
        # Confirm in rounds and link as we go: within a big family of copies most candidate
        # pairs are joined through others before their turn comes, and need no confirmation.
        for chunk in np.array_split(pairs, max(1, len(pairs) // 4000)):
            chunk = chunk[[root(int(a)) != root(int(b)) for a, b in chunk]]
            # A hash pair is tried in the orientation its hashes agree best in (quarter turns
            # included) when they agree closely; otherwise, like a histogram neighbour, in
            # all 4 flips.
            orientation = np.full(len(chunk), -1)
            if kind == "near":
                best = hash_orientations(features.hashes, chunk)
                sure = hash_distance(features.hashes, chunk) <= _SURE_ORIENTATION
                orientation = np.where(sure | (best >= _QUARTER_TURNS), best, -1)
            matches = confirm_pairs(features, chunk, options.matching, orientation=orientation)
            links[kind] += link(chunk[matches.confirmed])
    roots = np.array([root(i) for i in range(n)])
    sizes = np.bincount(roots, minlength=n)
    in_group = sizes[roots] > 1
    group = np.full(n, -1, dtype=np.int64)
    _, group[in_group] = np.unique(roots[in_group], return_inverse=True)
    return Duplicates(group, exact, links)


def _neighbour_candidates(
    features: Features, unique: np.ndarray, options: AuditOptions
) -> np.ndarray:
    """Pairs of images among the ``neighbours`` nearest by colour, tones or central tones."""
    k = min(options.neighbours, len(unique) - 1)
    if k < 1:
        return np.zeros((0, 2), dtype=np.int64)
    found = []
    tones = features.tones[unique].astype(np.float32)
    for descriptor in (features.colour[unique].astype(np.float32), tones[:, 0], tones[:, 1]):
        # Small matrices: threaded BLAS only spins, many times slower than one thread on cores
        # shared with other work.
        with threadpool_limits(1):
            reduced = _principal(descriptor, _DIMENSIONS)
        nearest = nearest_neighbours(reduced, k)
        owner = np.repeat(np.arange(len(unique)), k)
        keep = nearest.ravel() >= 0
        found.append(np.stack([owner[keep], nearest.ravel()[keep]], axis=1))
    pairs = np.sort(unique[np.concatenate(found)], axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    # Unique rows through one integer key per pair: np.unique(axis=0) sorts far more slowly.
    keys = np.unique(pairs[:, 0] * len(features) + pairs[:, 1])
    return np.stack([keys // len(features), keys % len(features)], axis=1)


def _principal(points: np.ndarray, dimensions: int, sample: int = 4096) -> np.ndarray:
    """``points`` on their first principal axes, fitted on a fixed-size random sample.

    A few thousand points fix the main axes of a histogram; fitting on all of them would make
    the audit's cost grow faster than its image count for nothing.
    """
    if points.shape[1] <= dimensions:
        return points
    rows = np.random.default_rng(0).choice(len(points), min(sample, len(points)), replace=False)
    centred = points[rows].astype(np.float64)
    centre = centred.mean(axis=0)
    centred -= centre
    # Eigenvectors of the covariance: as exact as an SVD here, and far cheaper for 512 columns.
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axes = vectors[:, ::-1][:, :dimensions].astype(np.float32)
    return (points - centre.astype(np.float32)) @ axes


def _without_pairs(pairs: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``pairs`` (sorted rows) less those in ``known``."""
    if len(known) == 0 or len(pairs) == 0:
        return pairs
    size = int(max(pairs.max(), known.max())) + 1
    keys = pairs[:, 0] * size + pairs[:, 1]
    return pairs[~np.isin(keys, known[:, 0] * size + known[:, 1])]


def outlier_scores(features: Features, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Robust z-scores of each image against its class and against the whole set (NaN: n/a).

    The raw score is the mean of the two largest deviations of the hue histogram from the
    group's coordinate-wise median, each bin scaled by its MAD; the z-score is
    ``(score - median) / (1.4826 * MAD)`` over the group. Medians, unlike nearest
    neighbours, are not fooled by a cluster of similar outliers (several red-cell crops among
    white cells).
    """
    n = len(features)
    by_class = np.full(n, np.nan)
    whole = np.full(n, np.nan)
    for target, members in [(whole, np.flatnonzero(features.ok))] + [
        (by_class, np.flatnonzero(features.ok & (labels == name)))
        for name in np.unique(labels[labels != ""])
    ]:
        if len(members) < 7:
            continue
        values = features.hue[members].astype(np.float64)
        centre = np.median(values, axis=0)
        spread = 1.4826 * np.median(np.abs(values - centre), axis=0) + 0.05
        # Mean of the two most deviant hue bins: one missing stain is enough to stand out.
        score = np.sort(np.abs(values - centre) / spread, axis=1)[:, -2:].mean(axis=1)
        median = np.median(score)
        mad = max(1.4826 * np.median(np.abs(score - median)), 1e-3)
        target[members] = (score - median) / mad
    return by_class, whole


# --- splits and leakage -------------------------------------------------------------------------


def pool_imageset(items: Items, keep: np.ndarray, groups: np.ndarray | None) -> ImageSet:
    """A pixel-less ImageSet of ``items[keep]`` (labels, ids, groups), for ``make_splits``."""
    names = tuple(sorted(set(items.labels[keep]) - {""}))
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index.get(v, -1) for v in items.labels[keep]], dtype=np.int64)
    return ImageSet(
        images=np.zeros((int(keep.sum()), 1, 1, 3), dtype=np.uint8),
        labels=labels,
        class_names=names,
        ids=items.ids[keep].astype(str),
        groups=None if groups is None else np.asarray(groups)[keep].astype(str),
    )


def split_sides(splits: Splits) -> dict[str, str]:
    """Side of every id: ``holdout`` or ``fold <k>`` (its validation fold)."""
    sides = {}
    if splits.holdout is not None:
        sides.update(dict.fromkeys(map(str, splits.holdout.ids), "holdout"))
    for k, (_, validation) in enumerate(splits.folds):
        sides.update(dict.fromkeys(map(str, splits.tuning.ids[validation]), f"fold {k}"))
    return sides


def leakage(group: np.ndarray, sides: np.ndarray) -> dict[str, Any]:
    """Groups crossing hold-out/tuning and fold boundaries, and the share of images affected.

    Args:
        group: duplicate group per image (``-1``: none).
        sides: ``holdout``, ``fold <k>`` or ``""`` (not split) per image.
    """
    frame = pd.DataFrame({"group": group, "side": sides})
    frame = frame[(frame.group >= 0) & (frame.side != "")]
    holdout = frame.side == "holdout"
    crossing = set(frame.group[holdout]) & set(frame.group[~holdout])
    spans = frame[~holdout].groupby("group").side.nunique()
    fold_groups = set(spans.index[spans > 1])
    n_holdout = int((sides == "holdout").sum())
    n_tuning = int(((sides != "holdout") & (sides != "")).sum())
    leaked_holdout = int((holdout & frame.group.isin(crossing)).sum())
    leaked_folds = int((~holdout & frame.group.isin(fold_groups)).sum())
    return {
        "holdout_groups": sorted(int(g) for g in crossing),
        "holdout_images_affected": leaked_holdout,
        "holdout_share_affected": leaked_holdout / n_holdout if n_holdout else 0.0,
        "fold_groups": sorted(int(g) for g in fold_groups),
        "tuning_images_in_cross_fold_groups": leaked_folds,
        "tuning_share_affected": leaked_folds / n_tuning if n_tuning else 0.0,
    }


# --- data.exclude and the checks tune runs -------------------------------------------------------


def read_exclude(path: str | Path) -> set[str]:
    """Ids to leave out, from a TXT (one id or file path a line) or CSV list.

    A CSV is read by its ``id`` column (else ``file``/``path``, else the first); when it has an
    ``exclude`` column (as ``audit.csv`` does), only rows marked true count. Each entry is
    reduced to every trailing part of its path without extension, so absolute paths, relative
    paths and bare ids all match the image ids.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "exclude" in table.columns:
            table = table[table["exclude"].str.lower().isin(("true", "1", "yes"))]
        column = next((c for c in ("id", "file", "path") if c in table.columns), table.columns[0])
        entries = table[column].tolist()
    else:
        entries = path.read_text(encoding="utf-8").splitlines()
    keys: set[str] = set()
    for entry in (e.strip() for e in entries):
        if entry and not entry.startswith("#"):
            parts = Path(os.path.splitext(entry)[0]).as_posix().split("/")
            keys.update("/".join(parts[k:]) for k in range(len(parts)))
            keys.add(entry)
    return keys


@dataclass(frozen=True, eq=False)
class Screened:
    """The pool and test set after ``data.exclude`` and duplicate grouping, for ``make_splits``."""

    pool: ImageSet
    test: ImageSet | None
    duplicates: Duplicates

    def warn_leakage(self, splits: Splits) -> None:
        """Log near-duplicate groups that cross the hold-out or the folds (a warning only)."""
        by_id = split_sides(splits)
        sides = np.array([by_id.get(str(i), "") for i in self.pool.ids], dtype=object)
        if self.test is not None:  # its ids may repeat the pool's (TRAIN/x and TEST/x)
            sides = np.concatenate([sides, np.full(len(self.test), "holdout", dtype=object)])
        found = leakage(self.duplicates.group, sides)
        if found["holdout_images_affected"] or found["tuning_images_in_cross_fold_groups"]:
            logger.warning(
                "Possible leakage: %d of the hold-out images (%.1f%%) and %d tuning images "
                "have near-duplicates on the other side of a split; set "
                "data.groups_from_duplicates: true, and run `automl audit` for the report.",
                found["holdout_images_affected"],
                100 * found["holdout_share_affected"],
                found["tuning_images_in_cross_fold_groups"],
            )


def screen_data(
    data: DataConfig, pool: ImageSet, test: ImageSet | None, options: AuditOptions = AuditOptions()
) -> Screened:
    """Apply ``data.exclude`` and ``data.groups_from_duplicates``; run tune's cheap checks.

    The fingerprints, duplicate groups and outlier scores are kept beside the decoded images
    when they come from the image cache (``ImageSet.cache_entry``), so that every worker
    process that starts a trial reads them instead of fingerprinting every image again.

    Raises:
        DataError: two images with identical pixels carry different labels.
    """
    cache = _screening_file(data, pool, test, options)
    if data.exclude is not None:
        drop = read_exclude(data.exclude)
        pool = _without(pool, drop, "data")
        test = None if test is None else _without(test, drop, "data.test")
    sets = [pool] + ([test] if test is not None else [])
    labels = np.concatenate([np.array(s.class_names, dtype=object)[s.labels] for s in sets])
    ids = np.concatenate([s.ids for s in sets])
    found = _read_screening(cache, len(ids)) if cache is not None else None
    if found is None:
        images = [s.images for s in sets]
        offsets = np.cumsum([0] + [len(s) for s in sets])

        def load(i: int) -> Image.Image:
            k = int(np.searchsorted(offsets, i, side="right")) - 1
            return Image.fromarray(np.asarray(images[k][i - offsets[k]]))

        features = compute_features(int(offsets[-1]), load)
        duplicates = find_duplicates(features, options, augmented=data.groups_from_duplicates)
        by_class, whole = outlier_scores(features, labels)
        found = _Screening(
            duplicates,
            np.where(features.ok, features.digest, "").astype(str),
            np.nan_to_num(np.fmin(by_class, whole), nan=-np.inf),
        )
        if cache is not None:
            _write_screening(cache, found)
    duplicates = found.duplicates
    _refuse_exact_conflicts(found.digest, duplicates, labels, ids)
    score = found.outlier
    flagged = np.flatnonzero(score >= options.outlier_z)
    if len(flagged):
        top = flagged[np.argsort(-score[flagged])][:_SHOWN]
        logger.warning(
            "%d images look unlike their class and the whole set (%s); run `automl audit` to "
            "see them.",
            len(flagged),
            ", ".join(f"{ids[i]} z={score[i]:.1f}" for i in top),
        )
    if data.groups_from_duplicates:
        pool = replace_groups(pool, duplicates.group[: len(pool)])
    return Screened(pool, test, duplicates)


@dataclass(frozen=True, eq=False)
class _Screening:
    """What tune's checks need of the fingerprints: groups, pixel digests, outlier z-scores."""

    duplicates: Duplicates
    digest: np.ndarray  # "" for unreadable images
    outlier: np.ndarray  # the smaller of the class and whole-set z-scores; -inf: n/a


def _screening_file(
    data: DataConfig, pool: ImageSet, test: ImageSet | None, options: AuditOptions
) -> Path | None:
    """Where the screening of these cached images under these settings is kept, if anywhere."""
    if pool.cache_entry is None or (test is not None and test.cache_entry is None):
        return None
    exclude = None
    if data.exclude is not None:
        try:
            exclude = hashlib.sha256(Path(data.exclude).read_bytes()).hexdigest()
        except OSError:
            return None  # read_exclude reports it
    key = json.dumps(
        [
            _SCREEN_VERSION,
            None if test is None or test.cache_entry is None else test.cache_entry.name,
            exclude,
            data.groups_from_duplicates,
            repr(options),
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return pool.cache_entry / f"screening-{digest}.npz"


def _read_screening(path: Path, n: int) -> _Screening | None:
    try:
        with np.load(path, allow_pickle=False) as saved:
            group, exact = saved["group"], saved["exact"]
            found = _Screening(
                Duplicates(group, exact, json.loads(str(saved["links"]))),
                saved["digest"],
                saved["outlier"],
            )
    except (OSError, KeyError, ValueError):
        return None
    if len(group) != n:
        return None
    logger.info("Read the data screening from %s", path)
    return found


def _write_screening(path: Path, found: _Screening) -> None:
    """Write atomically (workers may race); a failure only costs the cache."""

    def write(temporary: Path) -> None:
        np.savez(
            temporary,
            group=found.duplicates.group,
            exact=found.duplicates.exact,
            links=json.dumps(found.duplicates.links),
            digest=found.digest,
            outlier=found.outlier,
        )

    try:
        atomic_write(path, write)
    except OSError as error:
        logger.warning("Cannot keep the data screening in %s (%s).", path.parent, error)


def replace_groups(pool: ImageSet, group: np.ndarray) -> ImageSet:
    """``pool`` with groups joining its duplicate groups (and any groups it already has)."""
    own = pool.groups if pool.groups is not None else pool.ids
    merged = pd.Series(np.where(group >= 0, [f"dup{g}" for g in group], own))
    if pool.groups is not None:  # a duplicate group and a user group that share an image merge
        frame = pd.DataFrame({"dup": merged, "own": own})
        for _ in range(len(frame)):  # alternate min-labels until stable (small in practice)
            frame["label"] = frame.groupby("dup").own.transform("min")
            frame["label"] = frame.groupby("own").label.transform("min")
            if (frame["label"] == frame["own"]).all():
                break
            frame["own"] = frame["label"]
        merged = frame["own"]
    return replace(pool, groups=merged.to_numpy().astype(str))


def _without(images: ImageSet, drop: set[str], where: str) -> ImageSet:
    keep = np.array([str(i) not in drop for i in images.ids], dtype=bool)
    if not keep.all():
        logger.info(
            "data.exclude leaves out %d of %d images of %s", (~keep).sum(), len(keep), where
        )
    return images if keep.all() else images.subset(np.flatnonzero(keep))


def _refuse_exact_conflicts(
    digest: np.ndarray, duplicates: Duplicates, labels: np.ndarray, ids: np.ndarray
) -> None:
    frame = pd.DataFrame({"digest": digest, "label": labels, "id": ids})
    frame = frame[duplicates.exact & (digest != "")]
    kinds = frame.groupby("digest").label.nunique()
    conflicts = frame[frame.digest.isin(kinds.index[kinds > 1])]
    if len(conflicts):
        shown = "; ".join(
            " = ".join(f"{r.id} ({r.label})" for r in rows.itertuples())
            for _, rows in list(conflicts.groupby("digest", sort=False))[:_SHOWN]
        )
        raise DataError(
            f"data: expected one label per picture, found {conflicts.digest.nunique()} sets of "
            f"identical images with different labels: {shown}; fix or remove them (list them "
            "in data.exclude), and run `automl audit --space FILE` for the full report."
        )
