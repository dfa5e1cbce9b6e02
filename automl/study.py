"""Create, resume and find Optuna studies from a configuration: storage, sampler, pruner.

Every study has a folder ``<studies_dir>/<name>/`` holding the resolved configuration
(``config.yaml``), its splits (``splits.json``), the trials' fold models (``trials/``) and the
ensemble's outputs (``ensemble/``). Its Optuna storage is, by default, the embedded journal file
``study.journal`` in that folder: one file, no server, safe for several local processes
(Optuna's ``JournalFileBackend`` appends under a file lock), and optuna-dashboard opens it
directly. Any Optuna storage URL (``sqlite:///``, ``postgresql+psycopg2://``, ``mysql://``)
can replace it with ``--storage``.

This module imports no TensorFlow.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from automl.config import PRUNERS, SAMPLERS, Config, grid_search_space, load_config
from automl.errors import ConfigError, StudyError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
SPLITS_FILE = "splits.json"
JOURNAL_FILE = "study.journal"


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
        return self.root / "trials"

    @property
    def ensemble(self) -> Path:
        return self.root / "ensemble"

    @property
    def data_cache(self) -> Path:
        # Beside the studies, so studies over the same data share one decoded copy.
        return self.root.parent / ".cache"


def paths_for(config: Config) -> StudyPaths:
    return StudyPaths(config.study.directory)


def storage_url_for_display(url: str | None, paths: StudyPaths) -> str:
    """The storage as a person should see it: embedded journal path, or URL without password."""
    if url is None:
        return str(paths.journal)
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(config: Config) -> optuna.storages.BaseStorage | str:
    """The study's storage: the embedded journal file, or the configured URL."""
    if config.study.storage is not None:
        return config.study.storage
    journal = paths_for(config).journal
    journal.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(
        JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal)))
    )


def make_sampler(config: Config, *, n_existing_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded.

    A resumed study re-creates its sampler; seeding it with ``seed + n_existing_trials`` keeps a
    resumed random/startup phase from replaying the first trials' parameters.
    """
    spec = config.study.sampler
    cls = getattr(optuna.samplers, SAMPLERS[spec.name])
    seed = config.study.seed + n_existing_trials
    if spec.name == "grid":
        return cls(
            grid_search_space(config.space, source=config.source), seed=seed, **spec.options
        )
    if spec.name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                f"{config.source}: study.sampler is cmaes, but the 'cmaes' package is not "
                "installed; pip install cmaes, or use tpe."
            ) from exc
    try:
        return cls(seed=seed, **spec.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config.source}: study.sampler: {exc}") from exc


def make_pruner(config: Config) -> optuna.pruners.BasePruner:
    """The configured pruner (``none`` -> ``NopPruner``)."""
    spec = config.study.pruner
    cls = getattr(optuna.pruners, PRUNERS[spec.name])
    try:
        return cls(**spec.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config.source}: study.pruner: {exc}") from exc


def create_or_load(config: Config) -> optuna.Study:
    """Create the study, or load it when it exists (resume), and enqueue the known-good trials."""
    storage = open_storage(config)
    shown = storage_url_for_display(config.study.storage, paths_for(config))
    try:
        existing = optuna.study.get_all_study_names(storage)
    except Exception as exc:  # noqa: BLE001 - any storage failure is an environment error
        raise StudyError(
            f"study.storage: cannot open {shown}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}; check the URL, the server "
            "and the credentials."
        ) from exc
    n_existing = 0
    if config.study.name in existing:
        n_existing = len(
            optuna.load_study(study_name=config.study.name, storage=storage).get_trials(
                deepcopy=False
            )
        )
    study = optuna.create_study(
        study_name=config.study.name,
        storage=storage,
        sampler=make_sampler(config, n_existing_trials=n_existing),
        pruner=make_pruner(config),
        direction=config.study.direction,
        load_if_exists=True,
    )
    if n_existing == 0:
        with warnings.catch_warnings():  # set_metric_names is still marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([config.study.metric])
        study.set_user_attr("automl_config", str(paths_for(config).config))
        for params in config.study.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
    return study


def load_study(name: str, studies_dir: str | Path = "studies") -> tuple[Config, optuna.Study]:
    """Open an existing study by name from its saved configuration."""
    paths = StudyPaths(Path(studies_dir).expanduser().resolve() / name)
    if not paths.config.is_file():
        known = sorted(p.name for p in Path(studies_dir).glob("*/") if (p / CONFIG_FILE).is_file())
        raise StudyError(
            f"--study {name}: no study at {paths.root} (no {CONFIG_FILE}); known studies in "
            f"{studies_dir}: {', '.join(known) or 'none'}. Run `automl tune --space FILE` first "
            "or pass --studies-dir."
        )
    config = load_config(paths.config)
    storage = open_storage(config)
    try:
        study = optuna.load_study(study_name=config.study.name, storage=storage)
    except KeyError as exc:
        raise StudyError(
            f"--study {name}: {paths.config} exists but its storage holds no study "
            f"'{config.study.name}'; run `automl tune --space {paths.config}` to start it."
        ) from exc
    return config, study


def finished_counts(study: optuna.Study) -> dict[str, int]:
    """How many trials are in each state."""
    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    return counts


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The ``k`` best completed trials, best first (ties: lower trial number first)."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None
    ]
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    complete.sort(key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]
    return complete[:k]


def leaderboard_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial for ``automl show``: state, CV mean +- std, per-fold scores, params."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "cv_std": t.user_attrs.get("cv_std"),
                "fold_scores": t.user_attrs.get("fold_scores", []),
                "epochs": t.user_attrs.get("epochs_total"),
                "pruned_at_step": t.user_attrs.get("pruned_at_step"),
                "seconds": t.user_attrs.get("train_seconds"),
                "params": dict(t.params),
                "fail_reason": t.user_attrs.get("fail_reason"),
            }
        )
    return rows
