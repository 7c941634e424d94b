"""The job record (``job.json``): one typed, versioned dataclass, and the migration of older ones.

Version 2 holds everything about a job in one file: the contract's fields, where the lifecycle
stands (``state``, ``resume_state``, ``cancel_requested``), timings, the rig worker's restarts,
and ``transfer``, the job's transfer journal (the fields :class:`~openscan_pi.cloud.journal.
Journal` keeps: phase, links, parts done with their content-hash, ...), which release 1 kept
in ``<data_dir>/transfers/<project>.json``.

Release 1 records (no ``version``) are migrated when read (:func:`migrate`): the journal of the
job's project is taken in, the step text that only repeated the state is dropped. The migrated
record is written at the job's next write (the daemon writes every migrated job at start); the
old journal file is removed once the record holding it is on disk. A crash before that reads the
release 1 folder again and migrates it the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openscan_pi.jobs.state import JobState

#: The version of the record this release writes.
VERSION = 2
#: Step texts of release 1 that only repeated the state.
_REPEATS = frozenset({"queued", "failed", "cancelled", "done"})


@dataclass
class JobRecord:
    """One job, as ``job.json`` holds it. Fields this release does not know are kept in
    ``extra`` (and written back), so a record from a newer patch release loses nothing."""

    id: str
    project: str
    state: JobState
    positions: int
    created: float
    updated: float
    stack: int = 1
    #: passes of the scan (``positions`` counts them all: ``positions // passes`` each)
    passes: int = 1
    #: the pass being captured, or the next one while ``waiting`` (from 1)
    pass_no: int = 1
    captured: int = 0
    bytes_total: int = 0
    bytes_uploaded: int = 0
    cloud_status: str | None = None
    model_dir: str | None = None
    error: str | None = None
    #: the finer state shown to clients ("capturing 3/10"), None when the state says it all
    step: str | None = None
    #: the step of the lifecycle the job is at (steps may share a state): None before the first
    at: str | None = None
    #: a failed job: the state ``retry`` goes back to
    resume_state: str | None = None
    #: a cancel asked while a worker had the job (it ends cancelled, even across a restart)
    cancel_requested: float | None = None
    #: a pause asked while the scan ran: it stops before its next position (even across a restart)
    pause_requested: float | None = None
    upload_begun: bool = False
    motion_s: float | None = None
    capture_s: float | None = None
    transfer_s: float | None = None
    motion_estimate_s: float | None = None
    #: how often the rig worker was restarted while it ran this job's steps
    rig_restarts: int = 0
    #: the transfer journal of the job's project (None before the upload begins)
    transfer: dict[str, Any] | None = None
    #: the folder or zip an ``upload PATH`` job sends, read where it is (None: a scan's photos)
    source: str | None = None
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """A record from a checked ``job.json`` of this version."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        values["state"] = JobState(data["state"])
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The record as ``job.json`` holds it (a shallow copy: ``transfer`` is shared)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["state"] = self.state.value
        return {**self.extra, **out}

    def set(self, **fields: Any) -> None:
        """Change fields (``AttributeError`` for one the record does not have)."""
        for name, value in fields.items():
            if name == "extra" or not hasattr(self, name):
                raise AttributeError(f"a job record has no field {name}")
            setattr(self, name, JobState(value) if name == "state" else value)


def legacy_journal(data_dir: Path, data: dict[str, Any]) -> Path:
    """Where release 1 kept the transfer journal of the job ``data``."""
    return data_dir / "transfers" / f"{data['project']}.json"


def migrate(data: dict[str, Any], data_dir: Path) -> tuple[dict[str, Any], Path | None]:
    """``data``, a checked record of any version this release reads, as a version 2 record;
    with the release 1 journal file it took in (to remove once the new record is on disk), or
    None. Reads, never writes."""
    if data.get("version") == VERSION:
        return data, None
    from openscan_pi.fsutil import read_json

    out = dict(data)
    out["version"] = VERSION
    if out.get("step") in _REPEATS:
        out["step"] = None
    path = legacy_journal(data_dir, data)
    try:
        journal = read_json(path)
    except (OSError, ValueError):
        journal = None  # none (not uploaded yet), or unreadable: the runner makes it again
    if isinstance(journal, dict) and journal.get("job") == data["id"]:
        journal.pop("version", None)
        out["transfer"] = journal
        return out, path
    return out, None
