"""Tests for automl.data.download against a local HTTP server that serves an npz of real images."""

from __future__ import annotations

import functools
import http.server
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import make_medmnist_npz

from automl.config.sources import DataSource
from automl.data import download
from automl.data.download import (
    BLOODMNIST_CLASS_NAMES,
    default_cache_dir,
    fetch_bloodmnist,
    file_md5,
)
from automl.data.readers import read_source
from automl.errors import DataError, DownloadError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def served(shared_data: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A BloodMNIST-layout npz of real crops (64 px) served on 127.0.0.1: (URL, MD5)."""
    root = tmp_path / "server"
    path = make_medmnist_npz(shared_data, root / "bloodmnist_64.npz", size=64)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/bloodmnist_64.npz", file_md5(path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/bloodmnist_64.npz"


# MedMNIST v3's own record of the BloodMNIST files (medmnist/info.py: url, MD5, url_64,
# MD5_64, ...), copied here as the independent reference: a typo in automl's table (a wrong
# checksum would refuse every good download; a wrong URL would fetch another file) fails.
MEDMNIST_INFO = {
    28: ("bloodmnist.npz", "7053d0359d879ad8a5505303e11de1dc"),
    64: ("bloodmnist_64.npz", "2b94928a2ae4916078ca51e05b6b800b"),
    128: ("bloodmnist_128.npz", "adace1e0ed228fccda1f39692059dd4c"),
    224: ("bloodmnist_224.npz", "b718ff6835fcbdb22ba9eacccd7b2601"),
}


def test_published_table_matches_medmnists_own_record() -> None:
    assert sorted(download.BLOODMNIST_FILES) == sorted(MEDMNIST_INFO)
    for size, (url, md5) in download.BLOODMNIST_FILES.items():
        name, expected_md5 = MEDMNIST_INFO[size]
        assert url == f"https://zenodo.org/records/10519652/files/{name}?download=1"
        assert md5 == expected_md5
        assert download.bloodmnist_file_name(size) == name


def test_download_then_reuse_without_network(
    served: tuple[str, str], dead_url: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url, md5 = served
    cache = tmp_path / "cache"

    path = fetch_bloodmnist(64, cache, url=url, md5=md5, progress=True)

    assert path == cache / "bloodmnist_64.npz" and file_md5(path) == md5
    assert [p.name for p in cache.iterdir()] == ["bloodmnist_64.npz"]  # no .part left
    assert "bloodmnist_64.npz" in capsys.readouterr().err  # the progress bar, on stderr
    # A second call finds the verified file and never contacts the (dead) server.
    assert fetch_bloodmnist(64, cache, url=dead_url, md5=md5) == path


def test_read_source_downloads_into_data_home(
    served: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, md5 = served
    monkeypatch.setitem(download.BLOODMNIST_FILES, 64, (url, md5))
    monkeypatch.setenv("AUTOML_DATA_HOME", str(tmp_path / "home"))
    source = DataSource(format="bloodmnist", size=64, split="train+val")

    images = read_source(source, 32, cache_dir=tmp_path / "decoded")

    assert default_cache_dir() == tmp_path / "home" / "medmnist"
    assert (tmp_path / "home" / "medmnist" / "bloodmnist_64.npz").is_file()
    assert images.images.shape == (12, 32, 32, 3)
    assert images.class_names == BLOODMNIST_CLASS_NAMES
    assert images.ids[0] == "train_0" and images.ids[-1] == "val_5"
    # The decoded set comes from the cache without a download or even the npz file.
    (tmp_path / "home" / "medmnist" / "bloodmnist_64.npz").unlink()
    again = read_source(source, 32, cache_dir=tmp_path / "decoded")
    assert isinstance(again.images, np.memmap)
    assert np.array_equal(again.images, images.images)


def test_wrong_md5_of_download_is_an_error_and_leaves_nothing(
    served: tuple[str, str], tmp_path: Path
) -> None:
    url, md5 = served
    cache = tmp_path / "cache"

    with pytest.raises(
        DownloadError,
        match=rf"expected a file with MD5 {'0' * 32}, downloaded "
        rf"one with MD5 {md5}.*put it at .*bloodmnist_64\.npz \(MD5 {'0' * 32}\)",
    ):
        fetch_bloodmnist(64, cache, url=url, md5="0" * 32)

    assert list(cache.iterdir()) == []


def test_cached_file_with_wrong_md5_is_downloaded_again(
    served: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, md5 = served
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "bloodmnist_64.npz").write_bytes(b"partial download")

    with caplog.at_level(logging.WARNING, logger="automl.data.download"):
        path = fetch_bloodmnist(64, cache, url=url, md5=md5)

    assert file_md5(path) == md5
    assert "downloading it again and replacing it" in caplog.text


def test_unreachable_server_names_url_and_manual_route(dead_url: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    md5 = download.BLOODMNIST_FILES[64][1]

    with pytest.raises(DownloadError, match=r"the download failed") as info:
        fetch_bloodmnist(64, cache, url=dead_url)

    message = str(info.value)
    assert message.startswith(dead_url)
    assert f"download {dead_url} with a browser and put it at {cache / 'bloodmnist_64.npz'}" in (
        message
    )
    assert f"(MD5 {md5})" in message
    assert list(cache.iterdir()) == []


def test_http_error_is_a_download_error(served: tuple[str, str], tmp_path: Path) -> None:
    url, _ = served
    missing = url.replace("bloodmnist_64", "bloodmnist_128")

    with pytest.raises(DownloadError, match=r"bloodmnist_128\.npz: .*failed \(HTTP 404 "):
        fetch_bloodmnist(128, tmp_path, url=missing)


def test_unknown_size_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.size: expected one of .*\(28, 64, 128, 224\)"):
        read_source(DataSource(format="bloodmnist", size=96, path=str(tmp_path)), 32)
    with pytest.raises(DataError, match=r"found 96"):
        fetch_bloodmnist(96, tmp_path)
