"""Logging to stderr, with secrets masked in every record (the token travels in URLs)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from openscan_pi.cloud.errors import mask


class MaskSecrets(logging.Filter):
    """Replace secrets (and any ``token=`` query value) in a record's final message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage(), self.secrets)
        record.args = None
        return True


def setup_logging(*, debug: bool = False, secrets: Iterable[str] = (), service: bool = False,
                  journal: bool = False) -> None:
    """Warnings (everything with ``debug``) to stderr as ``openscan-pi: ...`` lines; for the
    ``service`` (the daemon), everything from INFO up, with time and level, or to the systemd
    journal with its structured fields when ``journal`` (and systemd-python is there)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_openscan", False):
            root.removeHandler(handler)
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if journal:
        from openscan_pi.daemon.systemd import journal_handler

        handler = journal_handler() or handler
    handler._openscan = True  # type: ignore[attr-defined]
    if debug:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    elif journal and not isinstance(handler, logging.StreamHandler):
        fmt = "%(message)s"  # the journal keeps time, level (PRIORITY) and logger itself
    elif service:
        fmt = "%(asctime)s %(levelname)s %(message)s"
    else:
        fmt = "openscan-pi: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(MaskSecrets(secrets))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO if service else logging.WARNING)
