"""A torn ``study.journal`` (a full disk during an append) is refused on open, and repaired.

One real tiny study is tuned once (two folds of a tiny CNN on real crops); each test tears a copy
of its journal the way a write cut short by a full disk does: in the middle of the last line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
from conftest import make_folder_layout, write_study_yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from typer.testing import CliRunner

from automl.cli.main import app
from automl.errors import StudyError
from automl.search.journal import find_damage, repair_journal
from automl.search.storage import load_study

runner = CliRunner()


@pytest.fixture(scope="module")
def tuned(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The studies folder of a real study with one complete trial (journal storage)."""
    base = tmp_path_factory.mktemp("journal")
    data = make_folder_layout(shared_data, base / "data", per_class=8)
    space = write_study_yaml(base / "cells.yaml", data, base / "studies", n_trials=1, epochs="1")
    result = runner.invoke(app, ["tune", "--space", str(space), "--no-progress"])
    assert result.exit_code == 0, result.output
    return base / "studies"


@pytest.fixture
def studies(tuned: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "studies"
    shutil.copytree(tuned / "cells", copy / "cells")
    return copy


def _tear(journal: Path) -> bytes:
    """Cut the journal in the middle of its last line; return what it held before."""
    whole = journal.read_bytes()
    last = whole.rstrip(b"\n").rfind(b"\n") + 1
    journal.write_bytes(whole[: last + (len(whole) - last) // 2])
    return whole


def _error_lines(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_torn_last_line_is_refused_on_open_with_the_repair_command(studies: Path) -> None:
    journal = studies / "cells" / "study.journal"
    _tear(journal)
    # What Optuna 5.1 does with it alone: it opens, silently without the torn record.
    plain = JournalStorage(JournalFileBackend(str(journal)))
    assert optuna.load_study(study_name="cells", storage=plain).trials

    result = runner.invoke(app, ["show", "--study", "cells", "--studies-dir", str(studies)])
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = _error_lines(result)
    assert f"{journal}: every line must be one complete record, but the last line is torn" in line
    assert f"automl repair --study cells --studies-dir {studies}" in line
    assert len(result.stderr.strip().splitlines()) == 1


def test_repair_keeps_a_backup_and_drops_only_the_torn_line(studies: Path) -> None:
    journal = studies / "cells" / "study.journal"
    whole = _tear(journal)
    torn = journal.read_bytes()
    complete = torn[: torn.rfind(b"\n") + 1]

    result = runner.invoke(app, ["repair", "--study", "cells", "--studies-dir", str(studies)])
    assert result.exit_code == 0, result.output
    (backup,) = (studies / "cells").glob("study.journal.bak-*")
    assert backup.read_bytes() == torn  # the file as it was, kept
    assert journal.read_bytes() == complete  # every whole record, nothing else
    assert f"{len(torn) - len(complete)} torn bytes dropped" in result.stdout
    assert str(backup) in result.stdout

    _, study = load_study("cells", studies)  # opens again
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [0]
    assert len(whole) > len(complete)  # the torn record is gone, not invented
    again = runner.invoke(app, ["repair", "--study", "cells", "--studies-dir", str(studies)])
    assert again.exit_code == 0 and "has no torn line; nothing changed" in again.stdout
    assert len(list((studies / "cells").glob("study.journal.bak-*"))) == 1


def test_records_appended_onto_a_torn_line_are_refused_and_then_kept_by_the_repair(
    studies: Path,
) -> None:
    journal = studies / "cells" / "study.journal"
    _tear(journal)
    # A worker that was running when the disk filled goes on appending after the tear.
    running = optuna.load_study(
        study_name="cells", storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    running.set_user_attr("written_after_the_tear", 1)  # lands on the torn line
    with pytest.raises(StudyError, match=r"but line \d+ is torn"):
        load_study("cells", studies)  # Optuna alone would skip that line too
    with pytest.raises(ValueError):  # Optuna's own reader now fails on every open
        running.set_user_attr("and_one_more", 2)
    with pytest.raises(StudyError, match=r"but line \d+ is torn .*`automl repair --study cells"):
        load_study("cells", studies)

    repaired = repair_journal(journal)
    assert repaired.backup is not None and len(repaired.salvaged_lines) == 1
    assert find_damage(journal) is None
    _, study = load_study("cells", studies)
    # Both writes succeeded for their writer: both are kept, the torn bytes are not.
    assert study.user_attrs["written_after_the_tear"] == 1
    assert study.user_attrs["and_one_more"] == 2
    assert [t.number for t in study.get_trials(deepcopy=False)] == [0]


def test_a_sound_journal_opens_and_repair_refuses_a_study_without_one(
    studies: Path, tmp_path: Path
) -> None:
    journal = studies / "cells" / "study.journal"
    assert find_damage(journal) is None
    load_study("cells", studies)
    result = runner.invoke(app, ["repair", "--study", "nope", "--studies-dir", str(studies)])
    assert result.exit_code == 2
    (line,) = _error_lines(result)
    assert "no journal file" in line
