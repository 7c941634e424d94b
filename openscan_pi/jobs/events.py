"""What happens to jobs, as typed events: a state change, progress, a note, a new daemon status.

The runner and the transfer report by name (``emit("upload", done=..., total=...)``, the form
the terminal's progress printer takes); :func:`from_runner` is the one place those names are
read. The daemon publishes these events on its :class:`~openscan_pi.daemon.events.EventBus`;
the socket's ``subscribe`` (and systemd's ``STATUS=`` line) take :class:`StatusChanged`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openscan_pi.jobs.state import JobState


@dataclass(frozen=True)
class JobChanged:
    """A job's record changed durably; ``before`` is the state it was seen in (None: first)."""

    job_id: str
    state: JobState
    before: str | None
    project: str
    error: str | None = None


@dataclass(frozen=True)
class JobProgress:
    """Progress that is not a durable step: ``what`` is ``scan``, ``upload`` or ``download``."""

    job_id: str
    what: str
    done: int
    total: int | None


@dataclass(frozen=True)
class JobNote:
    """A line about a job for the log: a stage reached, or a warning."""

    job_id: str
    text: str
    warning: bool = False


@dataclass(frozen=True)
class StatusChanged:
    """The daemon's ``status`` result after a change or a progress step."""

    status: dict[str, Any]


Event = JobChanged | JobProgress | JobNote | StatusChanged

#: Runner event names that are progress.
_PROGRESS = frozenset({"scan", "upload", "download"})


def from_runner(job_id: str, name: str, fields: dict[str, Any]) -> Event | None:
    """The typed event for a runner's ``emit(name, **fields)`` about job ``job_id``, or None
    for one nobody outside the job needs (a part confirmed, a cloud status: both change the
    record, which is told as :class:`JobChanged`)."""
    if name in ("stage", "warning"):
        return JobNote(job_id, str(fields.get("text")), warning=name == "warning")
    if name in _PROGRESS and "done" in fields:
        total = fields.get("total")
        return JobProgress(job_id, name, int(fields["done"]), None if total is None else int(total))
    return None
