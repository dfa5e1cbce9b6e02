"""``automl export``: the ensemble as one Keras model a user can deploy without automl.

The model (built by ``automl.nn.export``) takes raw RGB pixels of any size, resizes them as the
training images were resized, runs every fold model of the ensemble once and averages their
class probabilities with the members' weights (greedy selection's multiplicities), which is the
soft vote ``automl predict`` reports. An ensemble with a decision threshold
(``ensemble.target_recall``) exports it too: the model then has a second output, ``label``, the
class index ``automl predict`` writes. It holds only built-in Keras layers and ops, so plain
``keras.saving.load_model(path, safe_mode=True)`` loads it. A majority vote needs the per-model
votes and stays in ``automl predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from automl.config.schema import Config
from automl.ensemble.build import load_manifest
from automl.ensemble.thresholds import Cutoff
from automl.errors import StudyError


@dataclass(frozen=True)
class ExportResult:
    """The written model and what it costs.

    Attributes:
        threshold: the decision threshold inside the model (its ``label`` output); None when
            the model outputs probabilities alone.
    """

    path: Path
    n_models: int
    size_bytes: int
    latency_ms_per_image: float
    n_params: int
    threshold: Cutoff | None = None


def export_ensemble(config: Config, out: Path, *, latency_runs: int = 20) -> ExportResult:
    """Write the study's ensemble to ``out`` (``.keras``), reload it in safe mode and time it.

    Raises:
        StudyError: ``out`` does not end in ``.keras``, there is no ensemble yet, or one of its
            fold models is missing.
    """
    from automl.nn.export import Decision, FoldModel, save_averaging_model

    if out.suffix != ".keras":
        raise StudyError(f"--out {out}: the file name must end in .keras (Keras' format).")
    ensemble = load_manifest(config)
    paths = ensemble.model_paths()  # found on this machine; raises if one is missing
    names = [f"trial{m.trial}_fold{k}" for m in ensemble.members for k in range(len(m.models))]
    weights = ensemble.model_weights()
    fold_models = [FoldModel(*model) for model in zip(names, paths, weights, strict=True)]
    cutoff = ensemble.threshold.cutoff if ensemble.threshold else None
    decision = (
        Decision(ensemble.class_names.index(cutoff.positive_class), cutoff.threshold)
        if cutoff
        else None
    )
    saved = save_averaging_model(
        fold_models,
        ensemble.image_size,
        out,
        name=f"automl_{config.study.name}_ensemble",
        decision=decision,
        latency_runs=latency_runs,
    )
    return ExportResult(
        path=saved.path,
        n_models=len(fold_models),
        size_bytes=saved.size_bytes,
        latency_ms_per_image=saved.latency_ms_per_image,
        n_params=saved.n_params,
        threshold=cutoff,
    )
