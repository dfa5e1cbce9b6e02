"""``automl ensemble`` writes its files as one set, one run per study at a time, and only on
the data the study was tuned on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ensemble_study import STUDY, study_copy, tuned_study, where
from typer.testing import CliRunner

from automl.cli.main import app
from automl.ensemble import build
from automl.ensemble.folder import recover
from automl.ensemble.manifest import EnsembleResult
from automl.search.paths import ENSEMBLE_LOCK

__all__ = ["study_copy", "tuned_study"]  # fixtures

runner = CliRunner()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _ensemble(base: Path, *extra: str) -> object:
    return runner.invoke(app, ["ensemble", *where(base), "--no-progress", *extra])


def _disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("failing", ["predictions", "manifest"])
def test_a_failure_between_two_writes_leaves_the_previous_ensemble_whole(
    study_copy: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    first = _ensemble(study_copy)
    assert first.exit_code == 0, first.output
    study = study_copy / "studies" / STUDY
    before, listing = _snapshot(study / "ensemble"), sorted(p.name for p in study.iterdir())
    assert {"ensemble.json", "confusion_matrix.csv", "holdout_predictions.csv"} <= set(before)
    if failing == "predictions":  # after the confusion matrix, before the manifest
        monkeypatch.setattr(build, "write_frame_csv", _disk_full)
    else:  # after both hold-out files
        monkeypatch.setattr(EnsembleResult, "save", _disk_full)
    second = _ensemble(study_copy, "--vote", "soft", "--selection", "top_k")
    assert second.exit_code != 0 and isinstance(second.exception, OSError), second.output
    assert _snapshot(study / "ensemble") == before
    assert sorted(p.name for p in study.iterdir()) == listing  # no staging folder left


def test_a_swap_cut_short_keeps_the_previous_set_readable_and_restores_it(
    study_copy: Path,
) -> None:
    assert _ensemble(study_copy).exit_code == 0
    study = study_copy / "studies" / STUDY
    before = _snapshot(study / "ensemble")
    # A kill between the swap's two renames, and a staging folder of a killed run.
    (study / "ensemble").rename(study / ".ensemble.previous")
    (study / ".ensemble.123.abc.tmp").mkdir()
    out = study_copy / "p.csv"
    images = study_copy / "cells" / "Neutrophil"
    predicted = runner.invoke(
        app, ["predict", *where(study_copy), "--input", str(images), "--out", str(out)]
    )
    assert predicted.exit_code == 0, predicted.output
    recover(study / "ensemble")
    assert _snapshot(study / "ensemble") == before
    assert not (study / ".ensemble.previous").exists()
    assert not (study / ".ensemble.123.abc.tmp").exists()


def test_a_second_concurrent_ensemble_is_refused_in_one_line(study_copy: Path) -> None:
    lock = study_copy / "studies" / STUDY / ENSEMBLE_LOCK
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "f.write('pid of the other run'); f.flush(); print('locked', flush=True)\n"
            "time.sleep(120)\n",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        refused = _ensemble(study_copy)
        assert refused.exit_code == 2, refused.output
        assert "expected no other `automl ensemble` running on it" in refused.stderr
        assert "pid of the other run" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert not (study_copy / "studies" / STUDY / "ensemble").exists()
    finally:
        holder.kill()
        holder.wait()
    assert _ensemble(study_copy).exit_code == 0  # the lock dies with its holder


def test_ensemble_refuses_data_changed_since_tuning(study_copy: Path) -> None:
    # Two tuning images gone: the hold-out and folds drawn again differ from splits.json.
    for image in sorted((study_copy / "cells" / "Neutrophil").glob("*.jpg"))[:2]:
        image.unlink()
    result = _ensemble(study_copy)
    assert result.exit_code == 2, result.output
    assert "the study was created with different data" in result.stderr
    assert not (study_copy / "studies" / STUDY / "ensemble").exists()
