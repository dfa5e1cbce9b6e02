"""The fixed data of ``benchmarks.model_quality``: chula_rbc12's grouped hold-out and pools.

Every split here is of whole field groups (``field_group`` in ``manifest.csv``), stratified by
class, and seeded with ``random_state=0``, so it is the same for every arm, seed and run:

- the **hold-out**: one fold of ``StratifiedGroupKFold(5, shuffle=True, random_state=0)`` on
  the manifest, about a fifth of the groups (quick mode: a fifth of that);
- the **tuning pool**: ``pool_fraction`` of the other groups, in twentieths
  (``StratifiedGroupKFold(20)`` on them, the first ``round(20 * pool_fraction)`` folds);
- the **ablation pool**: ``ablation_fraction`` of the tuning pool, the same way (1.0: all of it).

Each is written as its own labels CSV (``harness.write_chula_labels``) and reaches automl as
``data`` (``format: csv``, ``group_column: field_group``) with the hold-out as ``data.test``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness

HOLDOUT_FOLDS = 5
PARTS = 20  # pool fractions are counted in twentieths of the groups they are taken from


@dataclass(frozen=True)
class DataFiles:
    """The labels CSVs of one work folder."""

    holdout: Path
    pool: Path
    ablation_pool: Path


def grouped_share(rows: Any, fraction: float, parts: int = PARTS) -> Any:
    """The rows of about ``fraction`` of ``rows``' field groups, stratified by class.

    The first ``round(parts * fraction)`` folds of a seeded ``StratifiedGroupKFold(parts)``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    take = round(parts * fraction)
    if take >= parts:
        return rows
    if take < 1:
        raise SystemExit(f"fraction {fraction} is under 1/{parts} of the groups; raise it")
    splitter = StratifiedGroupKFold(n_splits=parts, shuffle=True, random_state=0)
    folds = splitter.split(rows, rows["class_name"], rows["field_group"])
    keep = np.concatenate([test for _, (_, test) in zip(range(take), folds, strict=False)])
    return rows.iloc[np.sort(keep)]


def holdout_and_rest(quick: bool) -> tuple[Any, Any]:
    """The hold-out rows and the rows of every other group (quick: a fifth of the hold-out)."""
    from sklearn.model_selection import StratifiedGroupKFold

    manifest = harness.chula_manifest()
    splitter = StratifiedGroupKFold(n_splits=HOLDOUT_FOLDS, shuffle=True, random_state=0)
    rest, held = next(splitter.split(manifest, manifest["class_name"], manifest["field_group"]))
    holdout = manifest.iloc[np.sort(held)]
    if quick:
        holdout = grouped_share(holdout, 1 / HOLDOUT_FOLDS, parts=HOLDOUT_FOLDS)
    return holdout, manifest.iloc[np.sort(rest)]


def write_data(
    work: Path, pool_fraction: float, ablation_fraction: float, quick: bool
) -> DataFiles:
    """Write the three labels CSVs under ``<work>/data`` (unchanged files are left alone)."""
    holdout, rest = holdout_and_rest(quick)
    pool = grouped_share(rest, pool_fraction)
    folder = work / "data"
    if set(pool["field_group"]) & set(holdout["field_group"]):  # by construction; checked
        raise SystemExit("a field group is in both the hold-out and the tuning pool")
    return DataFiles(
        holdout=harness.write_chula_labels(holdout, folder / "holdout.csv"),
        pool=harness.write_chula_labels(pool, folder / "pool.csv"),
        ablation_pool=harness.write_chula_labels(
            grouped_share(pool, ablation_fraction), folder / "ablation_pool.csv"
        ),
    )


def csv_source(labels: Path) -> dict[str, Any]:
    """An automl ``format: csv`` source over chula_rbc12 with ``labels`` as its CSV."""
    return {
        "format": "csv",
        "path": str(harness.CHULA),
        "labels_csv": str(labels),
        "extension": ".jpg",
        "group_column": "field_group",
    }


def data_section(pool: Path, holdout: Path, image_size: int, n_folds: int) -> dict[str, Any]:
    """automl's ``data:`` section: ``pool`` tuned on in ``n_folds`` grouped folds, ``holdout``
    as ``data.test``."""
    return {
        **csv_source(pool),
        "image_size": image_size,
        "n_folds": n_folds,
        "test": csv_source(holdout),
    }


def describe(files: DataFiles) -> dict[str, Any]:
    """Crops and field groups of each CSV, for the plan and the results files."""
    import pandas as pd

    out = {}
    for name in ("holdout", "pool", "ablation_pool"):
        frame = pd.read_csv(getattr(files, name))
        out[name] = {"crops": len(frame), "groups": int(frame["field_group"].nunique())}
    return out
