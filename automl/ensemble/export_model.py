"""``automl export``: the ensemble as one Keras model a user can deploy without automl.

The model (built by ``automl.nn.export``) takes raw RGB pixels of any size, runs every fold
model of the ensemble once and averages their class probabilities with the members' weights
(greedy selection's multiplicities), which is the soft vote ``automl predict`` reports. It holds
only built-in Keras layers, so plain ``keras.saving.load_model(path, safe_mode=True)`` loads it.
A majority vote needs the per-model votes and stays in ``automl predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from automl.config.schema import Config
from automl.ensemble.build import load_manifest
from automl.errors import StudyError


@dataclass(frozen=True)
class ExportResult:
    """The written model and what it costs."""

    path: Path
    n_models: int
    size_bytes: int
    latency_ms_per_image: float
    n_params: int


def export_ensemble(config: Config, out: Path, *, latency_runs: int = 20) -> ExportResult:
    """Write the study's ensemble to ``out`` (``.keras``), reload it in safe mode and time it.

    Raises:
        StudyError: ``out`` does not end in ``.keras``, there is no ensemble yet, or one of its
            fold models is missing.
    """
    from automl.nn.export import FoldModel, save_averaging_model

    if out.suffix != ".keras":
        raise StudyError(f"--out {out}: the file name must end in .keras (Keras' format).")
    ensemble = load_manifest(config)
    paths = ensemble.model_paths()  # found on this machine; raises if one is missing
    names = [f"trial{m.trial}_fold{k}" for m in ensemble.members for k in range(len(m.models))]
    weights = ensemble.model_weights()
    fold_models = [FoldModel(*model) for model in zip(names, paths, weights, strict=True)]
    saved = save_averaging_model(
        fold_models,
        ensemble.image_size,
        out,
        name=f"automl_{config.study.name}_ensemble",
        latency_runs=latency_runs,
    )
    return ExportResult(
        path=saved.path,
        n_models=len(fold_models),
        size_bytes=saved.size_bytes,
        latency_ms_per_image=saved.latency_ms_per_image,
        n_params=saved.n_params,
    )
