"""Exceptions with messages that say what is wrong, where, and what to do."""

from __future__ import annotations


class ALBackendError(Exception):
    """Base class: every error the CLI turns into a clean message and a non-zero exit."""

    exit_code = 1


class InputError(ALBackendError):
    """Malformed input: a task, file, row, vector or request. Message names the place."""

    exit_code = 3


class ConfigError(ALBackendError):
    """A bad configuration key or value."""

    exit_code = 2


class StateError(ALBackendError):
    """The state file is corrupted, foreign or from an incompatible version."""

    exit_code = 4


class ConnectorError(ALBackendError):
    """A labeling tool could not be reached or refused a call. Message names the call."""

    exit_code = 5


class LockedError(ALBackendError):
    """Another run holds the project's lock."""

    exit_code = 75  # EX_TEMPFAIL: cron may simply try again later


class EmptyPoolError(ALBackendError):
    """Nothing left to select from."""

    exit_code = 6


class WriteError(ALBackendError):
    """A path al-backend must write (output, state, its lock) cannot be created or written. Found up front."""

    exit_code = 73  # EX_CANTCREAT
