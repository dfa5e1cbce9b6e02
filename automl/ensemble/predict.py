"""``automl predict``: the saved ensemble on new images -> a predictions CSV or a Kaggle file."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl.config.schema import Config
from automl.data.readers import check_utf8_names, list_image_files, read_images
from automl.ensemble.build import load_manifest
from automl.ensemble.outputs import kaggle_frame, predictions_frame
from automl.ensemble.thresholds import Cutoff, apply_threshold
from automl.ensemble.thresholds import positive_class as positive
from automl.ensemble.voting import Vote, vote, votes_for
from automl.errors import DataError
from automl.files import write_frame_csv

logger = logging.getLogger(__name__)

FORMATS = ("csv", "kaggle")


@dataclass(frozen=True)
class Prediction:
    """What ``predict`` wrote.

    Attributes:
        out: the CSV written.
        n_images: images predicted (rows of the CSV).
        n_models: fold model files that voted.
        class_counts: predicted images per class.
        skipped: unreadable files left out (``skip_unreadable``).
        threshold: the decision threshold applied; None when labels are the vote's.
    """

    out: Path
    n_images: int
    n_models: int
    class_counts: dict[str, int]
    skipped: tuple[str, ...]
    threshold: Cutoff | None = None


def _with_threshold(
    result: Vote,
    probabilities: np.ndarray,
    names: list[str],
    chosen: Cutoff,
    weights: list[int] | None = None,
) -> Vote:
    if len(names) != 2:
        raise DataError(
            f"a decision threshold needs a binary task; this one has {len(names)} classes."
        )
    if chosen.positive_class not in names:
        raise DataError(f"positive class must be one of {names}, got {chosen.positive_class!r}.")
    index = names.index(chosen.positive_class)
    labels = apply_threshold(result.probabilities[:, index], chosen.threshold, index)
    return Vote(
        labels=labels,
        probabilities=result.probabilities,
        votes=votes_for(probabilities, labels, weights),  # a model of weight w votes w times
        n_models=result.n_models,
    )


def image_ids(paths: Sequence[Path], root: Path) -> list[str]:
    """Ids as the training loaders make them: path relative to ``root``, no extension.

    Raises:
        DataError: two files give one id (``a.png`` and ``a.jpg``): their rows could not be
            told apart.
    """
    if root.is_file():
        return [root.stem]
    ids = [p.relative_to(root).with_suffix("").as_posix() for p in paths]
    first: dict[str, Path] = {}
    for path, name in zip(paths, ids, strict=True):
        if name in first:
            raise DataError(
                f"--input {root}: expected one image file per id (the file name without its "
                f"extension, as in training), got {first[name].name} and {path.name} both as "
                f"'{name}'; rename or move one of them."
            )
        first[name] = path
    return ids


def _check_writable(out: Path) -> None:
    """Fail before any inference if ``out`` cannot be written (a folder, a missing drive...)."""
    where = f"--out {out}"
    if out.is_dir():
        raise DataError(f"{where}: expected a CSV file name, got a folder; add a file name.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".{out.name}.{os.getpid()}.probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataError(
            f"{where}: expected a writable place for the predictions, got "
            f"{type(exc).__name__}: {exc.strerror or exc}; pick another --out."
        ) from exc


def run_predict(
    config: Config,
    input_path: Path,
    out: Path,
    *,
    output_format: str = "csv",
    tta: bool = False,
    skip_unreadable: bool = False,
    positive_class: str | None = None,
    threshold: float | None = None,
    use_threshold: bool = True,
    progress: bool = False,
) -> Prediction:
    """Predict every image under ``input_path`` with the study's ensemble and write ``out``.

    Binary tasks whose ensemble chose a decision threshold (``ensemble.target_recall``) label an
    image positive when its mean positive probability reaches that threshold, unless
    ``use_threshold`` is False; ``threshold`` sets one by hand.
    """
    from automl.nn.inference import predict_probabilities

    if output_format not in FORMATS:
        raise DataError(f"--format must be one of {', '.join(FORMATS)}, got {output_format!r}.")
    ensemble = load_manifest(config)
    input_path = input_path.expanduser().resolve()
    if input_path.is_file():
        paths = [input_path]
    elif input_path.is_dir():
        paths = list_image_files(input_path)
    else:
        raise DataError(f"--input {input_path}: no such file or folder; pass images or a folder.")
    if not paths:
        raise DataError(
            f"--input {input_path}: no image files (.jpg, .png, .tif, ...) found; "
            "check the folder."
        )
    check_utf8_names(paths, f"--input {input_path}")  # the CSV is UTF-8: refuse before the work
    all_ids = image_ids(paths, input_path)  # before the work, as the checks below
    _check_writable(out)
    models = ensemble.model_paths()  # before reading the images: a missing model fails fast
    images, failed = read_images(
        paths,
        ensemble.image_size,
        on_unreadable="skip" if skip_unreadable else "error",
        progress=progress,
    )
    if len(images) == 0:
        raise DataError(
            f"--input {input_path}: expected readable images, got {len(failed)} image files "
            f"and none of them readable (first: {failed[0]}); check the files' format."
        )
    failed_set = {Path(p) for p in failed}
    ids = [name for path, name in zip(paths, all_ids, strict=True) if path not in failed_set]
    weights = ensemble.model_weights()  # greedy selection's multiplicities; 1 in old manifests
    probabilities = predict_probabilities(models, images, tta=tta, progress=progress)
    result: Vote = vote(probabilities, ensemble.vote, weights)
    names = list(ensemble.class_names)
    chosen = (
        (ensemble.threshold.cutoff if ensemble.threshold else None)
        if threshold is None
        else Cutoff(positive(names, positive_class or config.ensemble.positive_class), threshold)
    )
    if chosen is not None and use_threshold:
        result = _with_threshold(result, probabilities, names, chosen, weights)
    if output_format == "kaggle":
        frame = kaggle_frame(ids, names, result, positive_class or config.ensemble.positive_class)
    else:
        frame = predictions_frame(ids, names, result)
    write_frame_csv(out, frame)
    counts = np.bincount(result.labels, minlength=len(names))
    return Prediction(
        threshold=None if chosen is None or not use_threshold else chosen,
        out=out,
        n_images=len(ids),
        n_models=len(models),
        class_counts={n: int(c) for n, c in zip(names, counts, strict=True)},
        skipped=tuple(str(p) for p in failed),
    )
