"""Where a study keeps its files: defined here once.

A study folder (``studies/<name>/``) holds ``config.yaml``, ``splits.json``, the journal
storage, ``ensemble/`` and ``report/``; trials keep fold models and dashboard pictures in
``<artifacts>/trials/<number>/`` (``study.artifacts_dir``, by default the study folder itself).
Decoded images are cached beside the studies in ``.cache/``, shared by studies over the same
data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from automl.config.schema import Config

# The study folder.
CONFIG_FILE = "config.yaml"
SPLITS_FILE = "splits.json"
JOURNAL_FILE = "study.journal"
ENSEMBLE_DIR = "ensemble"
REPORT_DIR = "report"
AUDIT_DIR = "audit"  # automl audit --space: its reports
ENSEMBLE_LOCK = ".ensemble.lock"  # held by one `automl ensemble` at a time
CACHE_DIR = ".cache"

# <study>/ensemble/: one set, swapped in whole (ensemble/folder.py).
MANIFEST = "ensemble.json"
HOLDOUT_PREDICTIONS = "holdout_predictions.csv"
HOLDOUT_CONFUSION_CSV = "confusion_matrix.csv"
HOLDOUT_CONFUSION_PNG = "confusion_matrix.png"

# <study>/report/.
REPORT_FILE = "report.html"
REPORT_CONFUSION_PNG = "holdout_confusion_matrix.png"
REPORT_ROC_PNG = "roc_curves.png"

# The artifacts root (``study.artifacts_dir``): trial folders and the dashboard's artifact store.
TRIALS_DIR = "trials"
ARTIFACTS_DIR = "artifacts"
PREVIEWS_DIR = "previews"  # one augmentation preview per distinct setting, copied per trial

# <artifacts>/trials/<number>/: one trial's files.
OOF_FILE = "oof.npz"
HISTORY_FILE = "history.json"
LEARNING_CURVES = "learning_curves.png"
OOF_CONFUSION_CSV = "oof_confusion_matrix.csv"
OOF_CONFUSION_PNG = "oof_confusion_matrix.png"
AUGMENTATION_PREVIEW = "augmentation_preview.png"
FOLD_MODEL_GLOB = "fold_*.keras"
FOLD_RECORD_GLOB = "fold_*.npz"
_FOLD_MODEL = re.compile(r"fold_(\d+)\.keras")


def previous_folder(target: Path) -> Path:
    """``.<name>.previous``: where a folder's previous set waits while a new one is swapped in."""
    return target.with_name(f".{target.name}.previous")


def staging_folder(target: Path, unique: str) -> Path:
    """``.<name>.<unique>.tmp``: a set being written beside ``target`` before the swap."""
    return target.with_name(f".{target.name}.{unique}.tmp")


def staging_glob(target: Path) -> str:
    """The pattern of :func:`staging_folder` names, for the clean-up after a killed run."""
    return f".{target.name}.*.tmp"


def journal_backup(journal: Path, stamp: str) -> Path:
    """``study.journal.bak-<UTC time>``: the copy a repair keeps of the damaged journal."""
    return journal.with_name(f"{journal.name}.bak-{stamp}")


def report_picture_name(section_id: str) -> str:
    """``<section id>.png`` (dashes as underscores): a study-plot picture of the report."""
    return f"{section_id.replace('-', '_')}.png"


def preview_name(key: str) -> str:
    """``previews/augmentation_<key>.png``: the cached preview of one augmentation setting."""
    return f"augmentation_{key[:16]}.png"


def fold_model_name(fold: int) -> str:
    """``fold_<k>.keras``: the saved model of fold ``k``."""
    return f"fold_{fold}.keras"


def fold_record_name(fold: int) -> str:
    """``fold_<k>.npz``: fold ``k``'s finished record, until the trial completes."""
    return f"fold_{fold}.npz"


def fold_of_model(name: str) -> int | None:
    """The fold ``k`` of a file named ``fold_<k>.keras``; None for any other name."""
    match = _FOLD_MODEL.fullmatch(name)
    return int(match.group(1)) if match else None


def trial_folder_under(artifacts: Path, number: int) -> Path:
    """``<artifacts>/trials/<number, 5 digits>``: one trial's folder under an artifacts root."""
    return Path(artifacts) / TRIALS_DIR / f"{number:05d}"


@dataclass(frozen=True)
class StudyPaths:
    """The files of one study folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def splits(self) -> Path:
        return self.root / SPLITS_FILE

    @property
    def journal(self) -> Path:
        return self.root / JOURNAL_FILE

    @property
    def ensemble(self) -> Path:
        return self.root / ENSEMBLE_DIR

    @property
    def report(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def audit(self) -> Path:
        return self.root / AUDIT_DIR

    @property
    def data_cache(self) -> Path:
        # Beside the studies, so studies over the same data share one decoded copy.
        return self.root.parent / CACHE_DIR


def paths_for(config: Config) -> StudyPaths:
    return StudyPaths(config.study.directory)


def artifacts_root(config: Config) -> Path:
    """Where trials keep ``trials/<number>/`` and dashboard pictures (``study.artifacts_dir``)."""
    return config.study.artifacts_directory


def trial_folder(config: Config, number: int) -> Path:
    """A trial's folder of fold models, resolved on this machine (not the path it recorded)."""
    return trial_folder_under(artifacts_root(config), number)
