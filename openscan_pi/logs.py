"""Logging to stderr or the journal: secrets masked and control characters escaped in every record,
so that neither the token nor what a caller sends (a job id with a newline) can shape a log line."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

from openscan_pi.masking import mask

#: Longest caller value :func:`quote` shows whole.
QUOTE_LIMIT = 80

#: What could end a log line or restyle a terminal: C0 and C1 controls (tab excepted), DEL, and
#: Unicode's line and paragraph separators.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def escape_controls(text: str) -> str:
    """``text`` on one line: newlines as ``\\n``, other control characters as ``\\xNN``/``\\uNNNN``."""
    def escaped(found: re.Match[str]) -> str:
        char = found.group()
        if char in _NAMED:
            return _NAMED[char]
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(escaped, text)


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """A value a caller sent, for a log line: quoted and escaped (``repr``), cut after ``limit``
    characters with the full length said."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    return repr(value)


class MaskSecrets(logging.Filter):
    """Replace secrets (and any ``token=`` query value) in a record's final message, and escape its
    control characters (one record is one line)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = escape_controls(mask(record.getMessage(), self.secrets))
        record.args = None
        return True


def setup_logging(*, debug: bool = False, secrets: Iterable[str] = (), service: bool = False,
                  journal: logging.Handler | None = None) -> None:
    """Warnings (everything with ``debug``) to stderr as ``openscan-pi: ...`` lines; for the
    ``service`` (the daemon), everything from INFO up, with time and level, or to the systemd
    journal through ``journal`` (a ``systemd.journal.JournalHandler``, made by the caller: the
    service knows whether it runs under the journal and systemd-python is there)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_openscan", False):
            root.removeHandler(old)
    handler: logging.Handler = journal or logging.StreamHandler(sys.stderr)
    handler._openscan = True  # type: ignore[attr-defined]
    if debug:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    elif journal is not None:
        fmt = "%(message)s"  # the journal keeps time, level (PRIORITY) and logger itself
    elif service:
        fmt = "%(asctime)s %(levelname)s %(message)s"
    else:
        fmt = "openscan-pi: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(MaskSecrets(secrets))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO if service else logging.WARNING)
