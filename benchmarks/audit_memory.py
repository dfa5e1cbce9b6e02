"""How much memory does a user's ``automl audit`` process take, reports included?

Runs the command a user types, ``automl audit --data DIR --image-size 96``, in a process of its
own and reads that whole process's resident peak once it has ended
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, what ``/usr/bin/time -v`` reports as
"Maximum resident set size"): imports, listing, fingerprints, duplicate search, outliers and
the CSV/JSON/HTML reports, all of it. ``benchmarks.audit_speed`` measures ``run_audit`` alone,
from inside its process, without writing the reports. The default data is every crop of
``chula_rbc12`` (19,871 72x72 JPEGs in class folders). Results go to stdout and to
``benchmarks/results/audit_memory.{json,md}``.

    python -m benchmarks.audit_memory [--quick] [--data DIR]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import harness

NAME = "audit_memory"


def measure(data: Path) -> dict[str, object]:
    """Run ``automl audit`` on ``data`` in a fresh process; its wall time and resident peak."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "automl.cli.main",
            "audit",
            "--data",
            str(data),
            "--image-size",
            "96",
            "--out",
            out,
            "--no-progress",
        ]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"automl audit failed ({done.returncode}): {done.stderr[-2000:]}")
        images = next(
            line.split()[1] for line in done.stdout.splitlines() if line.startswith("images:")
        )
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux
    if peak_kb <= before:  # the largest child so far was not this one (never, run alone)
        raise SystemExit("the audit's peak could not be told from an earlier child's")
    return {
        "data": data.name,
        "images": int(images),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_kb / 1024),
    }


def main() -> None:
    parser = harness.argument_parser(NAME, __doc__, quick="bccd_wbc_crops (351 crops)")
    parser.add_argument("--data", type=Path, default=None, help="a folder of class folders")
    args = parser.parse_args()
    default = "bccd_wbc_crops/BCCD_cropped" if args.quick else "chula_rbc12"
    data = args.data or harness.SHARED_DATA / default
    row = measure(data)
    harness.save_results(
        NAME,
        title=f"automl audit memory: the whole process on {row['images']} images ({data.name})",
        description=(
            "Resident peak of the whole `automl audit --data DIR --image-size 96` process "
            "(getrusage of the ended child, as /usr/bin/time -v reports it): imports, "
            "fingerprints, duplicate search and the CSV/JSON/HTML reports."
        ),
        rows=[row],
        columns=["data", "images", "seconds", "peak_rss_mb"],
        quick=args.quick,
        folder=args.results,
    )


if __name__ == "__main__":
    main()
