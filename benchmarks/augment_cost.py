"""What each augmentation and backbone of the training recipe costs per epoch on this machine.

Real red-cell crops of ``chula_rbc12`` (a seeded random sample, 48 px, as the model-quality
benchmark trains them) go through ``automl.nn.pipeline.make_dataset(training=True)`` and
``model.fit`` exactly as in a trial. Each setting changes one thing against the baseline (the
hand-tuned custom CNN, no augmentation) and reports:

- ``epoch_s``: seconds per training epoch over ``n_images`` images (median over epochs 2..E;
  epoch 1 holds tracing), and ``extra_pct``: how much longer than the baseline's epoch;
- ``input_images_per_s``: the pipeline alone (an epoch-long pass, no model), so that a slow
  augmentation shows even where the model hides it.

Every setting runs in its own process (``harness.run_child``) so that traced functions and
thread pools of one do not slow the next.

    python -m benchmarks.augment_cost [--quick] [--images 4000] [--epochs 4]
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from benchmarks import harness

NAME = "augment_cost"
IMAGE_SIZE = 48
BATCH_SIZE = 64
BASE_BACKBONE = {
    "name": "custom_cnn",
    "blocks": 3,
    "filters": 32,
    "batchnorm": True,
    "pooling": "avg",
}
SETTINGS: dict[str, dict[str, Any]] = {
    "baseline (custom_cnn, no augmentation)": {},
    "flip + rotation 0.1": {"augment": {"flip": "horizontal_and_vertical", "rotation": 0.1}},
    "randaugment 0.3 (2 ops)": {"augment": {"randaugment_magnitude": 0.3}},
    "erasing 0.25": {"augment": {"erasing": 0.25}},
    "mixup 0.2": {"augment": {"mixup_alpha": 0.2}},
    "cutmix 1.0": {"augment": {"cutmix_alpha": 1.0}},
    "mixup + cutmix, p 0.5": {
        "augment": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_probability": 0.5}
    },
    "ema 0.99": {"ema": {"momentum": 0.99}},
    "cosine schedule": {"schedule": "cosine", "warmup_epochs": 1},
    "custom_resnet (3 stages, width 16)": {
        "backbone": {"name": "custom_resnet", "stages": 3, "width": 16, "blocks_per_stage": 2}
    },
    "custom_resnet (3 stages, width 32)": {
        "backbone": {"name": "custom_resnet", "stages": 3, "width": 32, "blocks_per_stage": 2}
    },
}


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One setting in this process: seconds per epoch, input images/s, parameters."""
    import keras
    import numpy as np
    import optuna

    from automl.config.space import parse_space
    from automl.nn.models import build_model
    from automl.nn.pipeline import make_dataset
    from automl.nn.schedules import WeightAveraging, training_callbacks

    images, labels = harness.chula_sample(spec["n_images"], spec["seed"], IMAGE_SIZE)
    raw = {
        "backbone": BASE_BACKBONE,
        "head": {"layers": 0},
        "batch_size": BATCH_SIZE,
        "epochs": spec["epochs"],
        **spec["setting"],
    }
    params = parse_space(raw, image_size=IMAGE_SIZE).suggest(optuna.trial.FixedTrial({}))
    n_classes = int(labels.max()) + 1
    data = make_dataset(
        images,
        labels,
        np.arange(len(labels)),
        n_classes=n_classes,
        batch_size=BATCH_SIZE,
        training=True,
        augment=params["augment"],
        seed=spec["seed"],
    )
    for _ in data:  # warm-up pass, then an epoch-long pass of the pipeline alone
        pass
    started = time.perf_counter()
    for _ in data:
        pass
    input_rate = len(labels) / (time.perf_counter() - started)

    keras.utils.set_random_seed(spec["seed"])
    model = build_model(params, n_classes=n_classes, image_size=IMAGE_SIZE)
    times: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            times.append(time.perf_counter() - self.started)

    callbacks: list[Any] = [WeightAveraging()] if params["ema"]["momentum"] > 0 else []
    callbacks.append(EpochTimer())
    callbacks += training_callbacks(
        params,
        steps_per_epoch=-(-len(labels) // BATCH_SIZE),
        epochs=spec["epochs"],
    )
    model.fit(data, epochs=spec["epochs"], callbacks=callbacks, verbose=0)
    return {
        "epoch_s": statistics.median(times[1:]),
        "input_images_per_s": input_rate,
        "n_params": int(model.count_params()),
    }


def main() -> None:
    parser = harness.argument_parser(
        NAME, __doc__, quick="500 images, 2 epochs", seed=True, child=True
    )
    parser.add_argument("--images", type=int, default=None, help="default 4000 (quick: 500)")
    parser.add_argument("--epochs", type=int, default=None, help="default 4 (quick: 2)")
    args = parser.parse_args()
    if args.run_one:
        harness.child_result(run_one(json.loads(args.run_one)))
        return
    harness.require(harness.CHULA, "chula_rbc12")
    n_images = args.images or (500 if args.quick else 4000)
    epochs = args.epochs or (2 if args.quick else 4)
    rows = []
    for label, setting in SETTINGS.items():
        spec = {"setting": setting, "n_images": n_images, "epochs": epochs, "seed": args.seed}
        figures = harness.run_child(NAME, spec, label)
        rows.append({"setting": label, **figures})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["epoch_s"]
    for row in rows:
        row["extra_pct"] = round(100.0 * (row["epoch_s"] / base - 1.0), 1)
        row["epoch_s_per_10k_images"] = round(row["epoch_s"] * 10_000 / n_images, 1)
    harness.save_results(
        NAME,
        title="Training recipe: cost per epoch of each augmentation, EMA, schedule and backbone",
        description=(
            f"{n_images} random chula_rbc12 crops at {IMAGE_SIZE} px, batch {BATCH_SIZE}, "
            f"{epochs} epochs (median of epochs 2..{epochs}); the baseline is the custom CNN "
            "(3 blocks, 32 filters, batchnorm) without augmentation; each row changes one thing."
        ),
        rows=rows,
        columns=[
            "setting",
            "epoch_s",
            "epoch_s_per_10k_images",
            "extra_pct",
            "input_images_per_s",
            "n_params",
        ],
        quick=args.quick,
        folder=args.results,
    )


if __name__ == "__main__":
    main()
