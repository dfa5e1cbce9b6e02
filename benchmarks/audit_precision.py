"""Is the audit's duplicate report true on real single-cell crops, and is tune's leakage warning?

``chula_rbc12`` holds no copies: every crop is a different labelled cell, except that crops of
nearby cells overlap (same smear, windows closer than 72 px) and that a few smears photograph the
same field twice (the builder's ``OVERLAP_PAIRS``, with the shift between them). So a grouped
pair is *explained* when it is a planted copy and its original, or two overlapping windows; any
other pair is unexplained by the manifest (a false duplicate, or the same cell in two smears the
builder did not join: look at them).

1. **Duplicates** (``automl audit``'s finder): all 19,871 crops plus 280 planted copies (35 each
   re-encoded at JPEG 40, shrunk, enlarged, flipped, turned 90 degrees, rotated 15 degrees,
   shifted, rotated+shifted+flipped), fingerprinted as the audit does. Two rows: the links of
   hashes at most 5 bits apart (what automl 0.1 grouped as near-duplicates, unconfirmed) and
   the confirmed groups. Precision: explained pairs / linked (before) or grouped (after) pairs;
   recall: copies in one group with their original / 280.
2. **Leakage warning** (``tune``): the quick-start digits, and all of chula_rbc12 split by
   ``field_group`` (20% hold-out, 3 folds) as ``tune`` splits it; hold-out images the warning
   counts, from the unconfirmed 5-bit hash groups (before) and the confirmed groups (after),
   and for chula how many flagged cross-split pairs the manifest explains.

    python -m benchmarks.audit_precision [--quick]
"""

from __future__ import annotations

import ast
import time
from typing import Any

import numpy as np
from PIL import Image

from benchmarks import harness

NAME = "audit_precision"
CHULA = harness.CHULA
WINDOW = 72  # edge of every chula_rbc12 crop in its 640x480 smear
# Before pairs were confirmed, the audit linked any two images whose hashes differed in at most
# 5 bits (AuditOptions.near_distance of automl 0.1) and tune warned on those groups.
BEFORE_DISTANCE = 5
KINDS = ("reencode", "smaller", "larger", "flip", "rot90", "rotate", "shift", "augment")


def planted_copy(image: Image.Image, kind: str) -> tuple[Image.Image, int]:
    """A copy of ``image`` of one kind, and the JPEG quality it is saved at."""
    copies = {
        "reencode": (image, 40),
        "smaller": (image.resize((43, 43), Image.Resampling.BICUBIC), 90),
        "larger": (image.resize((108, 108), Image.Resampling.BICUBIC), 90),
        "flip": (image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 90),
        "rot90": (image.transpose(Image.Transpose.ROTATE_90), 90),
        "rotate": (image.rotate(-15, Image.Resampling.BICUBIC), 90),
        "shift": (image.rotate(0, translate=(6, -5)), 90),
        "augment": (
            image.rotate(10, Image.Resampling.BILINEAR, translate=(-4, 3)).transpose(
                Image.Transpose.FLIP_TOP_BOTTOM
            ),
            85,
        ),
    }
    return copies[kind]


def overlap_shifts() -> dict[tuple[str, str], tuple[int, int]]:
    """The builder's same-field smear pairs: (A, B) -> (dx, dy) taking B's coordinates to A's."""
    tree = ast.parse((CHULA / "build_chula_rbc12_crops.py").read_text())
    (listed,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "OVERLAP_PAIRS"
    ]
    shifts = {}
    for a, b, dy, dx in listed:
        shifts[(a, b)] = (dx, dy)
        shifts[(b, a)] = (-dx, -dy)
    return shifts


class Truth:
    """Whether two crops (or a copy and a crop) show overlapping windows of one field."""

    def __init__(self, manifest: Any) -> None:
        self.smear = manifest.source_image.str.extract(r"(\d+)\.jpg", expand=False).to_numpy()
        self.left = manifest.crop_left.to_numpy()
        self.top = manifest.crop_top.to_numpy()
        self.shifts = overlap_shifts()

    def explained(self, a: int, b: int) -> bool:
        """``a`` and ``b`` are manifest rows (a planted copy counts as its original)."""
        if a == b:
            return True
        if self.smear[a] == self.smear[b]:
            dx, dy = 0, 0
        elif (self.smear[a], self.smear[b]) in self.shifts:
            dx, dy = self.shifts[(self.smear[a], self.smear[b])]
        else:
            return False
        return (
            abs(self.left[a] - self.left[b] - dx) < WINDOW
            and abs(self.top[a] - self.top[b] - dy) < WINDOW
        )


def group_pairs(group: np.ndarray) -> np.ndarray:
    """Every pair of images that share a duplicate group: ``(m, 2)``."""
    pairs = []
    for label in np.unique(group[group >= 0]):
        members = np.flatnonzero(group == label)
        first, second = np.triu_indices(len(members), 1)
        pairs.append(np.stack([members[first], members[second]], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def hash_groups(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Groups the unconfirmed hash candidates alone would make (connected pairs; -1: none)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from automl.data.audit.fingerprints import hash_candidates

    n = len(hashes)
    pairs = hash_candidates(hashes, max_distance)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    sizes = np.bincount(label)
    return np.where(sizes[label] > 1, label, -1)


def duplicate_rows(quick: bool) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Precision and recall of the hash links and of the confirmed groups; the confirmed pairs
    the manifest does not explain (to look at)."""
    import pandas as pd

    from automl.data.audit.checks import find_duplicates
    from automl.data.audit.fingerprints import compute_features, hash_candidates

    manifest = pd.read_csv(CHULA / "manifest.csv")
    if quick:
        manifest = manifest[manifest.field_group.isin(range(300, 400))].reset_index(drop=True)
    files = [CHULA / f for f in manifest.file]
    origin = list(range(len(files)))  # the manifest row each image shows
    per_kind = 2 if quick else 35
    folder = harness.RESULTS.parent / "work" / NAME
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(14)
    for k, original in enumerate(rng.choice(len(files), per_kind * len(KINDS), replace=False)):
        kind = KINDS[k % len(KINDS)]
        with Image.open(files[original]) as image:
            copy, quality = planted_copy(image.convert("RGB"), kind)
        files.append(folder / f"{k:03d}_{kind}.jpg")
        copy.save(files[-1], quality=quality)
        origin.append(int(original))
    origin_of = np.array(origin)
    truth = Truth(manifest)
    copies = np.arange(len(manifest), len(files))

    started = time.perf_counter()
    features = compute_features(len(files), lambda i: Image.open(files[i]), progress=True)
    duplicates = find_duplicates(features)
    seconds = time.perf_counter() - started
    links = hash_candidates(features.hashes, BEFORE_DISTANCE)
    rows = []
    for stage, pairs, group in (
        ("before: unconfirmed hash links", links, hash_groups(features.hashes, BEFORE_DISTANCE)),
        ("confirmed groups (the audit)", group_pairs(duplicates.group), duplicates.group),
    ):  # fmt: skip
        is_explained = [truth.explained(origin_of[a], origin_of[b]) for a, b in pairs]
        explained = sum(is_explained)
        found = sum(group[c] >= 0 and group[c] == group[origin_of[c]] for c in copies)
        rows.append(
            {
                "stage": stage,
                "images": len(files),
                "images_grouped": int((group >= 0).sum()),
                "pairs": len(pairs),
                "explained_pairs": int(explained),
                "precision": round(explained / len(pairs), 4) if len(pairs) else None,
                "copies_found": f"{found}/{len(copies)}",
                "recall": round(found / len(copies), 4),
            }
        )
        unexplained = [
            [str(files[a].relative_to(CHULA)), str(files[b].relative_to(CHULA))]
            for (a, b), ok in zip(pairs, is_explained, strict=True)
            if not ok and b < len(manifest)  # crops of the set (copies are never unexplained)
        ]
    rows[-1]["seconds"] = round(seconds, 1)
    return rows, unexplained


def warning_rows(quick: bool) -> list[dict[str, Any]]:
    """What tune's leakage warning counts on digits and on chula_rbc12 by field group."""
    import pandas as pd

    from automl.config.schema import config_from_dict
    from automl.data.audit.checks import leakage, screen_data, split_sides
    from automl.data.readers import read_source
    from automl.data.splits import make_splits

    manifest = pd.read_csv(CHULA / "manifest.csv")
    if quick:
        manifest = manifest[manifest.field_group.isin(range(300, 400))].reset_index(drop=True)
    work = harness.RESULTS.parent / "work" / NAME
    labels = work / "labels.csv"
    pd.DataFrame(
        {
            "id": manifest.file.str.removesuffix(".jpg"),
            "label": manifest.class_name,
            "field_group": manifest.field_group,
        }
    ).to_csv(labels, index=False)
    chula = {
        "format": "csv",
        "path": str(CHULA),
        "labels_csv": str(labels),
        "extension": ".jpg",
        "group_column": "field_group",
        "image_size": 72,
        "n_folds": 3,
        "holdout_fraction": 0.2,
    }
    truth = Truth(manifest)
    row_of = {name: i for i, name in enumerate(manifest.file.str.removesuffix(".jpg"))}
    rows = []
    digits = {"format": "digits", "image_size": 16, "n_folds": 3, "holdout_fraction": 0.2}
    for name, data in (("digits (quick start)", digits), ("chula_rbc12 by field_group", chula)):
        config = config_from_dict({"data": data}, source=NAME, default_name=NAME)
        pool = read_source(config.data.source, config.data.image_size, progress=True)
        screened = screen_data(config.data, pool, None)
        splits = make_splits(
            screened.pool, None, n_folds=config.data.n_folds,
            holdout_fraction=config.data.holdout_fraction, seed=config.study.seed,
        )  # fmt: skip
        by_id = split_sides(splits)
        sides = np.array([by_id.get(str(i), "") for i in screened.pool.ids], dtype=object)
        # The cheap perceptual hash tune warned on before pairs were confirmed.
        hashes = _hashes(pool.images)
        before = hash_groups(hashes, BEFORE_DISTANCE)
        for stage, group in (("before: unconfirmed hash groups", before),
                             ("after: confirmed groups", screened.duplicates.group)):  # fmt: skip
            found = leakage(group, sides)
            row = {
                "data": name,
                "stage": stage,
                "holdout_images": int((sides == "holdout").sum()),
                "holdout_flagged": found["holdout_images_affected"],
                "holdout_share": round(found["holdout_share_affected"], 4),
                "tuning_flagged": found["tuning_images_in_cross_fold_groups"],
            }
            # The before groups chain thousands of crops (millions of pairs): only the confirmed
            # groups' cross-split pairs are checked against the manifest.
            if name.startswith("chula") and group is not before:
                crossing = [
                    (a, b)
                    for a, b in group_pairs(group)
                    if sides[a] != sides[b] and sides[a] and sides[b]
                ]
                ids = screened.pool.ids
                row["cross_split_pairs"] = len(crossing)
                row["explained"] = sum(
                    truth.explained(row_of[str(ids[a])], row_of[str(ids[b])]) for a, b in crossing
                )
            rows.append(row)
    return rows


def _hashes(images: np.ndarray) -> np.ndarray:
    """The audit's perceptual hashes of decoded images (what tune fingerprints)."""
    from automl.data.audit.fingerprints import compute_features

    return compute_features(len(images), lambda i: Image.fromarray(images[i])).hashes


def main() -> None:
    args = harness.argument_parser(NAME, __doc__, quick="100 smear fields, 16 copies").parse_args()
    duplicates, unexplained = duplicate_rows(args.quick)
    warnings = warning_rows(args.quick)
    columns = sorted({key for row in warnings for key in row}, key=list(warnings[-1]).index)
    table = harness.markdown_table(warnings, columns)
    print(f"\nLeakage warning\n\n{table}")
    harness.save_results(
        NAME,
        title="Audit duplicates on chula_rbc12 with planted copies: precision and recall",
        description=" ".join(__doc__.split("\n\n")[1].split())
        + f"\n\n## Leakage warning (tune)\n\n{table}\n\n## Duplicates",
        rows=duplicates,
        columns=list(duplicates[-1]),
        extra={"warnings": warnings, "unexplained_confirmed_pairs": unexplained},
        quick=args.quick,
        folder=args.results,
    )


if __name__ == "__main__":
    main()
