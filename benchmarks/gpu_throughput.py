"""Training images/s of ConvNeXt-Tiny and EfficientNetV2-B0 at 96 px, and how busy the GPU is.

For each backbone, with mixed precision off and on, two input sources feed the same
``automl.nn.models.build_model`` classifier (random init: the GPU machines have no internet, and
weights do not change the speed):

- ``pipeline``: automl's real input pipeline (``automl.nn.pipeline.make_dataset``, training mode
  with flips) over real bccd_wbc_aug JPEGs decoded once to a uint8 array — what a trial runs;
- ``synthetic``: one batch of the same images held as a tensor and repeated — no decoding,
  gathering or augmentation: the accelerator's ceiling for this model.

pipeline / synthetic says how much of the device's throughput the CPU side delivers. While
each fit runs, ``nvidia-smi`` is sampled every 0.5 s for GPU utilisation; the peak GPU memory
of the timed steps is TensorFlow's own (``harness.memory_meter``, as automl's trials record it).
Every setting runs in its own process (the mixed-precision policy is global to a process).

The last row checks one-trial-per-GPU scheduling: ``automl tune --gpus <every GPU>`` on the
quick-start space, and which ``CUDA_VISIBLE_DEVICES`` each trial recorded.

On a machine without a GPU the script still runs (utilisation columns stay empty); mixed
precision is then slower than float32 (STACK.md), as expected on a CPU.

    python -m benchmarks.gpu_throughput            # full: 96 px, 40 timed steps per setting
    python -m benchmarks.gpu_throughput --quick    # plumbing check on a CPU: 32 px, 3 steps
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import harness

NAME = "gpu_throughput"
BACKBONES = ("convnext_tiny", "efficientnetv2_b0")
BATCH_SIZE = 64
FULL = {"image_size": 96, "per_class": 200, "steps": 40, "warmup_steps": 10, "trials": 4}
QUICK = {"image_size": 32, "per_class": 20, "steps": 3, "warmup_steps": 2, "trials": 2}


class GpuSampler:
    """Samples ``nvidia-smi`` utilisation in a thread while training runs."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        if harness.gpu_names():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu"]
        while not self._stop.is_set():
            done = subprocess.run(
                [*query, "--format=csv,noheader,nounits", "--id=0"],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0 and done.stdout.strip():
                self.samples.append(float(done.stdout.strip().splitlines()[0]))
            self._stop.wait(self.interval)

    def mean(self) -> float | None:
        """Mean utilisation (%) over the samples; None without a GPU."""
        return round(statistics.fmean(self.samples), 1) if self.samples else None


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One setting in this (fresh) process: build, warm up, then time ``steps`` steps."""
    import keras
    import numpy as np
    import optuna
    import tensorflow as tf

    import automl
    from automl.data.readers import read_source
    from automl.nn.fit import configure_device
    from automl.nn.models import build_model
    from automl.nn.pipeline import make_dataset

    backbone, source, size = spec["backbone"], spec["source"], spec["size"]
    device = configure_device(spec["mixed_precision"])
    train, _ = harness.wbc_subset(Path(spec["work"]) / "data", size["per_class"], 0)
    config = automl.config_from_dict(
        harness.study_config(
            name="gpu",
            studies_dir=Path(spec["work"]) / "studies",
            train=train,
            test=train,
            size={"image_size": size["image_size"], "n_folds": 2},
            space={
                **harness.hand_tuned_space(1),
                "backbone": {"name": backbone, "weights": "none"},
                "batch_size": BATCH_SIZE,
            },
            n_trials=1,
        ),
        source="gpu_throughput",
    )
    images = read_source(config.data.source, size["image_size"])
    params = config.space.suggest(optuna.trial.FixedTrial({}))
    n_classes = len(images.class_names)
    keras.utils.set_random_seed(0)
    model = build_model(params, n_classes=n_classes, image_size=size["image_size"])
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
    model.fit(dataset, steps_per_epoch=size["warmup_steps"], epochs=1, verbose=0)
    meter = harness.memory_meter()  # after TensorFlow's import: GPU peaks of the timed steps
    with GpuSampler() as sampler:
        started = time.perf_counter()
        model.fit(dataset, steps_per_epoch=size["steps"], epochs=1, verbose=0)
        seconds = time.perf_counter() - started
    return {
        "backbone": backbone,
        "mixed_precision": spec["mixed_precision"],
        "source": source,
        "images_per_second": round(size["steps"] * BATCH_SIZE / seconds, 1),
        "timed_steps": size["steps"],
        "gpus_visible": device["gpus"],
        "gpu_util_mean": sampler.mean(),
        "gpu_peak_mb": meter.read().peak_gpu_memory_mb,
    }


def scheduling(work: Path, n_trials: int) -> dict[str, Any]:
    """``automl tune --gpus``: one worker per GPU; which devices each trial saw."""
    from automl.search.attrs import DEVICES_ATTR
    from automl.search.storage import load_study

    names = harness.gpu_names()
    gpus = ",".join(str(i) for i in range(len(names))) if names else None
    studies = work / "schedule"
    command = ["tune", "--space", str(harness.REPO / "search_spaces" / "quickstart.yaml")]
    command += ["--studies-dir", str(studies), "--n-trials", str(n_trials)]
    command += ["--set", "study.pruner={name: none}", "--no-progress"]
    command += ["--gpus", gpus] if gpus else ["--workers", "1"]
    wall = harness.run_automl_cli(command, "one trial per GPU")
    _, study = load_study("quickstart", studies)
    devices = sorted({str(t.user_attrs.get(DEVICES_ATTR)) for t in study.trials})
    return {
        "backbone": "quickstart custom CNN",
        "mixed_precision": "auto",
        "source": f"automl tune {'--gpus ' + gpus if gpus else '--workers 1'}",
        "trials": len(study.trials),
        "trials_per_hour": round(len(study.trials) * 3600 / wall, 1),
        "devices_seen": ", ".join(devices),
    }


def main() -> None:
    parser = harness.argument_parser(
        NAME, __doc__, quick="32 px, 3 timed steps, the first backbone only", child=True
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    args = parser.parse_args()
    if args.run_one:
        harness.child_result(run_one(json.loads(args.run_one)))
        return
    size = QUICK if args.quick else FULL
    backbones = args.backbones.split(",")[:1] if args.quick else args.backbones.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="automl_gpu_bench_") as tmp:
        work = args.work or Path(tmp)
        for backbone in backbones:
            for mixed in ("off", "on"):
                for source in ("synthetic", "pipeline"):
                    spec = {
                        "backbone": backbone,
                        "mixed_precision": mixed,
                        "source": source,
                        "work": str(work),
                        "size": size,
                    }
                    row = harness.run_child(NAME, spec, f"{backbone} {mixed} {source}")
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
        rows.append(scheduling(work, size["trials"]))
    harness.save_results(
        NAME,
        title=f"Training throughput at {size['image_size']} px, batch {BATCH_SIZE}",
        description=(
            "`synthetic` = one in-memory batch repeated (the device's ceiling for the model); "
            "`pipeline` = automl's tf.data pipeline over real decoded JPEGs with flips; "
            "share of ceiling = pipeline / synthetic. GPU utilisation is the mean of "
            "nvidia-smi samples every 0.5 s during the timed steps; gpu_peak_mb is "
            "TensorFlow's peak allocation over them."
        ),
        rows=rows,
        columns=[
            "backbone",
            "mixed_precision",
            "source",
            "images_per_second",
            "share_of_ceiling",
            "gpu_util_mean",
            "gpu_peak_mb",
            "trials_per_hour",
            "devices_seen",
        ],
        quick=args.quick,
        folder=args.results,
    )


if __name__ == "__main__":
    main()
