"""A job's steps, declared once: capture → fuse → upload → start → poll → download.

Each :class:`Step` names the contract state a job shows while it is at that step, the resource
it needs (the rig, the fusion of focus stacks, or the network), and the files of the job folder
it reads; the function that runs it is the runner's, under the step's name
(:data:`openscan_pi.jobs.runner.RUNS`, checked to cover every step), so that this table stays
below the modules that do the work. A run function starts from the job record and what is
durable on disk (photos in the manifest, stacks in the fused manifest, parts confirmed in the
transfer record), so running it again after a stop or a crash goes on where it stopped, and a
step already done is a no-op. The runner runs the steps in this order; the scheduler asks which
resource a job needs next and puts it in that queue. A later step is a row added here and its
run function in the runner.

The record names the step the job is at (``at``), so that steps sharing a state but not a
resource (the fusion and the upload) are told apart. A job begins at the first step, or, when
it uploads an image set from elsewhere (``upload PATH``: its record names the ``source``), at
the upload step. Where a job is otherwise: its state (see :mod:`.state`) names the first of its
steps that show that state (``queued`` waits for its first step); a failed job goes back to the
steps of the state it failed in (``resume_state``). Steps sharing a state run one after the
other, each skipping what is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from openscan_pi.jobs.state import ACTIVE, JobState


class Resource(StrEnum):
    """What a step needs to itself: the rig (one job at a time), the fusion of focus stacks (one
    job at a time, in a process of its own), or the network (a few at once)."""

    RIG = "rig"
    NETWORK = "network"
    FUSION = "fusion"


@dataclass(frozen=True)
class Step:
    """One step of a job."""

    name: str
    state: JobState  #: the contract state shown while the job is at this step
    resource: Resource
    detail: str | None = None  #: what the job shows on entering the step (the finer state)
    #: the files of the job folder it reads (checked before a job is taken on)
    reads: frozenset[str] = frozenset()


S = JobState
#: The steps of every job, in order.
STEPS: tuple[Step, ...] = (
    Step("capture", S.SCANNING, Resource.RIG, "checking disk space",
         frozenset({"images/manifest.json", "plan.json"})),
    Step("fuse", S.UPLOADING, Resource.FUSION, "fusing focus stacks",
         frozenset({"images/manifest.json", "fused/manifest.json"})),
    Step("upload", S.UPLOADING, Resource.NETWORK, "packaging",
         frozenset({"images/manifest.json", "fused/manifest.json"})),
    Step("start", S.UPLOADING, Resource.NETWORK),
    Step("poll", S.PROCESSING, Resource.NETWORK, "waiting for the cloud"),
    Step("download", S.DOWNLOADING, Resource.NETWORK, "downloading the model"),
)
#: The state after the last step.
END = S.DONE
#: A job waiting for its first step shows this state.
WAITING = S.QUEUED


def step_named(name: str) -> Step:
    """The step called ``name`` (KeyError for a name that is not one)."""
    for step in STEPS:
        if step.name == name:
            return step
    raise KeyError(name)


def first_step(record: dict[str, Any]) -> Step:
    """The step a job begins with: the capture for a scan; the upload for a job that sends an
    image set from elsewhere (its record names the ``source``)."""
    return step_named("upload") if record.get("source") else STEPS[0]


def first_of(state: JobState, record: dict[str, Any] | None = None) -> Step | None:
    """The first step showing ``state`` (``queued``: the job's first step), or None (a finished
    job, or a state whose steps lie before where the job ``record`` begins)."""
    begin = STEPS.index(first_step(record or {}))
    if state == WAITING:
        return STEPS[begin]
    return next((step for step in STEPS[begin:] if step.state == state), None)


def resume_state(record: dict[str, Any]) -> JobState:
    """The state a failed job goes back to on retry (its first step's when it failed before
    any step had begun, or in a state that names none of its steps)."""
    wanted = record.get("resume_state")
    begin = first_step(record).state
    try:
        state = JobState(wanted) if wanted else begin
    except ValueError:
        state = begin
    return state if first_of(state, record) is not None and state != WAITING else begin


def _at(record: dict[str, Any], state: JobState) -> Step | None:
    """The step the record says the job is at (``at``), when it is one of ``state``'s steps
    for this job; else the first of them."""
    first = first_of(state, record)
    try:
        step = step_named(str(record.get("at")))
    except KeyError:
        return first
    if first is None or step.state != state or STEPS.index(step) < STEPS.index(first):
        return first
    return step


def next_step(record: dict[str, Any]) -> Step | None:
    """The step a job runs next, from its record: the step it is at (``at``), or the first of
    its state's steps (for a failed job, of the state ``retry`` goes back to), or None when it
    has nothing left to run."""
    state = JobState(record["state"])
    if state == S.FAILED:
        return _at(record, resume_state(record))
    if state not in ACTIVE:
        return None
    return _at(record, state)


def after(step: Step) -> Step | None:
    """The step after ``step``, or None after the last."""
    index = STEPS.index(step)
    return STEPS[index + 1] if index + 1 < len(STEPS) else None


def needs(record: dict[str, Any]) -> Resource | None:
    """The resource an unfinished job needs next (None: finished, or failed until retried)."""
    if JobState(record["state"]) not in ACTIVE:
        return None
    step = next_step(record)
    return step.resource if step is not None else None
