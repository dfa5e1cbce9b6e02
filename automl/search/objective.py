"""The k-fold objective: one trial trains one model per fold, reports, prunes, saves its outputs.

**Step numbering.** Optuna keeps one intermediate value per step and ignores a repeated step,
so each fold-epoch gets its own step::

    step = fold * max_epochs + epoch        (fold and epoch counted from 0)

``max_epochs`` is the largest ``epochs`` the space allows, a constant of the study, so a step
means the same (fold, epoch) in every trial, also when ``epochs`` itself is searched. The value
reported at a step is that fold's validation metric after that epoch. The pruner therefore
compares like with like, and can stop a clearly bad trial inside its first fold (steps
``0 .. epochs-1``).

The trial's value is the mean of the fold metrics on the validation folds. Per-fold scores,
their std, epochs run, parameter count and training time go to user attributes; the fold models
(``fold_<k>.keras``), out-of-fold probabilities (``oof.npz``) and per-epoch history
(``history.json``) go to ``<study>/trials/<number>/`` (under ``study.artifacts_dir`` when set). A
NaN loss or a second out-of-memory error (below) fails that trial (the reason is recorded) and
the study goes on; a pruned or failed trial's folder is removed so only usable models stay on
disk. For optuna-dashboard (see ``artifacts.py``) every trial also records its peak memory and a
Markdown note, and a completed trial uploads its learning curves, out-of-fold confusion matrix
and augmentation preview as artifacts.

Training a fold is ``nn.fit.fit_fold``; this module reports each epoch's score to Optuna from
the fit's epoch hook and asks the pruner there, so it needs no Keras of its own.

**Out of memory** (``nn.fit.OutOfMemory``) retries the trial once, all folds, at half the
batch size (``oom_retry`` says so; steps reported before the error keep their first value, as
Optuna keeps the first report of a step); a second one fails the trial with both sizes recorded.

**Retries of dead workers** (``retry_of`` set by ``heartbeat.RetryStaleTrial``) train with the
seed of the first trial of their chain and take over the folds it finished (``folds.py``):
replaying the fold's reports and training only the rest (``reused_folds``).

**Ctrl+C** (``KeyboardInterrupt``) in a trial leaves it as a dead worker would: its folder keeps
the folds it finished, and its parameters are queued again with the same retry attributes
(:func:`queue_retry_of_interrupted`) before Optuna fails it, so the resumed study runs that
retry first and takes the finished folds over, as after a ``kill -9``. A Ctrl+C that Python
swallowed (raised inside a weakref callback) is raised again after the epoch (:class:`CtrlC`).
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import optuna

from automl.config.schema import Config
from automl.data.splits import Splits
from automl.metrics import collapsed_onto
from automl.nn.fit import (
    EpochHook,
    FoldFit,
    OutOfMemory,
    fit_fold,
    release,
    saved_model_latency_ms,
)
from automl.nn.memory import PeakMemory
from automl.search.artifacts import save_trial_artifacts, save_trial_note
from automl.search.attrs import (
    BATCH_SIZE_USED,
    COLLAPSED,
    CV_STD,
    EPOCHS_PER_FOLD,
    EPOCHS_TOTAL,
    FAIL_REASON,
    FOLD_SCORES,
    HYPERPARAMETERS,
    LATENCY,
    MODEL_SIZE_MB,
    N_PARAMS,
    N_TRAINABLE_PARAMS,
    OOM_RETRY,
    PRUNED_AT_STEP,
    PRUNED_IN_FOLD,
    RETRY_OF,
    RETRY_ORIGIN,
    REUSED_FOLDS,
    SEED,
    TRAIN_SECONDS,
    TRIAL_DIR,
)
from automl.search.folds import (
    FinishedFold,
    TrialFolds,
    save_finished_fold,
    take_finished_fold,
)
from automl.search.heartbeat import check_heartbeat, queue_retry, worker_attrs
from automl.search.paths import FOLD_RECORD_GLOB, fold_model_name, trial_folder_under

logger = logging.getLogger(__name__)


class TrialFailed(Exception):
    """A problem of this trial alone (NaN loss, out of memory): fail it, keep the study going."""


def trial_seed(study_seed: int, number: int) -> int:
    """Per-trial seed derived from the study seed and the trial number (reproducible reruns)."""
    return (study_seed * 1_000_003 + number * 7919) % (2**31 - 1)


@dataclass(frozen=True)
class EpochStatus:
    """Where a running trial is: what the progress bar shows between trials' ends."""

    trial: int
    fold: int  # from 0
    n_folds: int
    epoch: int  # from 0
    epochs: int
    score: float  # the validation metric after this epoch

    def describe(self, metric: str) -> str:
        return (
            f"trial {self.trial} fold {self.fold + 1}/{self.n_folds} "
            f"epoch {self.epoch + 1}/{self.epochs} val {metric} {self.score:.4f}"
        )


@dataclass(frozen=True)
class _Run:
    """One attempt at a trial: its hyperparameters, seed and folders."""

    params: dict[str, Any]
    seed: int
    out_dir: Path  # this trial's folder
    resume_dir: Path | None  # the folder of the trial this one retries, if any


class Objective:
    """Callable for ``study.optimize``: trains the trial's folds on the study's fixed splits."""

    def __init__(
        self,
        config: Config,
        splits: Splits,
        artifacts_dir: Path,
        on_epoch: Callable[[EpochStatus], None] | None = None,
    ) -> None:
        """``artifacts_dir`` is the artifacts root (``study.artifacts_dir``, by default the study
        folder) that holds ``trials/<number>/``; ``on_epoch`` hears about every scored epoch
        (the progress bar shows it)."""
        self.on_epoch = on_epoch
        self.config = config
        self.splits = splits
        self.artifacts_dir = artifacts_dir
        self.stride = config.space.max_epochs()
        # Metric and latency: the trial returns both and is never pruned.
        self.multi_objective = config.study.latency_objective
        self.ctrl_c = CtrlC()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        """Train and score every fold; the mean fold score (and latency with two objectives).

        Raises:
            optuna.TrialPruned: the pruner stopped the trial.
            TrialFailed: NaN loss, an undefined metric, or out of memory twice.
        """
        run = self._start(trial)
        memory = PeakMemory()
        state: str | None = None  # None: an unexpected error, left as Optuna records it
        interrupted = False
        try:
            with self.ctrl_c:
                value = self._run_halving_on_oom(trial, run)
            state = "complete"
        except optuna.TrialPruned:
            state = "pruned"
            raise
        except TrialFailed as exc:
            state = "fail"
            trial.set_user_attr(FAIL_REASON, str(exc))
            raise
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            self._clean_up(trial, run, state, memory)
            if interrupted:  # after the clean-up: the folder holds what the retry takes over
                queue_retry_of_interrupted(trial, run.out_dir)
        if self.ctrl_c.requested:  # swallowed after the last epoch's check: keep it, then stop
            trial.study.stop()
        return value

    def _start(self, trial: optuna.Trial) -> _Run:
        """The trial's hyperparameters, seed and folders, recorded as user attributes."""
        params = self.config.space.suggest(trial)
        # A retry trains as the trial it repeats would have, and picks up its finished folds.
        origin = trial.user_attrs.get(RETRY_ORIGIN, trial.number)
        previous = trial.user_attrs.get(RETRY_OF)
        run = _Run(
            params,
            trial_seed(self.config.study.seed, origin),
            trial_folder_under(self.artifacts_dir, trial.number),
            trial_folder_under(self.artifacts_dir, previous) if previous is not None else None,
        )
        trial.set_user_attr(HYPERPARAMETERS, params)
        trial.set_user_attr(SEED, run.seed)
        trial.set_user_attr(TRIAL_DIR, str(run.out_dir))
        for key, value in worker_attrs().items():
            trial.set_user_attr(key, value)
        return run

    def _clean_up(
        self, trial: optuna.Trial, run: _Run, state: str | None, memory: PeakMemory
    ) -> None:
        """Free the fits' memory, remove what is of no use, then record memory and the note."""
        release()
        if run.resume_dir is not None:
            shutil.rmtree(run.resume_dir, ignore_errors=True)  # what was usable moved out
        if state in ("pruned", "fail"):
            shutil.rmtree(run.out_dir, ignore_errors=True)  # only usable models stay on disk
        if state is None:
            return
        for key, value in memory.user_attrs().items():  # the PEAK_* names of attrs.py
            trial.set_user_attr(key, value)
        study = self.config.study
        save_trial_note(
            trial, state, metric=study.metric, stride=self.stride, pruner=study.pruner.name
        )

    def _run_halving_on_oom(self, trial: optuna.Trial, run: _Run) -> float | tuple[float, float]:
        """Run the trial; out of memory, run it once more, all folds, at half the batch size."""
        batch = int(run.params["batch_size"])
        attempts = [run]
        if batch >= 2:  # the retry starts afresh: what it could take over is gone with the try
            half = {**run.params, "batch_size": batch // 2}
            attempts.append(replace(run, params=half, resume_dir=None))
        errors: list[OutOfMemory] = []
        for attempt in attempts:
            if errors:
                self._prepare_oom_retry(trial, run, batch)
            try:
                with warnings.catch_warnings():
                    if errors:  # the retry reports the steps reported before the error again
                        warnings.filterwarnings("ignore", message="The reported value is ignored")
                    return self._run(trial, attempt)
            except OutOfMemory as exc:
                errors.append(exc)
        sizes = [int(attempt.params["batch_size"]) for attempt in attempts]
        raise TrialFailed(_out_of_memory_reason(sizes, errors[-1])) from errors[-1]

    def _prepare_oom_retry(self, trial: optuna.Trial, run: _Run, batch: int) -> None:
        """Say why the trial runs again, and free and remove what the first try left."""
        note = f"out of memory at batch_size={batch}; retried once at batch_size={batch // 2}"
        logger.warning("trial %d: %s", trial.number, note)
        trial.set_user_attr(OOM_RETRY, note)
        trial.set_user_attr(BATCH_SIZE_USED, batch // 2)
        release()
        shutil.rmtree(run.out_dir, ignore_errors=True)

    def _run(self, trial: optuna.Trial, run: _Run) -> float | tuple[float, float]:
        """Every fold in turn (taken over or trained), then the trial's outputs and value."""
        tuning = self.splits.tuning
        run.out_dir.mkdir(parents=True, exist_ok=True)
        folds = TrialFolds.empty(len(tuning), self.splits.n_classes)
        for fold, (train_idx, val_idx) in enumerate(self.splits.folds):
            finished = take_finished_fold(run.resume_dir, run.out_dir, fold, run.params, val_idx)
            if finished is not None:
                self._replay_reports(trial, fold, finished.history)
                folds.reused.append(fold)
            else:
                finished = self._train_fold(trial, run, fold, train_idx, val_idx, folds)
            folds.add(val_idx, finished)
        self._record(trial, folds)
        self._save_outputs(trial, run, folds)
        if not self.multi_objective:
            return folds.mean_score
        if folds.latency_ms is None:  # every fold was reused from a dead worker's trial
            model = run.out_dir / fold_model_name(0)
            folds.latency_ms = saved_model_latency_ms(model, tuning.images[:1])
            trial.set_user_attr(LATENCY, folds.latency_ms)
        return folds.mean_score, folds.latency_ms

    def _train_fold(
        self,
        trial: optuna.Trial,
        run: _Run,
        fold: int,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        folds: TrialFolds,
    ) -> FinishedFold:
        """Train and save one fold's model; the first one trained here also gets timed."""
        config, tuning = self.config, self.splits.tuning
        model = run.out_dir / fold_model_name(fold)
        fit = fit_fold(
            run.params,
            tuning.images,
            tuning.labels,
            train_idx,
            val_idx,
            n_classes=self.splits.n_classes,
            image_size=config.data.image_size,
            seed=run.seed + fold,
            metric=config.study.metric,
            patience=config.training.early_stopping_patience or 0,
            restore_best=config.training.restore_best_weights,
            jit_compile=config.training.jit_compile,
            on_epoch=self._epoch_hook(trial, fold, int(run.params["epochs"])),
            save_to=model,
            measure_latency=folds.latency_ms is None,
        )
        finished = self._usable(trial, run, fold, fit, folds)
        if fit.latency_ms is not None:  # what deploying one fold model costs
            trial.set_user_attr(MODEL_SIZE_MB, round(model.stat().st_size / 1e6, 3))
            trial.set_user_attr(LATENCY, fit.latency_ms)
            folds.latency_ms = fit.latency_ms
        save_finished_fold(run.out_dir, fold, run.params, val_idx, finished)
        logger.debug(
            "trial %d fold %d: %s=%.4f", trial.number, fold, config.study.metric, fit.score
        )
        return finished

    def _epoch_hook(self, trial: optuna.Trial, fold: int, epochs: int) -> EpochHook:
        """Shows the epoch, reports its score at the fold-epoch step and asks the pruner."""
        n_folds = len(self.splits.folds)

        def on_epoch(epoch: int, score: float) -> bool:
            # A trial whose heartbeat lapsed past the grace period stops here (heartbeat.py),
            # rather than train on while another worker retries it.
            check_heartbeat(trial)
            self.ctrl_c.check()
            if self.on_epoch is not None:
                self.on_epoch(EpochStatus(trial.number, fold, n_folds, epoch, epochs, score))
            return self._report(trial, fold, epoch, score) and trial.should_prune()

        return on_epoch

    def _report(self, trial: optuna.Trial, fold: int, epoch: int, score: float) -> bool:
        """Report ``score`` at the fold-epoch step; False when it is not reported."""
        # Optuna cannot prune multi-objective trials: report only with a single objective.
        if not math.isfinite(score) or self.multi_objective:
            return False
        trial.report(score, fold * self.stride + epoch)
        return True

    def _replay_reports(
        self, trial: optuna.Trial, fold: int, history: list[dict[str, float]]
    ) -> None:
        """The pruner sees a fold taken over from a dead worker as if it had run here."""
        for record in history:
            self._report(trial, fold, int(record["epoch"]), record["val_metric"])

    def _usable(
        self, trial: optuna.Trial, run: _Run, fold: int, fit: FoldFit, folds: TrialFolds
    ) -> FinishedFold:
        """The fold's outcome, unless it failed or the pruner stopped it.

        Raises:
            TrialFailed: NaN loss, or the metric undefined on the fold.
            optuna.TrialPruned: the pruner stopped the fold (the folds so far are recorded).
        """
        if fit.nan_loss:
            raise TrialFailed(
                f"loss became NaN in fold {fold} after {fit.epochs_run} epoch(s) "
                f"(learning_rate={run.params['learning_rate']:.3g})"
            )
        if fit.stopped_at is not None:
            folds.add_unfinished(fit.history, fit.n_params)
            self._record(trial, folds)
            step = fold * self.stride + fit.stopped_at
            trial.set_user_attr(PRUNED_AT_STEP, step)
            trial.set_user_attr(PRUNED_IN_FOLD, fold)
            raise optuna.TrialPruned(
                f"pruned at step {step} (fold {fold}, epoch {fit.stopped_at + 1})"
            )
        if fit.probabilities is None or not math.isfinite(fit.score):
            raise TrialFailed(f"{self.config.study.metric} is undefined on fold {fold}")
        return FinishedFold(fit.probabilities, fit.score, fit.history, fit.n_params)

    def _record(self, trial: optuna.Trial, folds: TrialFolds) -> None:
        """Scores, epochs, size and time of the folds so far, as user attributes."""
        trial.set_user_attr(FOLD_SCORES, [round(s, 6) for s in folds.scores])
        if folds.scores:
            trial.set_user_attr(CV_STD, float(np.std(folds.scores)))
        trial.set_user_attr(EPOCHS_PER_FOLD, folds.epochs_per_fold)
        trial.set_user_attr(EPOCHS_TOTAL, int(sum(folds.epochs_per_fold)))
        trial.set_user_attr(N_PARAMS, folds.n_params.get("total", 0))
        trial.set_user_attr(N_TRAINABLE_PARAMS, folds.n_params.get("trainable", 0))
        trial.set_user_attr(TRAIN_SECONDS, round(folds.seconds(), 2))

    def _save_outputs(self, trial: optuna.Trial, run: _Run, folds: TrialFolds) -> None:
        """A completed trial's files: out-of-fold outputs, history and dashboard pictures."""
        tuning = self.splits.tuning
        if folds.reused:
            trial.set_user_attr(REUSED_FOLDS, folds.reused)
        # A ranking metric (ROC AUC) scores the probabilities, not their argmax: a model whose
        # argmax is one class can still rank well and be thresholded, so only label metrics
        # judge a collapse.
        collapsed = None
        if self.config.study.metric != "roc_auc":
            collapsed = collapsed_onto(tuning.labels, folds.probabilities, tuning.class_names)
        if collapsed is not None:  # kept out of every ensemble (ensemble/library.py)
            logger.warning("trial %d %s: it will not enter an ensemble", trial.number, collapsed)
            trial.set_user_attr(COLLAPSED, collapsed)
        folds.save(run.out_dir, tuning.ids)
        save_trial_artifacts(
            trial,
            run.out_dir,
            self.artifacts_dir,
            histories=folds.histories,
            oof=folds.probabilities,
            labels=tuning.labels,
            class_names=tuning.class_names,
            metric=self.config.study.metric,
            images=tuning.images,
            train_indices=self.splits.folds[0][0],
            augment=run.params["augment"],
        )


class CtrlC:
    """While a trial runs: Ctrl+C raises ``KeyboardInterrupt`` at once, and again at the end
    of the epoch if Python swallowed it.

    Python delivers Ctrl+C as a ``KeyboardInterrupt`` wherever the main thread happens to be;
    inside a weakref or ``__del__`` callback (frequent while Keras trains) it is only printed
    ("Exception ignored in ...") and training goes on, so a worker would ignore its Ctrl+C.
    :meth:`check` (called after every epoch) raises it again from ordinary code. Where SIGINT
    is ignored (a process started in the background) nothing changes.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> CtrlC:
        self.requested = False
        if threading.current_thread() is threading.main_thread():  # signals reach it only
            previous = signal.getsignal(signal.SIGINT)
            if previous is not signal.SIG_IGN:
                self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def check(self) -> None:
        """Raise the ``KeyboardInterrupt`` of a Ctrl+C that was swallowed."""
        if self.requested:
            raise KeyboardInterrupt

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if callable(self._previous):  # Python's own handler raises KeyboardInterrupt
            self._previous(signum, frame)
        raise KeyboardInterrupt


def queue_retry_of_interrupted(trial: optuna.Trial, out_dir: Path) -> None:
    """Queue the parameters of a trial stopped by Ctrl+C again, to resume where it stopped.

    The retry carries what ``heartbeat.RetryStaleTrial`` gives the retry of a dead worker's
    trial (``retry_of``, ``retry_origin`` and Optuna's retry system attributes), so it trains
    with the same seed and takes over the folds finished in ``out_dir``. ``study.max_retries``
    does not limit it: stopping a run is no fault of the trial.
    """
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    finished = len(list(out_dir.glob(FOLD_RECORD_GLOB)))  # a fold's record marks it finished
    trial.set_user_attr(
        FAIL_REASON,
        f"interrupted (Ctrl+C) with {finished} fold(s) finished; queued again to resume them",
    )
    queue_retry(trial.study, frozen)
    logger.warning(
        "trial %d interrupted with %d fold(s) finished; queued again: the next run of the "
        "study resumes it",
        trial.number,
        finished,
    )


def _out_of_memory_reason(batch_sizes: list[int], error: OutOfMemory) -> str:
    """Why a trial that ran out of memory failed: at each batch size tried."""
    if len(batch_sizes) == 1:
        return f"out of memory (batch_size={batch_sizes[0]}): {str(error)[:200]}"
    first, second = batch_sizes
    return (
        f"out of memory at batch_size={first} and again at batch_size={second}: {str(error)[:200]}"
    )
