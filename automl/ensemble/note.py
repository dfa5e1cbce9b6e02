"""The study's dashboard note after ``ensemble``: members, weights, the selection curve, scores."""

from __future__ import annotations

import logging
from typing import Any

import optuna

from automl.search.attrs import MISSING_NOTE

logger = logging.getLogger(__name__)


def ensemble_note(manifest: dict[str, Any]) -> str:
    """The study note after ``ensemble``: members with weights, the selection curve, scores."""
    members = manifest["members"]
    metric = manifest["metric"]
    selection = manifest.get("selection", "top_k")  # manifests before greedy selection: top_k
    library = manifest.get("library_size", len(members))
    lines = [
        f"## Ensemble ({manifest['created']})",
        f"{len(members)} trials x their folds = **{manifest['n_models']} models**, "
        f"**{manifest['vote']}** vote, **{selection}** selection from {library} trials; "
        "a trial's weight is how many votes each of its fold models casts.",
        "",
        f"| trial | weight | CV {metric} | out-of-fold {metric} | fold models |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {m['trial']} | {m.get('weight', 1)} | {m['cv_value']:.4f} | "
        f"{_fmt(m.get('oof_score'))} | {len(m['models'])} |"
        for m in members
    ]
    curve = manifest.get("selection_curve") or []
    if curve:
        lines += [
            "",
            f"Selection: out-of-fold {metric} of the ensemble after each step.",
            "",
            f"| step | added trial | out-of-fold {metric} |",
            "|---|---|---|",
        ]
        lines += [f"| {c['step']} | {c['trial']} | {c['score']:.4f} |" for c in curve]
    scores = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")
    holdout = manifest.get("holdout")
    oof = manifest.get("out_of_fold")
    if holdout or oof:
        lines += [
            "",
            "| scored on | " + " | ".join(scores) + " |",
            "|---" * (len(scores) + 1) + "|",
        ]
    if holdout:
        best = holdout["best_single_trial"]
        for label, report in (
            (f"hold-out ({holdout['n_images']} images): ensemble", holdout["ensemble"]),
            (f"hold-out: best single trial {best['trial']}", best),
        ):
            lines.append(f"| {label} | " + " | ".join(_fmt(report.get(s)) for s in scores) + " |")
    if oof:
        lines.append(
            "| out-of-fold: ensemble | " + " | ".join(_fmt(oof.get(s)) for s in scores) + " |"
        )
        single = manifest.get("out_of_fold_best_single_trial")
        if single:
            lines.append(
                f"| out-of-fold: best single trial {single['trial']} | "
                + " | ".join(_fmt(single.get(s)) for s in scores)
                + " |"
            )
    if holdout:
        names = manifest["class_names"]
        matrix = holdout["ensemble"]["confusion_matrix"]
        lines += [
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
    else:
        lines += ["", "No hold-out set: scored out-of-fold only."]
    lines += ["", f"Full report: `automl report --study {manifest['study']}`."]
    return "\n".join(lines) + "\n"


def save_ensemble_note(study: optuna.Study, manifest: dict[str, Any]) -> str | None:
    """Write the ensemble's study note for the dashboard.

    Returns:
        None, or why the note could not be saved (also a study attribute and a warning: the
        ensemble itself is saved already, so this never raises).
    """
    try:
        from optuna_dashboard import save_note

        save_note(study, ensemble_note(manifest))
    except Exception as exc:  # noqa: BLE001 - the ensemble is saved already
        logger.warning("could not save the ensemble note on study '%s': %s", study.study_name, exc)
        reason = f"{type(exc).__name__}: {exc}"[:300]
        study.set_user_attr(MISSING_NOTE, reason)
        return reason
    return None


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
