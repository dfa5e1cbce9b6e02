"""The names of the ensemble's methods, defined once: how members vote and how they are chosen.

Each is a ``str``-valued :class:`~enum.Enum`, so a member equals its name (``VoteMethod.SOFT ==
"soft"``) and YAML files, saved manifests and study attributes keep the same strings. The
config parser, the ensemble library and the CLI's ``--vote``/``--selection`` choices (typer takes
an ``Enum``) all read them from here; :meth:`parse` is the one check of a name, raising
:class:`~automl.errors.ConfigError`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

from automl.errors import ConfigError

_M = TypeVar("_M", bound="_Method")


class _Method(str, Enum):
    """A method name: compares, prints and formats as its string."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(str(m.value) for m in cls)

    @classmethod
    def parse(cls: type[_M], value: Any, key: str, hint: str = "") -> _M:
        """``value`` as a member; ``key`` names where it came from in the error, ``hint`` ends it.

        Raises:
            ConfigError: ``value`` is not one of the names.
        """
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(
                f"{key} must be one of {', '.join(cls.names())}, got {value!r}"
                + (f"; {hint}." if hint else ".")
            ) from None


class VoteMethod(_Method):
    """How the members' fold models vote (``ensemble/voting.py``)."""

    MAJORITY = "majority"
    SOFT = "soft"


class SelectionMethod(_Method):
    """How ``ensemble`` picks its members (``ensemble/selection.py``)."""

    GREEDY = "greedy"
    TOP_K = "top_k"
