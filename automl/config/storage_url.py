"""The storage URL (``study.storage``) without its secret: on screen, on disk, on command lines.

A database URL may carry a password in two places SQLAlchemy accepts: the user information
(``postgresql://user:pw@host/db``, also ``postgresql://:pw@host/db``) and the query
(``?password=pw``, which the driver receives as a connection argument). automl never writes
either to a file and never shows either:

- :func:`mask_url` is what a person sees (logs, errors, ``tune``'s summary, the report):
  SQLAlchemy's own parser (``make_url``) and ``render_as_string(hide_password=True)``, plus the
  query parameters that name a secret, which SQLAlchemy 2 leaves in clear. A URL SQLAlchemy
  cannot parse is masked from ``://`` to its last ``@`` and in its query alike.
- :func:`without_password` is what a file keeps (``config.yaml``).
- :func:`runtime_url` is what a process connects with: the saved URL, or the same URL with its
  password from the environment variable :data:`STORAGE_ENV` (``AUTOML_STORAGE``). Without
  either, PostgreSQL's driver reads its own ``PGPASSWORD`` or ``~/.pgpass`` (libpq does when
  the URL has no password); MySQL's drivers read no such file by default, so there the
  password comes through ``AUTOML_STORAGE``.

The password therefore reaches a worker through its environment, never through ``argv``
(``ps`` shows every user the command lines of every process) or a file of the study.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:  # SQLAlchemy is imported when a URL is first parsed
    from sqlalchemy.engine import URL

#: The environment variable that holds the full storage URL, password included; it stands for
#: ``--storage`` when that is not given, and lends its password to a saved URL without one.
STORAGE_ENV = "AUTOML_STORAGE"

MASK = "***"
# Query parameters that carry a secret: libpq's password/sslpassword, PyMySQL's passwd, ...
_SECRET_KEY = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:pass|pwd|secret|token)[^=&#]*=)[^&#]*", re.IGNORECASE)
# ``password=...`` in free text: a connection string (DSN) a driver repeats in its error.
_SECRET_TEXT = re.compile(
    r"""(\b\w*(?:pass|pwd|secret|token)\w*\s*=\s*)('[^']*'|"[^"]*"|[^\s&;,)]+)""", re.IGNORECASE
)


def mask_url(url: str) -> str:
    """``url`` as a person may see it: every password replaced by ``***``."""
    parsed = _parse(url)
    if parsed is None:
        # Not a URL SQLAlchemy reads: hide all user information (a password may hold an '@').
        shown = re.sub(r"://.*@", f"://{MASK}@", url, count=1)
    else:
        shown = parsed.render_as_string(hide_password=True)
    return _SECRET_QUERY.sub(rf"\g<1>{MASK}", shown)


def without_password(url: str | None) -> str | None:
    """``url`` with no password anywhere (user information or query): what a file may keep."""
    if url is None:
        return None
    parsed = _parse(url)
    if parsed is None:
        return _SECRET_QUERY.sub(r"\g<1>", re.sub(r"://.*@", "://", url, count=1))
    secret = [key for key in parsed.query if _SECRET_KEY.search(key)]
    return (
        parsed._replace(password=None)
        .difference_update_query(secret)
        .render_as_string(hide_password=False)
    )


def has_password(url: str | None) -> bool:
    """True when ``url`` carries a password (user information or a secret query parameter)."""
    if url is None:
        return False
    parsed = _parse(url)
    if parsed is None:
        return mask_url(url) != url
    return parsed.password is not None or any(_SECRET_KEY.search(key) for key in parsed.query)


def scrub(text: str, url: str) -> str:
    """``text`` (a driver's error message, say) with every password of ``url`` in it masked.

    Both spellings count: as written in the URL (percent-encoded) and decoded.
    """
    from urllib.parse import unquote

    secrets = [m.group(0)[len(m.group(1)) :] for m in _SECRET_QUERY.finditer(url)]
    userinfo = re.search(r"://(.*)@", url)
    if userinfo and ":" in userinfo.group(1):
        secrets.append(userinfo.group(1).split(":", 1)[1])
    parsed = _parse(url)
    if parsed is not None and parsed.password is not None:
        secrets.append(str(parsed.password))
    if parsed is None and userinfo:  # no telling where the password ends: all of it
        secrets.append(userinfo.group(1))
    for secret in sorted(
        {v for s in secrets if s for v in (s, unquote(s))}, key=len, reverse=True
    ):
        text = text.replace(secret, MASK)
    return _SECRET_TEXT.sub(rf"\g<1>{MASK}", text)


@overload
def runtime_url(saved: str) -> str: ...
@overload
def runtime_url(saved: None) -> None: ...
def runtime_url(saved: str | None) -> str | None:
    """The URL to connect with: ``saved``, or :data:`STORAGE_ENV` when it names the same database.

    A saved URL has no password (``config.yaml``); the environment's full URL lends it one. An
    environment URL for another database is not used here: that study's own storage stays.
    """
    if saved is None or has_password(saved):
        return saved
    from_env = os.environ.get(STORAGE_ENV)
    if from_env and without_password(from_env) == without_password(saved):
        return from_env
    return saved


def child_environment(storage: str | None) -> dict[str, str]:
    """This process's environment for a worker process of a study kept in ``storage``.

    The worker finds the full URL, password included, in :data:`STORAGE_ENV`, not on its
    command line; a worker of a study kept in the journal file (``storage`` None) gets no URL
    that would take it to another storage.
    """
    environment = dict(os.environ)
    environment.pop(STORAGE_ENV, None)
    url = runtime_url(storage)
    if url is not None:
        environment[STORAGE_ENV] = url
    return environment


def _parse(url: str) -> URL | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # no scheme, a port that is no number, ...
        return None
    if "@" in (parsed.host or ""):
        # An unencoded '@' in the password: SQLAlchemy splits at the first one and would show
        # the rest of the password as part of the host.
        return None
    return parsed
