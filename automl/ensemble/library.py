"""The trials an ensemble is chosen from: completed trials with fold models on disk.

Each candidate is an :class:`~automl.ensemble.manifest.EnsembleMember` (its fold models and its
``oof.npz``, found on this machine);
:func:`load_oof` reads the out-of-fold probabilities that greedy selection, the out-of-fold
scores and the decision threshold need, leaving out files that do not match the study's data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna

from automl.ensemble.manifest import EnsembleMember
from automl.errors import StudyError
from automl.search.attrs import COLLAPSED, FOLD_SCORES, TRIAL_DIR
from automl.search.paths import FOLD_MODEL_GLOB, OOF_FILE, fold_model_name, fold_of_model
from automl.search.storage import top_trials

logger = logging.getLogger(__name__)


def trial_library(
    study: optuna.Study, folder_of: Callable[[int], Path] | None = None, limit: int | None = None
) -> list[EnsembleMember]:
    """Completed trials whose fold models are on disk, best CV value first (ties: lower number).

    A trial whose out-of-fold predictions collapsed onto one or two classes (its ``collapsed``
    attribute) is left out with a warning: it is neither a member nor the best single trial.

    ``folder_of(number)`` finds a trial's folder on this machine (``study.artifacts_dir``); a
    worker on another machine recorded its own path in ``trial_dir``, the fallback. ``limit``
    stops after that many trials. A trial without fold models is left out with a warning, and
    so is a trial that lacks some of its fold models (the warning names the missing files):
    its CV value describes all its folds, and an ensemble of fewer would pass unnoticed.

    Raises:
        StudyError: no completed trial has fold models.
    """
    members: list[EnsembleMember] = []
    collapsed: list[int] = []
    incomplete: list[int] = []
    for trial in top_trials(study, len(study.trials)):
        if limit is not None and len(members) >= limit:
            break
        if trial.user_attrs.get(COLLAPSED):
            # Its votes would go to one or two classes whatever the image (metrics.py).
            logger.warning("trial %d left out: it %s", trial.number, trial.user_attrs[COLLAPSED])
            collapsed.append(trial.number)
            continue
        if folder_of is not None:
            folder = folder_of(trial.number)
        else:
            folder = Path(trial.user_attrs.get(TRIAL_DIR, ""))
        models, missing = _fold_models(folder, len(trial.user_attrs.get(FOLD_SCORES) or ()))
        if missing:
            # Its CV value is the mean over every fold: fewer models are another ensemble.
            logger.warning(
                "trial %d left out: %s lacks %s (a partial copy of the trial folder?); restore "
                "them to make it a candidate",
                trial.number,
                folder,
                ", ".join(fold_model_name(k) for k in missing),
            )
            incomplete.append(trial.number)
            continue
        if not models:
            logger.warning("trial %d has no fold models in %s; left out", trial.number, folder)
            continue
        members.append(
            EnsembleMember(
                trial.number, float(trial.values[0]), tuple(models), oof_path=folder / OOF_FILE
            )
        )
    if not members and collapsed:
        raise StudyError(
            f"study '{study.study_name}': every completed trial with fold models predicts only "
            f"one or two classes out-of-fold (trials {', '.join(map(str, collapsed))}; see "
            "`automl show`); use study.metric: balanced_accuracy or macro_f1, class_weight: "
            "balanced, and run more trials."
        )
    if not members and incomplete:
        raise StudyError(
            f"study '{study.study_name}': every completed trial with fold models lacks some of "
            f"them (trials {', '.join(map(str, incomplete))}; the warnings above name the "
            "files); restore the trial folders or run `automl tune` for more trials."
        )
    if not members:
        raise StudyError(
            f"study '{study.study_name}' has no completed trial with saved fold models; run "
            "`automl tune` until at least one trial completes."
        )
    return members


def _fold_models(folder: Path, n_folds: int) -> tuple[list[Path], list[int]]:
    """A trial's fold models in fold order, and the folds whose model is missing.

    Only ``fold_<k>.keras`` (``search.paths.fold_model_name``) counts: any other file, such as
    a stray ``fold_best.keras`` or an older version's ``fold_<k>.tmp.keras``, is not a fold
    model. ``n_folds`` is how many folds the trial scored (its ``fold_scores``); 0 (unknown, an
    older study) expects folds ``0..k`` for the highest ``k`` found.
    """
    found: dict[int, Path] = {}
    for path in folder.glob(FOLD_MODEL_GLOB):
        fold = fold_of_model(path.name)
        if fold is not None and path.is_file():
            found[fold] = path
        else:
            logger.info("%s: not a fold model (fold_<k>.keras); ignored", path)
    expected = n_folds or (max(found) + 1 if found else 0)
    if not found:
        return [], []
    missing = [k for k in range(expected) if k not in found]
    return [found[k] for k in sorted(found) if k < expected], missing


def select_members(
    study: optuna.Study, top_k: int, folder_of: Callable[[int], Path] | None = None
) -> list[EnsembleMember]:
    """The best ``top_k`` completed trials whose fold models are on disk (weight 1 each).

    See :func:`trial_library` for ``folder_of`` and the error raised.
    """
    return trial_library(study, folder_of, limit=top_k)


def load_oof(
    library: list[EnsembleMember], ids: np.ndarray, n_classes: int
) -> dict[int, np.ndarray]:
    """Out-of-fold probabilities per trial, for trials whose ``oof.npz`` matches the data."""
    expected_ids = np.asarray(ids).astype(str)
    loaded: dict[int, np.ndarray] = {}
    for member in library:
        path = member.oof_path
        if path is None or not path.is_file():
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
