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
import threading
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
    """Tells systemd how the daemon is (``sd_notify``); does nothing without ``NOTIFY_SOCKET``.

    ``systemd.daemon.notify`` raises OSError when sd_notify fails (systemd re-executing itself
    during an upgrade leaves no notify socket for a moment): that is logged once per outage and the
    notification dropped, so that neither the watchdog task nor a job's status change dies of it.
    Once a notification goes through again, the latest ``STATUS=`` is sent too. Thread-safe.
    """

    def __init__(self) -> None:
        notify = _sd_notify()
        if notify is None:
            log.debug("systemd-python is not installed: no sd_notify, watchdog or journal")
        self._notify = notify if "NOTIFY_SOCKET" in os.environ else None
        self._lock = threading.Lock()
        self._last_status = ""  # the STATUS= systemd has
        self._wanted_status = ""  # the STATUS= it should have
        self._lost = 0  # notifications dropped in the current outage

    @property
    def enabled(self) -> bool:
        """True when systemd listens."""
        return self._notify is not None

    def send(self, message: str) -> bool:
        """One notification (e.g. ``READY=1``); False when it could not be sent."""
        if self._notify is None:
            return False
        with self._lock:
            if not self._deliver(message):
                return False
            if self._lost:
                log.warning("systemd notifications go through again (%d were lost)", self._lost)
                self._lost = 0
                if self._wanted_status != self._last_status:
                    self._deliver(f"STATUS={self._wanted_status}")
            return True

    def _deliver(self, message: str) -> bool:
        assert self._notify is not None
        try:
            self._notify(message)
        except OSError as exc:
            if not self._lost:
                log.warning("systemd notification failed (%s, NOTIFY_SOCKET=%s): dropped, and the "
                            "next ones are tried as they come", exc, os.environ.get("NOTIFY_SOCKET"))
            self._lost += 1
            return False
        for line in message.split("\n"):
            if line.startswith("STATUS="):
                self._last_status = line.removeprefix("STATUS=")
        return True

    def ready(self, status: str) -> None:
        """The daemon serves."""
        with self._lock:
            self._wanted_status = status
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> None:
        """What ``systemctl status`` shows; sent only when it changes."""
        with self._lock:
            self._wanted_status = text
            if text == self._last_status:
                return
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
    if (status.get("rig", {}).get("worker") or {}).get("state") == "restarting":
        return "restarting the camera"
    if rig_task:
        return f"rig: {rig_task}"
    if job and job["state"] == "paused":
        return f"job {job['id']} paused: `openscan-pi continue` goes on"
    if job and job["state"] == "waiting":
        return f"job {job['id']} waiting: turn the object over, then `openscan-pi continue`"
    if not job or status.get("state") == "idle":
        last = f"; last job {job['id']} {job['state']}" if job else ""
        return f"idle{last}"
    line = f"job {job['id']} {job['state']}"
    if job.get("step") and job["step"] != job["state"]:
        line += f": {job['step']}"
    queued = len(status.get("queued") or [])
    return line + (f" (+{queued} queued)" if queued else "")
