"""Scale-out and crash safety with real processes on the embedded journal storage.

Worker processes are real (``python -m automl.cli worker`` started by the supervisor, or small
Optuna scripts against automl's storage), and so are the faults: ``kill -9`` of one worker in
the middle of a trial, and of a whole ``tune`` process group. Heartbeats are 1 s with a 3 s
grace period so that dead trials are noticed quickly. CPU workers stand in for GPUs: ``--gpus``
with made-up ids checks the pinning (``CUDA_VISIBLE_DEVICES``) and the scheduling only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import optuna
import pytest
from conftest import make_folder_layout, write_study_yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

import automl.search.workers
from automl.cli.main import app
from automl.config.schema import load_config
from automl.errors import ConfigError, StudyError
from automl.search.attrs import (
    BATCH_SIZE_USED,
    DEVICES_ATTR,
    FAIL_REASON,
    FOLD_SCORES,
    HEARTBEAT_ATTR,
    OOM_RETRY,
    RETRY_OF,
    REUSED_FOLDS,
    SEED,
    TRIAL_DIR,
    WORKER_ATTR,
)
from automl.search.heartbeat import fail_stale_trials
from automl.search.paths import paths_for, trial_folder
from automl.search.storage import create_or_load, leaderboard_rows, load_study
from automl.search.workers import Slot, plan_slots, supervise

runner = CliRunner()

FAST_HEARTBEAT = "  heartbeat_interval: 1\n  grace_period: 3\n"

# A worker that runs trivial trials against automl's storage for a study file: "quick" trials
# return at once, a "hang" trial prints its number and sleeps until killed.
STORAGE_WORKER = textwrap.dedent(
    """
    import sys, time, optuna
    from automl.config.schema import load_config
    from automl.search.storage import open_storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_config(sys.argv[1])
    mode, n_trials = sys.argv[2], int(sys.argv[3])
    study = optuna.load_study(study_name=config.study.name, storage=open_storage(config))
    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr("pid", __import__("os").getpid())
        if mode == "hang":
            print("running", trial.number, flush=True)
            time.sleep(600)
        time.sleep(0.01)
        return x
    study.optimize(objective, n_trials=n_trials)
    """
)


@pytest.fixture(scope="module")
def data_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder_layout(shared_data, tmp_path_factory.mktemp("cells"), per_class=8)


def study_file(tmp_path: Path, data_root: Path, *, storage: str | None = None, **kwargs) -> Path:
    """The tiny real-image study of conftest, with fast heartbeats (and a storage URL)."""
    path = write_study_yaml(tmp_path / "cells.yaml", data_root, tmp_path / "studies", **kwargs)
    extra = FAST_HEARTBEAT + (f"  storage: {storage}\n" if storage else "")
    path.write_text(path.read_text().replace("  studies_dir:", extra + "  studies_dir:", 1))
    return path


def start_storage_worker(space: Path, mode: str, n_trials: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", STORAGE_WORKER, str(space), mode, str(n_trials)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_storage_workers(space: Path, n_workers: int, n_each: int) -> optuna.Study:
    """``n_workers`` processes, ``n_each`` trials each, all at once; return the study."""
    config = load_config(space)
    study = create_or_load(config)
    workers = [start_storage_worker(space, "quick", n_each) for _ in range(n_workers)]
    for worker in workers:
        _, err = worker.communicate(timeout=180)
        assert worker.returncode == 0, err
        assert "lock" not in err.lower() and "Traceback" not in err, err
    return study


def assert_no_lost_or_duplicated(study: optuna.Study, expected: int) -> None:
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(expected))
    assert len({t._trial_id for t in trials}) == expected
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) > 1  # the processes really shared it


def kill_and_retry(space: Path) -> tuple[optuna.Study, int]:
    """Kill -9 a worker in its trial; the sweep fails the trial after the grace period only."""
    config = load_config(space)
    study = create_or_load(config)
    hanging = start_storage_worker(space, "hang", 1)
    assert hanging.stdout is not None
    number = int(hanging.stdout.readline().split()[1])
    time.sleep(config.study.grace_period + 1)  # alive and beating: never stale
    fail_stale_trials(study)
    assert study.trials[number].state == TrialState.RUNNING
    hanging.kill()
    hanging.wait()
    deadline = time.monotonic() + 20
    while study.trials[number].state == TrialState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.5)
        fail_stale_trials(study)
    return study, number


def test_journal_heartbeat_fails_a_killed_workers_trial_and_retries_its_parameters(
    tmp_path: Path, data_root: Path
) -> None:
    space = study_file(tmp_path, data_root)
    study, number = kill_and_retry(space)
    dead = study.trials[number]
    assert dead.state == TrialState.FAIL
    assert HEARTBEAT_ATTR in dead.system_attrs
    retry = study.trials[number + 1]
    assert retry.state == TrialState.WAITING
    assert retry.params == dead.params
    assert retry.user_attrs[RETRY_OF] == number
    with warnings.catch_warnings():  # Optuna marks the helper experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        original = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry)
    assert original == number
    fail_stale_trials(study)  # a second sweep finds nothing more to retry
    assert len(study.trials) == number + 2
    quick = start_storage_worker(space, "quick", 1)
    assert quick.wait(timeout=60) == 0
    retried = study.trials[number + 1]
    assert retried.state == TrialState.COMPLETE and retried.value == dead.params["x"]
    reasons = {r.number: r.fail_reason for r in leaderboard_rows(study)}
    assert reasons[number] == f"its worker stopped (no heartbeat); retried as trial {number + 1}"


def test_four_processes_share_the_journal_without_lost_or_duplicated_trials(
    tmp_path: Path, data_root: Path
) -> None:
    study = run_storage_workers(study_file(tmp_path, data_root), n_workers=4, n_each=20)
    assert_no_lost_or_duplicated(study, 80)


def test_worker_slots_and_their_errors() -> None:
    assert plan_slots(None, None) == []
    assert plan_slots(2, None) == [Slot(0), Slot(1)]
    assert plan_slots(None, "0,1") == [Slot(0, "0"), Slot(1, "1")]
    assert [s.gpu for s in plan_slots(4, "0,0,1,1")] == ["0", "0", "1", "1"]
    with pytest.raises(ConfigError, match="--workers must be 1 or more"):
        plan_slots(0, None)
    with pytest.raises(ConfigError, match="--gpus must be GPU ids"):
        plan_slots(None, "0,x")
    with pytest.raises(ConfigError, match="repeat GPU ids"):
        plan_slots(3, "0,1")


def test_cli_errors_are_one_line(tmp_path: Path, data_root: Path) -> None:
    space = study_file(tmp_path, data_root)
    bad = runner.invoke(app, ["tune", "--space", str(space), "--gpus", "0,gpu1", "--no-progress"])
    assert bad.exit_code == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "--gpus must be GPU ids" in bad.stderr
    assert not (tmp_path / "studies").exists()  # refused before anything was written
    missing = runner.invoke(app, ["worker", "--study", "nope", "--studies-dir", str(tmp_path)])
    assert missing.exit_code == 2
    assert "--study nope: no study at" in missing.stderr and "--storage" in missing.stderr


def test_a_worker_refusing_its_input_stops_the_supervisor_with_its_message(
    tmp_path: Path, data_root: Path
) -> None:
    # The study exists in its storage, but its folder lacks config.yaml: the worker process the
    # supervisor starts cannot load it, says so on its error line and exits; no retry helps.
    config = load_config(study_file(tmp_path, data_root))
    study = create_or_load(config)
    assert not paths_for(config).config.exists()
    with pytest.raises(StudyError, match=r"^worker 0: --study cells: no study at .*--storage"):
        supervise(config, study, [Slot(0)])
    # No trial ran: only the warm-start portfolio's entry waits in the queue.
    assert [t.state.name for t in study.get_trials(deepcopy=False)] == ["WAITING"]


# A worker for the supervisor's tests: it takes one trial, records who ran it, and finishes
# only once the test lets it (the file in argv[2] exists).
HELD_WORKER = textwrap.dedent(
    """
    import sys, time, optuna
    from pathlib import Path
    from automl.config.schema import load_config
    from automl.search.attrs import WORKER_ATTR
    from automl.search.heartbeat import worker_identity
    from automl.search.storage import open_storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config, release = load_config(sys.argv[1]), Path(sys.argv[2])
    study = optuna.load_study(study_name=config.study.name, storage=open_storage(config))
    def objective(trial):
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        while not release.exists():
            time.sleep(0.05)
        return 0.5
    study.optimize(objective, n_trials=1)
    """
)


def test_a_fault_in_a_supervisor_step_is_logged_and_the_running_worker_goes_on(
    tmp_path: Path,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    space = study_file(tmp_path, data_root, n_trials=1)
    config = load_config(space)
    study = create_or_load(config)
    release = tmp_path / "release"
    workers = automl.search.workers
    command = [sys.executable, "-c", HELD_WORKER, str(space), str(release)]
    monkeypatch.setattr(workers, "_worker_command", lambda _config: command)
    monkeypatch.setattr(workers, "_SWEEP_SECONDS", 0.0)  # a sweep in every step
    monkeypatch.setattr(workers, "_FAULT_PAUSES", (0.05,))
    faults: list[int] = []

    def sweep_on_a_full_disk(study: optuna.Study) -> None:
        # While the worker's trial runs, the journal cannot be written three times in a row;
        # then the worker may finish.
        if any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
            if len(faults) < 3:
                faults.append(1)
                raise OSError(28, "No space left on device")
            release.touch()

    monkeypatch.setattr(workers, "fail_stale_trials", sweep_on_a_full_disk)
    with caplog.at_level(logging.WARNING, logger="automl.search.workers"):
        assert supervise(config, study, [Slot(0)]) == 1
    assert len(faults) == 3
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE and trial.value == 0.5  # never stopped
    assert trial.user_attrs[WORKER_ATTR].startswith(f"{os.uname().nodename}:")
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert failed[0] == (
        "supervisor: the stale-trial sweep failed (OSError: [Errno 28] No space left on "
        "device); 1 running worker(s) go on, trying again in 0 s"
    )
    assert len(failed) == 3


def test_a_decision_to_stop_lets_the_running_worker_finish_its_trial_first(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slot 0's worker refuses its input at once; slot 1's is in the middle of a trial, which
    # it finishes (released after 3 s) before the supervisor stops with slot 0's error.
    space = study_file(tmp_path, data_root, n_trials=2)
    config = load_config(space)
    study = create_or_load(config)
    release = tmp_path / "release"
    refusing = (
        "import os, sys, threading, time\n"
        "if os.environ['AUTOML_WORKER_SLOT'] == '0':\n"
        "    print('error: data.path: the folder went away', file=sys.stderr)\n"
        "    sys.exit(2)\n"
        f"threading.Timer(3.0, lambda: open({str(release)!r}, 'w').close()).start()\n"
    )
    command = [sys.executable, "-c", refusing + HELD_WORKER, str(space), str(release)]
    monkeypatch.setattr(automl.search.workers, "_worker_command", lambda _config: command)
    with pytest.raises(StudyError, match=r"^worker 0: data.path: the folder went away$"):
        supervise(config, study, [Slot(0), Slot(1)])
    finished = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    assert len(finished) == 1 and finished[0].value == 0.5  # not terminated mid-trial


def test_sigterm_to_the_supervisor_stops_its_workers(tmp_path: Path, data_root: Path) -> None:
    space = study_file(tmp_path, data_root, n_trials=1)
    config = load_config(space)
    study = create_or_load(config)
    supervisor = textwrap.dedent(
        f"""
        import sys
        import automl.search.workers as workers
        from automl.config.schema import load_config
        from automl.search.storage import create_or_load
        command = [sys.executable, "-c", {HELD_WORKER!r}, {str(space)!r}, "never-released"]
        workers._worker_command = lambda config: command
        config = load_config({str(space)!r})
        try:
            workers.supervise(config, create_or_load(config), [workers.Slot(0)])
        except KeyboardInterrupt:
            sys.exit(130)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", supervisor], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not [t for t in study.get_trials() if WORKER_ATTR in t.user_attrs]:
            assert time.monotonic() < deadline and process.poll() is None, "no worker started"
            time.sleep(0.2)
        (trial,) = [t for t in study.get_trials() if WORKER_ATTR in t.user_attrs]
        child = int(trial.user_attrs[WORKER_ATTR].split(":")[1])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 130
        with pytest.raises(ProcessLookupError):  # the worker was stopped (and reaped) too
            os.kill(child, 0)
    finally:
        process.kill()
        process.wait()
        for t in study.get_trials():  # a worker left behind by a failed run of this test
            if WORKER_ATTR in t.user_attrs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(t.user_attrs[WORKER_ATTR].split(":")[1]), signal.SIGKILL)


# `automl worker` as run_worker runs it, on the real data and journal, with a trivial objective
# (a module standing in for search/objective.py, so no TensorFlow) and no device to set up.
QUICK_RUN_WORKER = textwrap.dedent(
    """
    import sys, time, types
    from pathlib import Path
    fake = types.ModuleType("automl.search.objective")
    class TrialFailed(Exception):
        pass
    class Objective:
        def __init__(self, *args, **kwargs):
            pass
        def __call__(self, trial):
            trial.set_user_attr("runner", sys.argv[2])
            time.sleep(0.05)
            return 0.5
    fake.Objective, fake.TrialFailed = Objective, TrialFailed
    sys.modules["automl.search.objective"] = fake
    import automl.search.session
    automl.search.session.setup_device = lambda config: {"gpus": 0}
    from automl.search.workers import load_worker_config, run_worker
    config = load_worker_config("cells", Path(sys.argv[1]), None)
    ready = Path(sys.argv[1]) / f"ready-{sys.argv[2]}"  # start together: all imports done
    ready.touch()
    while len(list(ready.parent.glob("ready-*"))) < int(sys.argv[3]):
        time.sleep(0.01)
    print(run_worker(config))
    """
)


def test_independent_workers_stop_by_the_rule_overshooting_by_at_most_workers_minus_one(
    tmp_path: Path, data_root: Path
) -> None:
    n_trials, n_workers = 6, 3
    config = load_config(study_file(tmp_path, data_root, n_trials=n_trials))
    study = create_or_load(config)
    config.save(paths_for(config).config)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                QUICK_RUN_WORKER,
                str(tmp_path / "studies"),
                str(i),
                str(n_workers),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n_workers)
    ]
    ran = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=180)  # a broken stop rule never ends
            assert worker.returncode == 0, err[-3000:]
            ran.append(int(out.split()[-1]))
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    trials = study.get_trials(deepcopy=False)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert n_trials <= len(trials) == sum(ran) <= n_trials + n_workers - 1
    assert len({t.user_attrs["runner"] for t in trials}) > 1  # they really shared the study


def test_heartbeat_settings_are_checked(tmp_path: Path, data_root: Path) -> None:
    space = study_file(tmp_path, data_root)
    with pytest.raises(ConfigError, match="grace_period=1 must be at least 2 x"):
        load_config(space, ["study.grace_period=1"])
    with pytest.raises(ConfigError, match="study.heartbeat_interval must be an integer"):
        load_config(space, ["study.heartbeat_interval=0.5"])
    config = load_config(space, ["study.artifacts_dir=shared", "study.max_retries=0"])
    assert config.study.artifacts_directory == Path("shared").resolve()
    assert config.study.max_retries == 0 and config.study.heartbeat_interval == 1


def test_out_of_memory_retries_once_with_half_the_batch_size(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow as tf

    import automl.nn.fit
    from automl.search.objective import Objective, TrialFailed
    from automl.search.session import prepare_splits

    config = load_config(study_file(tmp_path, data_root, n_trials=2, epochs="1"))
    splits = prepare_splits(config)
    study = create_or_load(config)
    build_model = automl.nn.fit.build_model
    limit = {"batch_size": 4}  # "GPU memory" for at most 4 images per batch

    def model_that_runs_out_of_memory(*args, **kwargs):
        # The error comes from inside the compiled training step, where TensorFlow raises it
        # on a real GPU: a py_function raising MemoryError surfaces as ResourceExhaustedError.
        model = build_model(*args, **kwargs)
        train_step = model.train_step

        def check(batch: tf.Tensor) -> tf.Tensor:
            if int(batch) > limit["batch_size"]:
                raise MemoryError(f"OOM when allocating a tensor for a batch of {int(batch)}")
            return batch

        def step(data):
            tf.py_function(check, [tf.shape(data[0])[0]], tf.int32)
            return train_step(data)

        model.train_step = step
        return model

    monkeypatch.setattr(automl.nn.fit, "build_model", model_that_runs_out_of_memory)
    objective = Objective(config, splits, paths_for(config).root)
    study.optimize(objective, n_trials=1, catch=(TrialFailed,))
    first = study.trials[0]
    assert first.state == TrialState.COMPLETE
    assert first.user_attrs[OOM_RETRY] == (
        "out of memory at batch_size=8; retried once at batch_size=4"
    )
    assert first.user_attrs[BATCH_SIZE_USED] == 4
    assert len(first.user_attrs[FOLD_SCORES]) == 2

    limit["batch_size"] = 2  # now half the batch does not fit either: the trial fails
    study.optimize(objective, n_trials=1, catch=(TrialFailed,))
    second = study.trials[1]
    assert second.state == TrialState.FAIL
    assert second.user_attrs[FAIL_REASON].startswith(
        "out of memory at batch_size=8 and again at batch_size=4"
    )
    assert not Path(second.user_attrs[TRIAL_DIR]).exists()


def _tune_process(space: Path, *args: str) -> subprocess.Popen[str]:
    """``automl tune`` in its own process group, so that the whole group can be killed."""
    return subprocess.Popen(
        [sys.executable, "-m", "automl.cli", "tune", "--space", str(space), "--no-progress"]
        + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(predicate, timeout: float, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"tune exited early ({process.returncode}):\n{out}\n{err[-3000:]}")
        assert time.monotonic() < deadline, "timed out waiting for the study"
        time.sleep(0.1)


def _trials(studies: Path) -> list[optuna.trial.FrozenTrial]:
    try:
        return load_study("cells", studies)[1].get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - the study is not created yet
        return []


def _assert_complete_and_nothing_lost(studies: Path, n_trials: int) -> list:
    config, study = load_study("cells", studies)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in complete:  # every completed trial has all its fold models
        folder = trial_folder(config, t.number)
        assert sorted(p.name for p in folder.glob("fold_*")) == ["fold_0.keras", "fold_1.keras"]
        assert (folder / "oof.npz").is_file()
    for t in trials:
        if t.state == TrialState.FAIL:  # each dead trial was retried exactly once
            assert [r.user_attrs.get(RETRY_OF) for r in trials].count(t.number) == 1
    return trials


@pytest.mark.slow
def test_kill_9_of_a_gpu_pinned_worker_mid_trial_is_retried_with_its_finished_folds(
    tmp_path: Path, data_root: Path
) -> None:
    space = study_file(tmp_path, data_root, n_trials=3, epochs="4")
    studies = tmp_path / "studies"
    folder = studies / "cells" / "trials"
    tune = _tune_process(space, "--gpus", "0,1")

    def a_trial_finished_its_first_fold() -> bool:
        return any((folder / f"{t.number:05d}" / "fold_0.npz").is_file() for t in running())

    def running() -> list:
        return [t for t in _trials(studies) if t.state == TrialState.RUNNING]

    _wait_for(a_trial_finished_its_first_fold, 180, tune)
    victim = next(t for t in running() if (folder / f"{t.number:05d}" / "fold_0.npz").is_file())
    os.kill(int(victim.user_attrs[WORKER_ATTR].split(":")[1]), signal.SIGKILL)
    out, err = tune.communicate(timeout=300)
    assert tune.returncode == 0, err[-3000:]
    assert "3 complete, 0 pruned, 1 failed" in out

    trials = _assert_complete_and_nothing_lost(studies, 3)
    assert trials[victim.number].state == TrialState.FAIL
    retry = next(t for t in trials if t.user_attrs.get(RETRY_OF) == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert retry.user_attrs[REUSED_FOLDS] == [0]  # fold 0 was not trained again
    assert retry.user_attrs[SEED] == victim.user_attrs[SEED]
    assert not (folder / f"{victim.number:05d}").exists()
    # One fresh process per trial, each pinned to one of the two "GPUs"; two trials that ran
    # at the same time were on different GPUs.
    ran = [t for t in trials if WORKER_ATTR in t.user_attrs]
    assert len({t.user_attrs[WORKER_ATTR] for t in ran}) == len(ran) == 4
    assert {t.user_attrs[DEVICES_ATTR] for t in ran} == {"0", "1"}
    for a in ran:
        for b in ran:
            end_a = a.datetime_complete or a.datetime_start
            end_b = b.datetime_complete or b.datetime_start
            if a.number < b.number and a.datetime_start < end_b and b.datetime_start < end_a:
                assert a.user_attrs[DEVICES_ATTR] != b.user_attrs[DEVICES_ATTR]

    ensembled = runner.invoke(
        app,
        [
            "ensemble",
            "--study",
            "cells",
            "--studies-dir",
            str(studies),
            "--top",
            "2",
            "--no-progress",
        ],
    )
    assert ensembled.exit_code == 0, ensembled.output
    assert "2 trials x folds = 4 models" in ensembled.stdout


@pytest.mark.slow
def test_killing_and_restarting_the_whole_tune_command_resumes_the_study(
    tmp_path: Path, data_root: Path
) -> None:
    space = study_file(tmp_path, data_root, n_trials=3, epochs="2")
    studies = tmp_path / "studies"
    tune = _tune_process(space, "--workers", "2")

    def one_complete_one_running() -> bool:
        states = [t.state for t in _trials(studies)]
        return TrialState.COMPLETE in states and TrialState.RUNNING in states

    _wait_for(one_complete_one_running, 180, tune)
    os.killpg(tune.pid, signal.SIGKILL)  # the supervisor and its workers
    tune.communicate()
    interrupted = [t.number for t in _trials(studies) if t.state == TrialState.RUNNING]
    assert interrupted

    again = _tune_process(space, "--workers", "2")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert "cells (resumed)" in out
    trials = _assert_complete_and_nothing_lost(studies, 3)
    for number in interrupted:
        assert trials[number].state == TrialState.FAIL
    assert f"{len(interrupted)} failed" in out
