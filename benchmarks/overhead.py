"""Overhead: one automl trial (one fold, fixed parameters) vs a plain ``model.fit`` script.

Both sides train the hand-tuned custom CNN (``harness.hand_tuned_space``; flips on) on the same
fold of the same real blood-cell subset (``harness.wbc_subset``; the study's first grouped fold
from ``automl.search.tune.prepare_splits``), with the same Keras seed and the same number of
epochs.

- **automl**: what ``automl tune`` does for a trial. The study is created as ``run_tune`` does
  (``create_or_load`` with its journal storage, resolved configuration and splits saved, pruner
  ``none``), then ``automl.search.tune.optimize`` runs one trial of the k-fold ``Objective`` on
  splits cut to the first fold. Timed: that ``optimize`` call, i.e. everything automl does per
  trial:
  the ``tf.data`` pipeline, per-epoch validation predictions and reports to Optuna, saving the
  fold model, out-of-fold probabilities and history, the latency measurement, the dashboard
  pictures and note, the storage writes. Creating the study is once per study, not per trial,
  and is reported apart (``study_setup_s``).
- **plain**: what a notebook does. ``tf.data.Dataset.from_tensor_slices`` over the fold's
  images as float32 and one-hot labels, shuffle, batch 32, the same flips with a
  ``keras.layers.RandomFlip`` map, prefetch; ``model.fit(..., validation_data=...)`` on the
  validation fold; ``model.save``. The model comes from the same ``build_model`` call.

Excluded on both sides: importing TensorFlow and automl, and reading and decoding the data
(``prepare_splits``: shared, and done once per study). Each run is its own process; the two
sides alternate which goes first from repeat to repeat, and the medians are compared.
``trial_train_s`` is automl's own ``train_seconds`` (model build, fit with validation, saving
the fold model), so the rest of the automl time is bookkeeping after training. A single trial
in a fresh process also pays one-off costs (first plot drawn, first storage writes) that later
trials of a study do not.

Target: automl / plain <= 1.10. The validation accuracy of both is recorded as a sanity check:
the same training should score alike (not identically: the two shuffle differently).

    python -m benchmarks.overhead [--quick] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness

NAME = "overhead"
TARGET = 1.10
SIDES = ("automl", "plain")


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Child process: one side, twice (first and warm); return its wall times and accuracy."""
    # All imported before the clock starts (automl.search.objective brings matplotlib for the
    # trial's pictures): a study pays its imports once, not per trial.
    import keras  # noqa: F401  (imported before the clock, used by plain_fit)
    import numpy as np  # noqa: F401
    import optuna
    import tensorflow as tf  # noqa: F401
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from automl.config.schema import config_from_dict
    from automl.files import atomic_write_text
    from automl.nn.fit import configure_device
    from automl.nn.models import build_model  # noqa: F401
    from automl.search.attrs import TrialSummary
    from automl.search.objective import trial_seed
    from automl.search.paths import paths_for
    from automl.search.session import log_trial, optimize, prepare_splits
    from automl.search.storage import create_or_load, publish_config

    size, seed, side = spec["size"], spec["seed"], spec["side"]
    config = config_from_dict(
        harness.study_config(
            name=f"overhead_{side}_{spec['repeat']}",
            studies_dir=Path(spec["studies"]),
            train=Path(spec["train"]),
            test=Path(spec["test"]),
            size=size,
            space=harness.hand_tuned_space(size["epochs"]),
            seed=seed,
            pruner={"name": "none"},
            n_trials=1,
        ),
        source="benchmarks/overhead.py",
    )
    splits = prepare_splits(config)
    one_fold = dataclasses.replace(splits, folds=splits.folds[:1])
    train_idx, val_idx = one_fold.folds[0]
    configure_device(config.training.mixed_precision, config.training.deterministic)
    row: dict[str, Any] = {
        "side": side,
        "repeat": spec["repeat"],
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "epochs": size["epochs"],
    }
    if side == "automl":
        started = time.perf_counter()
        # As run_tune does before its trials (minus the data checks already done above).
        paths = paths_for(config)
        paths.root.mkdir(parents=True, exist_ok=True)
        study = create_or_load(config)
        config.save(paths.config)
        atomic_write_text(paths.splits, json.dumps(one_fold.to_dict()))
        publish_config(study, config, one_fold.to_dict())
        row["study_setup_s"] = time.perf_counter() - started
        counted = (TrialState.COMPLETE, TrialState.PRUNED)
        # Trial 0 in a fresh process ("seconds"), then trial 1 of the same study in the same
        # process ("seconds_warm"): what every later trial of a study costs.
        for n_done, key in ((1, "seconds"), (2, "seconds_warm")):
            started = time.perf_counter()
            optimize(
                study,
                config,
                one_fold,
                n_trials=1,
                callbacks=[log_trial, MaxTrialsCallback(n_done, states=counted)],
                progress=False,
            )
            row[key] = time.perf_counter() - started
            trial = study.trials[-1]
            if trial.state != TrialState.COMPLETE:
                raise SystemExit(f"the trial ended {trial.state.name}: {trial.user_attrs}")
            summary = TrialSummary.from_trial(trial)
            if key == "seconds":
                row["val_accuracy"] = summary.fold_scores[0]
                row["trial_train_s"] = summary.seconds
            else:
                row["trial_train_s_warm"] = summary.seconds
        return row

    params = config.space.suggest(optuna.trial.FixedTrial({}))  # every value is fixed
    # Twice, as automl's side: a first fit in a fresh process, then a second in the same one.
    for number, key in ((0, "seconds"), (1, "seconds_warm")):
        seconds, accuracy = plain_fit(
            config,
            params,
            one_fold,
            model_seed=trial_seed(config.study.seed, number),  # automl's trial <number>, fold 0
            out=Path(spec["studies"]) / f"plain_{spec['repeat']}_{number}",
        )
        row[key] = seconds
        if number == 0:
            row["val_accuracy"] = accuracy
    return row


def plain_fit(config, params, one_fold, *, model_seed, out) -> tuple[float, float]:
    """What a notebook does on fold 0: tf.data from tensors, fit with validation_data, save."""
    import keras
    import numpy as np
    import tensorflow as tf

    from automl.nn.models import build_model

    tuning, n_classes = one_fold.tuning, one_fold.n_classes
    train_idx, val_idx = one_fold.folds[0]
    batch_size, flip = int(params["batch_size"]), params["augment"]["flip"]
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    keras.backend.clear_session()
    keras.utils.set_random_seed(model_seed)
    model = build_model(
        params,
        n_classes=n_classes,
        image_size=config.data.image_size,
        jit_compile=config.training.jit_compile,
    )

    def tensors(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = tuning.images[indices].astype("float32")
        return images, keras.utils.to_categorical(tuning.labels[indices], n_classes)

    augment = keras.layers.RandomFlip(flip, seed=model_seed)
    train_ds = (
        tf.data.Dataset.from_tensor_slices(tensors(train_idx))
        .shuffle(len(train_idx), seed=model_seed)
        .batch(batch_size)
        .map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_ds = tf.data.Dataset.from_tensor_slices(tensors(val_idx)).batch(batch_size)
    history = model.fit(train_ds, epochs=int(params["epochs"]), validation_data=val_ds, verbose=0)
    model.save(out / "model.keras")
    return time.perf_counter() - started, float(history.history["val_accuracy"][-1])


def main() -> None:
    parser = harness.argument_parser(
        NAME, __doc__, quick="small data, 1 repeat", seed=True, child=True
    )
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (quick: 1)")
    args = parser.parse_args()
    if args.run_one is not None:
        harness.child_result(run_one(json.loads(args.run_one)))
        return
    size = harness.sizes(args.quick)
    repeats = args.repeats or (1 if args.quick else 3)
    runs = []
    with tempfile.TemporaryDirectory(prefix="automl_overhead_bench_") as tmp:
        work = Path(tmp)
        train, test = harness.wbc_subset(
            work / "data", size["per_class"], size["test_per_class"], args.seed
        )
        for repeat in range(repeats):
            # Alternate which side goes first, so that a drift of the machine's load is shared.
            for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
                spec = {
                    "side": side,
                    "repeat": repeat,
                    "train": str(train),
                    "test": str(test),
                    "studies": str(work / "studies"),
                    "size": size,
                    "seed": args.seed,
                }
                run = harness.run_child(NAME, spec, label=str(spec["side"]))
                print(json.dumps(run), flush=True)
                runs.append(run)
    rows = []
    for side in SIDES:
        group = [r for r in runs if r["side"] == side]
        row: dict[str, Any] = {
            "side": side,
            "repeats": len(group),
            "train_images": group[0]["train_images"],
            "val_images": group[0]["val_images"],
            "epochs": group[0]["epochs"],
            "seconds": round(statistics.median(r["seconds"] for r in group), 2),
            "seconds_all": [round(r["seconds"], 2) for r in group],
            "seconds_warm": round(statistics.median(r["seconds_warm"] for r in group), 2),
            "val_accuracy": round(statistics.median(r["val_accuracy"] for r in group), 4),
        }
        for figure in ("trial_train_s", "trial_train_s_warm", "study_setup_s"):
            if figure in group[0]:
                row[figure] = round(statistics.median(r[figure] for r in group), 2)
        rows.append(row)
    automl_row, plain_row = rows
    ratio = round(automl_row["seconds"] / plain_row["seconds"], 3)
    automl_row["ratio_to_plain"] = ratio
    ratio_warm = round(automl_row["seconds_warm"] / plain_row["seconds_warm"], 3)
    automl_row["ratio_to_plain_warm"] = ratio_warm
    met = ratio <= TARGET
    harness.save_results(
        NAME,
        title=(
            f"Overhead of one automl trial vs a plain model.fit script "
            f"({automl_row['train_images']} training images, {size['epochs']} epochs)"
        ),
        description=(
            f"bccd_wbc_aug subset, first of {size['n_folds']} grouped folds "
            f"({automl_row['train_images']} train / {automl_row['val_images']} validation "
            f"images), {size['image_size']} px, the hand-tuned custom CNN with flips, seed "
            f"{args.seed}; median of {repeats} run(s) per side, each in its own process, "
            "alternating order. seconds: automl = `optimize` of one trial (everything a trial "
            "does); plain = model build + tf.data + fit with validation + model.save. Data "
            "reading and imports excluded on both sides. trial_train_s: automl's own "
            "train_seconds (build, fit, fold model saved); study_setup_s: creating the study, "
            "once per study. seconds_warm: the same again in the same process (automl: "
            "trial 1 of the study; plain: a second fit), what every later trial of a study "
            f"costs. Target automl / plain <= {TARGET:.2f}: {'met' if met else 'not met'} "
            f"({ratio:.2f} for a first trial in a fresh process; {ratio_warm:.2f} warm)."
        ),
        rows=rows,
        columns=[
            "side",
            "seconds",
            "ratio_to_plain",
            "seconds_warm",
            "ratio_to_plain_warm",
            "trial_train_s",
            "trial_train_s_warm",
            "study_setup_s",
            "val_accuracy",
            "train_images",
            "val_images",
            "epochs",
        ],
        extra={
            "target_ratio": TARGET,
            "ratio": ratio,
            "ratio_warm": ratio_warm,
            "target_met": met,
            "runs": runs,
        },
        quick=args.quick,
        folder=args.results,
    )


if __name__ == "__main__":
    main()
