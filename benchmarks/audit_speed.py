"""How fast is ``automl audit`` on 17,000 real 360x363 JPEGs, and how much memory does it take?

Builds (once, in a temporary folder) a class-folder tree of 17,000 real BCCD images, every one
re-encoded at 360x363 px (JPEG quality 90): all of ``bccd_wbc_aug`` (TRAIN, TEST, TEST_SIMPLE;
augmented copies of 348 cells) and the first crops of ``bccd_cells3`` (RBC, WBC, Platelets).
Then audits it in a fresh process and records the wall time and the peak resident memory
(``resource.getrusage``) of that process. Results go to stdout and to
``benchmarks/results/audit_speed.{json,md}``.

    python benchmarks/audit_speed.py [--n 17000] [--folder /tmp/automl_audit_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
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


def audit(folder: Path) -> None:
    """Child process: audit ``folder`` and print one JSON line with time and peak memory."""
    from automl.audit_report import run_audit
    from automl.config import config_from_dict

    config = config_from_dict({"data": {"format": "folder", "path": str(folder)}})
    started = time.perf_counter()
    result = run_audit(config.data, seed=42)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = result.summary
    print(
        json.dumps(
            {
                "seconds": round(seconds, 1),
                "peak_rss_mb": round(peak_mb),
                "images": summary["images"],
                "duplicate_groups": summary["duplicate_groups"],
                "images_in_duplicate_groups": summary["images_in_duplicate_groups"],
                "links": summary["links"],
                "flagged_files": summary["flagged_files"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=17000)
    parser.add_argument(
        "--folder", type=Path, default=Path(tempfile.gettempdir()) / "automl_audit_bench"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        audit(args.folder)
        return
    started = time.perf_counter()
    n = build(args.folder, args.n)
    built = time.perf_counter() - started
    print(f"data: {n} JPEGs of {SIZE[0]}x{SIZE[1]} in {args.folder} ({built:.0f} s to build)")
    child = subprocess.run(
        [sys.executable, __file__, "--child", "--folder", str(args.folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    measured.update(
        {
            "load_average_1min_after": round(os.getloadavg()[0], 2),
            "cpu_cores": os.cpu_count(),
            "python": platform.python_version(),
            "image_size_px": list(SIZE),
            "date": time.strftime("%Y-%m-%d"),
        }
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "audit_speed.json").write_text(json.dumps(measured, indent=2) + "\n")
    (RESULTS / "audit_speed.md").write_text(
        "# automl audit speed\n\n"
        f"{measured['images']} real BCCD JPEGs re-encoded at {SIZE[0]}x{SIZE[1]} px, "
        f"{measured['cpu_cores']} CPU cores, Python {measured['python']}, {measured['date']}.\n\n"
        "| wall time (s) | peak RSS (MB) | duplicate groups | images in groups | flagged files |\n"
        "|---|---|---|---|---|\n"
        f"| {measured['seconds']} | {measured['peak_rss_mb']} | {measured['duplicate_groups']} | "
        f"{measured['images_in_duplicate_groups']} | {measured['flagged_files']} |\n\n"
        f"Links found: {measured['links']}. Load average right after the run: "
        f"{measured['load_average_1min_after']} (other processes sharing the cores slow it "
        "down). Run: `python benchmarks/audit_speed.py`.\n"
    )
    print(json.dumps(measured, indent=2))


if __name__ == "__main__":
    main()
