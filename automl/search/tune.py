"""``automl tune``: check everything, then start or resume the study and run its trials.

Order matters: the configuration (already validated when loaded), then the data and its splits,
then the pretrained weights, and only then is anything written (study folder, storage, resolved
configuration). Bad input therefore stops the command before a study exists. Building a backbone
to check its weights initialises TensorFlow's devices, so a run in this process sets up its
device first (memory growth, ``session.setup_device``); with ``--workers``/``--gpus`` the weights
are checked in a process of its own that sees no GPU, so the supervisor never holds GPU memory.

Trials then run in this process (``session.optimize``), or with ``--workers``/``--gpus`` in
worker processes, one fresh process per trial, that ``workers.supervise`` keeps busy. Both stop
by the study's stop rule (``session.py``).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import optuna

from automl.config.schema import Config, check_target_recall, load_config
from automl.data.splits import Splits
from automl.errors import StudyError
from automl.files import atomic_write_text
from automl.search.paths import StudyPaths, artifacts_root, paths_for
from automl.search.session import (
    check_weights,
    imbalance_warning,
    log_trial,
    optimize,
    prepare_splits,
    record_device,
    stop_at_n_trials,
    trials_missing,
)
from automl.search.storage import TrialCounts, counts_by_state, create_or_load, publish_config
from automl.search.workers import Slot, check_weights_apart, plan_slots, supervise

logger = logging.getLogger(__name__)

# Sections whose change would make old and new trials incomparable.
_FROZEN_ON_RESUME = ("data",)
_FROZEN_STUDY_KEYS = ("metric", "direction", "seed")


@dataclass(frozen=True)
class TuneResult:
    """What ``tune`` did, for the summary the CLI prints."""

    study: optuna.Study
    paths: StudyPaths
    counts: TrialCounts
    ran: int
    resumed: bool


def run_tune(
    config: Config, *, progress: bool = True, workers: int | None = None, gpus: str | None = None
) -> TuneResult:
    """Validate data and environment, then start or resume the study until ``n_trials``.

    Trials run in this process, or with ``workers``/``gpus`` in worker processes, one fresh
    process per trial (``workers.py``).
    """
    slots = plan_slots(workers, gpus)
    splits = prepare_splits(config, progress=progress)
    check_target_recall(config, splits.n_classes)  # before any trial, not after the last
    imbalance = imbalance_warning(config, splits)
    if imbalance is not None:
        logger.warning(imbalance)
    if slots:  # the supervisor never touches a GPU: its workers need all their memory
        check_weights_apart(config)
    else:  # sets up this process's device first: growth can be set only before
        check_weights(config)
    paths = paths_for(config)
    resumed = check_resume(config, paths, splits)
    study = _open_study(config, paths, splits)
    before = len(study.get_trials(deepcopy=False))
    if slots:
        _run_in_workers(config, study, slots, gpus, resumed=resumed, progress=progress)
    else:
        _run_here(config, study, splits, resumed=resumed, progress=progress)
    ran = len(study.get_trials(deepcopy=False)) - before
    return TuneResult(study, paths, counts_by_state(study), ran, resumed)


def check_resume(config: Config, paths: StudyPaths, splits: Splits) -> bool:
    """True when the study folder exists; raise if its data or objective would change."""
    if not paths.config.is_file():
        return False
    saved = load_config(paths.config).to_dict()
    current = config.to_dict()
    for section in _FROZEN_ON_RESUME:
        if saved[section] != current[section]:
            raise StudyError(
                f"{paths.config}: study '{config.study.name}' exists with a different "
                f"'{section}' section; its trials would not be comparable. Use the saved "
                f"settings, or start a new study with --study-name NEW_NAME."
            )
    for key in _FROZEN_STUDY_KEYS:
        if saved["study"][key] != current["study"][key]:
            raise StudyError(
                f"{paths.config}: study '{config.study.name}' exists with study.{key}="
                f"{saved['study'][key]!r}, got {current['study'][key]!r}; keep it, or start a "
                "new study with --study-name NEW_NAME."
            )
    if paths.splits.is_file():
        splits.check_matches(paths.splits)
    return True


def _open_study(config: Config, paths: StudyPaths, splits: Splits) -> optuna.Study:
    """Create or load the study, then save its configuration and splits beside it."""
    # Folders this command creates, removed again if the storage refuses: a refused command
    # leaves nothing behind (no empty studies/<name>/ that looks like a study).
    missing = (_first_missing(paths.root), _first_missing(artifacts_root(config)))
    created = [folder for folder in missing if folder is not None]
    _check_writable(paths)
    if artifacts_root(config) != paths.root:
        _check_writable(StudyPaths(artifacts_root(config)), key="study.artifacts_dir")
    try:
        study = create_or_load(config)
    except BaseException:
        for folder in created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    config.save(paths.config)
    atomic_write_text(paths.splits, json.dumps(splits.to_dict()))
    publish_config(study, config, splits.to_dict())
    return study


def _run_in_workers(
    config: Config,
    study: optuna.Study,
    slots: list[Slot],
    gpus: str | None,
    *,
    resumed: bool,
    progress: bool,
) -> None:
    logger.info(
        "Study '%s' (%s): %d worker processes%s, one process per trial",
        config.study.name,
        "resumed" if resumed else "new",
        len(slots),
        f" on GPUs {gpus}" if gpus else "",
    )
    supervise(config, study, slots, progress=progress)


def _run_here(
    config: Config, study: optuna.Study, splits: Splits, *, resumed: bool, progress: bool
) -> None:
    record_device(study, config)
    logger.info(
        "Study '%s' (%s): %d tuning images in %d folds, %s hold-out images, %d classes",
        config.study.name,
        "resumed" if resumed else "new",
        len(splits.tuning),
        len(splits.folds),
        len(splits.holdout) if splits.holdout is not None else "no",
        splits.n_classes,
    )
    n_trials = config.study.n_trials
    missing = trials_missing(study.get_trials(deepcopy=False), n_trials)
    if missing == 0:
        return
    callbacks = [log_trial, *stop_at_n_trials(n_trials)]
    optimize(study, config, splits, n_trials=missing, callbacks=callbacks, progress=progress)


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (None: it exists)."""
    folder = folder.resolve()
    if folder.exists():
        return None
    while not folder.parent.exists():
        folder = folder.parent
    return folder


def _check_writable(paths: StudyPaths, key: str = "study.studies_dir") -> None:
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        probe = paths.root / ".write-test"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        fix = "--studies-dir" if key == "study.studies_dir" else f"--set {key}=FOLDER"
        raise StudyError(
            f"{key}: cannot write the study folder {paths.root} "
            f"({exc.strerror or exc}); choose a writable folder with {fix}."
        ) from exc
