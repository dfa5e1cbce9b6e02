"""Load saved fold models and stack their class probabilities (the Keras side of ensembling).

Models are loaded one at a time with ``keras.saving.load_model`` in safe mode (automl's models
use built-in layers only) and the session is cleared after each, so memory stays at one model
however large the ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from automl.errors import StudyError
from automl.nn.pipeline import make_dataset

PREDICT_BATCH_SIZE = 256


def predict_probabilities(
    model_paths: Sequence[Path],
    images: np.ndarray,
    *,
    tta: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Probabilities of every model: shape ``(n_models, n_images, n_classes)``.

    Args:
        model_paths: saved ``.keras`` fold models.
        images: ``(n, s, s, 3)`` uint8 images at the models' input size.
        tta: test-time augmentation: average each model's probabilities over the image and its
            horizontal and vertical flips.
    """
    stacked = []
    indices = np.arange(len(images))
    for path in tqdm(model_paths, desc="models", disable=not progress, leave=False):
        if not Path(path).is_file():
            raise StudyError(
                f"{path}: fold model is missing; the study folder was moved or pruned by hand. "
                "Re-run `automl ensemble` so it picks trials whose models exist."
            )
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        expected = model.input_shape[1]
        if images.shape[1] != expected:
            raise StudyError(
                f"{path}: model expects {expected}x{expected} images, got "
                f"{images.shape[1]}x{images.shape[2]}; read the images at the study's image_size."
            )
        n_classes = model.output_shape[-1]
        views = [images] if not tta else [images, images[:, :, ::-1], images[:, ::-1, :]]
        probabilities = np.zeros((len(images), n_classes), dtype=np.float64)
        for view in views:
            dataset = make_dataset(
                np.ascontiguousarray(view),
                None,
                indices,
                n_classes=n_classes,
                batch_size=PREDICT_BATCH_SIZE,
            )
            probabilities += model.predict(dataset, verbose=0)
        stacked.append(probabilities / len(views))
        del model
        keras.backend.clear_session()
    return np.stack(stacked)
