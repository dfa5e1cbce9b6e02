"""The GPU start-up order, checked on CPU: every command sets up the device before a model.

Once TensorFlow has initialised a GPU its memory growth can no longer be set, and each process
then holds most of that GPU's memory. So every command that builds or loads a model must set
the device up first, and the ``--workers``/``--gpus`` supervisor must never touch a GPU at all:
it checks the pretrained weights in a process of its own that sees none. These tests record the
order of the calls that matter (device set-up, building a backbone, running trials, loading an
ensemble) with spies on a tiny real-image study whose space draws a pretrained backbone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import make_folder_layout
from typer.testing import CliRunner

import automl.ensemble.build
import automl.ensemble.export_model
import automl.ensemble.predict
import automl.nn.fit
import automl.nn.models
import automl.search.tune
import automl.search.workers
from automl.cli.main import app
from automl.config.schema import load_config
from automl.errors import AutoMLError
from automl.search.tune import run_tune
from automl.search.workers import NO_GPU_ENV, run_worker

runner = CliRunner()


@pytest.fixture(scope="module")
def data_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder_layout(shared_data, tmp_path_factory.mktemp("cells"), per_class=6)


def _space(tmp_path: Path, data_root: Path, weights: str = "imagenet") -> Path:
    """A study whose backbone is pretrained: checking its weights builds it."""
    path = tmp_path / "pretrained.yaml"
    path.write_text(
        f"""
study:
  name: pretrained
  n_trials: 2
  seed: 3
  sampler: {{name: random}}
  pruner: {{name: none}}
  warm_start: none
  studies_dir: {tmp_path / "studies"}
data: {{format: folder, path: {data_root}, image_size: 32, n_folds: 2, holdout_fraction: 0.25}}
space:
  backbone: {{name: mobilenetv3_small, weights: {weights}}}
  head: {{layers: 0}}
  learning_rate: 1.0e-3
  batch_size: 8
  epochs: 1
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What ran, in order: ``device`` set-up, a ``backbone`` built, ``trials`` run."""
    events: list[str] = []

    def configure_device(mixed_precision: str, deterministic: str = "auto") -> dict[str, Any]:
        events.append("device")
        return {"gpus": 0, "mixed_precision": False, "deterministic": True}

    def ensure_weights(backbone: str, weights: str, image_size: int) -> None:
        events.append("backbone")

    def optimize(*args: Any, **kwargs: Any) -> None:
        events.append("trials")

    monkeypatch.setattr(automl.nn.fit, "configure_device", configure_device)
    monkeypatch.setattr(automl.nn.models, "ensure_weights", ensure_weights)
    monkeypatch.setattr(automl.search.tune, "optimize", optimize)
    monkeypatch.setattr(automl.search.workers, "optimize", optimize)
    return events


def test_tune_and_worker_set_the_device_up_before_building_a_backbone_or_a_trial(
    tmp_path: Path, data_root: Path, calls: list[str]
) -> None:
    config = load_config(_space(tmp_path, data_root))
    run_tune(config, progress=False)
    assert calls[0] == "device" and calls.count("backbone") == 1 and calls[-1] == "trials"

    calls.clear()
    run_worker(config)  # `automl worker` joining the study the tune above created
    assert calls[0] == "device" and "backbone" in calls and calls[-1] == "trials"


def test_the_supervisor_checks_weights_in_a_process_that_sees_no_gpu(
    tmp_path: Path, data_root: Path, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A weights file that is no weights file: the check fails the same way on every machine,
    # and it must come back from the checking process as the one-line error it raised there.
    bad = tmp_path / "not_weights.h5"
    bad.write_text("not an HDF5 file", encoding="utf-8")
    config = load_config(_space(tmp_path, data_root, weights=str(bad)))
    started: list[dict[str, Any]] = []
    popen = subprocess.Popen

    def spy(command: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        started.append({"command": command, "env": kwargs.get("env")})
        return popen(command, **kwargs)

    monkeypatch.setattr(automl.search.workers.subprocess, "Popen", spy)
    monkeypatch.setattr(automl.search.tune, "supervise", lambda *a, **k: calls.append("trials"))
    with pytest.raises(AutoMLError, match=r"^space\.backbone\.mobilenetv3_small\.weights: could"):
        run_tune(config, progress=False, workers=2)
    assert calls == []  # this process set up no device and built no backbone
    (check,) = started
    assert check["command"][1:] == ["-m", "automl.search.workers", "check-weights"]
    assert check["env"]["CUDA_VISIBLE_DEVICES"] == "" == NO_GPU_ENV["CUDA_VISIBLE_DEVICES"]


@pytest.mark.parametrize(
    ("command", "module", "function"),
    [
        (["ensemble"], automl.ensemble.build, "run_ensemble"),
        (["predict", "--input", "IMAGES", "--out", "OUT"], automl.ensemble.predict, "run_predict"),
        (["export", "--out", "OUT"], automl.ensemble.export_model, "export_ensemble"),
    ],
)
def test_commands_that_load_models_turn_on_memory_growth_first(
    tmp_path: Path,
    data_root: Path,
    calls: list[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    module: Any,
    function: str,
) -> None:
    run_tune(load_config(_space(tmp_path, data_root)), progress=False)  # a study to open
    calls.clear()

    def loads_models(*args: Any, **kwargs: Any) -> None:
        calls.append("models")
        raise AutoMLError("stopped by the test after the models were asked for")

    monkeypatch.setattr(automl.nn.fit, "memory_growth", lambda: calls.append("growth") or 0)
    monkeypatch.setattr(module, function, loads_models)
    args = [
        {"IMAGES": str(data_root), "OUT": str(tmp_path / "out.csv")}.get(a, a) for a in command
    ]
    result = runner.invoke(
        app, [*args, "--study", "pretrained", "--studies-dir", str(tmp_path / "studies")]
    )
    assert "stopped by the test" in result.stderr, result.output
    assert calls == ["growth", "models"]
