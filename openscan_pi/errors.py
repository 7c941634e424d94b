"""Errors a user can act on.

Every failure that reaches the command line is a :class:`UserError`: the CLI prints its message as
one line on stderr and exits with its ``exit_code``; no traceback unless ``--debug``.
"""

from __future__ import annotations

EX_FAILURE = 1
EX_CONFIG = 78  # sysexits.h EX_CONFIG: systemd is told not to restart on it
EX_INTERRUPTED = 130
EX_PIPE = 141  # 128 + SIGPIPE: stdout's reader went away (`openscan-pi status | head -1`)


class UserError(Exception):
    """A failure explained in one line, naming the cause and, where there is one, the fix."""

    exit_code = EX_FAILURE


class ConfigError(UserError):
    """The configuration is broken; the message starts with ``config:`` and names the key path."""

    exit_code = EX_CONFIG

    def __init__(self, message: str) -> None:
        super().__init__(message if message.startswith("config:") else f"config: {message}")


class InputError(UserError):
    """Bad input from the user: a missing folder, an empty image set, a zip that holds no images."""


class DiskError(UserError):
    """The disk refused a write (full, read-only); files already there are left intact."""
