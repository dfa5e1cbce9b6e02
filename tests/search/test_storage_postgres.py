"""A study on a real PostgreSQL server: concurrent workers, the heartbeat, workers elsewhere.

Each test gets a fresh database in a throwaway cluster (``initdb``/``pg_ctl`` of the Debian
``postgresql`` package, on 127.0.0.1 at a free port, in a temporary folder, removed afterwards).
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user. Tests
are skipped, saying why, where the server binaries or ``psycopg2`` are missing (``bash .ci/run``
installs both).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import make_folder_layout
from optuna.trial import TrialState
from test_workers import (
    assert_no_lost_or_duplicated,
    kill_and_retry,
    run_storage_workers,
    study_file,
)
from typer.testing import CliRunner

from automl.cli.main import app
from automl.config.schema import load_config
from automl.errors import StudyError
from automl.search.attrs import RETRY_OF, SPLITS_ATTR, WORKER_ATTR
from automl.search.storage import open_storage

runner = CliRunner()


def _server_binaries() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields its URL without a database name."""
    yield from _cluster()


#: The password of the cluster that asks for one (``password_server``).
PASSWORD = "pw-s3cr3t"


@pytest.fixture(scope="module")
def password_server() -> Iterator[str]:
    """A throwaway cluster that asks for a password (scram-sha-256); its URL has none."""
    yield from _cluster(password=PASSWORD)


def _cluster(password: str | None = None) -> Iterator[str]:
    """Start a cluster in a temporary folder (trust, or a password for every connection)."""
    bin_dir = _server_binaries()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; install the Debian package "
            "postgresql (bash .ci/run does so as root) to run these tests"
        )
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed; pip install -e '.[postgres]'")
    base = Path(tempfile.mkdtemp(prefix="automl-pg-"))  # pytest's tmp folders are private
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data, log = base / "data", base / "server.log"
    auth = ["-A", "trust"]
    if password is not None:
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "initdb"), "-D", str(data), *auth, "-U", "automl", "-E", "UTF8"]
            + ["--no-sync"]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {base} -F -c max_connections=200"
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w"]
            + ["start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg2://automl@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh database for one test."""
    import psycopg2

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower()
    port = postgres_server.rsplit(":", 1)[1]
    connection = psycopg2.connect(host="127.0.0.1", port=port, user="automl", dbname="postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return f"{postgres_server}/{name}"


@pytest.fixture(scope="module")
def data_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder_layout(shared_data, tmp_path_factory.mktemp("cells"), per_class=8)


def test_four_processes_share_one_postgres_study_without_lost_or_duplicated_trials(
    tmp_path: Path, data_root: Path, postgres_url: str
) -> None:
    space = study_file(tmp_path, data_root, storage=postgres_url)
    study = run_storage_workers(space, n_workers=4, n_each=20)
    assert_no_lost_or_duplicated(study, 80)
    assert not (tmp_path / "studies" / "cells" / "study.journal").exists()


def test_postgres_heartbeat_fails_a_killed_workers_trial_and_retries_it(
    tmp_path: Path, data_root: Path, postgres_url: str
) -> None:
    study, number = kill_and_retry(study_file(tmp_path, data_root, storage=postgres_url))
    trials = study.get_trials(deepcopy=False)
    assert trials[number].state == TrialState.FAIL
    retries = [t for t in trials if t.user_attrs.get(RETRY_OF) == number]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING
    assert retries[0].params == trials[number].params


def test_unreachable_server_is_one_line_without_the_password(
    tmp_path: Path, data_root: Path, postgres_server: str
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    url = f"postgresql+psycopg2://automl:s3cret@127.0.0.1:{closed}/automl"
    with pytest.raises(StudyError) as caught:
        open_storage(load_config(study_file(tmp_path, data_root, storage=url)))
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert f"cannot open postgresql+psycopg2://automl:***@127.0.0.1:{closed}/automl" in message
    assert "Connection refused" in message

    missing_db = f"{postgres_server.replace('automl@', 'automl:s3cret@')}/no_such_database"
    result = runner.invoke(
        app,
        ["tune", "--space", str(tmp_path / "cells.yaml"), "--storage", missing_db]
        + ["--no-progress"],
    )
    assert result.exit_code == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "s3cret" not in result.stderr
    assert 'database "no_such_database" does not exist' in errors[0]


@pytest.mark.slow
def test_tune_and_a_worker_on_another_machine_share_a_postgres_study(
    tmp_path: Path, data_root: Path, postgres_url: str
) -> None:
    # "Machine 1" runs tune with one worker process; "machine 2" has only the URL and its own
    # studies folder; fold models go to a shared artifacts folder.
    shared = tmp_path / "shared_artifacts"
    space = study_file(tmp_path, data_root, storage=postgres_url, n_trials=3, epochs="1")
    space.write_text(
        space.read_text().replace(
            "  studies_dir:", f"  artifacts_dir: {shared}\n  studies_dir:", 1
        )
    )
    machine2 = tmp_path / "machine2"
    tune = subprocess.Popen(
        [sys.executable, "-m", "automl.cli", "tune", "--space", str(space), "--workers", "1"]
        + ["--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120

    def published() -> bool:  # tune stores its configuration in the study last
        if "cells" not in optuna.get_all_study_names(postgres_url):
            return False
        study = optuna.load_study(study_name="cells", storage=postgres_url)
        return SPLITS_ATTR in study.user_attrs

    while not published():
        assert tune.poll() is None and time.monotonic() < deadline, tune.communicate()
        time.sleep(0.2)
    worker = subprocess.run(
        [sys.executable, "-m", "automl.cli", "worker", "--study", "cells"]
        + ["--storage", postgres_url, "--studies-dir", str(machine2), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out, err = tune.communicate(timeout=300)
    assert tune.returncode == 0, err[-3000:]
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "trial(s) run for study 'cells'" in worker.stdout
    assert (machine2 / "cells" / "config.yaml").is_file()  # fetched from the study

    study = optuna.load_study(study_name="cells", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and len(trials) == 3  # none lost, none twice
    for t in complete:
        assert (shared / "trials" / f"{t.number:05d}" / "fold_1.keras").is_file()
    assert len({t.user_attrs[WORKER_ATTR] for t in trials}) >= 2

    # The other machine builds the ensemble from the shared fold models.
    ensembled = runner.invoke(
        app,
        [
            "ensemble",
            "--study",
            "cells",
            "--studies-dir",
            str(machine2),
            "--top",
            "2",
            "--no-progress",
        ],
    )
    assert ensembled.exit_code == 0, ensembled.output
    assert "2 trials x folds = 4 models" in ensembled.stdout


def _password_database(server: str, name: str) -> str:
    """A fresh database on the password cluster; its URL, without the password."""
    import psycopg2

    port = server.rsplit(":", 1)[1]
    connection = psycopg2.connect(
        host="127.0.0.1", port=port, user="automl", dbname="postgres", password=PASSWORD
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return f"{server}/{name}"


def test_the_password_comes_from_pgpassword_or_automl_storage_and_is_never_shown(
    tmp_path: Path, data_root: Path, password_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _password_database(password_server, "cells_env")  # as config.yaml keeps it
    with_password = url.replace("automl@", f"automl:{PASSWORD}@")
    config = load_config(study_file(tmp_path, data_root, storage=url))
    for name in ("PGPASSWORD", "PGPASSFILE", "AUTOML_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass of this machine's user
    with pytest.raises(StudyError, match=r"the password: AUTOML_STORAGE, PGPASSWORD or"):
        open_storage(config)

    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # libpq's own variable
    optuna.create_study(study_name="cells", storage=open_storage(config))
    monkeypatch.delenv("PGPASSWORD")

    monkeypatch.setenv("AUTOML_STORAGE", with_password)  # lends its password to the same URL
    assert optuna.get_all_study_names(open_storage(config)) == ["cells"]

    monkeypatch.setenv("AUTOML_STORAGE", with_password.replace("pw-s3cr3t", "wrong-pw"))
    with pytest.raises(StudyError) as caught:
        open_storage(config)
    assert "wrong-pw" not in str(caught.value) and "password authentication failed" in str(
        caught.value
    )
    assert "cannot open postgresql+psycopg2://automl:***@127.0.0.1:" in str(caught.value)


def test_a_password_given_on_the_command_line_reaches_the_workers_and_no_file(
    tmp_path: Path, data_root: Path, password_server: str
) -> None:
    url = _password_database(password_server, "cells_argv")
    with_password = url.replace("automl@", f"automl:{PASSWORD}@")
    space = study_file(tmp_path, data_root, n_trials=1, epochs="1")
    environment = {
        k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "AUTOML_STORAGE")
    }
    environment["HOME"] = str(tmp_path)
    tune = subprocess.run(
        [sys.executable, "-m", "automl.cli", "tune", "--space", str(space), "--workers", "1"]
        + ["--storage", with_password, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert tune.returncode == 0, tune.stderr[-3000:]
    assert "warning: --storage holds a password" in tune.stderr
    assert PASSWORD not in tune.stdout + tune.stderr
    # The worker process read config.yaml (no password) and AUTOML_STORAGE (the supervisor's).
    study = optuna.load_study(study_name="cells", storage=with_password)
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE
    saved = tmp_path / "studies" / "cells" / "config.yaml"
    assert load_config(saved).study.storage == url
    assert (saved.stat().st_mode & 0o777) == 0o600
    holding = [
        p for p in tmp_path.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()
    ]
    assert holding == []
