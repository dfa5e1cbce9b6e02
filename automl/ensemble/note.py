"""The study's dashboard note after ``ensemble``: members, weights, the selection curve, scores."""

from __future__ import annotations

import logging

import optuna

from automl.console import show_value
from automl.ensemble.manifest import EnsembleResult, Scores
from automl.metrics import METRICS
from automl.search.attrs import MISSING_NOTE

logger = logging.getLogger(__name__)


def ensemble_note(result: EnsembleResult) -> str:
    """The study note after ``ensemble``: members with weights, the selection curve, scores."""
    members = result.members
    metric = result.metric
    lines = [
        f"## Ensemble ({result.created})",
        f"{len(members)} trials x their folds = **{result.n_models} models**, "
        f"**{result.vote}** vote, **{result.selection}** selection from {result.library_size} "
        "trials; a trial's weight is how many votes each of its fold models casts.",
        "",
        f"| trial | weight | CV {metric} | out-of-fold {metric} | fold models |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {m.trial} | {m.weight} | {m.cv_value:.4f} | {show_value(m.oof_score)} "
        f"| {len(m.models)} |"
        for m in members
    ]
    if result.selection_curve:
        lines += [
            "",
            f"Selection: out-of-fold {metric} of the ensemble after each step.",
            "",
            f"| step | added trial | out-of-fold {metric} |",
            "|---|---|---|",
        ]
        lines += [f"| {c.step} | {c.trial} | {c.score:.4f} |" for c in result.selection_curve]
    lines += _score_rows(result)
    lines += _confusion_rows(result)
    lines += ["", f"Full report: `automl report --study {result.study}`."]
    return "\n".join(lines) + "\n"


def _score_rows(result: EnsembleResult) -> list[str]:
    """The scores table: hold-out and out-of-fold, the ensemble and the best single trial."""
    holdout, oof = result.holdout, result.out_of_fold
    rows: list[tuple[str, Scores]] = []
    if holdout:
        best = holdout.best_single_trial
        rows.append((f"hold-out ({holdout.n_images} images): ensemble", holdout.ensemble))
        rows.append((f"hold-out: best single trial {best.trial}", best.scores))
    if oof:
        rows.append(("out-of-fold: ensemble", oof))
        single = result.out_of_fold_best_single_trial
        if single:
            rows.append((f"out-of-fold: best single trial {single.trial}", single.scores))
    if not rows:
        return []
    lines = ["", "| scored on | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    lines += [
        f"| {label} | " + " | ".join(show_value(scores.get(s)) for s in METRICS) + " |"
        for label, scores in rows
    ]
    return lines


def _confusion_rows(result: EnsembleResult) -> list[str]:
    if not result.holdout:
        return ["", "No hold-out set: scored out-of-fold only."]
    names = result.class_names
    matrix = result.holdout.ensemble.confusion_matrix
    lines = [
        "",
        "Hold-out confusion matrix (rows true, columns predicted):",
        "",
        "| true \\ predicted | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    lines += [
        f"| {name} | " + " | ".join(str(c) for c in row) + " |"
        for name, row in zip(names, matrix, strict=True)
    ]
    return lines


def save_ensemble_note(study: optuna.Study, result: EnsembleResult) -> str | None:
    """Write the ensemble's study note for the dashboard.

    Returns:
        None, or why the note could not be saved (also a study attribute and a warning: the
        ensemble itself is saved already, so this never raises).
    """
    try:
        from optuna_dashboard import save_note

        save_note(study, ensemble_note(result))
    except Exception as exc:  # noqa: BLE001 - the ensemble is saved already
        logger.warning("could not save the ensemble note on study '%s': %s", study.study_name, exc)
        reason = f"{type(exc).__name__}: {exc}"[:300]
        study.set_user_attr(MISSING_NOTE, reason)
        return reason
    return None
