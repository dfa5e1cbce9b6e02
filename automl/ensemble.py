"""``automl ensemble``: the top trials' fold models vote; scored on the hold-out tuning never saw.

Members are the ``top_k`` completed trials by CV value (ties: lower trial number). Every fold
model of every member votes (``top_k x n_folds`` models); the rule is ``ensemble.vote``:
``majority`` (ties broken by the higher mean probability, see ``voting.py``) or ``soft``.

Two scores are written side by side: the ensemble, and the best single trial (its own fold
models voting by the same rule), both on the hold-out, plus the ensemble's out-of-fold score
(each member's out-of-fold probabilities voting), which needs no hold-out. Everything goes to
``<study>/ensemble/``: ``ensemble.json`` (members, model paths, scores; what ``predict`` reads),
the hold-out confusion matrix as CSV and PNG, and the hold-out predictions CSV.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from automl.artifacts import save_ensemble_note
from automl.config import Config
from automl.errors import StudyError
from automl.export import (
    predictions_frame,
    write_confusion_matrix,
    write_frame_csv,
    write_json,
)
from automl.metrics import METRICS, classification_report
from automl.study import paths_for, top_trials, trial_folder
from automl.thresholds import Threshold, choose_threshold, rates_at
from automl.voting import Vote, vote

logger = logging.getLogger(__name__)

MANIFEST = "ensemble.json"
_SUMMARY_METRICS = METRICS


@dataclass(frozen=True)
class Member:
    """One trial of the ensemble and its fold models."""

    trial: int
    value: float
    models: tuple[str, ...]
    oof_path: str


def select_members(
    study: optuna.Study, top_k: int, folder_of: Callable[[int], Path] | None = None
) -> list[Member]:
    """The best ``top_k`` completed trials whose fold models are on disk.

    ``folder_of(number)`` finds a trial's folder on this machine (``study.artifacts_dir``); a
    worker on another machine recorded its own path in ``trial_dir``, the fallback.
    """
    members = []
    for trial in top_trials(study, top_k):
        if folder_of is not None:
            folder = folder_of(trial.number)
        else:
            folder = Path(trial.user_attrs.get("trial_dir", ""))
        models = sorted(folder.glob("fold_*.keras"), key=lambda p: int(p.stem.split("_")[1]))
        models = [m for m in models if not m.name.endswith(".tmp.keras")]
        if not models:
            logger.warning("trial %d has no fold models in %s; left out", trial.number, folder)
            continue
        members.append(
            Member(
                trial.number,
                float(trial.values[0]),
                tuple(map(str, models)),
                str(folder / "oof.npz"),
            )
        )
    if not members:
        raise StudyError(
            f"study '{study.study_name}' has no completed trial with saved fold models; run "
            "`automl tune` until at least one trial completes."
        )
    return members


def run_ensemble(
    config: Config,
    study: optuna.Study,
    *,
    top_k: int | None = None,
    vote_method: str | None = None,
    tta: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Build, score and save the ensemble; return the manifest written to ``ensemble.json``."""
    from automl.inference import predict_probabilities
    from automl.tune import prepare_splits

    top_k = top_k or config.ensemble.top_k
    method = vote_method or config.ensemble.vote
    members = select_members(study, top_k, lambda number: trial_folder(config, number))
    splits = prepare_splits(config, progress=progress)
    names = splits.tuning.class_names
    out_dir = paths_for(config).ensemble
    manifest: dict[str, Any] = {
        "study": config.study.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metric": config.study.metric,
        "vote": method,
        "top_k": top_k,
        "class_names": list(names),
        "image_size": config.data.image_size,
        "members": [
            {"trial": m.trial, "cv_value": m.value, "models": list(m.models)} for m in members
        ],
        "n_models": sum(len(m.models) for m in members),
        "out_of_fold": None,
        "holdout": None,
        "threshold": None,
    }
    oof_vote = _oof_vote(members, method)
    if oof_vote is not None:
        report = classification_report(
            splits.tuning.labels, oof_vote.labels, oof_vote.probabilities, names
        )
        manifest["out_of_fold"] = {k: report[k] for k in _SUMMARY_METRICS}
    threshold = None
    if config.ensemble.target_recall is not None and oof_vote is not None and len(names) == 2:
        threshold = _threshold(config, names, splits.tuning.labels, oof_vote.probabilities)
        manifest["threshold"] = threshold.to_dict()
    holdout = splits.holdout
    if holdout is None or len(holdout) == 0:
        logger.warning(
            "no hold-out set (holdout_fraction: 0 and no data.test): scored out-of-fold only"
        )
    else:
        all_models = [path for m in members for path in m.models]
        probabilities = predict_probabilities(all_models, holdout.images, progress=progress)
        ensemble_vote = vote(probabilities, method)
        single_vote = vote(probabilities[: len(members[0].models)], method)
        ensemble_report = classification_report(
            holdout.labels, ensemble_vote.labels, ensemble_vote.probabilities, names
        )
        single_report = classification_report(
            holdout.labels, single_vote.labels, single_vote.probabilities, names
        )
        manifest["holdout"] = {
            "n_images": len(holdout),
            "ensemble": ensemble_report,
            "best_single_trial": {"trial": members[0].trial, **single_report},
        }
        if tta:
            # Test-time augmentation (flips), scored next to the plain prediction.
            flipped = vote(
                predict_probabilities(all_models, holdout.images, tta=True, progress=progress),
                method,
            )
            tta_report = classification_report(
                holdout.labels, flipped.labels, flipped.probabilities, names
            )
            manifest["holdout"]["ensemble_tta"] = {k: tta_report[k] for k in _SUMMARY_METRICS}
        if threshold is not None:
            index = names.index(threshold.positive_class)
            recall, precision = rates_at(
                holdout.labels, ensemble_vote.probabilities[:, index], index, threshold.threshold
            )
            manifest["holdout"]["at_threshold"] = {"recall": recall, "precision": precision}
        out_dir.mkdir(parents=True, exist_ok=True)
        write_confusion_matrix(
            out_dir / "confusion_matrix.csv",
            out_dir / "confusion_matrix.png",
            np.asarray(ensemble_report["confusion_matrix"]),
            names,
            title=f"{config.study.name}: ensemble of {len(all_models)} models on the hold-out",
        )
        frame = predictions_frame(holdout.ids, names, ensemble_vote)
        frame.insert(2, "true_label", np.asarray(names, dtype=object)[holdout.labels])
        write_frame_csv(out_dir / "holdout_predictions.csv", frame)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / MANIFEST, manifest)
    study.set_user_attr("ensemble", _short(manifest))
    save_ensemble_note(study, manifest)  # the study's note in optuna-dashboard
    return manifest


def _oof_vote(members: list[Member], method: str) -> Vote | None:
    """Members' out-of-fold probabilities voting: an ensemble score that needs no hold-out."""
    stacked = []
    for member in members:
        path = Path(member.oof_path)
        if not path.is_file():
            return None
        with np.load(path) as archive:
            stacked.append(archive["probabilities"].astype(np.float64))
    return vote(np.stack(stacked), method)


def _threshold(
    config: Config, names: tuple[str, ...], labels: np.ndarray, probabilities: np.ndarray
) -> Threshold:
    positive = config.ensemble.positive_class or names[1]
    if positive not in names:
        raise StudyError(
            f"{config.source}: ensemble.positive_class must be one of {list(names)}, "
            f"got {positive!r}."
        )
    index = names.index(positive)
    return choose_threshold(
        labels,
        probabilities[:, index],
        positive_index=index,
        positive_class=positive,
        target_recall=float(config.ensemble.target_recall or 1.0),
    )


def _short(manifest: dict[str, Any]) -> dict[str, Any]:
    holdout = manifest["holdout"] or {}
    return {
        "members": [m["trial"] for m in manifest["members"]],
        "vote": manifest["vote"],
        "holdout_accuracy": (holdout.get("ensemble") or {}).get("accuracy"),
        "best_single_holdout_accuracy": (holdout.get("best_single_trial") or {}).get("accuracy"),
    }


def load_manifest(config: Config) -> dict[str, Any]:
    """The saved ensemble of a study, or a StudyError telling how to build it."""
    import json

    path = paths_for(config).ensemble / MANIFEST
    if not path.is_file():
        raise StudyError(
            f"study '{config.study.name}' has no ensemble yet ({path} is missing); run "
            f"`automl ensemble --study {config.study.name}` first."
        )
    return json.loads(path.read_text(encoding="utf-8"))
