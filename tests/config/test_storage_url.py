"""The storage URL's password: masked on screen in every form, never in a saved file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from automl.config.schema import config_from_dict, load_config
from automl.config.storage_url import (
    STORAGE_ENV,
    child_environment,
    has_password,
    mask_url,
    runtime_url,
    scrub,
    without_password,
)

SECRET = "s3cr3t"

# Every place SQLAlchemy (and the drivers behind it) take a password from, and what is shown.
MASKED = [
    (
        "postgresql+psycopg2://ana:s3cr3t@db.lab:5432/automl",
        "postgresql+psycopg2://ana:***@db.lab:5432/automl",
    ),
    ("postgresql://:s3cr3t@db.lab/automl", "postgresql://:***@db.lab/automl"),
    (
        "postgresql://ana@db.lab/automl?password=s3cr3t",
        "postgresql://ana@db.lab/automl?password=***",
    ),
    (
        "postgresql://ana@db.lab/automl?sslmode=require&password=s3cr3t",
        "postgresql://ana@db.lab/automl?password=***&sslmode=require",
    ),
    (
        "postgresql:///automl?host=/run/pg&password=s3cr3t",
        "postgresql:///automl?host=%2Frun%2Fpg&password=***",
    ),
    (
        "postgresql://ana:x@db.lab/automl?sslpassword=s3cr3t",
        "postgresql://ana:***@db.lab/automl?sslpassword=***",
    ),
    (
        "mysql+pymysql://ana@db.lab/automl?passwd=s3cr3t",
        "mysql+pymysql://ana@db.lab/automl?passwd=***",
    ),
    ("postgresql://ana:s3cr%40t@db.lab/automl", "postgresql://ana:***@db.lab/automl"),
    # Not parsable by SQLAlchemy (a port that is no number; an '@' it splits at): still masked.
    ("postgresql://ana:s3cr3t@db.lab:port/automl", "postgresql://***@db.lab:port/automl"),
    ("postgresql://ana:s3c@r3t@db.lab/automl", "postgresql://***@db.lab/automl"),
    ("nonsense ana:s3cr3t@db.lab?password=s3cr3t", "nonsense ana:s3cr3t@db.lab?password=***"),
]


@pytest.mark.parametrize(("url", "shown"), MASKED)
def test_every_form_of_password_is_masked(url: str, shown: str) -> None:
    if url.startswith("nonsense"):  # no scheme: only the query can be told apart
        assert mask_url(url) == shown
        return
    assert mask_url(url) == shown
    assert "s3cr" not in mask_url(url) and "r3t" not in mask_url(url)
    assert has_password(url)


@pytest.mark.parametrize(("url", "shown"), MASKED[:8])
def test_the_saved_form_has_no_password_and_still_names_the_database(url: str, shown: str) -> None:
    saved = without_password(url)
    assert saved is not None and "s3cr" not in saved and "***" not in saved
    assert not has_password(saved)
    assert mask_url(saved) == saved  # nothing left to mask
    assert "db.lab" in saved or "/run/pg" in saved.replace("%2F", "/")


def test_urls_without_a_password_are_left_alone() -> None:
    for url in (
        "sqlite:///studies/x.db",
        "postgresql+psycopg2://ana@db.lab/automl?sslmode=require",
    ):
        assert not has_password(url)
        assert mask_url(url) == url and without_password(url) == url
    assert without_password(None) is None and not has_password(None)


def test_a_drivers_error_text_loses_the_password_in_both_spellings() -> None:
    url = "postgresql+psycopg2://ana:p%40ss@db.lab:5432/automl?password=qu%3Dery"
    text = "could not connect: user ana password p@ss (p%40ss) or qu=ery rejected; password=x"
    assert scrub(text, url) == (
        "could not connect: user ana password *** (***) or *** rejected; password=***"
    )


def test_the_environment_lends_its_password_to_the_same_database_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved = "postgresql+psycopg2://ana@db.lab:5432/automl"
    full = "postgresql+psycopg2://ana:s3cr3t@db.lab:5432/automl"
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert runtime_url(saved) == saved  # the driver's PGPASSWORD / ~/.pgpass then
    monkeypatch.setenv(STORAGE_ENV, full)
    assert runtime_url(saved) == full
    assert runtime_url("postgresql+psycopg2://ana@db.lab:5432/other") == (
        "postgresql+psycopg2://ana@db.lab:5432/other"
    )
    assert runtime_url(None) is None  # the journal file stays the journal file


def test_a_worker_process_gets_the_url_in_its_environment_not_a_stale_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = "postgresql+psycopg2://ana:s3cr3t@db.lab:5432/automl"
    monkeypatch.setenv(STORAGE_ENV, "postgresql://someone@else/db")
    assert child_environment(full)[STORAGE_ENV] == full
    # A journal study's workers must not be sent to the database the variable names.
    assert STORAGE_ENV not in child_environment(None)
    assert child_environment(None)["PATH"] == os.environ["PATH"]


def test_the_saved_configuration_has_no_password_and_is_owner_only(tmp_path: Path) -> None:
    url = (
        f"postgresql+psycopg2://ana:{SECRET}@db.lab:5432/automl?sslmode=require&password={SECRET}"
    )
    config = config_from_dict(
        {
            "study": {"name": "cells", "storage": url},
            "data": {"format": "digits", "image_size": 8},
        },
        source="test",
    )
    path = tmp_path / "config.yaml"
    path.write_text("old\n")
    path.chmod(0o644)  # a file the umask left readable by all, replaced in place
    old_umask = os.umask(0o022)
    try:
        config.save(path)
    finally:
        os.umask(old_umask)
    text = path.read_text()
    assert SECRET not in text and "***" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = yaml.safe_load(text)["study"]["storage"]
    assert saved == "postgresql+psycopg2://ana@db.lab:5432/automl?sslmode=require"
    assert load_config(path).study.storage == saved  # reloads: the password comes at run time
