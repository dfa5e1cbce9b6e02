"""``automl ensemble``: choose trials out-of-fold, let their fold models vote on the hold-out.

Members come from ``ensemble.selection`` (see ``selection.py``): ``greedy`` (the default) is
greedy forward selection with replacement over every completed trial with out-of-fold
probabilities (``oof.npz``) and fold models on disk (``library.py``), which gives each member a
weight (how many times it was chosen); ``top_k`` takes the ``top_k`` completed trials by CV
value (ties: lower trial number), weight 1 each. Every fold model of every member votes with
its trial's weight; the rule is ``ensemble.vote``: ``majority`` (ties broken by the higher mean
probability, see ``voting.py``) or ``soft``.

Scores are written side by side: the ensemble and the best single trial (the best CV value
among trials with fold models; its own fold models voting by the same rule), out-of-fold (each
member's out-of-fold probabilities voting with its weight, no hold-out needed; this is what the
selection optimised, so it is optimistic) and on the hold-out (the honest estimate). The result
is an :class:`~automl.ensemble.manifest.EnsembleResult`; everything goes to
``<study>/ensemble/``: ``ensemble.json`` (the result: members with weights and model paths, the
selection curve, scores; what ``predict`` and ``export`` read, see ``manifest.py``), the
hold-out confusion matrix as CSV and PNG, and the hold-out predictions CSV. The files are one
set: written into a staging folder and swapped in whole, one ``ensemble`` per study at a time
(``folder.py``); the study's attribute and dashboard note follow once the set is in place.
The data must be what the study was tuned on (``splits.json``): the hold-out is drawn again
from it, and changed data could put images the fold models trained on into it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from automl.config.methods import SelectionMethod, VoteMethod
from automl.config.schema import Config, check_target_recall
from automl.data.readers import ImageSet
from automl.ensemble.folder import ensemble_lock, recover, staged_folder
from automl.ensemble.library import load_oof, trial_library
from automl.ensemble.manifest import (
    EnsembleMember,
    EnsembleResult,
    HoldoutScores,
    Rates,
    Scores,
    TrialScores,
)
from automl.ensemble.note import save_ensemble_note
from automl.ensemble.outputs import predictions_frame
from automl.ensemble.selection import Selection, greedy_selection, top_k_selection
from automl.ensemble.thresholds import Threshold, choose_threshold, positive_class, rates_at
from automl.ensemble.voting import Vote, vote
from automl.errors import ConfigError, StudyError
from automl.files import write_frame_csv
from automl.metrics import classification_report, score_predictions
from automl.plots import write_confusion_matrix
from automl.search.attrs import ENSEMBLE_ATTR
from automl.search.paths import (
    HOLDOUT_CONFUSION_CSV,
    HOLDOUT_CONFUSION_PNG,
    HOLDOUT_PREDICTIONS,
    MANIFEST,
    artifacts_root,
    paths_for,
    trial_folder,
)

logger = logging.getLogger(__name__)

__all__ = [
    "EnsembleMember",
    "load_manifest",
    "run_ensemble",
    "trial_library",
]


@dataclass(frozen=True)
class _Oof:
    """The study's tuning labels and every candidate's out-of-fold probabilities."""

    labels: np.ndarray
    names: tuple[str, ...]
    by_trial: dict[int, np.ndarray]


def run_ensemble(
    config: Config,
    study: optuna.Study,
    *,
    top_k: int | None = None,
    vote_method: VoteMethod | str | None = None,
    selection: SelectionMethod | str | None = None,
    tta: bool = False,
    progress: bool = False,
) -> EnsembleResult:
    """Select, score and save the ensemble; return what is written to ``ensemble.json``.

    Args:
        config: the study's configuration.
        study: the Optuna study.
        top_k: members for ``selection="top_k"`` (default ``ensemble.top_k``); given without
            ``selection``, it means ``top_k`` selection; with ``selection="greedy"`` it is an
            error (greedy sizes its own ensemble).
        vote_method: ``"majority"`` or ``"soft"`` (default ``ensemble.vote``).
        selection: ``"greedy"`` or ``"top_k"`` (default ``ensemble.selection``).
        tta: also score test-time augmentation (flips) on the hold-out.
        progress: show progress bars.

    Raises:
        ConfigError: ``selection`` or ``vote_method`` is not a known method, or ``top_k`` is
            given with ``selection="greedy"``.
        StudyError: no completed trial has fold models, or (greedy) none has ``oof.npz``.
        StudyError: the data changed since tuning (``splits.json`` differs), or another
            ``automl ensemble`` of this study is running.
    """
    method = VoteMethod.parse(vote_method or config.ensemble.vote, "vote_method (--vote)")
    chosen_by = choose_selection(config, selection, top_k)
    if chosen_by is SelectionMethod.TOP_K:
        top_k = top_k or config.ensemble.top_k
    paths = paths_for(config)
    with ensemble_lock(paths.root, config.study.name):
        recover(paths.ensemble)
        return _run_ensemble(config, study, top_k, method, chosen_by, tta, progress)


def choose_selection(
    config: Config, selection: SelectionMethod | str | None, top_k: int | None
) -> SelectionMethod:
    """The one rule between ``selection`` and ``top_k`` (the CLI's ``--selection``, ``--top``).

    No ``selection``: ``top_k`` given means ``top_k`` selection (what ``--top K`` meant before
    greedy selection existed), else the file's ``ensemble.selection``. Greedy sizes its own
    ensemble, so ``top_k`` with ``selection="greedy"`` is refused rather than ignored.

    Raises:
        ConfigError: an unknown ``selection``, or ``top_k`` with greedy selection.
    """
    if selection is None:
        return SelectionMethod.TOP_K if top_k is not None else config.ensemble.selection
    chosen = SelectionMethod.parse(selection, "selection (--selection)")
    if chosen is SelectionMethod.GREEDY and top_k is not None:
        raise ConfigError(
            "top_k (--top) sets the size of a top_k ensemble; greedy selection sizes its own. "
            "Drop top_k or use selection top_k (--selection top_k)."
        )
    return chosen


def _run_ensemble(
    config: Config,
    study: optuna.Study,
    top_k: int | None,
    method: VoteMethod,
    chosen_by: SelectionMethod,
    tta: bool,
    progress: bool,
) -> EnsembleResult:
    """:func:`run_ensemble` under the study's ensemble lock."""
    from automl.search.session import prepare_splits

    paths = paths_for(config)
    library = trial_library(study, lambda number: trial_folder(config, number))
    splits = prepare_splits(config, progress=progress)
    if paths.splits.is_file():
        # The hold-out is drawn again from the data: changed data may put images the fold
        # models trained on into it. The same check as `tune` on resume.
        splits.check_matches(paths.splits)
    names = tuple(splits.tuning.class_names)
    check_target_recall(config, len(names))
    oof = _Oof(splits.tuning.labels, names, load_oof(library, splits.tuning.ids, len(names)))
    picked, members = _choose(config, library, oof, method, chosen_by, top_k)
    best = library[0]  # the best single trial: the study's best CV value with fold models
    result = _out_of_fold(
        EnsembleResult(
            study=config.study.name,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            metric=config.study.metric,
            selection=chosen_by.value,
            vote=method.value,
            top_k=top_k,
            class_names=names,
            image_size=config.data.image_size,
            library_size=picked.library_size if picked is not None else len(library),
            members=tuple(_member(config.study.metric, m, oof, method) for m in members),
            artifacts=artifacts_root(config),
            selection_curve=picked.curve if picked is not None else (),
            # Said in the summary too: fewer members than top_k asked for.
            shortfall=(
                f"top_k={top_k} asked for, {len(members)} completed trials have fold models"
                if top_k is not None and len(members) < top_k
                else None
            ),
        ),
        config,
        members,
        best,
        oof,
    )
    holdout = splits.holdout
    scored: tuple[HoldoutScores, Vote] | None = None
    if holdout is None or len(holdout) == 0:
        logger.warning(
            "no hold-out set (holdout_fraction: 0 and no data.test): scored out-of-fold only"
        )
    else:
        scored = _score_holdout(result, members, best, holdout, tta, progress)
        result = replace(result, holdout=scored[0])
    # The files are one set: written aside, swapped in whole (folder.py).
    with staged_folder(paths.ensemble) as staging:
        if scored is not None and holdout is not None:
            _write_holdout_files(staging, config, result, scored[0].ensemble, holdout, scored[1])
        result.save(staging / MANIFEST)
    study.set_user_attr(ENSEMBLE_ATTR, _short(result))
    save_ensemble_note(study, result)  # the study's note in optuna-dashboard
    return result


def load_manifest(config: Config) -> EnsembleResult:
    """The saved ensemble of a study, its models found on this machine.

    Raises:
        StudyError: there is no ensemble yet (the message says how to build it), or its file
            cannot be read.
    """
    return EnsembleResult.load(paths_for(config), artifacts_root(config))


def _choose(
    config: Config,
    library: list[EnsembleMember],
    oof: _Oof,
    method: VoteMethod,
    chosen_by: SelectionMethod,
    top_k: int | None,
) -> tuple[Selection | None, list[EnsembleMember]]:
    """The selection (None: top_k without out-of-fold data) and the members it gives."""
    if chosen_by is SelectionMethod.GREEDY:
        picked = _greedy(config, library, oof.by_trial, oof.labels, method)
        by_trial = {m.trial: m for m in library}
        return picked, [replace(by_trial[t], weight=w) for t, w in picked.weights]
    top_k = top_k if top_k is not None else config.ensemble.top_k
    members = library[:top_k]
    if len(members) < top_k:
        logger.warning(
            "top_k=%d but only %d completed trials have fold models: the ensemble has %d",
            top_k,
            len(members),
            len(members),
        )
    return _top_k(config, library, oof.by_trial, oof.labels, method, top_k), members


def _member(metric: str, member: EnsembleMember, oof: _Oof, method: str) -> EnsembleMember:
    """The member as ``ensemble.json`` keeps it: its own out-of-fold score, no oof.npz path."""
    score = _single_score(metric, oof.labels, oof.by_trial.get(member.trial), method)
    return replace(member, oof_score=score, oof_path=None)


def _out_of_fold(
    result: EnsembleResult,
    config: Config,
    members: list[EnsembleMember],
    best: EnsembleMember,
    oof: _Oof,
) -> EnsembleResult:
    """``result`` with its out-of-fold scores and the decision threshold chosen on them."""
    ensemble = _oof_vote(members, oof.by_trial, result.vote)
    if ensemble is not None:
        result = replace(result, out_of_fold=_summary(oof.labels, ensemble, oof.names))
    if best.trial in oof.by_trial:
        alone = vote(oof.by_trial[best.trial][np.newaxis], result.vote)
        single = TrialScores(best.trial, _summary(oof.labels, alone, oof.names))
        result = replace(result, out_of_fold_best_single_trial=single)
    if config.ensemble.target_recall is None:
        return result
    if ensemble is None:  # the threshold is chosen out-of-fold: no silent skipping
        lacking = [m.trial for m in members if m.trial not in oof.by_trial]
        raise StudyError(
            f"{config.source}: ensemble.target_recall needs every member's out-of-fold "
            f"predictions, but trials {lacking} have no oof.npz in their folders; remove "
            "those trials' folders or run `automl tune` for more trials."
        )
    threshold = _threshold(config, oof.names, oof.labels, ensemble.probabilities)
    return replace(result, threshold=threshold)


def _score_holdout(
    result: EnsembleResult,
    members: list[EnsembleMember],
    best: EnsembleMember,
    holdout: ImageSet,
    tta: bool,
    progress: bool,
) -> tuple[HoldoutScores, Vote]:
    """The ensemble and the best single trial on the hold-out; also the ensemble's vote."""
    from automl.nn.inference import predict_probabilities

    names, method = result.class_names, result.vote
    member_models = [path for m in members for path in m.models]
    model_weights = [m.weight for m in members for _ in m.models]
    # The best single trial need not be a member under greedy: predict its models too.
    extra = [] if any(m.trial == best.trial for m in members) else list(best.models)
    probabilities = predict_probabilities(member_models + extra, holdout.images, progress=progress)
    ensemble_vote = vote(probabilities[: len(member_models)], method, model_weights)
    if extra:
        single = probabilities[len(member_models) :]
    else:
        start = _offset(members, best.trial)
        single = probabilities[start : start + len(best.models)]
    single_vote = vote(single, method)
    scores = HoldoutScores(
        n_images=len(holdout),
        ensemble=_report(holdout.labels, ensemble_vote, names),
        best_single_trial=TrialScores(best.trial, _report(holdout.labels, single_vote, names)),
    )
    if tta:
        # Test-time augmentation (flips), scored next to the plain prediction.
        flipped = vote(
            predict_probabilities(member_models, holdout.images, tta=True, progress=progress),
            method,
            model_weights,
        )
        scores = replace(scores, ensemble_tta=_summary(holdout.labels, flipped, names))
    if result.threshold is not None:
        index = names.index(result.threshold.positive_class)
        recall, precision = rates_at(
            holdout.labels,
            ensemble_vote.probabilities[:, index],
            index,
            result.threshold.threshold,
        )
        scores = replace(scores, at_threshold=Rates(recall, precision))
    return scores, ensemble_vote


def _write_holdout_files(
    out_dir: Path,
    config: Config,
    result: EnsembleResult,
    scores: Scores,
    holdout: ImageSet,
    ensemble_vote: Vote,
) -> None:
    """The hold-out confusion matrix (CSV and PNG) and predictions CSV into ``out_dir``."""
    names = list(result.class_names)
    write_confusion_matrix(
        out_dir / HOLDOUT_CONFUSION_CSV,
        out_dir / HOLDOUT_CONFUSION_PNG,
        np.asarray(scores.confusion_matrix),
        names,
        title=f"{config.study.name}: ensemble of {result.n_models} models on the hold-out",
    )
    frame = predictions_frame(holdout.ids, names, ensemble_vote)
    frame.insert(2, "true_label", np.asarray(names, dtype=object)[holdout.labels])
    write_frame_csv(out_dir / HOLDOUT_PREDICTIONS, frame)


def _report(labels: np.ndarray, result: Vote, names: tuple[str, ...]) -> Scores:
    """The full report of a vote: scores, per-class scores and the confusion matrix."""
    return Scores.from_json_dict(
        classification_report(labels, result.labels, result.probabilities, names)
    )


def _summary(labels: np.ndarray, result: Vote, names: tuple[str, ...]) -> Scores:
    return _report(labels, result, names).summary()


def _greedy(
    config: Config,
    library: list[EnsembleMember],
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
        [m.cv_value for m in candidates],
        metric=config.study.metric,
        vote_method=method,
        direction=config.study.direction,
    )


def _top_k(
    config: Config,
    library: list[EnsembleMember],
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
        [m.cv_value for m in candidates],
        top_k,
        metric=config.study.metric,
        vote_method=method,
        direction=config.study.direction,
    )


def _single_score(
    metric: str, labels: np.ndarray, probabilities: np.ndarray | None, method: str
) -> float | None:
    if probabilities is None:
        return None
    alone = vote(probabilities[np.newaxis], method)
    score = score_predictions(metric, labels, alone.labels, alone.probabilities)
    return None if np.isnan(score) else score


def _offset(members: list[EnsembleMember], trial: int) -> int:
    """Index of ``trial``'s first fold model in the members' concatenated model list."""
    start = 0
    for member in members:
        if member.trial == trial:
            return start
        start += len(member.models)
    raise ValueError(f"trial {trial} is not a member")


def _oof_vote(
    members: list[EnsembleMember], oof: dict[int, np.ndarray], method: str
) -> Vote | None:
    """Members' out-of-fold probabilities voting with their weights; None if one is missing."""
    if not all(m.trial in oof for m in members):
        return None
    stacked = np.stack([oof[m.trial].astype(np.float64) for m in members])
    return vote(stacked, method, [m.weight for m in members])


def _threshold(
    config: Config, names: tuple[str, ...], labels: np.ndarray, probabilities: np.ndarray
) -> Threshold:
    positive = positive_class(names, config.ensemble.positive_class)
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


def _short(result: EnsembleResult) -> dict[str, Any]:
    """The study attribute ``ensemble``: members, weights and the hold-out accuracies."""
    holdout = result.holdout
    return {
        "members": [m.trial for m in result.members],
        "weights": [m.weight for m in result.members],
        "selection": result.selection,
        "vote": result.vote,
        "holdout_accuracy": holdout.ensemble.accuracy if holdout else None,
        "best_single_holdout_accuracy": (
            holdout.best_single_trial.scores.accuracy if holdout else None
        ),
    }
