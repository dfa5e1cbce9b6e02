"""Create, resume and find Optuna studies from a configuration: storage, sampler, pruner.

Every study has a folder ``<studies_dir>/<name>/`` holding the resolved configuration
(``config.yaml``), its splits (``splits.json``), the trials' fold models (``trials/``) and the
ensemble's outputs (``ensemble/``). Trials write their folders under ``study.artifacts_dir``
when it is set (a folder every machine running workers can reach), else under the study folder.
Its Optuna storage is, by default, the embedded journal file ``study.journal`` in that folder:
one file, no server, safe for several local processes (Optuna's ``JournalFileBackend`` appends
under an ``flock``), and optuna-dashboard opens it directly. Any Optuna RDB URL (``sqlite:///``,
``postgresql+psycopg2://``, ``mysql+pymysql://``) can replace it with ``--storage``; several
machines share one study through PostgreSQL or MySQL. Every storage gets a heartbeat, so the
trials of dead workers are failed and retried (see ``heartbeat.py``).

A URL's password is never saved nor shown (``config/storage_url.py``): ``config.yaml`` keeps the
URL without it, and a process takes it from ``AUTOML_STORAGE`` or the driver's ``PGPASSWORD`` /
``~/.pgpass`` when it connects. A journal whose last write was torn (a full disk) is refused on
open with the command that repairs it (``journal.py``).

This module imports no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from automl.config.portfolio import warm_start_trials
from automl.config.schema import (
    PRUNERS,
    RUNG_PRUNERS,
    SAMPLERS,
    Config,
    config_from_dict,
    grid_search_space,
    load_config,
)
from automl.config.storage_url import mask_url, runtime_url, scrub
from automl.errors import StudyError
from automl.search.attrs import (
    CONFIG_ATTR,
    CONFIG_MISSING_ATTR,
    CONFIG_PATH_ATTR,
    LATENCY,
    RETRY_OF,
    SPLITS_ATTR,
    TrialSummary,
)
from automl.search.heartbeat import (
    HeartbeatJournalStorage,
    HeartbeatRDBStorage,
    RetryStaleTrial,
    journal_lock,
)
from automl.search.journal import check_journal, damage_error
from automl.search.paths import CONFIG_FILE, StudyPaths, paths_for
from automl.search.pruning import FirstFoldPruner, rung_options
from automl.search.ranking import rank_key

logger = logging.getLogger(__name__)

# The second objective's name: the trial attribute it is measured into.
LATENCY_OBJECTIVE = LATENCY


def splits_fingerprint(splits_dict: dict[str, Any]) -> str:
    """SHA-256 of the saved splits, so a worker elsewhere can check it reads the same data."""
    return hashlib.sha256(json.dumps(splits_dict, sort_keys=True).encode("utf-8")).hexdigest()


def storage_url_for_display(url: str | None, paths: StudyPaths) -> str:
    """The storage as a person should see it: embedded journal path, or URL without password."""
    if url is None:
        return str(paths.journal)
    return mask_url(url)


def open_storage(config: Config) -> optuna.storages.BaseStorage:
    """The study's storage with a heartbeat: the embedded journal file, or the configured URL.

    A URL without a password gets it from ``AUTOML_STORAGE`` when that names the same database
    (``storage_url.runtime_url``), else the driver looks in ``PGPASSWORD`` / ``~/.pgpass``.

    Raises:
        StudyError: the server cannot be reached, the URL is wrong or its driver is missing
            (one line; the password is never shown), or the journal file has a torn line.
    """
    study = config.study
    retry = RetryStaleTrial(study.max_retries)
    if study.storage is None:
        journal = paths_for(config).journal
        journal.parent.mkdir(parents=True, exist_ok=True)
        check_journal(journal, study.name)  # before Optuna appends to a torn last line
        try:
            return HeartbeatJournalStorage(
                JournalFileBackend(str(journal), lock_obj=journal_lock(str(journal))),
                heartbeat_interval=study.heartbeat_interval,
                grace_period=study.grace_period,
                stale_trial_callback=retry,
            )
        except ValueError as exc:  # Optuna's JSONDecodeError / "Invalid log format."
            error = damage_error(journal, study.name)
            if error is None:
                raise
            raise error from exc
    return connect_url(
        runtime_url(study.storage),
        heartbeat_interval=study.heartbeat_interval,
        grace_period=study.grace_period,
        stale_trial_callback=retry,
    )


def connect_url(url: str, **heartbeat: Any) -> optuna.storages.RDBStorage:
    """An ``RDBStorage`` for ``url`` (``heartbeat``: its heartbeat keyword arguments).

    Raises:
        StudyError: the server cannot be reached, the URL is wrong or its driver is missing
            (one line; the password is never shown).
    """
    shown = mask_url(url)
    kwargs = {}
    if heartbeat:
        kwargs = {
            "heartbeat_interval": heartbeat["heartbeat_interval"],
            "grace_period": heartbeat.get("grace_period"),
            "heartbeat_stale_trial_callback": heartbeat.get("stale_trial_callback"),
        }
    try:
        with warnings.catch_warnings():  # heartbeat_interval is still marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if kwargs:  # beats that survive a database blip, as the journal's do
                return HeartbeatRDBStorage(url, **kwargs)
            return optuna.storages.RDBStorage(url, **kwargs)
    except ImportError as exc:
        raise StudyError(
            f"study.storage: no database driver for {shown} "
            f"({scrub(_first_line(exc.__cause__ or exc), url)})"
            "; for PostgreSQL pip install 'automl[postgres]' (psycopg2), for MySQL pip install "
            "pymysql and use mysql+pymysql://."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any storage failure is an environment error
        raise StudyError(
            f"study.storage: cannot open {shown}: {type(exc).__name__}: "
            f"{scrub(_first_line(exc), url)}; check the URL (dialect+driver://user@host:port/"
            "database), that the server runs and accepts connections from this machine, and "
            "the credentials (the password: AUTOML_STORAGE, PGPASSWORD or ~/.pgpass)."
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # SQLAlchemy prefixes the driver's error: "(psycopg2.OperationalError) connection ..."
    text = re.sub(r"^\([\w.]+\)\s*", "", text)
    return (text.splitlines() or [""])[0][:200]


def make_sampler(
    config: Config, *, n_existing_trials: int = 0, salt: int = 0
) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded.

    A resumed study re-creates its sampler; seeding it with ``seed + n_existing_trials`` keeps a
    resumed random/startup phase from replaying the first trials' parameters. Parallel workers
    add a ``salt`` of their own, so two workers that start at the same moment draw different
    parameters.
    """
    spec = config.study.sampler
    cls = getattr(optuna.samplers, SAMPLERS[spec.name])
    seed = (config.study.seed + n_existing_trials + salt) % 2**31
    if spec.name == "grid":
        return cls(
            grid_search_space(config.space, source=config.source), seed=seed, **spec.options
        )
    # Names, types and values of the options were checked when the configuration was read.
    return cls(seed=seed, **spec.options)


def make_pruner(config: Config) -> optuna.pruners.BasePruner:
    """The configured pruner (``none`` -> ``NopPruner``); rung pruners inside fold 0.

    Hyperband and successive halving get fold 0's epochs as their budget (``pruning.py``).
    """
    spec = config.study.pruner
    cls = getattr(optuna.pruners, PRUNERS[spec.name])
    if spec.name not in RUNG_PRUNERS:
        # The options were checked (and the pruner built once) when the configuration was read.
        return cls(**spec.options)
    stride = config.space.max_epochs()
    return FirstFoldPruner(cls(**rung_options(spec.name, spec.options, stride)), stride)


def publish_config(study: optuna.Study, config: Config, splits_dict: dict[str, Any]) -> None:
    """Store the resolved configuration and the splits' fingerprint in the study.

    ``automl worker`` on another machine rebuilds the configuration from them. The storage URL
    is left out: it may hold a password, and the worker is given it anyway.
    """
    resolved = config.to_dict()
    resolved["study"]["storage"] = None
    try:
        json.dumps(resolved)
    except (TypeError, ValueError) as exc:  # e.g. a YAML date somewhere in the space
        logger.warning(
            "the configuration cannot be stored in the study as JSON; `automl worker "
            "--storage` on another machine will need a copy of %s",
            paths_for(config).config,
        )
        study.set_user_attr(CONFIG_MISSING_ATTR, f"not JSON: {exc}"[:300])
    else:
        study.set_user_attr(CONFIG_ATTR, resolved)
    study.set_user_attr(SPLITS_ATTR, splits_fingerprint(splits_dict))


def config_from_study(study: optuna.Study, *, storage: str, studies_dir: Path) -> Config:
    """The configuration a study was tuned with, for a worker on a machine without its folder."""
    resolved = study.user_attrs.get(CONFIG_ATTR)
    if not isinstance(resolved, dict):
        why = study.user_attrs.get(CONFIG_MISSING_ATTR)
        if why:
            raise StudyError(
                f"study '{study.study_name}' could not store its configuration ({why}); copy "
                f"studies/{study.study_name}/config.yaml from the machine that ran `automl tune` "
                "to this machine's studies folder."
            )
        raise StudyError(
            f"study '{study.study_name}' holds no automl configuration; start it with "
            "`automl tune --space FILE --storage URL` first."
        )
    resolved["study"]["storage"] = storage
    resolved["study"]["studies_dir"] = str(studies_dir)
    source = f"study '{study.study_name}' (configuration stored in {mask_url(storage)})"
    return config_from_dict(resolved, source=source, default_name=study.study_name)


def create_or_load(config: Config) -> optuna.Study:
    """Create the study, or load it when it exists (resume), and enqueue the known-good trials.

    A new study enqueues the user's ``study.enqueue`` entries, then the warm-start portfolio
    projected into the space (``config/portfolio.py``); a resumed one enqueues nothing again.
    """
    storage = open_storage(config)
    shown = storage_url_for_display(config.study.storage, paths_for(config))
    try:
        existing = optuna.study.get_all_study_names(storage)
    except Exception as exc:  # noqa: BLE001 - any storage failure is an environment error
        reason = _first_line(exc)
        if config.study.storage is not None:
            reason = scrub(reason, runtime_url(config.study.storage))
        raise StudyError(
            f"study.storage: cannot open {shown}: {type(exc).__name__}: {reason}; "
            "check the URL, the server and the credentials."
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
        directions=config.study.directions,
        load_if_exists=True,
    )
    if n_existing == 0:
        with warnings.catch_warnings():  # set_metric_names is still marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(
                [config.study.metric, LATENCY_OBJECTIVE][: len(study.directions)]
            )
        study.set_user_attr(CONFIG_PATH_ATTR, str(paths_for(config).config))
        for warm in warm_start_trials(config.space, config.study.enqueue, config.study.warm_start):
            study.enqueue_trial(warm.params, skip_if_exists=True)
            logger.info("enqueued %s: %s", warm.origin, warm.params)
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
    # The study lives where its config.yaml is, whatever studies_dir it was saved with: a study
    # folder copied to another path or machine opens (journal, models, ensemble) from there.
    here = [f"study.studies_dir={json.dumps(str(paths.root.parent))}"]
    config = load_config(paths.config, here)
    storage = open_storage(config)
    try:
        study = optuna.load_study(study_name=config.study.name, storage=storage)
    except KeyError as exc:
        raise StudyError(
            f"--study {name}: {paths.config} exists but its storage holds no study "
            f"'{config.study.name}'; run `automl tune --space {paths.config}` to start it."
        ) from exc
    return config, study


@dataclass(frozen=True)
class TrialCounts:
    """How many of a study's trials are in each of Optuna's states."""

    complete: int = 0
    pruned: int = 0
    fail: int = 0
    running: int = 0
    waiting: int = 0


def counts_by_state(study: optuna.Study) -> TrialCounts:
    """How many trials are in each state (every state of ``TrialState``)."""
    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    return TrialCounts(**counts)


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The ``k`` best completed trials, best first (``ranking.rank_key``)."""
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values
    ]
    direction = _direction(study)
    complete.sort(key=lambda t: rank_key("complete", float(t.values[0]), t.number, direction))
    return complete[:k]


def leaderboard(study: optuna.Study) -> list[TrialSummary]:
    """:func:`leaderboard_rows` best first (``ranking.rank_key``): ``show`` and the report."""
    direction = _direction(study)
    return sorted(
        leaderboard_rows(study), key=lambda r: rank_key(r.state, r.value, r.number, direction)
    )


def _direction(study: optuna.Study) -> str:
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return "maximize" if maximize else "minimize"


def pareto_numbers(study: optuna.Study) -> set[int]:
    """Trials on the Pareto front of a multi-objective study (empty for one objective)."""
    if len(study.directions) < 2:
        return set()
    return {t.number for t in study.best_trials}


def leaderboard_rows(study: optuna.Study) -> list[TrialSummary]:
    """One summary per trial for ``automl show`` and the report, in trial order.

    Adds what a single trial cannot say about itself: whether it is on the Pareto front, and
    why a trial failed by a stale sweep failed (its worker died, so it left no reason).
    """
    trials = study.get_trials(deepcopy=False)
    retried_as = {t.user_attrs[RETRY_OF]: t.number for t in trials if RETRY_OF in t.user_attrs}
    pareto = pareto_numbers(study)
    rows = []
    for t in trials:
        row = TrialSummary.from_trial(t)
        if t.state == TrialState.FAIL and row.fail_reason is None:
            reason = "its worker stopped (no heartbeat)" + (
                f"; retried as trial {retried_as[t.number]}" if t.number in retried_as else ""
            )
            row = replace(row, fail_reason=reason)
        rows.append(replace(row, pareto=t.number in pareto))
    return rows
