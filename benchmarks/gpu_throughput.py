"""Training images/s of ConvNeXt-Tiny and EfficientNetV2-B0 at 96 px, and how busy the GPU is.

For each backbone, with mixed precision off and on, two input sources feed the same
``automl.nn.models.build_model`` classifier (random init: the GPU machines have no internet, and
weights do not change the speed):

- ``pipeline``: automl's real input pipeline (``automl.nn.pipeline.make_dataset``, training mode
  with flips) over real bccd_wbc_aug JPEGs decoded once to a uint8 array — what a trial runs;
- ``synthetic``: one batch of the same images held as a tensor and repeated — no decoding,
  gathering or augmentation: the accelerator's ceiling for this model.

pipeline / synthetic says how much of the device's throughput the CPU side delivers. While
each fit runs, ``nvidia-smi`` is sampled every 0.5 s for GPU utilisation and memory. Every
setting runs in its own process (the mixed-precision policy is global to a process).

The last row checks one-trial-per-GPU scheduling: ``automl tune --gpus <every GPU>`` on the
quick-start space, and which ``CUDA_VISIBLE_DEVICES`` each trial recorded.

On a machine without a GPU the script still runs (utilisation columns stay empty); mixed
precision is then slower than float32 (STACK.md), as expected on a CPU.

    python benchmarks/gpu_throughput.py            # full: 96 px, 40 timed steps per setting
    python benchmarks/gpu_throughput.py --quick    # plumbing check on a CPU: 32 px, 3 steps
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

BACKBONES = ("convnext_tiny", "efficientnetv2_b0")
BATCH_SIZE = 64


class GpuSampler:
    """Samples ``nvidia-smi`` utilisation and memory in a thread while training runs."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        if common.gpu_name() is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used"]
        while not self._stop.is_set():
            done = subprocess.run(
                [*query, "--format=csv,noheader,nounits", "--id=0"],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0 and done.stdout.strip():
                utilisation, memory = done.stdout.strip().splitlines()[0].split(",")
                self.samples.append((float(utilisation), float(memory)))
            self._stop.wait(self.interval)

    def summary(self) -> dict[str, float | None]:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_memory_max_mb": None}
        return {
            "gpu_util_mean": round(statistics.fmean(u for u, _ in self.samples), 1),
            "gpu_memory_max_mb": max(m for _, m in self.samples),
        }


def run_one(backbone: str, mixed: bool, source: str, args: argparse.Namespace) -> dict:
    """One setting in this (fresh) process: build, warm up, then time ``args.steps`` steps."""
    import keras
    import numpy as np
    import optuna
    import tensorflow as tf

    import automl
    from automl.data.readers import read_source
    from automl.nn.models import build_model
    from automl.nn.pipeline import make_dataset
    from automl.search.objective import configure_device

    device = configure_device("on" if mixed else "off")
    train, _ = common.wbc_subset(Path(args.work) / "data", args.per_class, 0)
    config = automl.config_from_dict(
        common.study_config(
            name="gpu",
            studies_dir=Path(args.work) / "studies",
            train=train,
            test=train,
            size={"image_size": args.image_size, "n_folds": 2},
            space={
                **common.hand_tuned_space(1),
                "backbone": {"name": backbone, "weights": "none"},
                "batch_size": BATCH_SIZE,
            },
            n_trials=1,
        ),
        source="gpu_throughput",
    )
    images = read_source(config.data.source, args.image_size)
    params = config.space.suggest(optuna.trial.FixedTrial({}))
    n_classes = len(images.class_names)
    keras.utils.set_random_seed(0)
    model = build_model(params, n_classes=n_classes, image_size=args.image_size)
    if source == "pipeline":
        indices = np.arange(len(images))
        dataset = make_dataset(
            images.images,
            images.labels,
            indices,
            n_classes=n_classes,
            batch_size=BATCH_SIZE,
            training=True,
            augment=params["augment"],
        ).repeat()
    else:
        x = tf.constant(images.images[:BATCH_SIZE].astype("float32"))
        y = tf.one_hot(images.labels[:BATCH_SIZE], n_classes)
        dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    # Warm-up: tracing and autotuning stay out of the timed steps.
    model.fit(dataset, steps_per_epoch=args.warmup_steps, epochs=1, verbose=0)
    with GpuSampler() as sampler:
        started = time.perf_counter()
        model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - started
    return {
        "backbone": backbone,
        "mixed_precision": "on" if mixed else "off",
        "source": source,
        "images_per_second": round(args.steps * BATCH_SIZE / seconds, 1),
        "timed_steps": args.steps,
        "gpus_visible": device["gpus"],
        **sampler.summary(),
    }


def scheduling(args: argparse.Namespace) -> dict:
    """``automl tune --gpus``: one worker per GPU; which devices each trial saw."""
    from automl.search.storage import load_study

    name = common.gpu_name()
    gpus = ",".join(str(i) for i in range(_gpu_count())) if name else None
    studies = Path(args.work) / "schedule"
    command = [sys.executable, "-m", "automl.cli", "--quiet", "tune"]
    command += ["--space", str(common.REPO / "search_spaces" / "quickstart.yaml")]
    command += ["--studies-dir", str(studies), "--n-trials", str(args.schedule_trials)]
    command += ["--set", "study.pruner={name: none}", "--no-progress"]
    command += ["--gpus", gpus] if gpus else ["--workers", "1"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=common.REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"automl tune --gpus failed:\n{done.stderr[-2000:]}")
    _, study = load_study("quickstart", studies)
    devices = sorted({str(t.user_attrs.get("cuda_visible_devices")) for t in study.trials})
    return {
        "backbone": "quickstart custom CNN",
        "mixed_precision": "auto",
        "source": f"automl tune {'--gpus ' + gpus if gpus else '--workers 1'}",
        "trials": len(study.trials),
        "trials_per_hour": round(len(study.trials) * 3600 / wall, 1),
        "devices_seen": ", ".join(devices),
    }


def _gpu_count() -> int:
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return len(done.stdout.split()) if done.returncode == 0 else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--run-one", nargs=3, metavar=("BACKBONE", "MIXED", "SOURCE"))
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.image_size = 32 if args.quick else 96
    args.per_class = 20 if args.quick else 200
    args.steps = 3 if args.quick else 40
    args.warmup_steps = 2 if args.quick else 10
    args.schedule_trials = 2 if args.quick else 4
    if args.run_one:
        backbone, mixed, source = args.run_one
        row = run_one(backbone, mixed == "on", source, args)
        Path(args.out).write_text(json.dumps(row), encoding="utf-8")
        return
    rows = []
    backbones = args.backbones.split(",")[:1] if args.quick else args.backbones.split(",")
    with tempfile.TemporaryDirectory(prefix="automl_gpu_bench_") as tmp:
        work = args.work or tmp
        for backbone in backbones:
            for mixed in ("off", "on"):
                for source in ("synthetic", "pipeline"):
                    out = Path(tmp) / f"{backbone}-{mixed}-{source}.json"
                    command = [sys.executable, __file__, "--run-one", backbone, mixed, source]
                    command += ["--out", str(out), "--work", work]
                    command += ["--quick"] if args.quick else []
                    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
                    done = subprocess.run(command, capture_output=True, text=True, env=env)
                    if done.returncode != 0:
                        raise SystemExit(f"{backbone} {mixed} {source}:\n{done.stderr[-2000:]}")
                    row = json.loads(out.read_text(encoding="utf-8"))
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        for row in rows:  # the CPU side's share of the device's ceiling
            if row["source"] == "pipeline":
                ceiling = next(
                    r["images_per_second"]
                    for r in rows
                    if r["source"] == "synthetic"
                    and (r["backbone"], r["mixed_precision"])
                    == (row["backbone"], row["mixed_precision"])
                )
                row["share_of_ceiling"] = round(row["images_per_second"] / ceiling, 3)
        args.work = work
        rows.append(scheduling(args))
    common.save_results(
        "gpu_throughput",
        title=f"Training throughput at {args.image_size} px, batch {BATCH_SIZE}",
        description=(
            "`synthetic` = one in-memory batch repeated (the device's ceiling for the model); "
            "`pipeline` = automl's tf.data pipeline over real decoded JPEGs with flips; "
            "share of ceiling = pipeline / synthetic. GPU utilisation is the mean of "
            "nvidia-smi samples every 0.5 s during the timed steps."
        ),
        rows=rows,
        columns=[
            "backbone",
            "mixed_precision",
            "source",
            "images_per_second",
            "share_of_ceiling",
            "gpu_util_mean",
            "gpu_memory_max_mb",
            "trials_per_hour",
            "devices_seen",
        ],
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
