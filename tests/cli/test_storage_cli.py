"""The storage URL and the dashboard from the command line: no password in argv, files or help.

One real tiny study (a tiny CNN on real crops) is tuned once in an SQLite database named only by
``AUTOML_STORAGE``; a second "machine" (another studies folder) joins it through that variable.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_folder_layout, write_study_yaml
from typer.testing import CliRunner

from automl.cli.main import app
from automl.config.schema import load_config
from automl.config.storage_url import STORAGE_ENV

runner = CliRunner()
SECRET = "s3cr3t"


@pytest.fixture(scope="module")
def tuned(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("storage_cli")
    data = make_folder_layout(shared_data, base / "data", per_class=8)
    space = write_study_yaml(base / "cells.yaml", data, base / "studies", n_trials=1, epochs="1")
    url = f"sqlite:///{base / 'cells.db'}"
    result = runner.invoke(
        app, ["tune", "--space", str(space), "--no-progress"], env={STORAGE_ENV: url}
    )
    assert result.exit_code == 0, result.output
    return {"base": base, "space": space, "url": url, "studies": base / "studies"}


def test_tune_takes_the_storage_from_the_environment_and_saves_it_owner_only(
    tuned: dict[str, Any],
) -> None:
    saved = tuned["studies"] / "cells" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["study"]["storage"] == tuned["url"]
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert not (tuned["studies"] / "cells" / "study.journal").exists()


def test_a_worker_elsewhere_finds_the_study_from_the_environment(
    tuned: dict[str, Any], tmp_path: Path
) -> None:
    machine2 = tmp_path / "machine2"
    where = ["worker", "--study", "cells", "--studies-dir", str(machine2), "--no-progress"]
    alone = runner.invoke(app, where, env={STORAGE_ENV: None})
    assert alone.exit_code == 2 and "pass --storage" in alone.stderr
    joined = runner.invoke(app, where, env={STORAGE_ENV: tuned["url"]})
    assert joined.exit_code == 0, joined.output
    assert "0 trial(s) run for study 'cells'" in joined.stdout  # its one trial is done
    fetched = machine2 / "cells" / "config.yaml"
    assert load_config(fetched).study.storage == tuned["url"]
    assert stat.S_IMODE(fetched.stat().st_mode) == 0o600


def test_a_password_on_the_command_line_is_warned_about_and_never_shown(
    tuned: dict[str, Any], tmp_path: Path
) -> None:
    url = f"postgresql+psycopg2://ana:{SECRET}@127.0.0.1:1/automl"  # nobody listens on port 1
    args = ["tune", "--space", str(tuned["space"]), "--no-progress"]
    args += ["--studies-dir", str(tmp_path / "studies")]
    on_argv = runner.invoke(app, [*args, "--storage", url], env={STORAGE_ENV: None})
    assert on_argv.exit_code == 2
    assert SECRET not in on_argv.stderr and SECRET not in on_argv.stdout
    warnings = [line for line in on_argv.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: --storage holds a password, which every user of this machine can read with "
        f"ps; export {STORAGE_ENV}=URL instead, or leave the password out of the URL and let "
        "the driver read PGPASSWORD or ~/.pgpass. It is never saved to disk."
    ]
    assert "cannot open postgresql+psycopg2://ana:***@127.0.0.1:1/automl" in on_argv.stderr

    from_env = runner.invoke(app, args, env={STORAGE_ENV: url})
    assert from_env.exit_code == 2 and SECRET not in from_env.stderr
    assert "--storage holds a password" not in from_env.stderr
    assert not (tmp_path / "studies" / "cells").exists()  # refused: nothing left behind

    helped = runner.invoke(app, ["tune", "--help"], env={STORAGE_ENV: url})
    assert helped.exit_code == 0 and SECRET not in helped.output
    assert STORAGE_ENV in helped.output


@pytest.mark.parametrize(
    ("host", "warned"),
    [("0.0.0.0", True), ("::", True), ("192.168.1.20", True), ("lab-box", True)]
    + [("127.0.0.1", False), ("localhost", False), ("::1", False)],
)
def test_the_dashboard_warns_when_it_listens_beyond_this_machine(
    tuned: dict[str, Any], monkeypatch: pytest.MonkeyPatch, host: str, warned: bool
) -> None:
    import optuna_dashboard

    served: list[tuple[str, int]] = []
    monkeypatch.setattr(
        optuna_dashboard,
        "run_server",
        lambda storage, host, port, **_: served.append((host, port)),
    )
    result = runner.invoke(
        app,
        ["dashboard", "--study", "cells", "--studies-dir", str(tuned["studies"])]
        + ["--host", host, "--port", "8123"],
        env={STORAGE_ENV: None},
    )
    assert result.exit_code == 0, result.output
    assert served == [(host, 8123)]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    if not warned:
        assert warnings == []
        return
    (line,) = warnings
    assert f"--host {host} serves the dashboard to the network without any login" in line
    assert "ssh -N -L 8123:127.0.0.1:8123 USER@THIS_MACHINE" in line
    assert "--host 127.0.0.1" in line


def test_the_supervisor_hands_the_url_to_its_workers_in_the_environment(
    tuned: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import automl.search.workers as workers

    url = f"postgresql+psycopg2://ana:{SECRET}@db.lab/automl"
    config = load_config(tuned["space"], [f"study.storage={url}"])
    started: list[dict[str, Any]] = []

    class Started:
        pid = 4242
        stderr: list[str] = []

        def __init__(self, command: list[str], **options: Any) -> None:
            started.append({"argv": command, **options})

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(workers.subprocess, "Popen", Started)
    monkeypatch.setenv(STORAGE_ENV, "postgresql://someone@else/db")
    workers._spawn(config, workers.Slot(0), set()).reader.join(5)
    (child,) = started
    assert not any(SECRET in arg for arg in child["argv"])
    assert child["env"][STORAGE_ENV] == url
