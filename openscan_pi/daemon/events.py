"""The daemon's event bus: typed events (:mod:`openscan_pi.jobs.events`) published from any
thread, delivered to the handlers subscribed to their type.

A handler subscribed with a ``loop`` runs on that event loop (the socket's subscribers, the
systemd status line), in the order the events were published; one without runs at once on the
publishing thread (the log). A handler that fails is logged and never breaks a job.

Example::

    bus = EventBus()
    bus.subscribe(StatusChanged, lambda e: print(e.status["state"]), loop=loop)
    bus.publish(StatusChanged({"state": "idle"}))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from openscan_pi.jobs.events import JobChanged, JobNote
from openscan_pi.jobs.state import JobState

log = logging.getLogger(__name__)

E = TypeVar("E")


class EventBus:
    """Typed publish and subscribe, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[type, list[tuple[Callable[[Any], None],
                                              asyncio.AbstractEventLoop | None]]] = {}

    def subscribe(self, kind: type[E], handler: Callable[[E], None], *,
                  loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Call ``handler(event)`` for every event of type ``kind`` (on ``loop`` when given)."""
        with self._lock:
            self._handlers.setdefault(kind, []).append((handler, loop))

    def publish(self, event: object) -> None:
        """Deliver ``event`` to the handlers of its type."""
        with self._lock:
            handlers = list(self._handlers.get(type(event), ()))
        for handler, loop in handlers:
            if loop is None:
                _call(handler, event)
            else:
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens
                    loop.call_soon_threadsafe(_call, handler, event)


def _call(handler: Callable[[Any], None], event: object) -> None:
    try:
        handler(event)
    except Exception:  # a subscriber must never break a job
        log.exception("event handler failed on %s", type(event).__name__)


def log_job_events(bus: EventBus, logger: logging.Logger | None = None) -> None:
    """The log as a subscriber: each state change (with journald's ``JOB_ID``, ``JOB_STATE``,
    ``PROJECT`` fields) and each note about a job, on the publishing thread."""
    out = logger or logging.getLogger("openscan_pi.daemon.scheduler")

    def changed(e: JobChanged) -> None:
        if e.before != e.state.value:
            extra = f": {e.error}" if e.state == JobState.FAILED else ""
            out.info("job %s: %s -> %s%s", e.job_id, e.before, e.state.value, extra,
                     extra={"JOB_ID": e.job_id, "JOB_STATE": e.state.value, "PROJECT": e.project})

    def noted(e: JobNote) -> None:
        (out.warning if e.warning else out.info)("job %s: %s", e.job_id, e.text)

    bus.subscribe(JobChanged, changed)
    bus.subscribe(JobNote, noted)
