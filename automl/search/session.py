"""What every process that runs trials needs, written once: checks, the stop rule, the run loop.

Three kinds of process run trials of a study: ``automl tune`` in its own process, each worker
process its supervisor starts (``tune --workers``/``--gpus``), and ``automl worker`` joining from
another machine. All of them read the data through :func:`prepare_splits`, fetch the pretrained
weights with :func:`check_weights`, run trials with :func:`optimize`, log one line per trial
with :func:`log_trial`, and stop by the same rule.

**The stop rule.** A study is done when ``study.n_trials`` of its trials have finished (complete
or pruned), counted over every worker of every machine sharing its storage. A trial that runs
now counts as well (:func:`trials_to_start`, :func:`stop_at_n_trials`): whoever runs it will
finish it, so starting another would overshoot. A failed trial does not count, but it uses up
one trial of a run's budget (:func:`trials_missing`), as in ``study.optimize(n_trials=...)``, so
a study whose trials keep failing still ends. A trial whose worker died stays RUNNING until the
heartbeat fails it (``heartbeat.py``) and queues a retry, which then counts when it finishes.

**The bound.** The rule is checked, then a trial is asked for, in two steps that are not one
atomic operation of the storage: workers that check at the same moment, each seeing one trial
left, each start one. So independent workers (``automl worker`` on one or many machines, or
next to a ``tune``) can finish a study with up to ``workers - 1`` trials more than ``n_trials``,
never more (each overshoots by at most its one last trial). The children of one
``--workers``/``--gpus`` supervisor do not race: it counts the children it starts.

This module imports no TensorFlow; :func:`optimize` does when it trains.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from automl.config.schema import Config
from automl.config.space import WEIGHTS_NONE
from automl.data.audit.checks import screen_data
from automl.data.readers import read_source
from automl.data.splits import Splits, check_labelled, make_splits
from automl.search.attrs import DEVICE_ATTR, TrialSummary
from automl.search.heartbeat import HeartbeatLost
from automl.search.paths import artifacts_root, paths_for
from automl.search.storage import top_trials

logger = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Finished, or running in some worker now: taken, whoever runs it.
_TAKEN = (*FINISHED, TrialState.RUNNING)


# --- before the first trial ----------------------------------------------------------------------


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


#: Largest-to-smallest class ratio above which plain accuracy rewards the largest class.
IMBALANCE_RATIO = 5.0


def imbalance_warning(config: Config, splits: Splits) -> str | None:
    """What to say when the metric is accuracy and the tuning classes are imbalanced; or None.

    On a 32:1 set a model that predicts the largest class for every image scores that class's
    share of accuracy; balanced accuracy and macro-F1 give it 1/C and next to nothing.
    """
    if config.study.metric != "accuracy":
        return None
    counts = np.bincount(splits.tuning.labels, minlength=splits.n_classes)
    present = counts[counts > 0]
    if len(present) < 2 or present.max() / present.min() <= IMBALANCE_RATIO:
        return None
    names = splits.tuning.class_names
    largest, smallest = int(np.argmax(counts)), int(np.argmin(np.where(counts, counts, 1 << 62)))
    return (
        f"{config.source}: study.metric is accuracy but the classes are imbalanced "
        f"{present.max() / present.min():.0f}:1 ({names[largest]} {counts[largest]}, "
        f"{names[smallest]} {counts[smallest]}): a model that predicts {names[largest]} for "
        f"every image scores {counts[largest] / counts.sum():.2f}; consider study.metric: "
        "balanced_accuracy or macro_f1 (a new study: --study-name)."
    )


def weights_to_check(config: Config) -> list[tuple[str, str, int]]:
    """``(backbone, weights, image_size)`` of every pretrained backbone the space can draw."""
    checks = []
    for name, sub in config.space.backbone.options.items():
        if "weights" not in sub:  # the custom CNN has no pretrained weights
            continue
        # A fixed value or the choices of a categorical distribution.
        for choice in getattr(sub["weights"], "choices", (sub["weights"],)):
            if choice != WEIGHTS_NONE:
                checks.append((name, str(choice), config.data.image_size))
    return checks


def check_weights(config: Config) -> None:
    """Fetch (or find cached) ImageNet weights for every backbone the space can draw.

    Building a backbone initialises TensorFlow's devices, so this process's device is set up
    first (:func:`setup_device`): memory growth can be set only before. A process that must
    not touch a GPU at all (the ``--gpus`` supervisor) checks them in a process of its own
    (``workers.check_weights_apart``).
    """
    checks = weights_to_check(config)
    if not checks:
        return
    setup_device(config)
    from automl.nn.models import ensure_weights  # Keras is imported only when weights are needed

    for name, weights, image_size in checks:
        ensure_weights(name, weights, image_size)


def setup_device(config: Config) -> dict[str, Any]:
    """Set up this process's accelerator for training (``nn.fit.configure_device``).

    Every process that trains calls it before anything touches TensorFlow's devices; calling it
    again is harmless (growth that is on stays on).

    Raises:
        nn.fit.DeviceError: a GPU was initialised before its memory growth could be set.
    """
    from automl.nn.fit import configure_device  # imports TensorFlow

    return configure_device(config.training.mixed_precision, config.training.deterministic)


def record_device(study: optuna.Study, config: Config) -> None:
    """Set up this process's accelerator (:func:`setup_device`) and note it in the study."""
    study.set_user_attr(DEVICE_ATTR, setup_device(config))


# --- the stop rule -------------------------------------------------------------------------------


def count_complete_or_pruned(trials: Sequence[FrozenTrial]) -> int:
    """Complete and pruned trials: the ones ``study.n_trials`` counts."""
    return sum(1 for t in trials if t.state in FINISHED)


def trials_missing(trials: Sequence[FrozenTrial], n_trials: int | None) -> int | None:
    """Trials still to finish before the study has ``n_trials`` (None: no limit).

    Every worker's trials count. This is the most trials a run may start: trials that fail use
    it up, trials of dead workers do not (their retries run instead).
    """
    if n_trials is None:
        return None
    return max(n_trials - count_complete_or_pruned(trials), 0)


def trials_to_start(trials: Sequence[FrozenTrial], n_trials: int | None) -> int | None:
    """Trials that may start now without passing ``n_trials`` (None: no limit).

    :func:`trials_missing` less the trials running now in any worker: each of them will finish
    (or be failed by the heartbeat and retried).
    """
    if n_trials is None:
        return None
    taken = sum(1 for t in trials if t.state in _TAKEN)
    return max(n_trials - taken, 0)


def stop_at_n_trials(n_trials: int | None) -> list[Any]:
    """The callbacks that stop ``study.optimize`` by :func:`trials_to_start` (none: no limit).

    Checked after each trial of this process, with the trials of every worker sharing the
    storage, so a worker that joins late does not push the study past ``n_trials``. Check and
    next ask are not atomic: independent workers may overshoot by ``workers - 1`` trials at
    most (module doc, "The bound").
    """
    if n_trials is None:
        return []
    return [MaxTrialsCallback(n_trials, states=_TAKEN)]


# --- running trials ------------------------------------------------------------------------------


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

    bar = TrialBar(study, n_trials, config.study.metric) if progress else None
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

    When this worker's heartbeat lapses (an overloaded machine, a long pause, a storage that
    did not answer), another worker's sweep fails its trial and queues a retry. This worker then
    learns it in one of three ways: the trial stops itself (``heartbeat.HeartbeatLost``), the
    storage refuses a write to the finished trial (``UpdateFinishedTrialError``, also when the
    sweep lands between the state check of Optuna's ``tell`` and its write), or ``tell`` finds
    the trial failed before writing (a plain ``ValueError``; recognised because the objective
    ended normally, the result was never told, and the storage holds the trial as FAIL). The
    result is lost either way (the retry recomputes it), so this logs a warning and runs the
    trials left; any other error is raised.
    """
    started = time.monotonic()
    last = _LastTrial(objective, (optuna.TrialPruned, *catch))
    while True:
        left = None if n_trials is None else n_trials - last.done
        remaining_time = None if timeout is None else timeout - (time.monotonic() - started)
        if (left is not None and left <= 0) or (
            remaining_time is not None and remaining_time <= 0
        ):
            return
        try:
            study.optimize(
                last.run,
                n_trials=left,
                timeout=remaining_time,
                catch=catch,
                callbacks=[last.told, *callbacks],  # first: it marks the tell as done
                # The objective already clears the Keras session and collects after every
                # trial; a second full collection would only cost time (TF holds many objects).
                gc_after_trial=False,
            )
            return
        except Exception as error:
            if not last.failed_meanwhile(error, study):
                raise
            last.done += 1  # the lost trial used up one of this call's trials, as a failure does
            logger.warning(
                "A trial of this worker was failed by another process while it ran (its "
                "heartbeat lapsed for longer than the grace period, e.g. on an overloaded "
                "machine); its result is discarded and its retry runs again. Raise "
                "study.grace_period if this repeats."
            )


class _LastTrial:
    """The trial this worker ran last: how its objective ended, and whether it was told."""

    def __init__(self, objective: Any, ended: tuple[type[BaseException], ...]) -> None:
        self.objective, self.ended = objective, ended
        self.done = 0  # trials told (or lost) in this run
        self.trial_id: int | None = None
        # "ended": the objective returned or raised what Optuna records; "lapsed": it stopped
        # because the trial was failed elsewhere; None: its own error (or none ran yet).
        self.outcome: str | None = None
        self.was_told = False  # Optuna's tell went through (its callbacks ran)

    def run(self, trial: optuna.Trial) -> Any:
        self.trial_id, self.outcome, self.was_told = trial._trial_id, None, False
        try:
            value = self.objective(trial)
        except (optuna.exceptions.UpdateFinishedTrialError, HeartbeatLost):
            self.outcome = "lapsed"
            raise
        except self.ended:
            self.outcome = "ended"
            raise
        self.outcome = "ended"
        return value

    def told(self, _study: optuna.Study, _trial: FrozenTrial) -> None:
        self.done += 1
        self.was_told = True

    def failed_meanwhile(self, error: Exception, study: optuna.Study) -> bool:
        """True when ``error`` says that another process failed this trial meanwhile."""
        if self.outcome == "lapsed":
            return True
        causes: list[BaseException] = []
        cause: BaseException | None = error
        while cause is not None and cause not in causes:  # Optuna's cleanup raises an
            causes.append(cause)  # AssertionError ("Should not reach") on the storage's error
            cause = cause.__cause__ or cause.__context__
        if any(isinstance(c, optuna.exceptions.UpdateFinishedTrialError) for c in causes):
            return True
        if self.outcome != "ended" or self.was_told or self.trial_id is None:
            return False  # the objective's own error, or one after the result was stored
        try:
            state = study._storage.get_trial(self.trial_id).state
        except Exception:  # noqa: BLE001 - cannot tell: the original error is raised
            return False
        return state == TrialState.FAIL


class TrialBar:
    """tqdm bar over trials: best value so far, and where the running trial is."""

    def __init__(self, study: optuna.Study, n_trials: int | None, metric: str) -> None:
        from tqdm.auto import tqdm

        self.metric = metric
        self.bar = tqdm(total=n_trials, unit="trial", dynamic_ncols=True)
        self._show_best(study)

    def epoch(self, status: Any) -> None:
        self.bar.set_postfix_str(status.describe(self.metric), refresh=True)

    def trial_done(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._show_best(study)
        self.bar.set_postfix_str("")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def _show_best(self, study: optuna.Study) -> None:
        best = top_trials(study, 1)
        if best:
            self.bar.set_description(f"best {best[0].values[0]:.4f}")


# --- reporting -----------------------------------------------------------------------------------


def log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Log one line for a trial that ended: value and folds, where it was pruned, or why not."""
    summary = TrialSummary.from_trial(trial)
    seconds = summary.seconds or 0.0
    if trial.state == TrialState.COMPLETE and trial.values:
        best = top_trials(study, 1)
        latency = ""
        if len(trial.values) > 1:
            latency = f", {trial.values[1]:.1f} ms/image; Pareto front {len(study.best_trials)}"
        logger.info(
            "trial %d complete: %.4f (folds %s) in %.0f s%s; best %.4f",
            trial.number,
            trial.values[0],
            " ".join(f"{s:.3f}" for s in summary.fold_scores),
            seconds,
            latency,
            best[0].values[0] if best else trial.values[0],
        )
    elif trial.state == TrialState.PRUNED:
        logger.info(
            "trial %d pruned at step %s (fold %s) after %s epochs in %.0f s",
            trial.number,
            summary.pruned_at_step,
            summary.pruned_in_fold,
            summary.epochs,
            seconds,
        )
    else:
        logger.warning(
            "trial %d %s: %s",
            trial.number,
            summary.state,
            summary.fail_reason or "see the log above",
        )


@dataclass(frozen=True)
class BestTrial:
    """The best trial by the study metric, as ``tune``'s summary shows it."""

    trial: TrialSummary
    pareto_size: int | None  # trials on the metric-vs-latency front; None with one objective


def best_summary(study: optuna.Study) -> BestTrial | None:
    """The best completed trial (with a latency objective: the best metric), or None yet."""
    top = top_trials(study, 1)
    if not top or not math.isfinite(top[0].values[0]):
        return None
    pareto = len(study.best_trials) if len(study.directions) > 1 else None
    return BestTrial(TrialSummary.from_trial(top[0]), pareto)
