"""The ``automl`` command end to end on real blood-cell crops: tune -> ensemble -> predict."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_folder_layout, wbc_crops, write_study_yaml
from typer.testing import CliRunner

from automl.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder_layout(shared_data, tmp_path_factory.mktemp("cells"), per_class=8)


def _invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.slow
def test_tune_ensemble_predict_show(tmp_path: Path, data_root: Path, shared_data: Path) -> None:
    studies = tmp_path / "studies"
    space = write_study_yaml(tmp_path / "cells.yaml", data_root, studies, n_trials=2)

    tuned = _invoke("tune", "--space", str(space), "--no-progress")
    assert tuned.exit_code == 0, tuned.output
    assert "study:    cells (new)" in tuned.stdout
    assert "2 complete, 0 pruned, 0 failed" in tuned.stdout
    assert "trial 0 complete" in tuned.stderr  # one log line per trial, on stderr
    folder = studies / "cells"
    assert (folder / "config.yaml").is_file() and (folder / "study.journal").is_file()

    shown = _invoke("show", "--study", "cells", "--studies-dir", str(studies))
    assert shown.exit_code == 0, shown.output
    assert "2 complete, 0 pruned, 0 failed" in shown.stdout

    ensembled = _invoke(
        "ensemble",
        "--study",
        "cells",
        "--studies-dir",
        str(studies),
        "--top",
        "2",
        "--no-progress",
    )
    assert ensembled.exit_code == 0, ensembled.output
    assert "2 trials x folds = 4 models" in ensembled.stdout
    assert "hold-out (6 images)" in ensembled.stdout
    for name in (
        "ensemble.json",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "holdout_predictions.csv",
    ):
        assert (folder / "ensemble" / name).is_file(), name
    matrix = pd.read_csv(folder / "ensemble" / "confusion_matrix.csv", index_col=0)
    assert int(matrix.to_numpy().sum()) == 6

    new_images = tmp_path / "new"
    new_images.mkdir()
    extra = [files[-1] for files in wbc_crops(shared_data, per_class=10).values()]
    for file in extra:
        shutil.copy2(file, new_images / file.name)
    out = tmp_path / "predictions.csv"
    predicted = _invoke(
        "predict",
        "--study",
        "cells",
        "--studies-dir",
        str(studies),
        "--input",
        str(new_images),
        "--out",
        str(out),
        "--no-progress",
    )
    assert predicted.exit_code == 0, predicted.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == [
        "id",
        "label",
        "prob_Eosinophil",
        "prob_Lymphocyte",
        "prob_Neutrophil",
        "votes",
        "n_models",
    ]
    assert sorted(frame["id"]) == sorted(p.stem for p in extra)
    assert set(frame["label"]) <= {"Eosinophil", "Lymphocyte", "Neutrophil"}
    assert frame.filter(like="prob_").sum(axis=1).round(4).eq(1).all()
    assert frame["votes"].between(1, 4).all() and frame["n_models"].eq(4).all()

    kaggle = tmp_path / "submission.csv"
    submitted = _invoke(
        "predict",
        "--study",
        "cells",
        "--studies-dir",
        str(studies),
        "--input",
        str(new_images),
        "--out",
        str(kaggle),
        "--format",
        "kaggle",
        "--tta",
        "--no-progress",
    )
    assert submitted.exit_code == 0, submitted.output
    assert list(pd.read_csv(kaggle).columns) == ["id", "label"]


def test_tune_resumes_an_existing_study(tmp_path: Path, data_root: Path) -> None:
    studies = tmp_path / "studies"
    space = write_study_yaml(tmp_path / "cells.yaml", data_root, studies, n_trials=1, epochs="1")
    first = _invoke("tune", "--space", str(space), "--no-progress")
    assert first.exit_code == 0, first.output
    second = _invoke("tune", "--space", str(space), "--no-progress", "--n-trials", "2")
    assert second.exit_code == 0, second.output
    assert "cells (resumed)" in second.stdout
    assert "2 complete, 0 pruned, 0 failed (1 run now)" in second.stdout
    third = _invoke("tune", "--space", str(space), "--no-progress", "--n-trials", "2")
    assert "(0 run now)" in third.stdout  # n_trials counts the whole study, not each run


def test_resume_with_other_data_settings_is_refused(tmp_path: Path, data_root: Path) -> None:
    studies = tmp_path / "studies"
    space = write_study_yaml(tmp_path / "cells.yaml", data_root, studies, n_trials=1, epochs="1")
    assert _invoke("tune", "--space", str(space), "--no-progress").exit_code == 0
    changed = _invoke("tune", "--space", str(space), "--no-progress", "--set", "data.n_folds=3")
    assert changed.exit_code == 2
    assert "exists with a different 'data' section" in changed.stderr


def test_bad_input_exits_2_with_one_line_and_creates_nothing(
    tmp_path: Path, data_root: Path
) -> None:
    studies = tmp_path / "studies"
    space = write_study_yaml(tmp_path / "cells.yaml", data_root, studies)
    text = space.read_text().replace("low: 1.0e-3", "low: 1e-3")
    space.write_text(text)
    result = _invoke("tune", "--space", str(space), "--no-progress")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "space.learning_rate.low must be a number, got '1e-3' (str)" in lines[0]
    assert "write it with a dot" in lines[0]
    assert not studies.exists()


def test_too_many_folds_is_caught_before_any_study_exists(tmp_path: Path, data_root: Path) -> None:
    studies = tmp_path / "studies"
    space = write_study_yaml(tmp_path / "cells.yaml", data_root, studies)
    result = _invoke("tune", "--space", str(space), "--no-progress", "--set", "data.n_folds=7")
    assert result.exit_code == 2
    assert "data.n_folds=7 but class" in result.stderr
    assert not (studies / "cells").exists()


def test_validate_prints_parameters_and_samples(tmp_path: Path, data_root: Path) -> None:
    space = write_study_yaml(tmp_path / "cells.yaml", data_root, tmp_path / "studies")
    result = _invoke(
        "validate",
        "--space",
        str(space),
        "--samples",
        "2",
        "--set",
        "training.deterministic=off",
        "--set",
        "ensemble.vote=soft",
    )
    assert result.exit_code == 0, result.output
    assert "valid." in result.stdout
    assert "training: early stopping off, mixed precision auto, " in result.stdout
    assert "deterministic off" in result.stdout
    assert "ensemble: greedy selection, soft vote" in result.stdout
    assert "backbone.custom_cnn.filters: categorical [4, 8]" in result.stdout
    assert result.stdout.count("sample ") == 2
    # The portfolio's CNN, projected: 8 filters (nearest to its 32), its 1e-3 rate in range.
    assert "warm start (portfolio): 1 trial(s) enqueued before the sampler:" in result.stdout
    assert (
        '  portfolio:cnn: {"backbone.custom_cnn.filters": 8, "learning_rate": 0.001}'
        in result.stdout
    )
    assert "pruner:   none (every trial trains all its folds)" in result.stdout
    assert not (tmp_path / "studies").exists()  # validate trains and writes nothing


def test_validate_says_what_early_stopping_and_rung_pruning_will_do(
    tmp_path: Path, data_root: Path
) -> None:
    space = write_study_yaml(
        tmp_path / "cells.yaml",
        data_root,
        tmp_path / "studies",
        epochs="12",
        pruner="{name: hyperband, min_resource: 1}",
        extra_space="  schedule: cosine\n  warmup_epochs: 2",
    )
    result = _invoke(
        "validate", "--space", str(space), "--set", "training.early_stopping_patience=3"
    )
    assert result.exit_code == 0, result.output
    # 2 warm-up epochs, then a decay over epochs 3-12 (counted from 1): its second half starts
    # at epoch 8.
    assert (
        "training: early stopping after 3 flat epochs, counted from epoch 8 of 12 (the middle "
        "of the cosine decay), last epoch's weights kept" in result.stdout
    )
    assert "pruner:   hyperband {'min_resource': 1, 'max_resource': 12}, rungs inside fold 0" in (
        result.stdout
    )


def test_unknown_study_names_the_known_ones(tmp_path: Path) -> None:
    result = _invoke("show", "--study", "nope", "--studies-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "--study nope: no study at" in result.stderr


def test_storage_url_and_dashboard_serve_the_study(tmp_path: Path, data_root: Path) -> None:
    import json
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    studies = tmp_path / "studies"
    space = write_study_yaml(tmp_path / "cells.yaml", data_root, studies, n_trials=1, epochs="1")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    tuned = _invoke("tune", "--space", str(space), "--no-progress", "--storage", url)
    assert tuned.exit_code == 0, tuned.output
    assert (tmp_path / "optuna.db").is_file() and not (
        studies / "cells" / "study.journal"
    ).exists()

    with socket.socket() as probe:  # a free port on the loopback interface
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "automl.cli",
            "dashboard",
            "--study",
            "cells",
            "--studies-dir",
            str(studies),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        studies_json = None
        for _ in range(60):
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/studies", timeout=2
                ) as r:
                    studies_json = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        assert studies_json is not None, "the dashboard did not answer"
        names = [s["study_name"] for s in studies_json["study_summaries"]]
        assert names == ["cells"]
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}/dashboard" in out


def test_unwritable_studies_dir_is_a_one_line_error(tmp_path: Path, data_root: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the studies folder should be")
    space = write_study_yaml(tmp_path / "cells.yaml", data_root, blocker / "studies")
    result = _invoke("tune", "--space", str(space), "--no-progress")
    assert result.exit_code == 2
    assert "cannot write the study folder" in result.stderr
    assert "--studies-dir" in result.stderr
