"""``ensemble.json``: the saved ensemble as a typed result that survives moving the study.

``automl ensemble`` returns an :class:`EnsembleResult` and saves it as
``<study>/ensemble/ensemble.json``; ``predict``, ``export``, ``report`` and the dashboard note
read it back with :meth:`EnsembleResult.load`. The JSON keys are the ones users and scripts
already read (:meth:`EnsembleResult.to_json_dict` lists them).

Fold models are written relative to the study's artifacts folder (``study.artifacts_dir``, by
default the study folder), e.g. ``trials/00003/fold_0.keras``, and resolved against the
artifacts folder of the machine that reads them: a study folder copied to another path or
machine still finds its models. Manifests of automl 0.1 hold absolute paths; one that does not
exist here is looked up by its trial number and file name under this machine's artifacts folder.
Keys added over time default to what older versions meant: no ``weight`` is 1, no ``selection``
is ``top_k``, no ``library_size`` is the number of members.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automl.config.methods import SelectionMethod
from automl.ensemble.folder import readable_folder
from automl.ensemble.selection import SelectionStep
from automl.ensemble.thresholds import Threshold
from automl.errors import StudyError
from automl.files import write_json
from automl.metrics import METRICS
from automl.search.paths import MANIFEST, StudyPaths, trial_folder_under


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class, and how many images of it were scored."""

    precision: float
    recall: float
    f1: float
    support: int

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> ClassScores:
        return cls(
            float(data["precision"]),
            float(data["recall"]),
            float(data["f1"]),
            int(data["support"]),
        )


@dataclass(frozen=True)
class Scores:
    """Scores of one set of predictions: a summary, or a full report (the hold-out).

    Attributes:
        accuracy: share of images whose predicted label is right.
        balanced_accuracy: mean recall over the classes.
        macro_f1: mean F1 over the classes.
        roc_auc: of the probabilities; None where undefined (a class absent).
        n_samples: images scored; None in a summary, which has only the four scores above.
        per_class: class name -> its scores, in class order (full reports only).
        confusion_matrix: counts, rows true classes, columns predicted (full reports only).
    """

    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    roc_auc: float | None
    n_samples: int | None = None
    per_class: Mapping[str, ClassScores] = field(default_factory=dict)
    confusion_matrix: tuple[tuple[int, ...], ...] = ()

    def get(self, metric: str) -> float | None:
        """The score named ``metric`` (one of ``automl.metrics.METRICS``)."""
        if metric not in METRICS:
            raise KeyError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
        return getattr(self, metric)

    def summary(self) -> Scores:
        """The four scores alone, as ``out_of_fold`` and ``ensemble_tta`` keep them."""
        return Scores(self.accuracy, self.balanced_accuracy, self.macro_f1, self.roc_auc)

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: self.get(name) for name in METRICS}
        if self.n_samples is not None:
            data["n_samples"] = self.n_samples
            data["per_class"] = {k: v.to_json_dict() for k, v in self.per_class.items()}
            data["confusion_matrix"] = [list(row) for row in self.confusion_matrix]
        return data

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Scores:
        """Read a summary or a full report (``automl.metrics.classification_report``)."""
        roc_auc = data.get("roc_auc")
        full = "n_samples" in data
        return cls(
            accuracy=float(data["accuracy"]),
            balanced_accuracy=float(data["balanced_accuracy"]),
            macro_f1=float(data["macro_f1"]),
            roc_auc=None if roc_auc is None else float(roc_auc),
            n_samples=int(data["n_samples"]) if full else None,
            per_class={
                str(k): ClassScores.from_json_dict(v)
                for k, v in (data.get("per_class") or {}).items()
            },
            confusion_matrix=tuple(
                tuple(int(c) for c in row) for row in data.get("confusion_matrix") or ()
            ),
        )


@dataclass(frozen=True)
class TrialScores:
    """The scores of one trial's own fold models voting alone (the best single trial)."""

    trial: int
    scores: Scores

    def to_json_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, **self.scores.to_json_dict()}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> TrialScores:
        return cls(int(data["trial"]), Scores.from_json_dict(data))


@dataclass(frozen=True)
class Rates:
    """Recall and precision of the positive class at the chosen decision threshold."""

    recall: float
    precision: float


@dataclass(frozen=True)
class HoldoutScores:
    """The ensemble and the best single trial on the hold-out set.

    Attributes:
        n_images: hold-out images scored.
        ensemble: full report of the ensemble's vote.
        best_single_trial: full report of the best single trial's fold models.
        ensemble_tta: summary with test-time augmentation (flips); None unless asked for.
        at_threshold: rates at the decision threshold; None without one.
    """

    n_images: int
    ensemble: Scores
    best_single_trial: TrialScores
    ensemble_tta: Scores | None = None
    at_threshold: Rates | None = None

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "n_images": self.n_images,
            "ensemble": self.ensemble.to_json_dict(),
            "best_single_trial": self.best_single_trial.to_json_dict(),
        }
        if self.ensemble_tta is not None:
            data["ensemble_tta"] = self.ensemble_tta.to_json_dict()
        if self.at_threshold is not None:
            data["at_threshold"] = {
                "recall": self.at_threshold.recall,
                "precision": self.at_threshold.precision,
            }
        return data

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> HoldoutScores:
        tta, rates = data.get("ensemble_tta"), data.get("at_threshold")
        return cls(
            n_images=int(data["n_images"]),
            ensemble=Scores.from_json_dict(data["ensemble"]),
            best_single_trial=TrialScores.from_json_dict(data["best_single_trial"]),
            ensemble_tta=Scores.from_json_dict(tta) if tta else None,
            at_threshold=(
                Rates(float(rates["recall"]), float(rates["precision"])) if rates else None
            ),
        )


@dataclass(frozen=True)
class EnsembleMember:
    """One trial of the ensemble, or a candidate for it (``library.trial_library``): one type.

    Attributes:
        trial: the trial number.
        cv_value: its study value (CV score).
        models: its ``fold_<k>.keras`` models on this machine, in fold order.
        weight: how many votes each of its fold models casts (greedy selection's multiplicity).
        oof_score: its own out-of-fold score; None without ``oof.npz`` (or not scored yet).
        oof_path: where its ``oof.npz`` is on this machine (may not exist); set for candidates,
            not saved in ``ensemble.json`` and None in a loaded one.
    """

    trial: int
    cv_value: float
    models: tuple[Path, ...]
    weight: int = 1
    oof_score: float | None = None
    oof_path: Path | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EnsembleResult:
    """What ``automl ensemble`` chose and measured; ``ensemble.json`` on disk.

    Attributes:
        study: the study's name.
        created: when it was built (UTC, ISO 8601).
        metric: the study metric every CV and out-of-fold score is in.
        selection: ``"greedy"`` or ``"top_k"``.
        vote: ``"majority"`` or ``"soft"``.
        top_k: members asked for (``top_k`` selection); None for greedy.
        class_names: the classes, in label order.
        image_size: pixels the models take (height = width).
        library_size: trials the members were chosen from.
        members: the chosen trials, in the order they were chosen.
        artifacts: the artifacts folder model paths are resolved against (not saved: each
            machine has its own).
        selection_curve: the selection's steps; empty when it had no out-of-fold data.
        out_of_fold: the members' out-of-fold vote (optimistic: the selection saw it).
        out_of_fold_best_single_trial: the best single trial out-of-fold.
        holdout: scores on the hold-out set; None without one.
        threshold: the decision threshold chosen out-of-fold (``ensemble.target_recall``).
        shortfall: why there are fewer members than ``top_k`` asked for; None otherwise.
    """

    study: str
    created: str
    metric: str
    selection: str
    vote: str
    top_k: int | None
    class_names: tuple[str, ...]
    image_size: int
    library_size: int
    members: tuple[EnsembleMember, ...]
    artifacts: Path
    selection_curve: tuple[SelectionStep, ...] = ()
    out_of_fold: Scores | None = None
    out_of_fold_best_single_trial: TrialScores | None = None
    holdout: HoldoutScores | None = None
    threshold: Threshold | None = None
    shortfall: str | None = None

    @property
    def n_models(self) -> int:
        """Fold model files in the ensemble."""
        return sum(len(m.models) for m in self.members)

    @property
    def n_votes(self) -> int:
        """Votes cast per image: each fold model votes its trial's weight times."""
        return sum(m.weight * len(m.models) for m in self.members)

    def model_weights(self) -> list[int]:
        """One weight per fold model, in the order of :meth:`model_paths`."""
        return [m.weight for m in self.members for _ in m.models]

    def model_paths(self) -> list[Path]:
        """Every fold model on this machine, member by member, in fold order.

        Raises:
            StudyError: a model file is missing (one line: which, and what to do).
        """
        for member in self.members:
            for path in member.models:
                if not path.is_file():
                    raise StudyError(
                        f"{path}: fold model of trial {member.trial} in the ensemble is missing "
                        f"(artifacts folder {self.artifacts}); restore the trial's folder, or run "
                        f"`automl ensemble --study {self.study}` again to choose among trials "
                        "whose models exist."
                    )
        return [path for member in self.members for path in member.models]

    def to_json_dict(self) -> dict[str, Any]:
        """The content of ``ensemble.json``, model paths relative to :attr:`artifacts`."""
        return {
            "study": self.study,
            "created": self.created,
            "metric": self.metric,
            "selection": self.selection,
            "vote": self.vote,
            "top_k": self.top_k,
            "class_names": list(self.class_names),
            "image_size": self.image_size,
            "library_size": self.library_size,
            "members": [
                {
                    "trial": m.trial,
                    "cv_value": m.cv_value,
                    "weight": m.weight,
                    "oof_score": m.oof_score,
                    "models": [_relative(path, self.artifacts) for path in m.models],
                }
                for m in self.members
            ],
            "n_models": self.n_models,
            "n_votes": self.n_votes,
            "selection_curve": [step.to_dict() for step in self.selection_curve],
            "out_of_fold": _json_or_none(self.out_of_fold),
            "out_of_fold_best_single_trial": _json_or_none(self.out_of_fold_best_single_trial),
            "holdout": _json_or_none(self.holdout),
            "threshold": self.threshold.to_dict() if self.threshold else None,
            "shortfall": self.shortfall,
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], artifacts: Path) -> EnsembleResult:
        """Read ``ensemble.json`` of any automl version; resolve models under ``artifacts``.

        Raises:
            KeyError: a key every version wrote is missing.
        """
        artifacts = Path(artifacts)
        members = tuple(_member(m, artifacts) for m in data["members"])
        # Absent or null in older manifests, and when there was nothing to score.
        oof, single = data.get("out_of_fold"), data.get("out_of_fold_best_single_trial")
        holdout, threshold, top_k = data.get("holdout"), data.get("threshold"), data.get("top_k")
        return cls(
            study=str(data["study"]),
            created=str(data.get("created", "")),
            metric=str(data["metric"]),
            # Before greedy selection existed every ensemble was top_k.
            selection=str(data.get("selection", SelectionMethod.TOP_K)),
            vote=str(data["vote"]),
            top_k=None if top_k is None else int(top_k),
            class_names=tuple(str(n) for n in data["class_names"]),
            image_size=int(data["image_size"]),
            library_size=int(data.get("library_size", len(members))),
            members=members,
            artifacts=artifacts,
            selection_curve=tuple(
                SelectionStep.from_dict(step) for step in data.get("selection_curve") or ()
            ),
            out_of_fold=Scores.from_json_dict(oof) if oof else None,
            out_of_fold_best_single_trial=TrialScores.from_json_dict(single) if single else None,
            holdout=HoldoutScores.from_json_dict(holdout) if holdout else None,
            threshold=Threshold.from_dict(threshold) if threshold else None,
            shortfall=data.get("shortfall"),
        )

    def save(self, path: Path) -> None:
        """Write :meth:`to_json_dict` to ``path`` (atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_json_dict())

    @classmethod
    def load(cls, paths: StudyPaths, artifacts: Path | None = None) -> EnsembleResult:
        """The ensemble saved in a study folder, its models resolved under ``artifacts``.

        Args:
            paths: the study folder.
            artifacts: the study's artifacts folder on this machine (default: the study folder).

        Raises:
            StudyError: there is no ensemble yet, or its file cannot be read.
        """
        path = readable_folder(paths.ensemble) / MANIFEST  # a swap cut short: the previous
        name = paths.root.name
        if not path.is_file():
            raise StudyError(
                f"study '{name}' has no ensemble yet ({path} is missing); run "
                f"`automl ensemble --study {name}` first."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_json_dict(data, paths.root if artifacts is None else artifacts)
        except (ValueError, KeyError, TypeError) as exc:
            raise StudyError(
                f"{path}: not an ensemble automl can read ({type(exc).__name__}: {exc}); run "
                f"`automl ensemble --study {name}` again to rebuild it."
            ) from exc


def _member(data: Mapping[str, Any], artifacts: Path) -> EnsembleMember:
    trial = int(data["trial"])
    oof_score = data.get("oof_score")
    return EnsembleMember(
        trial=trial,
        cv_value=float(data["cv_value"]),
        models=tuple(_locate(str(p), trial, artifacts) for p in data["models"]),
        weight=int(data.get("weight", 1)),  # before weights existed every model voted once
        oof_score=None if oof_score is None else float(oof_score),
    )


def _locate(saved: str, trial: int, artifacts: Path) -> Path:
    """Where a fold model listed in ``ensemble.json`` is on this machine."""
    path = Path(saved)
    if not path.is_absolute():
        return artifacts / path
    if path.is_file():
        return path
    # automl 0.1 wrote absolute paths: the folder has moved since, or another machine wrote it.
    return trial_folder_under(artifacts, trial) / path.name


def _relative(path: Path, artifacts: Path) -> str:
    try:
        return path.relative_to(artifacts).as_posix()
    except ValueError:  # outside the artifacts folder (never written so): keep it whole
        return str(path)


def _json_or_none(value: Scores | TrialScores | HoldoutScores | None) -> dict[str, Any] | None:
    return None if value is None else value.to_json_dict()
