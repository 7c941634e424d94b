"""The job state machine: one table of allowed transitions, with named groups of states.

``queued → scanning → uploading → processing → downloading → done``, plus ``failed`` (kept with its
images; ``retry`` resumes it from its last durable step), ``cancelled``, ``paused`` (a scan
stopped at a position by ``pause`` until ``continue``) and ``waiting`` (between the passes of a
scan, until ``continue``). The finer step (homing, capturing
37/100, waiting for "processing started", ...) lives in the job's ``step`` field, never in
``state`` (the socket contract lists the states).
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """A job's state, as the socket contract spells it."""

    QUEUED = "queued"
    SCANNING = "scanning"
    PAUSED = "paused"
    WAITING = "waiting"
    UPLOADING = "uploading"
    PROCESSING = "processing"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = JobState

#: The one transition table: state -> the states it may go to.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.QUEUED: frozenset({S.SCANNING, S.UPLOADING, S.PAUSED, S.FAILED, S.CANCELLED}),
    S.SCANNING: frozenset({S.UPLOADING, S.PAUSED, S.WAITING, S.FAILED, S.CANCELLED}),
    # pause: a scan stopped at a position by the user, until `continue`
    S.PAUSED: frozenset({S.SCANNING, S.FAILED, S.CANCELLED}),
    # between the passes of a scan: the user turns the object over, then `continue`
    S.WAITING: frozenset({S.SCANNING, S.FAILED, S.CANCELLED}),
    S.UPLOADING: frozenset({S.PROCESSING, S.FAILED, S.CANCELLED}),
    S.PROCESSING: frozenset({S.DOWNLOADING, S.FAILED, S.CANCELLED}),
    S.DOWNLOADING: frozenset({S.DONE, S.FAILED, S.CANCELLED}),
    # retry: back to the step that failed (the job remembers it in ``resume_state``)
    S.FAILED: frozenset({S.SCANNING, S.UPLOADING, S.PROCESSING, S.DOWNLOADING, S.CANCELLED}),
    S.DONE: frozenset(),
    S.CANCELLED: frozenset(),
}

#: A job in one of these is being worked on (or waits to be).
ACTIVE = frozenset({S.QUEUED, S.SCANNING, S.UPLOADING, S.PROCESSING, S.DOWNLOADING})
#: A job in one of these needs nothing more (``failed`` can still be retried).
FINISHED = frozenset({S.DONE, S.FAILED, S.CANCELLED})
#: A job in one of these waits for the user (``continue``) and is not run until then.
HELD = frozenset({S.PAUSED, S.WAITING})
# Which resource a state needs is the lifecycle's to say (jobs/lifecycle.py: needs).


class BadTransition(ValueError):
    """A transition the table does not allow (a programming error, or a stale request)."""


def check_transition(current: JobState, new: JobState) -> bool:
    """True when ``current → new`` is a real change the table allows; False for a no-op.

    Raises :class:`BadTransition` when the table forbids it.
    """
    if current == new:
        return False
    if new not in TRANSITIONS[current]:
        raise BadTransition(f"a job cannot go from {current.value} to {new.value}")
    return True
