"""Where a study keeps its files: defined here once.

A study folder (``studies/<name>/``) holds ``config.yaml``, ``splits.json``, the journal
storage, ``ensemble/`` and ``report/``; trials keep fold models and dashboard pictures in
``<artifacts>/trials/<number>/`` (``study.artifacts_dir``, by default the study folder itself).
Decoded images are cached beside the studies in ``.cache/``, shared by studies over the same
data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from automl.config.schema import Config

CONFIG_FILE = "config.yaml"
SPLITS_FILE = "splits.json"
JOURNAL_FILE = "study.journal"
TRIALS_DIR = "trials"
ENSEMBLE_DIR = "ensemble"
CACHE_DIR = ".cache"


def trial_dir(artifacts: Path, number: int) -> Path:
    """``<artifacts>/trials/<number, 5 digits>``: the folder of one trial's fold models."""
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
    def trials(self) -> Path:
        return self.root / TRIALS_DIR

    @property
    def ensemble(self) -> Path:
        return self.root / ENSEMBLE_DIR

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
    return trial_dir(artifacts_root(config), number)
