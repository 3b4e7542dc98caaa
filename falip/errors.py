"""The errors a user can act on. Each message names the file or config field, what is wrong, and the fix.

Everything raised for bad input is a :class:`FalipError`, so that the command line can print it as one
line (the traceback stays available with ``HYDRA_FULL_ERROR=1``).
"""
from __future__ import annotations


class FalipError(Exception):
    """Base class: an error caused by the user's input, config or environment, not by a bug."""


class DatasetError(FalipError, ValueError):
    """A dataset that cannot be read: missing files, malformed records, unknown split names."""


class ConfigError(FalipError, ValueError):
    """A config value that cannot be used (unknown name, wrong type or range)."""
