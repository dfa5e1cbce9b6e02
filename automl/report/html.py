"""``automl report``: one self-contained HTML page about a study, with its pictures beside it.

``<study>/report/report.html`` holds every picture inline (base64 PNG), so the single file can be
mailed or archived; the same PNGs are written beside it. Sections, each an ``<section id=...>``:

- ``summary``: metric, trial counts, best trial and its parameters;
- ``optimization-history``, ``param-importances``, ``parallel-coordinates`` (the top trials only)
  and ``intermediate-values`` (where the pruner stopped trials): Optuna's own
  ``optuna.visualization.matplotlib`` plots;
- ``leaderboard``: every trial, CV mean ± std, per-fold scores, epochs, time, memory, params;
- after ``automl ensemble``: ``ensemble-vs-single`` (hold-out and out-of-fold scores of the
  ensemble next to the best single trial), ``holdout-confusion-matrix``, ``per-class`` (precision,
  recall, F1) and ``roc-curves`` (one-vs-rest for several classes), drawn by scikit-learn's
  ``ConfusionMatrixDisplay`` and ``RocCurveDisplay`` from ``ensemble/holdout_predictions.csv``.

A plot that cannot be drawn (too few trials for importances, no hold-out) becomes a sentence
saying why, never an error. This module imports no TensorFlow.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.trial import TrialState
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from automl.config.schema import Config
from automl.console import show_value
from automl.ensemble.build import load_manifest
from automl.ensemble.manifest import EnsembleResult, HoldoutScores, Scores
from automl.ensemble.outputs import PROBABILITY_PREFIX
from automl.ensemble.thresholds import positive_class
from automl.errors import StudyError
from automl.files import atomic_write_text
from automl.metrics import METRICS
from automl.search.attrs import PEAK_RSS_MB, TrialSummary
from automl.search.paths import (
    HOLDOUT_PREDICTIONS,
    REPORT_CONFUSION_PNG,
    REPORT_FILE,
    REPORT_ROC_PNG,
    paths_for,
    report_picture_name,
)
from automl.search.storage import (
    counts_by_state,
    leaderboard,
    storage_url_for_display,
    top_trials,
)

logger = logging.getLogger(__name__)

_SCORES = METRICS


class NotEnoughTrials(Exception):
    """A plot that the study cannot have yet (too few completed trials): the one case that
    becomes a "Not available" sentence instead of failing the command."""


@dataclass(frozen=True)
class Section:
    """One ``<section>`` of the report: its anchor, heading and HTML body."""

    id: str
    title: str
    body: str


def report_dir(config: Config) -> Path:
    """Where ``build_report`` writes: ``<study>/report/``."""
    return paths_for(config).report


def build_report(config: Config, study: optuna.Study, *, top: int = 10) -> Path:
    """Write ``report.html`` and its PNGs into ``<study>/report/``; return the HTML's path.

    Args:
        config: the study's configuration.
        study: the loaded study.
        top: how many of the best completed trials the parallel-coordinates plot shows.
    """
    out_dir = report_dir(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = config.study.metric
    stride = config.space.max_epochs()
    seed = config.study.seed
    vis = optuna.visualization.matplotlib
    top_study = _top_study(study, top)
    sections = [
        _summary(config, study),
        _optuna_plot(
            out_dir,
            "optimization-history",
            "Optimization history",
            lambda: vis.plot_optimization_history(
                study, target=_metric_target(study), target_name=metric
            ),
            f"Each dot a completed trial's CV mean {metric}; the line is the best so far.",
        ),
        _optuna_plot(
            out_dir,
            "param-importances",
            "Parameter importances",
            lambda: _param_importances(study, seed, metric),
            "fANOVA importance of each searched parameter for the CV value (completed trials).",
        ),
        _optuna_plot(
            out_dir,
            "parallel-coordinates",
            f"Parallel coordinates of the top {len(top_study.trials)} trials",
            lambda: vis.plot_parallel_coordinate(
                top_study, target=_metric_target(study), target_name=metric
            ),
            f"The best {len(top_study.trials)} completed trials by CV {metric}; each line is "
            "one trial's parameters.",
        ),
        _optuna_plot(
            out_dir,
            "intermediate-values",
            "Intermediate values and pruning",
            lambda: _intermediate_values(study, stride),
            f"Validation {metric} reported after every epoch at step fold x {stride} + epoch "
            "(dotted lines separate the folds). A line that ends early is a trial the pruner "
            "stopped.",
            extra=_pruned_table(study, stride),
        ),
        _leaderboard(config, study),
        *_ensemble_sections(config, out_dir),
    ]
    path = out_dir / REPORT_FILE
    atomic_write_text(path, _page(config, sections))
    logger.info("report written to %s", path)
    return path


def _top_study(study: optuna.Study, k: int) -> optuna.Study:
    """An in-memory study holding only the ``k`` best completed trials."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line
        try:
            subset = optuna.create_study(directions=study.directions)
        finally:
            optuna.logging.set_verbosity(verbosity)
    subset.add_trials(top_trials(study, k))
    return subset


def _param_importances(study: optuna.Study, seed: int, metric: str) -> Any:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = {t.values[0] for t in complete}
    if len(values) < 2:
        raise NotEnoughTrials(
            "importances need completed trials with at least two different values; "
            f"this study has {len(values)} distinct value(s)"
        )
    if not any(t.params for t in complete):
        raise NotEnoughTrials("the space has no searched parameters to rank")
    return optuna.visualization.matplotlib.plot_param_importances(
        study,
        evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed),
        target=_metric_target(study),
        target_name=metric,
    )


def _metric_target(study: optuna.Study) -> Any:
    """With a latency objective, plot the metric (the first value); None = Optuna's default."""
    return (lambda t: t.values[0]) if len(study.directions) > 1 else None


def _intermediate_values(study: optuna.Study, stride: int) -> Any:
    axes = optuna.visualization.matplotlib.plot_intermediate_values(study)
    last = max((max(t.intermediate_values, default=0) for t in study.trials), default=0)
    for boundary in range(stride, last + 1, stride):
        axes.axvline(boundary - 0.5, color="grey", linestyle=":", linewidth=1)
    return axes


def _optuna_plot(
    out_dir: Path,
    section_id: str,
    title: str,
    plot: Callable[[], Any],
    caption: str,
    *,
    extra: str = "",
) -> Section:
    """Run one of Optuna's matplotlib plots, save it as ``<section_id>.png`` and embed it."""
    import matplotlib
    import matplotlib.pyplot as plt

    png = out_dir / report_picture_name(section_id)
    png.unlink(missing_ok=True)  # never leave an old picture beside a report that lacks it
    # Optuna's plots switch pyplot to the ggplot style globally; rc_context undoes that.
    with matplotlib.rc_context():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental-API and "too few trials" warnings
                axes = plot()
            figure = np.ravel(axes)[0].get_figure()
        except NotEnoughTrials as exc:  # any other error is a real failure of the report
            return Section(section_id, title, _missing(str(exc)) + extra)
        try:
            figure.set_size_inches(9, 5)
            _save_figure(figure, png)
        finally:
            plt.close(figure)
    return Section(section_id, title, _figure_html(png, caption) + extra)


def _save_figure(figure: Figure, png: Path) -> None:
    figure.savefig(png, format="png", dpi=100, bbox_inches="tight")


def _figure_html(png: Path, caption: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{_e(png.stem)}" src="data:image/png;base64,{data}">'
        f'<figcaption>{_e(caption)} <a href="{_e(png.name)}">{_e(png.name)}</a></figcaption>'
        "</figure>"
    )


def _missing(reason: str) -> str:
    return f'<p class="missing">Not available: {_e(reason)}</p>'


# --- summary and leaderboard -------------------------------------------------------------------


def _summary(config: Config, study: optuna.Study) -> Section:
    counts = counts_by_state(study)
    paths = paths_for(config)
    items = [
        ("study", config.study.name),
        ("metric", f"{config.study.metric} ({config.study.direction})"),
        ("folder", str(paths.root)),
        ("storage", storage_url_for_display(config.study.storage, paths)),
        (
            "trials",
            f"{counts.complete} complete, {counts.pruned} pruned, {counts.fail} failed, "
            f"{counts.running} running",
        ),
        ("pruner / sampler", f"{config.study.pruner.name} / {config.study.sampler.name}"),
    ]
    best = top_trials(study, 1)
    if best:
        trial = TrialSummary.from_trial(best[0])
        std = trial.cv_std
        value = f"{trial.value:.4f}" + (f" ± {std:.4f}" if std is not None else "")
        items.append(("best trial", f"#{trial.number}: {config.study.metric} {value}"))
        items.append(("best parameters", json.dumps(trial.params, default=str)))
    else:
        items.append(("best trial", "no completed trial yet"))
    items.append(("dashboard", f"automl dashboard --study {config.study.name}"))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return Section("summary", "Summary", f'<table class="kv">{rows}</table>')


def _leaderboard(config: Config, study: optuna.Study) -> Section:
    metric = config.study.metric
    rows = leaderboard(study)  # the one best-first order (search/ranking.py)
    attrs = {t.number: t.user_attrs for t in study.get_trials(deepcopy=False)}
    header = (
        f"<tr><th>rank</th><th>trial</th><th>state</th><th>CV {_e(metric)} mean ± std</th>"
        "<th>per-fold</th><th>epochs</th><th>train s</th><th>peak MB</th><th>params</th>"
        "<th>note</th></tr>"
    )
    body = []
    for rank, r in enumerate(rows, start=1):
        value = "" if r.value is None else f"{r.value:.4f}"
        if value and r.complete and r.cv_std is not None:
            value += f" ± {r.cv_std:.4f}"
        elif value and not r.complete:
            value += " (last report)"
        note = ""
        if r.state == "pruned":
            note = f"pruned at step {r.pruned_at_step}"
        elif r.state == "fail":
            note = str(r.fail_reason or "")
        peak = attrs.get(r.number, {}).get(PEAK_RSS_MB)
        params = "<br>".join(f"{_e(k)}={_e(_cell(v))}" for k, v in sorted(r.params.items()))
        body.append(
            f'<tr class="{_e(r.state)}"><td>{rank if r.complete else ""}</td>'
            f"<td>{r.number}</td><td>{_e(r.state)}</td><td>{_e(value)}</td>"
            f"<td>{_e(' '.join(f'{s:.3f}' for s in r.fold_scores))}</td>"
            f"<td>{_e(_cell(r.epochs))}</td><td>{_e(_cell(r.seconds))}</td>"
            f"<td>{_e(_cell(peak))}</td><td class='params'>{params}</td><td>{_e(note)}</td></tr>"
        )
    table = f"<table><thead>{header}</thead><tbody>{''.join(body)}</tbody></table>"
    return Section("leaderboard", "Leaderboard", table)


def _pruned_table(study: optuna.Study, stride: int) -> str:
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    if not pruned:
        return "<p>No trial was pruned.</p>"
    rows = []
    for t in pruned:
        step = TrialSummary.from_trial(t).pruned_at_step
        if step is None and t.intermediate_values:
            step = max(t.intermediate_values)
        where = (
            ""
            if step is None
            else f"step {step} (fold {step // stride}, epoch {step % stride + 1})"
        )
        value = t.intermediate_values.get(step) if step is not None else None
        rows.append(f"<tr><td>{t.number}</td><td>{_e(where)}</td><td>{_e(_cell(value))}</td></tr>")
    return (
        "<table><thead><tr><th>pruned trial</th><th>stopped at</th><th>last value</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


# --- ensemble ----------------------------------------------------------------------------------


def _ensemble_sections(config: Config, out_dir: Path) -> list[Section]:
    try:
        ensemble = load_manifest(config)
    except StudyError:
        return [
            Section(
                "ensemble-vs-single",
                "Ensemble",
                f"<p>No ensemble yet: run <code>automl ensemble --study {_e(config.study.name)}"
                "</code>, then this command again.</p>",
            )
        ]
    sections = [_comparison(ensemble)]
    holdout = ensemble.holdout
    predictions = paths_for(config).ensemble / HOLDOUT_PREDICTIONS
    for name in (REPORT_CONFUSION_PNG, REPORT_ROC_PNG):
        (out_dir / name).unlink(missing_ok=True)
    if not holdout or not predictions.is_file():
        reason = "the study has no hold-out set" if not holdout else f"{predictions} is missing"
        sections.append(Section("holdout-confusion-matrix", "Hold-out", _missing(reason)))
        return sections
    frame = pd.read_csv(predictions, keep_default_na=False)
    names = list(ensemble.class_names)
    sections.append(_confusion_section(frame, names, out_dir, holdout.n_images))
    sections.append(_per_class_section(holdout))
    sections.append(_roc_section(frame, names, out_dir, ensemble))
    return sections


def _comparison(ensemble: EnsembleResult) -> Section:
    members = ", ".join(f"#{m.trial} x{m.weight} ({m.cv_value:.4f})" for m in ensemble.members)
    intro = (
        f"<p>{len(ensemble.members)} trials x their folds = {ensemble.n_models} models, "
        f"{_e(ensemble.vote)} vote, {_e(ensemble.selection)} selection from "
        f"{ensemble.library_size} trials; members x weight (CV {_e(ensemble.metric)}): "
        f"{_e(members)}. A trial's weight is how many votes each of its fold models casts. "
        f"Built {_e(ensemble.created)}.</p>"
    )
    rows: list[tuple[str, Scores]] = []
    holdout = ensemble.holdout
    if holdout:
        best = holdout.best_single_trial
        rows.append((f"hold-out ({holdout.n_images} images): ensemble", holdout.ensemble))
        rows.append((f"hold-out: best single trial #{best.trial}", best.scores))
    if ensemble.out_of_fold:
        rows.append(("out-of-fold: ensemble", ensemble.out_of_fold))
    single = ensemble.out_of_fold_best_single_trial
    if single:
        rows.append((f"out-of-fold: best single trial #{single.trial}", single.scores))
    table = ""
    if rows:
        head = "".join(f"<th>{_e(s)}</th>" for s in _SCORES)
        body = "".join(
            f"<tr><th>{_e(label)}</th>"
            + "".join(f"<td>{_e(_cell(scores.get(s)))}</td>" for s in _SCORES)
            + "</tr>"
            for label, scores in rows
        )
        table = f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"
    table += _selection_curve(ensemble)
    if ensemble.threshold:
        threshold = json.dumps(ensemble.threshold.to_dict(), default=str)
        table += f"<p>Decision threshold: {_e(threshold)}</p>"
    return Section("ensemble-vs-single", "Ensemble vs best single trial", intro + table)


def _selection_curve(ensemble: EnsembleResult) -> str:
    """The selection's steps: the trial added and the ensemble's out-of-fold score after."""
    if not ensemble.selection_curve:
        return ""
    metric = _e(ensemble.metric)
    body = "".join(
        f"<tr><td>{c.step}</td><td>{c.trial}</td><td>{c.score:.4f}</td></tr>"
        for c in ensemble.selection_curve
    )
    return (
        f"<p>Selection: out-of-fold {metric} of the ensemble after each step (the selection "
        "optimised it, so it is optimistic; the hold-out rows above are the honest estimate)."
        f'</p><table class="selection-curve"><thead><tr><th>step</th><th>added trial</th>'
        f"<th>out-of-fold {metric}</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _confusion_section(
    frame: pd.DataFrame, names: list[str], out_dir: Path, n_images: int
) -> Section:
    png = out_dir / REPORT_CONFUSION_PNG
    edge = max(5.0, 0.6 * len(names) + 2.5)
    figure = Figure(figsize=(edge + 1.0, edge), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    ConfusionMatrixDisplay.from_predictions(
        frame["true_label"].astype(str),
        frame["label"].astype(str),
        labels=names,
        cmap="Blues",
        xticks_rotation=45,
        ax=axes,
    )
    axes.set_title(f"ensemble on the hold-out ({n_images} images)")
    _save_figure(figure, png)
    caption = "Rows are true classes, columns the ensemble's predictions."
    return Section(
        "holdout-confusion-matrix", "Hold-out confusion matrix", _figure_html(png, caption)
    )


def _per_class_section(holdout: HoldoutScores) -> Section:
    best = holdout.best_single_trial
    single = best.scores.per_class
    head = (
        "<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th>"
        f"<th>F1 of best single trial #{best.trial}</th></tr>"
    )
    rows = "".join(
        f"<tr><th>{_e(name)}</th><td>{s.precision:.4f}</td><td>{s.recall:.4f}</td>"
        f"<td>{s.f1:.4f}</td><td>{s.support}</td>"
        f"<td>{_e(_cell(single[name].f1 if name in single else None))}</td></tr>"
        for name, s in holdout.ensemble.per_class.items()
    )
    table = f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>"
    return Section("per-class", "Per-class precision, recall and F1 (hold-out)", table)


def _roc_section(
    frame: pd.DataFrame, names: list[str], out_dir: Path, ensemble: EnsembleResult
) -> Section:
    truth = frame["true_label"].astype(str).to_numpy()
    if len(names) == 2:
        chosen = ensemble.threshold.positive_class if ensemble.threshold else None
        positive = positive_class(names, chosen)
        curves: Sequence[str] = [positive]
        caption = f"ROC of the ensemble's probability of '{positive}' on the hold-out."
    else:
        curves = names
        caption = "One-vs-rest ROC per class of the ensemble's mean probabilities on the hold-out."
    figure = Figure(figsize=(7, 6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    drawn, skipped = 0, []
    for name in curves:
        column = f"{PROBABILITY_PREFIX}{name}"
        positives = truth == name
        if column not in frame or positives.all() or not positives.any():
            skipped.append(name)  # ROC needs both positives and negatives
            continue
        RocCurveDisplay.from_predictions(
            positives,
            frame[column].to_numpy(dtype=float),
            name=name,
            ax=axes,
            plot_chance_level=drawn == 0,
        )
        drawn += 1
    if not drawn:
        return Section(
            "roc-curves", "ROC curves", _missing("no class has both positives and negatives")
        )
    axes.set_title("ROC on the hold-out" + (" (one-vs-rest)" if len(names) > 2 else ""))
    png = out_dir / REPORT_ROC_PNG
    _save_figure(figure, png)
    if skipped:
        caption += f" Left out (absent from the hold-out or missing): {', '.join(skipped)}."
    return Section("roc-curves", "ROC curves", _figure_html(png, caption))


# --- page --------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; }
table.kv th { background: #f7f7f7; width: 12em; }
tr.pruned td { color: #8a6d00; } tr.fail td { color: #a00; }
td.params { font-family: monospace; font-size: 0.85em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
p.missing { color: #a00; font-style: italic; }
"""


def _page(config: Config, sections: list[Section]) -> str:
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    nav = " ".join(f'<a href="#{_e(s.id)}">{_e(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{_e(s.id)}"><h2>{_e(s.title)}</h2>\n{s.body}\n</section>' for s in sections
    )
    title = f"automl report: {config.study.name}"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n<h1>{_e(title)}</h1>"
        f"<p>Generated {_e(created)} by <code>automl report</code>.</p>\n<nav>{nav}</nav>\n"
        f"{body}\n</body></html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: Any) -> str:
    return show_value(value, missing="")  # an empty table cell
