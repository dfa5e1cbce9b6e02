"""``automl ensemble``: choose trials out-of-fold, let their fold models vote on the hold-out.

Members come from ``ensemble.selection`` (see ``selection.py``): ``greedy`` (the default) is
greedy forward selection with replacement over every completed trial with out-of-fold
probabilities (``oof.npz``) and fold models on disk, which gives each member a weight (how many
times it was chosen); ``top_k`` takes the ``top_k`` completed trials by CV value (ties: lower
trial number), weight 1 each. Every fold model of every member votes with its trial's weight;
the rule is ``ensemble.vote``: ``majority`` (ties broken by the higher mean probability, see
``voting.py``) or ``soft``.

Scores are written side by side: the ensemble and the best single trial (the best CV value
among trials with fold models; its own fold models voting by the same rule), out-of-fold (each
member's out-of-fold probabilities voting with its weight, no hold-out needed; this is what the
selection optimised, so it is optimistic) and on the hold-out (the honest estimate). Everything
goes to ``<study>/ensemble/``: ``ensemble.json`` (members with weights and model paths, the
selection curve, scores; what ``predict`` and ``export`` read), the hold-out confusion matrix as
CSV and PNG, and the hold-out predictions CSV. Manifests written before weights existed have no
``weight``; readers take 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from automl.config.schema import SELECTION_METHODS, Config, check_target_recall
from automl.ensemble.note import save_ensemble_note
from automl.ensemble.outputs import predictions_frame
from automl.ensemble.selection import (
    Selection,
    greedy_selection,
    top_k_selection,
)
from automl.ensemble.thresholds import Threshold, choose_threshold, rates_at
from automl.ensemble.voting import Vote, vote
from automl.errors import ConfigError, StudyError
from automl.files import write_frame_csv, write_json
from automl.metrics import METRICS, classification_report, score_predictions
from automl.plots import write_confusion_matrix
from automl.search.paths import paths_for, trial_folder
from automl.search.storage import top_trials

logger = logging.getLogger(__name__)

MANIFEST = "ensemble.json"
_SUMMARY_METRICS = METRICS


@dataclass(frozen=True)
class Member:
    """One trial of the ensemble and its fold models.

    Attributes:
        trial: the trial number.
        value: its study value (CV score).
        models: paths of its ``fold_<k>.keras`` models, in fold order.
        oof_path: its ``oof.npz`` (out-of-fold probabilities); may not exist.
        weight: how many votes each of its fold models casts (greedy selection's multiplicity).
    """

    trial: int
    value: float
    models: tuple[str, ...]
    oof_path: str
    weight: int = 1


def trial_library(
    study: optuna.Study, folder_of: Callable[[int], Path] | None = None, limit: int | None = None
) -> list[Member]:
    """Completed trials whose fold models are on disk, best CV value first (ties: lower number).

    ``folder_of(number)`` finds a trial's folder on this machine (``study.artifacts_dir``); a
    worker on another machine recorded its own path in ``trial_dir``, the fallback. ``limit``
    stops after that many trials. A trial without fold models is left out with a warning.

    Raises:
        StudyError: no completed trial has fold models.
    """
    members: list[Member] = []
    for trial in top_trials(study, len(study.trials)):
        if limit is not None and len(members) >= limit:
            break
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


def select_members(
    study: optuna.Study, top_k: int, folder_of: Callable[[int], Path] | None = None
) -> list[Member]:
    """The best ``top_k`` completed trials whose fold models are on disk (weight 1 each).

    See :func:`trial_library` for ``folder_of`` and the error raised.
    """
    return trial_library(study, folder_of, limit=top_k)


def run_ensemble(
    config: Config,
    study: optuna.Study,
    *,
    top_k: int | None = None,
    vote_method: str | None = None,
    selection: str | None = None,
    tta: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Select, score and save the ensemble; return the manifest written to ``ensemble.json``.

    Args:
        config: the study's configuration.
        study: the Optuna study.
        top_k: members for ``selection="top_k"`` (default ``ensemble.top_k``); greedy ignores
            it.
        vote_method: ``"majority"`` or ``"soft"`` (default ``ensemble.vote``).
        selection: ``"greedy"`` or ``"top_k"`` (default ``ensemble.selection``).
        tta: also score test-time augmentation (flips) on the hold-out.
        progress: show progress bars.

    Raises:
        ConfigError: ``selection`` is not a known method.
        StudyError: no completed trial has fold models, or (greedy) none has ``oof.npz``.
    """
    from automl.nn.inference import predict_probabilities
    from automl.search.tune import prepare_splits

    method = vote_method or config.ensemble.vote
    chosen_by = selection or config.ensemble.selection
    if chosen_by not in SELECTION_METHODS:
        raise ConfigError(
            f"selection must be one of {', '.join(SELECTION_METHODS)}, got {chosen_by!r}."
        )
    top_k = (top_k or config.ensemble.top_k) if chosen_by == "top_k" else None
    library = trial_library(study, lambda number: trial_folder(config, number))
    splits = prepare_splits(config, progress=progress)
    names = splits.tuning.class_names
    labels = splits.tuning.labels
    check_target_recall(config, len(names))
    oof = _load_oof(library, splits.tuning.ids, len(names))
    picked: Selection | None
    if top_k is None:
        picked = _greedy(config, library, oof, labels, method)
        by_trial = {m.trial: m for m in library}
        members = [replace(by_trial[t], weight=w) for t, w in picked.weights]
    else:
        picked = _top_k(config, library, oof, labels, method, top_k)
        members = library[:top_k]
        if len(members) < top_k:
            logger.warning(
                "top_k=%d but only %d completed trials have fold models: the ensemble has %d",
                top_k,
                len(members),
                len(members),
            )
    best = library[0]  # the best single trial: the study's best CV value with fold models
    out_dir = paths_for(config).ensemble
    metric = config.study.metric
    manifest: dict[str, Any] = {
        "study": config.study.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metric": metric,
        "selection": chosen_by,
        "vote": method,
        "top_k": top_k,
        "class_names": list(names),
        "image_size": config.data.image_size,
        "library_size": picked.library_size if picked is not None else len(library),
        "members": [
            {
                "trial": m.trial,
                "cv_value": m.value,
                "weight": m.weight,
                "oof_score": _single_score(metric, labels, oof.get(m.trial), method),
                "models": list(m.models),
            }
            for m in members
        ],
        "n_models": sum(len(m.models) for m in members),
        "n_votes": sum(m.weight * len(m.models) for m in members),
        "selection_curve": [step.to_dict() for step in picked.curve] if picked else [],
        "out_of_fold": None,
        "out_of_fold_best_single_trial": None,
        "holdout": None,
        "threshold": None,
        # Said in the summary too: fewer members than top_k asked for.
        "shortfall": (
            f"top_k={top_k} asked for, {len(members)} completed trials have fold models"
            if top_k is not None and len(members) < top_k
            else None
        ),
    }
    oof_vote = _oof_vote(members, oof, method)
    if oof_vote is not None:
        report = classification_report(labels, oof_vote.labels, oof_vote.probabilities, names)
        manifest["out_of_fold"] = {k: report[k] for k in _SUMMARY_METRICS}
    if best.trial in oof:
        alone = vote(oof[best.trial][np.newaxis], method)
        report = classification_report(labels, alone.labels, alone.probabilities, names)
        manifest["out_of_fold_best_single_trial"] = {
            "trial": best.trial,
            **{k: report[k] for k in _SUMMARY_METRICS},
        }
    threshold = None
    if config.ensemble.target_recall is not None:
        if oof_vote is None:  # the threshold is chosen out-of-fold: no silent skipping
            lacking = [m.trial for m in members if m.trial not in oof]
            raise StudyError(
                f"{config.source}: ensemble.target_recall needs every member's out-of-fold "
                f"predictions, but trials {lacking} have no oof.npz in their folders; remove "
                "those trials' folders or run `automl tune` for more trials."
            )
        threshold = _threshold(config, names, labels, oof_vote.probabilities)
        manifest["threshold"] = threshold.to_dict()
    holdout = splits.holdout
    if holdout is None or len(holdout) == 0:
        logger.warning(
            "no hold-out set (holdout_fraction: 0 and no data.test): scored out-of-fold only"
        )
    else:
        member_models = [path for m in members for path in m.models]
        model_weights = [m.weight for m in members for _ in m.models]
        # The best single trial need not be a member under greedy: predict its models too.
        extra = [] if any(m.trial == best.trial for m in members) else list(best.models)
        probabilities = predict_probabilities(
            member_models + extra, holdout.images, progress=progress
        )
        ensemble_vote = vote(probabilities[: len(member_models)], method, model_weights)
        if extra:
            single = probabilities[len(member_models) :]
        else:
            start = _offset(members, best.trial)
            single = probabilities[start : start + len(best.models)]
        single_vote = vote(single, method)
        ensemble_report = classification_report(
            holdout.labels, ensemble_vote.labels, ensemble_vote.probabilities, names
        )
        single_report = classification_report(
            holdout.labels, single_vote.labels, single_vote.probabilities, names
        )
        manifest["holdout"] = {
            "n_images": len(holdout),
            "ensemble": ensemble_report,
            "best_single_trial": {"trial": best.trial, **single_report},
        }
        if tta:
            # Test-time augmentation (flips), scored next to the plain prediction.
            flipped = vote(
                predict_probabilities(member_models, holdout.images, tta=True, progress=progress),
                method,
                model_weights,
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
            title=f"{config.study.name}: ensemble of {len(member_models)} models on the hold-out",
        )
        frame = predictions_frame(holdout.ids, names, ensemble_vote)
        frame.insert(2, "true_label", np.asarray(names, dtype=object)[holdout.labels])
        write_frame_csv(out_dir / "holdout_predictions.csv", frame)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / MANIFEST, manifest)
    study.set_user_attr("ensemble", _short(manifest))
    save_ensemble_note(study, manifest)  # the study's note in optuna-dashboard
    return manifest


def member_weights(manifest: dict[str, Any]) -> list[int]:
    """One weight per fold model listed in ``manifest`` (its trial's; 1 in old manifests)."""
    return [int(m.get("weight", 1)) for m in manifest["members"] for _ in m["models"]]


def _greedy(
    config: Config,
    library: list[Member],
    oof: dict[int, np.ndarray],
    labels: np.ndarray,
    method: str,
) -> Selection:
    """Greedy selection over the trials with out-of-fold probabilities."""
    candidates = [m for m in library if m.trial in oof]
    if not candidates:
        raise StudyError(
            f"study '{config.study.name}': no completed trial has usable out-of-fold "
            "predictions (oof.npz), which greedy selection needs; use "
            "`automl ensemble --selection top_k` or re-run `automl tune`."
        )
    missing = [m.trial for m in library if m.trial not in oof]
    if missing:
        logger.warning(
            "trials %s have no usable oof.npz: not candidates for greedy selection",
            ", ".join(map(str, missing)),
        )
    return greedy_selection(
        np.stack([oof[m.trial] for m in candidates]),
        labels,
        [m.trial for m in candidates],
        [m.value for m in candidates],
        metric=config.study.metric,
        vote_method=method,
        direction=config.study.direction,
    )


def _top_k(
    config: Config,
    library: list[Member],
    oof: dict[int, np.ndarray],
    labels: np.ndarray,
    method: str,
    top_k: int,
) -> Selection | None:
    """The top-k curve out-of-fold, or None when a member has no out-of-fold probabilities."""
    if not all(m.trial in oof for m in library[:top_k]):
        return None  # scored on the hold-out only, as before out-of-fold files existed
    # The members lead the ranking of the trials with oof.npz too, so top_k_selection picks
    # the same ones, and its best single trial looks at every trial with oof.npz.
    candidates = [m for m in library if m.trial in oof]
    return top_k_selection(
        np.stack([oof[m.trial] for m in candidates]),
        labels,
        [m.trial for m in candidates],
        [m.value for m in candidates],
        top_k,
        metric=config.study.metric,
        vote_method=method,
        direction=config.study.direction,
    )


def _load_oof(library: list[Member], ids: np.ndarray, n_classes: int) -> dict[int, np.ndarray]:
    """Out-of-fold probabilities per trial, for trials whose ``oof.npz`` matches the data."""
    expected_ids = np.asarray(ids).astype(str)
    loaded: dict[int, np.ndarray] = {}
    for member in library:
        path = Path(member.oof_path)
        if not path.is_file():
            continue
        try:
            with np.load(path) as archive:
                probabilities = archive["probabilities"]
                saved_ids = archive["ids"] if "ids" in archive.files else None
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("trial %d: cannot read %s (%s); left out", member.trial, path, exc)
            continue
        if probabilities.shape != (len(expected_ids), n_classes) or (
            saved_ids is not None and not np.array_equal(saved_ids.astype(str), expected_ids)
        ):
            # Rows must be the same images in the same order as the labels they are scored on.
            logger.warning(
                "trial %d: %s does not match the study's tuning images; left out",
                member.trial,
                path,
            )
            continue
        if not np.isfinite(probabilities).all():
            logger.warning(
                "trial %d: %s holds NaN (unfinished fold); left out", member.trial, path
            )
            continue
        loaded[member.trial] = probabilities
    return loaded


def _single_score(
    metric: str, labels: np.ndarray, probabilities: np.ndarray | None, method: str
) -> float | None:
    if probabilities is None:
        return None
    alone = vote(probabilities[np.newaxis], method)
    score = score_predictions(metric, labels, alone.labels, alone.probabilities)
    return None if np.isnan(score) else score


def _offset(members: list[Member], trial: int) -> int:
    """Index of ``trial``'s first fold model in the members' concatenated model list."""
    start = 0
    for member in members:
        if member.trial == trial:
            return start
        start += len(member.models)
    raise ValueError(f"trial {trial} is not a member")


def _oof_vote(members: list[Member], oof: dict[int, np.ndarray], method: str) -> Vote | None:
    """Members' out-of-fold probabilities voting with their weights; None if one is missing."""
    if not all(m.trial in oof for m in members):
        return None
    stacked = np.stack([oof[m.trial].astype(np.float64) for m in members])
    return vote(stacked, method, [m.weight for m in members])


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
        "weights": [m.get("weight", 1) for m in manifest["members"]],
        "selection": manifest.get("selection", "top_k"),
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
