"""Download the official BloodMNIST files once, check them against their published MD5, keep them.

The URLs and checksums are those of MedMNIST v3 (``medmnist/info.py`` in
https://github.com/MedMNIST/MedMNIST, version 3.0.2, Zenodo record 10519652). The 28x28 file is
the same file as in MedMNIST v2 (record 6496656, same MD5).

A download goes to a temporary file beside its destination and is renamed into place only after its
MD5 matched, so an interrupted download never leaves a file that looks complete. A cached file with
the right MD5 is used without touching the network; one with the wrong MD5 (a partial copy, a
different version) is downloaded again and replaced, with a warning.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from automl.errors import DataError, DownloadError

logger = logging.getLogger(__name__)

#: Official BloodMNIST files by image edge: (URL, MD5), from MedMNIST 3.0.2 ``medmnist/info.py``.
BLOODMNIST_FILES: dict[int, tuple[str, str]] = {
    28: (
        "https://zenodo.org/records/10519652/files/bloodmnist.npz?download=1",
        "7053d0359d879ad8a5505303e11de1dc",
    ),
    64: (
        "https://zenodo.org/records/10519652/files/bloodmnist_64.npz?download=1",
        "2b94928a2ae4916078ca51e05b6b800b",
    ),
    128: (
        "https://zenodo.org/records/10519652/files/bloodmnist_128.npz?download=1",
        "adace1e0ed228fccda1f39692059dd4c",
    ),
    224: (
        "https://zenodo.org/records/10519652/files/bloodmnist_224.npz?download=1",
        "b718ff6835fcbdb22ba9eacccd7b2601",
    ),
}

#: BloodMNIST label indices 0..7 (MedMNIST's label 3 is "immature granulocytes(myelocytes,
#: metamyelocytes and promyelocytes)", shortened here to a name that works as a column header).
BLOODMNIST_CLASS_NAMES: tuple[str, ...] = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature_granulocyte",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)

_CHUNK_BYTES = 1 << 20


def default_cache_dir() -> Path:
    """Download folder: ``$AUTOML_DATA_HOME/medmnist``, else ``~/.cache/automl/medmnist``."""
    home = os.environ.get("AUTOML_DATA_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "automl"
    return base / "medmnist"


def bloodmnist_file_name(size: int) -> str:
    """File name of the official BloodMNIST file of edge ``size`` (``bloodmnist_64.npz``)."""
    return "bloodmnist.npz" if size == 28 else f"bloodmnist_{size}.npz"


def file_md5(path: str | Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bloodmnist_file(size: int, where: str = "data") -> tuple[str, str]:
    """The published (URL, MD5) of the BloodMNIST file of edge ``size``.

    Raises:
        DataError: ``size`` is not one of the official sizes.
    """
    if size not in BLOODMNIST_FILES:
        sizes = ", ".join(str(s) for s in BLOODMNIST_FILES)
        raise DataError(
            f"{where}.size: expected one of the official BloodMNIST sizes ({sizes}), found "
            f"{size!r}; pick one of them (images are resized to the model's size afterwards)."
        )
    return BLOODMNIST_FILES[size]


def fetch_bloodmnist(
    size: int = 64,
    cache_dir: str | Path | None = None,
    *,
    url: str | None = None,
    md5: str | None = None,
    progress: bool = False,
    timeout: float = 60.0,
    where: str = "data",
) -> Path:
    """Return the path of the official BloodMNIST file of edge ``size``, downloading it once.

    Args:
        size: image edge of the official file: 28, 64, 128 or 224.
        cache_dir: folder that keeps the file; ``None`` means :func:`default_cache_dir`.
        url: download from here instead of Zenodo (a mirror; must serve the same file).
        md5: expected MD5 instead of the published one (only for files built in tests).
        progress: show a download progress bar on stderr.
        timeout: seconds to wait for the server before giving up.
        where: configuration key of the source, used in error messages.

    Returns:
        The path of the verified ``.npz`` file inside ``cache_dir``.

    Raises:
        DataError: ``size`` is not one of the official sizes.
        DownloadError: the download failed or the downloaded file has the wrong MD5.
    """
    published_url, published_md5 = bloodmnist_file(size, where)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return download_file(
        url or published_url,
        folder / bloodmnist_file_name(size),
        md5 or published_md5,
        progress=progress,
        timeout=timeout,
        where=where,
    )


def download_file(
    url: str,
    path: str | Path,
    md5: str,
    *,
    progress: bool = False,
    timeout: float = 60.0,
    where: str = "data",
) -> Path:
    """Make ``path`` hold the file at ``url`` whose MD5 is ``md5``; reuse it when it already does.

    Args:
        url: where to download from.
        path: destination file.
        md5: expected hex MD5 of the file.
        progress: show a download progress bar on stderr.
        timeout: seconds to wait for the server before giving up.
        where: configuration key of the source, used in error messages.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: the download failed, the folder is not writable, or the MD5 differs.
    """
    path = Path(path)
    manual = f"download {url} with a browser and put it at {path} (MD5 {md5})"
    if path.is_file():
        found = file_md5(path)
        if found == md5:
            logger.debug("Using %s (MD5 %s matches)", path, md5)
            return path
        logger.warning(
            "%s has MD5 %s, expected %s (a partial or different file); downloading it again "
            "and replacing it.",
            path,
            found,
            md5,
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".part"
        )
    except OSError as error:
        raise DownloadError(
            f"{where}.path: expected a writable download folder, found {path.parent} not "
            f"writable ({error.strerror or error}); set {where}.path or AUTOML_DATA_HOME to a "
            f"writable folder, or {manual}."
        ) from error
    temp_path = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            found = _stream(url, out, progress=progress, timeout=timeout, manual=manual)
            out.flush()
            os.fsync(out.fileno())
        if found != md5:
            raise DownloadError(
                f"{url}: expected a file with MD5 {md5}, downloaded one with MD5 {found} (a "
                f"truncated transfer or a different version); retry, or {manual}."
            )
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)
    logger.info("Downloaded %s to %s (MD5 %s verified)", url, path, md5)
    return path


def _stream(url: str, out: BinaryIO, *, progress: bool, timeout: float, manual: str) -> str:
    """Copy ``url`` into the open binary file ``out``; return the MD5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            with tqdm(
                total=int(total) if total and total.isdigit() else None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=url.rsplit("/", 1)[-1].split("?", 1)[0],
                file=sys.stderr,
                disable=not progress,
            ) as bar:
                for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
        if isinstance(error, urllib.error.HTTPError):
            reason = f"HTTP {error.code} {error.reason}"
        else:
            reason = str(getattr(error, "reason", None) or error)
        raise DownloadError(
            f"{url}: expected a file, the download failed ({reason}); check the network "
            f"connection and free disk space, or {manual}."
        ) from error
    return digest.hexdigest()
