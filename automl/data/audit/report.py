"""Run a whole data audit and write its reports: ``audit.csv``, ``audit.json``, ``audit.html``.

``audit.csv`` has one row per flagged file: its id, file, set, label, the reasons (``;``
separated: ``unreadable``, ``channels``, ``size``, ``exact_duplicate``, ``near_duplicate``,
``label_conflict``, ``leakage``, ``outlier``), its duplicate group, split side, outlier z-scores,
a detail, and an ``exclude`` suggestion (true for unreadable files, every copy after the first
of an exact duplicate and members of groups with conflicting labels); the file can be
given to ``data.exclude`` as is, or after editing that column. ``audit.json`` holds the summary;
``audit.html`` is self-contained (thumbnails as base64 PNG) and shows the duplicate groups
(largest first, at most 60, 8 thumbnails each) and the top outliers. Reports are written
atomically; the audited images are only read.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl.config.schema import DataConfig
from automl.data.audit.checks import (
    AuditOptions,
    Duplicates,
    Items,
    collect_items,
    find_duplicates,
    leakage,
    outlier_scores,
    pool_imageset,
    read_exclude,
    replace_groups,
    split_sides,
)
from automl.data.audit.fingerprints import Features, compute_features
from automl.data.splits import make_splits
from automl.errors import DataError
from automl.files import atomic_write_text, write_frame_csv, write_json

logger = logging.getLogger(__name__)

_HTML_GROUPS = 60
_HTML_OUTLIERS = 24
_THUMB = 72
_PER_GROUP = 8


@dataclass(frozen=True, eq=False)
class AuditResult:
    """Everything an audit found: a JSON-able summary and one row per flagged file."""

    summary: dict[str, Any]
    flagged: pd.DataFrame
    items: Items
    duplicates: Duplicates
    outliers: np.ndarray  # indices of the flagged outliers, worst first
    outlier_z: tuple[np.ndarray, np.ndarray]  # z-scores against the class and the whole set

    def to_dict(self) -> dict[str, Any]:
        return self.summary


def run_audit(
    data: DataConfig,
    *,
    seed: int = 42,
    options: AuditOptions | None = None,
    progress: bool = False,
) -> AuditResult:
    """Audit the data of a ``data:`` section as ``tune`` would read and split it."""
    options = options or AuditOptions()
    started = time.perf_counter()
    items = collect_items(data, progress=progress)
    if len(items) == 0:
        raise DataError("data: no images were found; check data.path and data.format.")
    features = compute_features(len(items), items.load, progress=progress)
    duplicates = find_duplicates(features, options)
    by_class, whole = outlier_scores(features, items.labels)
    excluded = np.zeros(len(items), dtype=bool)
    if data.exclude is not None:
        drop = read_exclude(data.exclude)
        excluded = np.array([str(i) in drop for i in items.ids], dtype=bool)
    sides, split_note = _sides(items, data, seed, features, duplicates, excluded)
    leaks = leakage(duplicates.group, sides)
    flagged, outliers = _flag(items, features, duplicates, by_class, whole, sides, leaks, options)
    summary = _summary(items, features, duplicates, leaks, flagged, outliers, data, options)
    summary["splits"] = split_note
    summary["excluded_by_data_exclude"] = int(excluded.sum())
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return AuditResult(summary, flagged, items, duplicates, outliers, (by_class, whole))


def _sides(
    items: Items,
    data: DataConfig,
    seed: int,
    features: Features,
    duplicates: Duplicates,
    excluded: np.ndarray,
) -> tuple[np.ndarray, str]:
    """Split side of every image as tune would split (``""``: not split), and a note."""
    sides = np.full(len(items), "", dtype=object)
    in_pool = (items.sets == "data") & features.ok & ~excluded
    in_test = (items.sets == "data.test") & features.ok & ~excluded
    pool = pool_imageset(items, in_pool, items.groups)
    if data.groups_from_duplicates:
        pool = replace_groups(pool, duplicates.group[in_pool])
    test = pool_imageset(items, in_test, None) if in_test.any() else None
    try:
        splits = make_splits(
            pool,
            test,
            n_folds=data.n_folds,
            holdout_fraction=data.holdout_fraction,
            seed=seed,
        )
    except DataError as error:
        return sides, f"not computed: {error}"
    by_id = split_sides(splits)
    for where, mask in (("data", in_pool), ("data.test", in_test)):
        for i in np.flatnonzero(mask):
            sides[i] = by_id.get(str(items.ids[i]), "") if where == "data" else "holdout"
    grouped = " grouped by duplicates" if data.groups_from_duplicates else ""
    holdout = "data.test" if test is not None else f"holdout_fraction {data.holdout_fraction:g}"
    return sides, f"{holdout}, {data.n_folds} folds, seed {seed}{grouped}"


def _flag(
    items: Items,
    features: Features,
    duplicates: Duplicates,
    by_class: np.ndarray,
    whole: np.ndarray,
    sides: np.ndarray,
    leaks: dict[str, Any],
    options: AuditOptions,
) -> tuple[pd.DataFrame, np.ndarray]:
    n = len(items)
    reasons: list[list[str]] = [[] for _ in range(n)]
    details: list[list[str]] = [[] for _ in range(n)]
    exclude = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(~features.ok):
        reasons[i].append("unreadable")
        details[i].append(str(features.reason[i]))
        exclude[i] = True
    ok = features.ok
    if ok.any():
        usual = np.bincount(features.channels[ok]).argmax()
        for i in np.flatnonzero(ok & (features.channels != usual)):
            reasons[i].append("channels")
            details[i].append(f"{features.channels[i]} channels, most have {usual}")
        edge = np.sqrt(features.width * features.height.astype(float))
        median = np.median(edge[ok])
        ratio = np.where(ok, edge / median, 1.0)
        for i in np.flatnonzero((ratio > options.size_factor) | (ratio < 1 / options.size_factor)):
            reasons[i].append("size")
            details[i].append(
                f"{features.width[i]}x{features.height[i]} px, median edge {median:.0f}"
            )
    seen: set[str] = set()
    for i in np.flatnonzero(duplicates.group >= 0):
        if duplicates.exact[i]:
            reasons[i].append("exact_duplicate")
            exclude[i] |= features.digest[i] in seen  # keep the first copy
            seen.add(features.digest[i])
        else:
            reasons[i].append("near_duplicate")
    groups = duplicates.group
    labelled = pd.DataFrame({"group": groups, "label": items.labels})
    kinds = labelled[groups >= 0].groupby("group").label.nunique()
    conflicting = set(kinds.index[kinds > 1])
    for i in np.flatnonzero(np.isin(groups, list(conflicting))):
        reasons[i].append("label_conflict")
        exclude[i] = True
    leaking = set(leaks["holdout_groups"]) | set(leaks["fold_groups"])
    for i in np.flatnonzero(np.isin(groups, list(leaking)) & (sides != "")):
        reasons[i].append("leakage")
    # Unlike its class *and* unusual in the whole set: a red cell among white cells. A class
    # alone flags too many (natural spread), the set alone flags whole minority classes.
    score = np.where(np.isnan(by_class), whole, np.fmin(by_class, whole))
    score = np.nan_to_num(score, nan=-np.inf)
    outliers = np.flatnonzero(score >= options.outlier_z)
    outliers = outliers[np.argsort(-score[outliers], kind="stable")]
    for i in outliers:  # flagged for a look, not suggested for exclusion: the user decides
        reasons[i].append("outlier")
    rows = [i for i in range(n) if reasons[i]]
    flagged = pd.DataFrame(
        {
            "id": items.ids[rows].astype(str),
            "file": items.files[rows].astype(str),
            "set": items.sets[rows].astype(str),
            "label": items.labels[rows].astype(str),
            "reasons": [";".join(reasons[i]) for i in rows],
            "group": [f"g{groups[i]}" if groups[i] >= 0 else "" for i in rows],
            "side": sides[rows].astype(str),
            "outlier_z_class": np.round(by_class[rows], 2),
            "outlier_z_set": np.round(whole[rows], 2),
            "detail": ["; ".join(details[i]) for i in rows],
            "exclude": exclude[rows],
        }
    )
    return flagged, outliers


def _summary(
    items: Items,
    features: Features,
    duplicates: Duplicates,
    leaks: dict[str, Any],
    flagged: pd.DataFrame,
    outliers: np.ndarray,
    data: DataConfig,
    options: AuditOptions,
) -> dict[str, Any]:
    pool = items.sets == "data"
    counts = pd.Series(items.labels[pool & features.ok]).value_counts().sort_index()
    counts = counts[counts.index != ""]
    # Images of the smallest class left for tuning after a fractional hold-out.
    left = 1.0 - (data.holdout_fraction if data.test is None else 0.0)
    too_small = [name for name, c in counts.items() if int(c * left) < data.n_folds]
    members = [m for m in duplicates.members() if len(m)]
    label_sets = [set(items.labels[m]) for m in members]
    # astype: an empty frame (nothing flagged) has a float column, without the .str accessor
    reasons = flagged.reasons.astype(str).str.split(";").explode().value_counts()
    return {
        "images": len(items),
        "images_by_set": {s: int((items.sets == s).sum()) for s in np.unique(items.sets)},
        "readable": int(features.ok.sum()),
        # Left out as tune leaves them out; listed so that nothing is skipped without a word.
        "hidden_files_skipped": len(items.hidden_files),
        "hidden_files": list(items.hidden_files[:20]),
        "flagged_files": len(flagged),
        "reasons": {str(k): int(v) for k, v in reasons.items()},
        "classes": {str(k): int(v) for k, v in counts.items()},
        "imbalance_ratio": float(counts.max() / counts.min()) if len(counts) else None,
        "classes_too_small_for_folds": too_small,
        "n_folds": data.n_folds,
        "duplicate_groups": len(members),
        "images_in_duplicate_groups": int(sum(len(m) for m in members)),
        "exact_duplicate_files": int(duplicates.exact.sum()),
        "links": duplicates.links,
        "groups_with_conflicting_labels": int(sum(len(s) > 1 for s in label_sets)),
        "largest_group": int(max((len(m) for m in members), default=0)),
        "leakage": {
            "holdout_groups": len(leaks["holdout_groups"]),
            "holdout_images_affected": leaks["holdout_images_affected"],
            "holdout_share_affected": round(leaks["holdout_share_affected"], 4),
            "fold_groups": len(leaks["fold_groups"]),
            "tuning_images_in_cross_fold_groups": leaks["tuning_images_in_cross_fold_groups"],
            "tuning_share_affected": round(leaks["tuning_share_affected"], 4),
        },
        "outliers": [
            {"id": str(items.ids[i]), "label": str(items.labels[i])} for i in outliers[:20]
        ],
        "n_outliers": len(outliers),
        "options": vars(options),
    }


# --- files --------------------------------------------------------------------------------------


def write_reports(result: AuditResult, out: Path) -> dict[str, Path]:
    """Write ``audit.csv``, ``audit.json`` and ``audit.html`` into ``out``; return their paths."""
    out = Path(out)
    paths = {name: out / f"audit.{name}" for name in ("csv", "json", "html")}
    write_frame_csv(paths["csv"], result.flagged)
    write_json(paths["json"], result.summary)
    atomic_write_text(paths["html"], render_html(result))
    return paths


def render_html(result: AuditResult) -> str:
    """A self-contained page: summary, duplicate groups and top outliers with thumbnails."""
    s = result.summary
    items = result.items
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>automl data audit</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;"
        "margin:4px;font-size:11px;max-width:110px;word-wrap:break-word;vertical-align:top}"
        "img{display:block}.group{border-top:1px solid #ccc;padding:6px 0}.bad{color:#b00}"
        "td,th{padding:2px 8px;text-align:left}</style></head><body>",
        "<h1>Data audit</h1>",
        f"<p>{s['images']} images ({s['readable']} readable), {s['flagged_files']} flagged; "
        f"splits: {html.escape(str(s['splits']))}.</p>",
        "<table>",
    ]
    rows = [
        ("classes", ", ".join(f"{k} {v}" for k, v in s["classes"].items())),
        ("imbalance ratio", f"{s['imbalance_ratio']:.1f}" if s["imbalance_ratio"] else "-"),
        ("too small for folds", ", ".join(s["classes_too_small_for_folds"]) or "none"),
        ("reasons", ", ".join(f"{k} {v}" for k, v in s["reasons"].items()) or "none"),
        ("hidden files skipped", _hidden_text(s)),
        (
            "duplicate groups",
            f"{s['duplicate_groups']} ({s['images_in_duplicate_groups']} images)",
        ),
        ("leakage", _leak_text(s["leakage"])),
    ]
    parts += [f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in rows]
    parts.append("</table><h2>Duplicate groups</h2>")
    groups = sorted(result.duplicates.members(), key=len, reverse=True)
    for members in groups[:_HTML_GROUPS]:
        labels = sorted(set(items.labels[members]))
        mark = " class='bad'" if len(labels) > 1 else ""
        parts.append(
            f"<div class='group'><b{mark}>g{result.duplicates.group[members[0]]}</b>: "
            f"{len(members)} images, labels {html.escape(', '.join(labels))}<br>"
        )
        parts += [_figure(items, i) for i in members[:_PER_GROUP]]
        if len(members) > _PER_GROUP:
            parts.append(f"<p>... and {len(members) - _PER_GROUP} more (see audit.csv)</p>")
        parts.append("</div>")
    if len(groups) > _HTML_GROUPS:
        parts.append(f"<p>{len(groups) - _HTML_GROUPS} more groups in audit.csv.</p>")
    parts.append("<h2>Top outliers</h2><p>robust z-scores against the class / the set</p>")
    for i in result.outliers[:_HTML_OUTLIERS]:
        note = f"z {result.outlier_z[0][i]:.1f} / {result.outlier_z[1][i]:.1f}"
        parts.append(_figure(items, i, note))
    parts.append("</body></html>")
    return "\n".join(parts)


def _hidden_text(s: dict[str, Any]) -> str:
    n = s["hidden_files_skipped"]
    if not n:
        return "none"
    return (
        f"{n} (a name starting with '.': system or editor files, not data; "
        f"e.g. {s['hidden_files'][0]})"
    )


def _leak_text(leak: dict[str, Any]) -> str:
    return (
        f"hold-out {leak['holdout_images_affected']} images "
        f"({100 * leak['holdout_share_affected']:.1f}%) in {leak['holdout_groups']} groups; "
        f"folds {leak['tuning_images_in_cross_fold_groups']} tuning images "
        f"({100 * leak['tuning_share_affected']:.1f}%) in {leak['fold_groups']} groups"
    )


def _figure(items: Items, i: int, note: str = "") -> str:
    caption = html.escape(f"{items.ids[i]} [{items.labels[i]}] {items.sets[i]} {note}".strip())
    try:
        with items.load(int(i)) as image:
            thumb = image.convert("RGB")
            thumb.thumbnail((_THUMB, _THUMB))
            buffer = io.BytesIO()
            thumb.save(buffer, format="PNG")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        picture = f"<img src='data:image/png;base64,{data}' alt=''>"
    except Exception:  # an unreadable file has no thumbnail; its caption is enough
        picture = "<div>(unreadable)</div>"
    return f"<figure>{picture}<figcaption>{caption}</figcaption></figure>"


def summary_lines(result: AuditResult) -> list[str]:
    """The short table the CLI prints."""
    s = result.summary
    reasons = s["reasons"]
    classes = ", ".join(f"{k} {v}" for k, v in s["classes"].items())
    ratio = f"{s['imbalance_ratio']:.1f}:1" if s["imbalance_ratio"] else "-"
    return [
        f"images:     {s['images']} ({s['readable']} readable), {s['flagged_files']} flagged",
        f"files:      {reasons.get('unreadable', 0)} unreadable, "
        f"{reasons.get('channels', 0)} odd channel count, {reasons.get('size', 0)} odd size; "
        f"hidden files skipped: {_hidden_text(s)}",
        f"classes:    {classes} (imbalance {ratio}); too small for {s['n_folds']} folds: "
        f"{', '.join(s['classes_too_small_for_folds']) or 'none'}",
        f"duplicates: {s['duplicate_groups']} groups ({s['images_in_duplicate_groups']} images; "
        f"{s['exact_duplicate_files']} exact copies), {s['groups_with_conflicting_labels']} "
        "with conflicting labels",
        f"leakage:    {_leak_text(s['leakage'])}",
        f"outliers:   {s['n_outliers']}"
        + (f" (top: {s['outliers'][0]['id']})" if s["outliers"] else ""),
        f"splits:     {s['splits']}",
    ]
