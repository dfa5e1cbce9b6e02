"""``automl tune``: check everything, then start or resume the study and run its trials.

Order matters: the configuration (already validated when loaded), then the data and its splits,
then the pretrained weights, and only then is anything written (study folder, storage, resolved
configuration). Bad input therefore stops the command before a study exists.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from automl.config.schema import Config, check_target_recall, load_config
from automl.config.space import WEIGHTS_NONE
from automl.data.audit.checks import screen_data
from automl.data.readers import read_source
from automl.data.splits import Splits, check_labelled, make_splits
from automl.errors import StudyError
from automl.files import atomic_write_text
from automl.search.paths import StudyPaths, artifacts_root, paths_for
from automl.search.storage import create_or_load, finished_counts, publish_config, top_trials

logger = logging.getLogger(__name__)

# Sections whose change would make old and new trials incomparable.
_FROZEN_ON_RESUME = ("data",)
_FROZEN_STUDY_KEYS = ("metric", "direction", "seed")


@dataclass(frozen=True)
class TuneResult:
    """What ``tune`` did, for the summary the CLI prints."""

    study: optuna.Study
    paths: StudyPaths
    counts: dict[str, int]
    ran: int
    resumed: bool


def prepare_splits(config: Config, *, progress: bool = False) -> Splits:
    """Read the data exactly as every trial will see it and take the study's fixed splits.

    The decoded-image cache is used only once the study folder exists, so that a command
    stopped by bad input (or ``validate``) leaves nothing on disk.
    """
    paths = paths_for(config)
    cache = paths.data_cache if config.data.cache and paths.root.is_dir() else None
    pool = read_source(
        config.data.source, config.data.image_size, cache_dir=cache, progress=progress
    )
    test = None
    if config.data.test is not None:
        test = read_source(
            config.data.test,
            config.data.image_size,
            cache_dir=cache,
            progress=progress,
            where="data.test",
        )
    # Before the screening, which groups images by label: unlabelled data stops here.
    check_labelled(pool, "data")
    if test is not None:
        check_labelled(test, "data.test")
    # data.exclude, data.groups_from_duplicates and the cheap audit checks (data/audit/checks.py).
    screened = screen_data(config.data, pool, test)
    splits = make_splits(
        screened.pool,
        screened.test,
        n_folds=config.data.n_folds,
        holdout_fraction=config.data.holdout_fraction,
        seed=config.study.seed,
    )
    screened.warn_leakage(splits)
    return splits


def check_weights(config: Config) -> None:
    """Fetch (or find cached) ImageNet weights for every backbone the space can draw."""
    from automl.nn.models import ensure_weights  # Keras is imported only when weights are needed

    for name, sub in config.space.backbone.options.items():
        if "weights" not in sub:  # the custom CNN has no pretrained weights
            continue
        # A fixed value or the choices of a categorical distribution.
        for choice in getattr(sub["weights"], "choices", (sub["weights"],)):
            if choice != WEIGHTS_NONE:
                ensure_weights(name, choice, config.data.image_size)


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


def run_tune(
    config: Config, *, progress: bool = True, workers: int | None = None, gpus: str | None = None
) -> TuneResult:
    """Validate data and environment, then start or resume the study until ``n_trials``.

    Trials run in this process, or with ``workers``/``gpus`` in worker processes, one fresh
    process per trial (``workers.py``).
    """
    from automl.search.workers import plan_slots, supervise

    slots = plan_slots(workers, gpus)
    splits = prepare_splits(config, progress=progress)

    check_target_recall(config, splits.n_classes)  # before any trial, not after the last
    check_weights(config)
    paths = paths_for(config)
    resumed = check_resume(config, paths, splits)
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
    if slots:
        logger.info(
            "Study '%s' (%s): %d worker processes%s, one process per trial",
            config.study.name,
            "resumed" if resumed else "new",
            len(slots),
            f" on GPUs {gpus}" if gpus else "",
        )
        before = len(study.trials)
        supervise(config, study, slots, progress=progress)
        ran = len(study.get_trials(deepcopy=False)) - before
        return TuneResult(study, paths, finished_counts(study), ran, resumed)
    from automl.search.objective import configure_device

    device = configure_device(config.training.mixed_precision)
    study.set_user_attr("device", device)
    logger.info(
        "Study '%s' (%s): %d tuning images in %d folds, %s hold-out images, %d classes",
        config.study.name,
        "resumed" if resumed else "new",
        len(splits.tuning),
        len(splits.folds),
        len(splits.holdout) if splits.holdout is not None else "no",
        splits.n_classes,
    )
    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    done = sum(finished_counts(study)[s.name.lower()] for s in counted)
    n_trials = config.study.n_trials
    remaining = None if n_trials is None else max(n_trials - done, 0)
    callbacks: list[Any] = [log_trial]
    if n_trials is not None:
        # Counts trials of every worker sharing the storage, so the study stops at n_trials
        # in total even when several processes run it.
        callbacks.append(MaxTrialsCallback(n_trials, states=counted))
    before = len(study.trials)
    if remaining != 0:
        optimize(study, config, splits, n_trials=remaining, callbacks=callbacks, progress=progress)
    return TuneResult(study, paths, finished_counts(study), len(study.trials) - before, resumed)


def optimize(
    study: optuna.Study,
    config: Config,
    splits: Splits,
    *,
    n_trials: int | None,
    callbacks: list[Any],
    progress: bool,
) -> None:
    """Run trials of the k-fold objective in this process (the in-process run and each worker).

    With ``progress`` a bar counts finished trials and shows the running trial's fold, epoch
    and last validation score (updated every epoch, one line, like Keras' own progress).
    """
    from automl.search.objective import Objective, TrialFailed

    bar = _TrialBar(study, n_trials, config.study.metric) if progress else None
    try:
        optimize_past_lapses(
            study,
            Objective(config, splits, artifacts_root(config), on_epoch=bar.epoch if bar else None),
            n_trials=n_trials,
            timeout=config.study.timeout,
            catch=(TrialFailed,),
            callbacks=[*callbacks, *([bar.trial_done] if bar else [])],
        )
    finally:
        if bar is not None:
            bar.close()


def optimize_past_lapses(
    study: optuna.Study,
    objective: Any,
    *,
    n_trials: int | None,
    timeout: float | None,
    catch: tuple[type[Exception], ...],
    callbacks: list[Any],
) -> None:
    """``study.optimize``, going on when another process failed the running trial meanwhile.

    When this worker's heartbeat lapses (an overloaded machine, a long pause), another worker's
    sweep fails its trial and queues a retry; this worker's ``tell`` then raises Optuna's
    "Cannot tell a FAIL trial" and would end the whole run. The result is lost either way (the
    retry recomputes it), so this logs a warning naming the trial and runs the trials left.
    """
    started = time.monotonic()
    done = 0

    def count(_study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        nonlocal done
        done += 1

    while True:
        left = None if n_trials is None else n_trials - done
        remaining_time = None if timeout is None else timeout - (time.monotonic() - started)
        if (left is not None and left <= 0) or (
            remaining_time is not None and remaining_time <= 0
        ):
            return
        try:
            study.optimize(
                objective,
                n_trials=left,
                timeout=remaining_time,
                catch=catch,
                callbacks=[*callbacks, count],
                # The objective already clears the Keras session and collects after every
                # trial; a second full collection would only cost time (~0.1-0.5 s with TF).
                gc_after_trial=False,
            )
            return
        except (ValueError, AssertionError) as error:
            # Optuna 5 raises the ValueError inside its tell, then an AssertionError ("Should
            # not reach") from the cleanup around it; either way the ValueError is the cause.
            cause = error if isinstance(error, ValueError) else error.__context__
            if not str(cause).startswith("Cannot tell a FAIL trial"):
                raise
            done += 1  # the lost trial used up one of this call's trials, as a failure does
            logger.warning(
                "A trial of this worker was failed by another process while it ran (its "
                "heartbeat lapsed for longer than the grace period, e.g. on an overloaded "
                "machine); its result is discarded and its retry runs again. Raise "
                "study.grace_period if this repeats."
            )


class _TrialBar:
    """tqdm bar over trials: best value so far, and where the running trial is."""

    def __init__(self, study: optuna.Study, n_trials: int | None, metric: str) -> None:
        from tqdm.auto import tqdm

        self.metric = metric
        self.bar = tqdm(total=n_trials, unit="trial", dynamic_ncols=True)
        best = top_trials(study, 1)
        if best:
            self.bar.set_description(f"best {best[0].values[0]:.4f}")

    def epoch(self, status: Any) -> None:
        self.bar.set_postfix_str(status.describe(self.metric), refresh=True)

    def trial_done(self, study: optuna.Study, trial: FrozenTrial) -> None:
        best = top_trials(study, 1)
        if best:
            self.bar.set_description(f"best {best[0].values[0]:.4f}")
        self.bar.set_postfix_str("")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


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


def log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    folds = trial.user_attrs.get("fold_scores", [])
    shown = " ".join(f"{s:.3f}" for s in folds)
    seconds = trial.user_attrs.get("train_seconds", 0.0)
    if trial.state == TrialState.COMPLETE and trial.values:
        best = top_trials(study, 1)
        latency = ""
        if len(trial.values) > 1:
            latency = f", {trial.values[1]:.1f} ms/image; Pareto front {len(study.best_trials)}"
        logger.info(
            "trial %d complete: %.4f (folds %s) in %.0f s%s; best %.4f",
            trial.number,
            trial.values[0],
            shown,
            seconds,
            latency,
            best[0].values[0] if best else trial.values[0],
        )
    elif trial.state == TrialState.PRUNED:
        logger.info(
            "trial %d pruned at step %s (fold %s) after %s epochs in %.0f s",
            trial.number,
            trial.user_attrs.get("pruned_at_step"),
            trial.user_attrs.get("pruned_in_fold"),
            trial.user_attrs.get("epochs_total"),
            seconds,
        )
    else:
        logger.warning(
            "trial %d %s: %s",
            trial.number,
            trial.state.name.lower(),
            trial.user_attrs.get("fail_reason", "see the log above"),
        )


def best_summary(study: optuna.Study) -> dict[str, Any] | None:
    """Best trial's number, value, CV std and parameters, or None when none completed.

    With a latency objective "best" is the best metric; ``pareto`` counts the front.
    """
    top = top_trials(study, 1)
    if not top or not math.isfinite(top[0].values[0]):
        return None
    best = top[0]
    return {
        "pareto": len(study.best_trials) if len(study.directions) > 1 else None,
        "trial": best.number,
        "value": best.values[0],
        "cv_std": best.user_attrs.get("cv_std"),
        "fold_scores": best.user_attrs.get("fold_scores"),
        "params": best.params,
    }
