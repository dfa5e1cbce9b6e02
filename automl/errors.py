"""The exceptions automl raises.

User-input problems (configuration, search space, data) subclass ``ValueError`` as well as
``AutoMLError`` so that library users can catch either. Every message follows the house form:
where -> what was expected -> what was found -> how to fix it.
"""

from __future__ import annotations


class AutoMLError(Exception):
    """Root of every error automl raises on purpose."""


class ConfigError(AutoMLError, ValueError):
    """The YAML configuration or a command-line override is invalid."""


class SpaceError(ConfigError):
    """The ``space:`` section (a distribution or a fixed value in it) is invalid."""


class DataError(AutoMLError, ValueError):
    """The data cannot be read or does not fit the configuration (e.g. too few per class)."""


class DownloadError(DataError):
    """A dataset download failed or its checksum did not match."""


class StudyError(AutoMLError, ValueError):
    """A study is missing, incompatible with the configuration, or has no usable trials."""
