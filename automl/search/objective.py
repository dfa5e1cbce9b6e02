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

**Out of memory** (``ResourceExhaustedError``) retries the trial once, all folds, at half the
batch size (``oom_retry`` says so; steps reported before the error keep their first value, as
Optuna keeps the first report of a step); a second one fails the trial with both sizes recorded.

**Retries of dead workers** (``retry_of`` set by ``heartbeat.RetryStaleTrial``) train with the
seed of the first trial of their chain and take over the folds it finished: each finished fold
leaves ``fold_<k>.keras`` plus ``fold_<k>.npz`` (its out-of-fold probabilities, score, history
and parameters), and a retry with the same parameters moves both into its own folder, replays
the fold's reports and trains only the rest (``reused_folds``). ``fold_<k>.npz`` is removed when
the trial completes; ``oof.npz`` holds the same numbers.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
import tensorflow as tf

from automl.config.schema import Config
from automl.data.splits import Splits
from automl.metrics import compute_metric, log_loss_value
from automl.nn.models import build_model, count_parameters, latency_ms
from automl.nn.pipeline import make_dataset
from automl.nn.schedules import VAL_METRIC_LOG, WeightAveraging, training_callbacks
from automl.search.artifacts import PeakMemory, save_trial_artifacts, save_trial_note
from automl.search.attrs import RETRY_OF, RETRY_ORIGIN
from automl.search.heartbeat import worker_attrs

logger = logging.getLogger(__name__)

PREDICT_BATCH_SIZE = 256


class TrialFailed(Exception):
    """A problem of this trial alone (NaN loss, out of memory): fail it, keep the study going."""


def trial_dir(study_dir: Path, number: int) -> Path:
    """Where a trial's fold models and out-of-fold probabilities live."""
    return study_dir / "trials" / f"{number:05d}"


def trial_seed(study_seed: int, number: int) -> int:
    """Per-trial seed derived from the study seed and the trial number (reproducible reruns)."""
    return (study_seed * 1_000_003 + number * 7919) % (2**31 - 1)


def configure_device(mixed_precision: str) -> dict[str, Any]:
    """Memory growth on every GPU, mixed precision when asked (``auto``: only with a GPU)."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process; growth was set then
            pass
    use_mixed = mixed_precision == "on" or (mixed_precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    return {"gpus": len(gpus), "mixed_precision": use_mixed}


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


class _FoldReporter(keras.callbacks.Callback):
    """Scores the validation fold after each epoch, reports it to Optuna, and asks to prune."""

    def __init__(
        self,
        trial: optuna.Trial,
        *,
        fold: int,
        stride: int,
        val_data: Any,
        y_val: np.ndarray,
        metric: str,
        on_epoch: Callable[[EpochStatus], None] | None = None,
        n_folds: int = 1,
        epochs: int = 1,
    ) -> None:
        super().__init__()
        self.trial, self.fold, self.stride = trial, fold, stride
        self.on_epoch, self.n_folds, self.epochs = on_epoch, n_folds, epochs
        self.val_data, self.y_val, self.metric = val_data, y_val, metric
        self.history: list[dict[str, float]] = []
        self.pruned_at: int | None = None
        self.nan_loss = False
        self.last_probabilities: np.ndarray | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs if logs is not None else {}
        logs[VAL_METRIC_LOG] = float("nan")  # what the plateau schedule monitors
        loss = float(logs.get("loss", float("nan")))
        if not math.isfinite(loss):
            self.nan_loss = True
            self.model.stop_training = True
            return
        probabilities = self.model.predict(self.val_data, verbose=0)
        if not np.isfinite(probabilities).all():
            # Diverged weights: Keras clips the loss, so NaN can show in the outputs alone.
            self.nan_loss = True
            self.model.stop_training = True
            return
        self.last_probabilities = probabilities
        score = compute_metric(self.metric, self.y_val, probabilities)
        logs[VAL_METRIC_LOG] = score
        self.history.append(
            {
                "epoch": epoch,
                "loss": loss,
                "accuracy": float(logs.get("accuracy", float("nan"))),
                "val_loss": log_loss_value(self.y_val, probabilities),
                "val_metric": score,
                # The rate of the epoch's last step (what the schedule reached).
                "learning_rate": float(np.asarray(self.model.optimizer.learning_rate)),
            }
        )
        if self.on_epoch is not None:
            self.on_epoch(
                EpochStatus(self.trial.number, self.fold, self.n_folds, epoch, self.epochs, score)
            )
        step = self.fold * self.stride + epoch
        # Optuna cannot prune multi-objective trials: report only with a single objective.
        if math.isfinite(score) and len(self.trial.study.directions) == 1:
            self.trial.report(score, step)
            if self.trial.should_prune():
                self.pruned_at = step
                self.model.stop_training = True


class Objective:
    """Callable for ``study.optimize``: trains the trial's folds on the study's fixed splits."""

    def __init__(
        self,
        config: Config,
        splits: Splits,
        study_dir: Path,
        on_epoch: Callable[[EpochStatus], None] | None = None,
    ) -> None:
        """``on_epoch`` hears about every scored epoch (the progress bar shows it)."""
        self.on_epoch = on_epoch
        self.config = config
        self.splits = splits
        self.study_dir = study_dir
        self.stride = config.space.max_epochs()
        # Metric and latency: the trial returns both and is never pruned.
        self.multi_objective = config.study.latency_objective

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.config.space.suggest(trial)
        # A retry trains as the trial it repeats would have, and picks up its finished folds.
        seed = trial_seed(self.config.study.seed, trial.user_attrs.get(RETRY_ORIGIN, trial.number))
        previous = trial.user_attrs.get(RETRY_OF)
        resume_dir = trial_dir(self.study_dir, previous) if previous is not None else None
        out_dir = trial_dir(self.study_dir, trial.number)
        trial.set_user_attr("hyperparameters", params)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("trial_dir", str(out_dir))
        for key, attr in worker_attrs().items():
            trial.set_user_attr(key, attr)
        memory = PeakMemory()
        try:
            value = self._run_halving_on_oom(trial, params, seed, out_dir, resume_dir)
        except optuna.TrialPruned:
            shutil.rmtree(out_dir, ignore_errors=True)
            self._finish(trial, "pruned", memory)
            raise
        except tf.errors.ResourceExhaustedError as exc:
            shutil.rmtree(out_dir, ignore_errors=True)
            reason = f"out of memory (batch_size={params['batch_size']}): {str(exc)[:200]}"
            trial.set_user_attr("fail_reason", reason)
            self._finish(trial, "fail", memory)
            raise TrialFailed(reason) from exc
        except TrialFailed as exc:
            shutil.rmtree(out_dir, ignore_errors=True)
            trial.set_user_attr("fail_reason", str(exc))
            self._finish(trial, "fail", memory)
            raise
        finally:
            keras.backend.clear_session()
            gc.collect()
            if resume_dir is not None:
                shutil.rmtree(resume_dir, ignore_errors=True)  # what was usable moved out
        self._finish(trial, "complete", memory)
        return value

    def _run_halving_on_oom(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        seed: int,
        out_dir: Path,
        resume_dir: Path | None,
    ) -> float:
        try:
            return self._run(trial, params, seed, out_dir, resume_dir)
        except tf.errors.ResourceExhaustedError:
            batch = int(params["batch_size"])
            if batch < 2:
                raise
            half = batch // 2
            note = f"out of memory at batch_size={batch}; retried once at batch_size={half}"
            logger.warning("trial %d: %s", trial.number, note)
            trial.set_user_attr("oom_retry", note)
            trial.set_user_attr("batch_size_used", half)
            keras.backend.clear_session()
            gc.collect()
            shutil.rmtree(out_dir, ignore_errors=True)
        try:
            with warnings.catch_warnings():  # the steps reported before the error, again
                warnings.filterwarnings("ignore", message="The reported value is ignored")
                return self._run(trial, {**params, "batch_size": half}, seed, out_dir, None)
        except tf.errors.ResourceExhaustedError as exc:
            raise TrialFailed(
                f"out of memory at batch_size={batch} and again at batch_size={half}: "
                f"{str(exc)[:200]}"
            ) from exc

    def _finish(self, trial: optuna.Trial, state: str, memory: PeakMemory) -> None:
        """Peak memory as user attributes, then the trial's note for the dashboard."""
        for key, value in memory.user_attrs().items():
            trial.set_user_attr(key, value)
        study = self.config.study
        save_trial_note(
            trial, state, metric=study.metric, stride=self.stride, pruner=study.pruner.name
        )

    def _run(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        seed: int,
        out_dir: Path,
        resume_dir: Path | None = None,
    ) -> float:
        config, splits = self.config, self.splits
        tuning = splits.tuning
        n_classes = splits.n_classes
        out_dir.mkdir(parents=True, exist_ok=True)
        oof = np.full((len(tuning), n_classes), np.nan, dtype=np.float32)
        fold_scores: list[float] = []
        epochs_run: list[int] = []
        histories: list[list[dict[str, float]]] = []
        started = time.perf_counter()
        n_params: dict[str, int] = {}
        class_weight = _class_weights(tuning.labels, n_classes, params["class_weight"])
        reused: list[int] = []
        latency: float | None = None
        for fold, (train_idx, val_idx) in enumerate(splits.folds):
            finished = _take_finished_fold(resume_dir, out_dir, fold, params, val_idx)
            if finished is not None:
                oof[val_idx] = finished["probabilities"]
                fold_scores.append(finished["score"])
                histories.append(finished["history"])
                epochs_run.append(len(finished["history"]))
                n_params = finished["n_params"]
                for record in finished["history"]:  # the pruner sees the fold as if rerun
                    if math.isfinite(record["val_metric"]) and not self.multi_objective:
                        trial.report(record["val_metric"], fold * self.stride + record["epoch"])
                reused.append(fold)
                continue
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed + fold)
            model = build_model(
                params,
                n_classes=n_classes,
                image_size=config.data.image_size,
                jit_compile=config.training.jit_compile,
            )
            n_params = count_parameters(model)
            train_ds = make_dataset(
                tuning.images,
                tuning.labels,
                train_idx,
                n_classes=n_classes,
                batch_size=int(params["batch_size"]),
                training=True,
                augment=params["augment"],
                seed=seed + fold,
            )
            val_ds = make_dataset(
                tuning.images, None, val_idx, n_classes=n_classes, batch_size=PREDICT_BATCH_SIZE
            )
            y_val = tuning.labels[val_idx]
            reporter = _FoldReporter(
                trial,
                fold=fold,
                stride=self.stride,
                val_data=val_ds,
                y_val=y_val,
                metric=config.study.metric,
                on_epoch=self.on_epoch,
                n_folds=len(splits.folds),
                epochs=int(params["epochs"]),
            )
            # Averaged weights first, so the reporter and everything after see them.
            callbacks: list[keras.callbacks.Callback] = (
                [WeightAveraging()] if params.get("ema", {}).get("momentum", 0) > 0 else []
            )
            callbacks.append(reporter)
            patience = config.training.early_stopping_patience
            if patience:
                callbacks.append(_BestWeights(reporter, patience))
            callbacks += training_callbacks(
                params,
                steps_per_epoch=math.ceil(len(train_idx) / int(params["batch_size"])),
                epochs=int(params["epochs"]),
            )
            model.fit(
                train_ds,
                epochs=int(params["epochs"]),
                callbacks=callbacks,
                class_weight=class_weight,
                shuffle=False,  # the dataset reshuffles itself every epoch
                verbose=0,
            )
            histories.append(reporter.history)
            epochs_run.append(len(reporter.history))
            if reporter.nan_loss:
                raise TrialFailed(
                    f"loss became NaN in fold {fold} after {len(reporter.history)} epoch(s) "
                    f"(learning_rate={params['learning_rate']:.3g})"
                )
            if reporter.pruned_at is not None:
                self._record(trial, fold_scores, epochs_run, n_params, started, histories)
                trial.set_user_attr("pruned_at_step", reporter.pruned_at)
                trial.set_user_attr("pruned_in_fold", fold)
                raise optuna.TrialPruned(
                    f"pruned at step {reporter.pruned_at} (fold {fold}, "
                    f"epoch {reporter.pruned_at - fold * self.stride + 1})"
                )
            probabilities = (
                reporter.last_probabilities
                if reporter.last_probabilities is not None and not patience
                else model.predict(val_ds, verbose=0)
            )
            score = compute_metric(config.study.metric, y_val, probabilities)
            if not math.isfinite(score):
                raise TrialFailed(f"{config.study.metric} is undefined on fold {fold}")
            oof[val_idx] = probabilities
            fold_scores.append(score)
            _save_model(model, out_dir / f"fold_{fold}.keras")
            if fold == len(reused):  # the first fold trained here: what deploying one costs
                trial.set_user_attr(
                    "model_size_mb",
                    round((out_dir / f"fold_{fold}.keras").stat().st_size / 1e6, 3),
                )
                latency = round(latency_ms(model, tuning.images[:1]), 3)
                trial.set_user_attr("latency_ms_per_image", latency)
            _save_finished_fold(
                out_dir, fold, params, val_idx, probabilities, score, reporter.history, n_params
            )
            logger.debug(
                "trial %d fold %d: %s=%.4f", trial.number, fold, config.study.metric, score
            )
        self._record(trial, fold_scores, epochs_run, n_params, started, histories)
        if reused:
            trial.set_user_attr("reused_folds", reused)
        _atomic_savez(out_dir / "oof.npz", probabilities=oof, ids=tuning.ids.astype(str))
        for record in out_dir.glob("fold_*.npz"):  # oof.npz now holds them all
            record.unlink()
        (out_dir / "history.json").write_text(json.dumps(histories), encoding="utf-8")
        save_trial_artifacts(
            trial,
            out_dir,
            self.study_dir,
            histories=histories,
            oof=oof,
            labels=tuning.labels,
            class_names=tuning.class_names,
            metric=config.study.metric,
            images=tuning.images,
            train_indices=splits.folds[0][0],
            augment=params["augment"],
        )
        if self.multi_objective:
            if latency is None:  # every fold was reused from a dead worker's trial
                reloaded = keras.saving.load_model(out_dir / "fold_0.keras", safe_mode=True)
                latency = round(latency_ms(reloaded, tuning.images[:1]), 3)
                trial.set_user_attr("latency_ms_per_image", latency)
            return float(np.mean(fold_scores)), latency  # type: ignore[return-value]
        return float(np.mean(fold_scores))

    def _record(
        self,
        trial: optuna.Trial,
        fold_scores: list[float],
        epochs_run: list[int],
        n_params: dict[str, int],
        started: float,
        histories: list[list[dict[str, float]]],
    ) -> None:
        trial.set_user_attr("fold_scores", [round(s, 6) for s in fold_scores])
        if fold_scores:
            trial.set_user_attr("cv_std", float(np.std(fold_scores)))
        trial.set_user_attr("epochs_per_fold", epochs_run)
        trial.set_user_attr("epochs_total", int(sum(epochs_run)))
        trial.set_user_attr("n_params", n_params.get("total", 0))
        trial.set_user_attr("n_trainable_params", n_params.get("trainable", 0))
        trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 2))


class _BestWeights(keras.callbacks.Callback):
    """Early stopping on the reporter's validation metric, restoring the best epoch's weights."""

    def __init__(self, reporter: _FoldReporter, patience: int) -> None:
        super().__init__()
        self.reporter, self.patience = reporter, patience
        self.best = -math.inf
        self.best_weights: list[Any] | None = None
        self.wait = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if not self.reporter.history:
            return
        score = self.reporter.history[-1]["val_metric"]
        if score > self.best:
            self.best, self.wait = score, 0
            self.best_weights = self.model.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def _class_weights(labels: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    if mode != "balanced":
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    # sklearn's "balanced": n_samples / (n_classes * count)
    return {i: float(len(labels) / (n_classes * c)) if c else 0.0 for i, c in enumerate(counts)}


def _save_model(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _save_finished_fold(
    out_dir: Path,
    fold: int,
    params: dict[str, Any],
    val_idx: np.ndarray,
    probabilities: np.ndarray,
    score: float,
    history: list[dict[str, float]],
    n_params: dict[str, int],
) -> None:
    """What a retry needs to take this fold over; written after the model, so it marks both."""
    meta = {
        "params": _params_key(params),
        "score": score,
        "history": history,
        "n_params": n_params,
    }
    _atomic_savez(
        out_dir / f"fold_{fold}.npz",
        probabilities=probabilities,
        val_indices=np.asarray(val_idx),
        meta=np.array(json.dumps(meta)),
    )


def _take_finished_fold(
    resume_dir: Path | None,
    out_dir: Path,
    fold: int,
    params: dict[str, Any],
    val_idx: np.ndarray,
) -> dict[str, Any] | None:
    """Move a fold the repeated trial finished into ``out_dir``; None when there is none."""
    if resume_dir is None:
        return None
    model, record = resume_dir / f"fold_{fold}.keras", resume_dir / f"fold_{fold}.npz"
    if not (model.is_file() and record.is_file()):
        return None
    try:
        with np.load(record) as archive:
            meta = json.loads(str(archive["meta"]))
            probabilities = archive["probabilities"]
            same_fold = np.array_equal(archive["val_indices"], val_idx)
    except (OSError, ValueError, KeyError) as exc:  # a torn file of a killed worker
        logger.warning("cannot reuse %s: %s", record, exc)
        return None
    if not same_fold or meta["params"] != _params_key(params):
        return None
    os.replace(model, out_dir / model.name)
    os.replace(record, out_dir / record.name)
    return {**meta, "probabilities": probabilities}


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
