"""How fast is ``automl audit`` on 17,000 real 360x363 JPEGs, and how much memory does it take?

Builds (once, in a temporary folder) a class-folder tree of 17,000 real BCCD images, every one
re-encoded at 360x363 px (JPEG quality 90): all of ``bccd_wbc_aug`` (TRAIN, TEST, TEST_SIMPLE;
augmented copies of 348 cells) and the first crops of ``bccd_cells3`` (RBC, WBC, Platelets).
Then audits it in a fresh process and records the wall time and the peak resident memory
(``harness.memory_meter``, started first thing in that process). Results go to stdout and to
``benchmarks/results/audit_speed.{json,md}``.

    python -m benchmarks.audit_speed [--quick] [--n 17000] [--folder /tmp/automl_audit_bench]
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks import harness

NAME = "audit_speed"
SHARED = harness.SHARED_DATA
SIZE = (360, 363)


def build(folder: Path, n: int) -> int:
    """Write ``n`` re-encoded real images under ``folder/<set>_<class>/``; reuse a full build."""
    sources = sorted((SHARED / "bccd_wbc_aug" / "images").glob("*/*/*.jpg"))
    sources += sorted((SHARED / "bccd_cells3").glob("*/*.jpg"))
    sources = sources[:n]
    marker = folder / ".complete"
    if marker.is_file() and marker.read_text() == str(len(sources)):
        return len(sources)

    def convert(source: Path) -> None:
        kind = source.parent.parent.name
        if kind == "bccd_cells3":
            kind = "CELLS3"
        target = folder / f"{kind}_{source.parent.name}" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            image.convert("RGB").resize(SIZE, Image.Resampling.BICUBIC).save(target, quality=90)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(convert, sources))
    marker.write_text(str(len(sources)))
    return len(sources)


def audit(folder: Path) -> dict[str, Any]:
    """Child process: audit ``folder``; its time, the process's peak memory and the findings."""
    meter = harness.memory_meter()  # first: the peak of the whole process, imports included
    from automl.config.schema import config_from_dict
    from automl.data.audit.report import run_audit

    config = config_from_dict({"data": {"format": "folder", "path": str(folder)}})
    started = time.perf_counter()
    result = run_audit(config.data, seed=42)
    seconds = time.perf_counter() - started
    peak_mb = meter.read().peak_rss_mb
    summary = result.summary
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mb": None if peak_mb is None else round(peak_mb),
        "images": summary["images"],
        "duplicate_groups": summary["duplicate_groups"],
        "images_in_duplicate_groups": summary["images_in_duplicate_groups"],
        "links": summary["links"],
        "flagged_files": summary["flagged_files"],
    }


def main() -> None:
    parser = harness.argument_parser(
        NAME, __doc__, quick="1,000 images instead of 17,000", child=True
    )
    parser.add_argument("--n", type=int, default=None, help="number of images (default 17000)")
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    if args.run_one is not None:
        harness.child_result(audit(Path(json.loads(args.run_one)["folder"])))
        return
    n = args.n or (1000 if args.quick else 17000)
    # One folder per size: a folder built for another n would hold extra files.
    folder = args.folder or Path(tempfile.gettempdir()) / f"automl_audit_bench_{n}"
    started = time.perf_counter()
    n = build(folder, n)
    built = time.perf_counter() - started
    print(f"data: {n} JPEGs of {SIZE[0]}x{SIZE[1]} in {folder} ({built:.0f} s to build)")
    measured = harness.run_child(NAME, {"folder": str(folder)}, "automl audit")
    harness.save_results(
        NAME,
        title=f"automl audit speed: {measured['images']} real BCCD JPEGs at {SIZE[0]}x{SIZE[1]}",
        description=(
            "Wall time and peak resident memory of `automl audit` in a fresh process (hashing, "
            "duplicate groups, outliers, HTML report)."
        ),
        rows=[measured],
        columns=[
            "images",
            "seconds",
            "peak_rss_mb",
            "duplicate_groups",
            "images_in_duplicate_groups",
            "flagged_files",
        ],
        quick=args.quick,
        folder=args.results,
    )


if __name__ == "__main__":
    main()
