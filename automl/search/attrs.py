"""Every study and trial attribute automl writes, named once, and the typed view of a trial.

Optuna keeps attributes as JSON in the storage, read back by string key; a typo there is a
silent ``None``. Writers and readers therefore use these names, and code outside ``search/``
reads a finished trial through :class:`TrialSummary` rather than ``user_attrs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

# --- study user attributes -----------------------------------------------------------------------
# What a worker on another machine needs to join: the resolved configuration (without the storage
# URL, which may hold a password) and a fingerprint of the splits.
CONFIG_ATTR = "automl_config_resolved"
SPLITS_ATTR = "automl_splits_sha256"
CONFIG_MISSING_ATTR = "automl_config_missing"  # why the configuration could not be stored
CONFIG_PATH_ATTR = "automl_config"  # the study folder's config.yaml, for the dashboard
DEVICE_ATTR = "device"  # what the last process trained on (GPU, mixed precision)
ENSEMBLE_ATTR = "ensemble"  # short summary of the last ensemble

# --- trial user attributes -----------------------------------------------------------------------
HYPERPARAMETERS = "hyperparameters"
SEED = "seed"
TRIAL_DIR = "trial_dir"
FAIL_REASON = "fail_reason"
OOM_RETRY = "oom_retry"
BATCH_SIZE_USED = "batch_size_used"
PRUNED_AT_STEP = "pruned_at_step"
PRUNED_IN_FOLD = "pruned_in_fold"
LATENCY = "latency_ms_per_image"
MODEL_SIZE_MB = "model_size_mb"
REUSED_FOLDS = "reused_folds"
FOLD_SCORES = "fold_scores"
CV_STD = "cv_std"
EPOCHS_PER_FOLD = "epochs_per_fold"
EPOCHS_TOTAL = "epochs_total"
N_PARAMS = "n_params"
N_TRAINABLE_PARAMS = "n_trainable_params"
TRAIN_SECONDS = "train_seconds"
# Why the trial's out-of-fold predictions collapsed onto one or two classes (metrics.py); such a
# trial never enters an ensemble.
COLLAPSED = "collapsed"
# Peak memory of the trial: the fields of ``nn.memory.MemoryPeaks``, stored under their names.
PEAK_RSS_MB = "peak_rss_mb"
PEAK_RSS_DELTA_MB = "peak_rss_delta_mb"
PEAK_GPU_MEMORY_MB = "peak_gpu_memory_mb"
MISSING_ARTIFACTS = "missing_artifacts"  # dashboard pictures that could not be saved, and why
MISSING_NOTE = "missing_note"  # the dashboard note could not be saved (trial or study)

# --- heartbeat and workers -----------------------------------------------------------------------
HEARTBEAT_ATTR = "automl:heartbeat"  # a system attribute
RETRY_OF = "retry_of"  # the trial a retry repeats
RETRY_ORIGIN = "retry_origin"  # the first trial of a chain of retries (its seed is used)
WORKER_ATTR = "worker"
DEVICES_ATTR = "cuda_visible_devices"
# Optuna's own system attributes of a retry, written the way its
# RetryHeartbeatStaleTrialCallback writes them so that its helpers read our retries too.
FAILED_TRIAL_ATTR = "failed_trial"
RETRY_HISTORY_ATTR = "retry_history"


@dataclass(frozen=True)
class TrialSummary:
    """One trial as ``show``, the report, the dashboard note and ``tune``'s summary need it."""

    number: int
    state: str  # "complete", "pruned", "fail", "running", "waiting"
    value: float | None  # the study metric (first objective); None without a value
    params: dict[str, Any] = field(default_factory=dict)
    fold_scores: list[float] = field(default_factory=list)
    cv_std: float | None = None
    epochs: int | None = None
    epochs_per_fold: list[int] = field(default_factory=list)
    latency_ms: float | None = None
    seconds: float | None = None
    n_params: int | None = None
    pruned_at_step: int | None = None
    pruned_in_fold: int | None = None
    fail_reason: str | None = None
    retry_of: int | None = None
    worker: str | None = None
    collapsed: str | None = None
    # On the metric-vs-latency Pareto front; a property of the study, so ``from_trial`` leaves
    # it False and ``storage.leaderboard_rows`` sets it.
    pareto: bool = False

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialSummary:
        attrs = trial.user_attrs
        return cls(
            number=trial.number,
            state=trial.state.name.lower(),
            value=float(trial.values[0]) if trial.values else None,
            params=dict(trial.params),
            fold_scores=[float(s) for s in attrs.get(FOLD_SCORES, [])],
            cv_std=attrs.get(CV_STD),
            epochs=attrs.get(EPOCHS_TOTAL),
            epochs_per_fold=list(attrs.get(EPOCHS_PER_FOLD, [])),
            latency_ms=attrs.get(LATENCY),
            seconds=attrs.get(TRAIN_SECONDS),
            n_params=attrs.get(N_PARAMS),
            pruned_at_step=attrs.get(PRUNED_AT_STEP),
            pruned_in_fold=attrs.get(PRUNED_IN_FOLD),
            fail_reason=attrs.get(FAIL_REASON),
            retry_of=attrs.get(RETRY_OF),
            worker=attrs.get(WORKER_ATTR),
            collapsed=attrs.get(COLLAPSED),
        )

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE.name.lower()
