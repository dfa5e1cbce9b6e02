"""Tune, ensemble and predict on the Kaggle "blood-cells" set through the Python API.

The Kaggle set (dataset2-master: ``images/TRAIN/<CLASS>/*.jpg`` and ``images/TEST/<CLASS>/``)
holds ~2,500 augmented copies per class of only a few hundred cells in TRAIN, and other cells in
TEST. This script takes a per-class subset of TRAIN for tuning, uses TEST as the separate
hold-out (other cells: an honest score), and predicts a few TEST_SIMPLE images at the end.

    python examples/tune_blood_cells.py PATH/TO/bccd_wbc_aug --per-class 200 --n-trials 12
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import optuna

import automl

CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")


def subset(source: Path, dest: Path, per_class: int, seed: int = 0) -> Path:
    """Copy ``per_class`` randomly drawn images of each class into ``dest``.

    Random, not the first by name: consecutive names are augmented copies of the same few
    cells, and a model trained on a handful of cells cannot generalise.
    """
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (dest / name).mkdir(parents=True, exist_ok=True)
        files = sorted((source / name).glob("*.jpg"))
        picked = rng.choice(len(files), size=min(per_class, len(files)), replace=False)
        for index in sorted(picked):
            shutil.copy2(files[index], dest / name / files[index].name)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="folder holding images/TRAIN and images/TEST")
    parser.add_argument("--work", type=Path, default=Path("examples_work"))
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--n-trials", type=int, default=12)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # automl logs one line per trial

    images = args.dataset / "images"
    train = subset(images / "TRAIN", args.work / "train", args.per_class)
    test = subset(images / "TEST", args.work / "test", args.test_per_class)
    config = automl.config_from_dict(
        {
            "study": {
                "name": "wbc_aug_subset",
                "metric": "accuracy",
                "n_trials": args.n_trials,
                "seed": 0,
                "sampler": {"name": "tpe", "n_startup_trials": 5},
                "pruner": {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 2},
                "studies_dir": str(args.work / "studies"),
            },
            "data": {
                "format": "folder",
                "path": str(train),
                "image_size": 64,
                "n_folds": 3,
                "test": {"format": "folder", "path": str(test)},
            },
            "space": {
                "backbone": {
                    "name": "custom_cnn",
                    "blocks": {"type": "int", "low": 3, "high": 4},
                    "filters": {"type": "categorical", "choices": [16, 32]},
                    "batchnorm": True,
                },
                "head": {
                    "layers": {"type": "int", "low": 0, "high": 1},
                    "units": 128,
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
                },
                "optimizer": {"type": "categorical", "choices": ["adam", "lion"]},
                "learning_rate": {"type": "float", "low": 3.0e-4, "high": 3.0e-3, "log": True},
                "batch_size": 32,
                "epochs": 15,
                "augment": {"flip": "horizontal_and_vertical"},
            },
            # Greedy forward selection on out-of-fold predictions picks the members.
            "ensemble": {"selection": "greedy", "vote": "majority"},
        },
        source="examples/tune_blood_cells.py",
    )
    result = automl.run_tune(config, progress=True)
    ensemble = automl.run_ensemble(config, result.study)  # an EnsembleResult
    print(f"trials: {result.counts}")
    print(f"best CV {config.study.metric}: {result.study.best_value:.4f}")
    print(f"members (trial x weight): {[(m.trial, m.weight) for m in ensemble.members]}")
    if ensemble.holdout is not None:
        print(
            f"hold-out accuracy: ensemble {ensemble.holdout.ensemble.accuracy:.4f}, "
            f"best single trial {ensemble.holdout.best_single_trial.scores.accuracy:.4f}"
        )
    prediction = automl.run_predict(config, images / "TEST_SIMPLE", args.work / "predictions.csv")
    print(f"predictions: {prediction.out} ({prediction.n_images} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
