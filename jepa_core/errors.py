"""User-facing errors.

A `JepaError` is a mistake the user can fix (bad profile, missing data, an
unreadable checkpoint). The CLI prints its message and hint as one short
paragraph and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class JepaError(Exception):
    """An error caused by user input; rendered without a traceback, exit code 2."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class ConfigError(JepaError):
    """A profile or an override is invalid."""


class DataError(JepaError):
    """A dataset cannot be found, read or prepared."""


class CheckpointError(JepaError):
    """A checkpoint or run directory cannot be read."""
