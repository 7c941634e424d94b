"""Life under systemd, through systemd-python (optional at run time; never re-implemented).

``READY=1`` once the socket answers and the rig is open, ``STATUS=`` on every change of what the
daemon does (what ``systemctl status`` shows), ``WATCHDOG=1`` from the event loop, ``STOPPING=1``,
``EXTEND_TIMEOUT_USEC=`` while a camera starts, and logging to the journal with structured fields
(``JOB_ID``, ``JOB_STATE``, ``PROJECT``). Without systemd-python, or outside systemd, every call
here does nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def _sd_notify() -> Callable[[str], Any] | None:
    try:
        from systemd.daemon import notify
    except ImportError:
        return None
    return notify


class Notifier:
    """Tells systemd how the daemon is (``sd_notify``); does nothing without ``NOTIFY_SOCKET``."""

    def __init__(self) -> None:
        notify = _sd_notify()
        if notify is None:
            log.debug("systemd-python is not installed: no sd_notify, watchdog or journal")
        self._notify = notify if "NOTIFY_SOCKET" in os.environ else None
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        """True when systemd listens."""
        return self._notify is not None

    def send(self, message: str) -> None:
        """One notification (e.g. ``READY=1``)."""
        if self._notify is not None:
            self._notify(message)

    def ready(self, status: str) -> None:
        """The daemon serves."""
        self._last_status = status
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> None:
        """What ``systemctl status`` shows; sent only when it changes."""
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        """Proof of life."""
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        """The daemon is on its way out."""
        self.send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more time to start (or stop)."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog_interval(self) -> float | None:
        """How often to feed the watchdog (half its timeout), or None when there is none."""
        if self._notify is None:
            return None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 1_000_000 / 2


def under_journal() -> bool:
    """True when stderr goes to the journal (systemd sets ``JOURNAL_STREAM`` to its dev:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def journal_handler(sender: Callable[..., Any] | None = None) -> logging.Handler | None:
    """A ``systemd.journal.JournalHandler`` (``sender`` replaces its sender, for tests), or None
    without systemd-python."""
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    if sender is not None:
        return JournalHandler(sender_function=sender, SYSLOG_IDENTIFIER="openscan-pi")
    return JournalHandler(SYSLOG_IDENTIFIER="openscan-pi")


def status_line(status: dict[str, Any]) -> str:
    """The one line ``systemctl status`` shows for a daemon status."""
    job = status.get("job")
    rig_task = status.get("rig", {}).get("task")
    if rig_task:
        return f"rig: {rig_task}"
    if not job or status.get("state") == "idle":
        last = f"; last job {job['id']} {job['state']}" if job else ""
        return f"idle{last}"
    line = f"job {job['id']} {job['state']}"
    if job.get("step") and job["step"] != job["state"]:
        line += f": {job['step']}"
    queued = len(status.get("queued") or [])
    return line + (f" (+{queued} queued)" if queued else "")
