"""The steps of a job, declared once: their order, states and resources, and where a record is."""

from __future__ import annotations

import pytest

from openscan_pi.jobs.lifecycle import (
    END,
    STEPS,
    Resource,
    after,
    first_step,
    needs,
    next_step,
    resume_state,
    step_named,
)
from openscan_pi.jobs.runner import RUNS
from openscan_pi.jobs.state import TRANSITIONS, JobState


def test_the_steps_in_order_with_their_state_and_resource() -> None:
    assert [(s.name, s.state.value, s.resource.value) for s in STEPS] == [
        ("capture", "scanning", "rig"), ("fuse", "uploading", "fusion"),
        ("upload", "uploading", "network"),
        ("start", "uploading", "network"), ("poll", "processing", "network"),
        ("download", "downloading", "network")]
    assert after(step_named("capture")) is step_named("fuse")
    assert after(step_named("fuse")) is step_named("upload")
    assert after(STEPS[-1]) is None and END == JobState.DONE


def test_every_step_has_its_run_function_and_nothing_else_has_one() -> None:
    assert list(RUNS) == [s.name for s in STEPS]
    assert all(callable(run) for run in RUNS.values())


def test_every_move_between_steps_is_one_the_transition_table_allows() -> None:
    states = [JobState.QUEUED, *(s.state for s in STEPS), END]
    for before, then in zip(states, states[1:], strict=False):
        assert before == then or then in TRANSITIONS[before], (before, then)
    for step in STEPS:  # a failed job goes back to any step, and any step can fail
        assert step.state in TRANSITIONS[JobState.FAILED]
        assert JobState.FAILED in TRANSITIONS[step.state]


@pytest.mark.parametrize(("state", "step", "resource"), [
    ("queued", "capture", "rig"), ("scanning", "capture", "rig"), ("uploading", "fuse", "fusion"),
    ("processing", "poll", "network"), ("downloading", "download", "network"),
    ("done", None, None), ("cancelled", None, None)])
def test_the_next_step_of_a_record(state: str, step: str | None, resource: str | None) -> None:
    record = {"state": state}
    found = next_step(record)
    assert (found.name if found else None) == step
    assert needs(record) == (Resource(resource) if resource else None)


@pytest.mark.parametrize(("resume", "step"), [
    (None, "capture"), ("scanning", "capture"), ("queued", "capture"), ("uploading", "fuse"),
    ("processing", "poll"), ("downloading", "download"), ("done", "capture"), ("nonsense", "capture")])
def test_a_failed_job_goes_back_to_the_step_it_failed_in(resume: str | None, step: str) -> None:
    record = {"state": "failed", "resume_state": resume}
    found = next_step(record)
    assert found is not None and found.name == step
    assert resume_state(record) == found.state
    assert needs(record) is None  # until retried


@pytest.mark.parametrize(("state", "step", "resource"), [
    ("queued", "upload", "network"), ("uploading", "upload", "network"),
    ("processing", "poll", "network"), ("scanning", None, None), ("done", None, None)])
def test_an_upload_job_begins_at_the_upload_step(state: str, step: str | None,
                                                 resource: str | None) -> None:
    record = {"state": state, "source": "/home/pi/set"}
    assert first_step(record).name == "upload" and first_step({}).name == "capture"
    found = next_step(record)
    assert (found.name if found else None) == step
    assert needs(record) == (Resource(resource) if resource else None)


@pytest.mark.parametrize(("resume", "step"), [
    (None, "upload"), ("scanning", "upload"), ("queued", "upload"), ("uploading", "upload"),
    ("processing", "poll"), ("downloading", "download")])
def test_a_failed_upload_job_never_goes_back_to_capturing(resume: str | None, step: str) -> None:
    record = {"state": "failed", "resume_state": resume, "source": "/home/pi/set.zip"}
    found = next_step(record)
    assert found is not None and found.name == step
    assert resume_state(record) == found.state


def test_a_queued_job_may_go_to_its_first_step_whichever_it_is() -> None:
    for record in ({}, {"source": "/home/pi/set"}):
        assert first_step(record).state in TRANSITIONS[JobState.QUEUED]


def test_what_each_step_reads_is_checked_before_a_job_is_taken_on() -> None:
    assert {s.name: sorted(s.reads) for s in STEPS if s.reads} == {
        "capture": ["images/manifest.json", "plan.json"],
        "fuse": ["fused/manifest.json", "images/manifest.json"],
        "upload": ["fused/manifest.json", "images/manifest.json"]}


@pytest.mark.parametrize(("record", "step", "resource"), [
    ({"state": "uploading", "at": "fuse"}, "fuse", "fusion"),
    ({"state": "uploading", "at": "upload"}, "upload", "network"),
    ({"state": "uploading", "at": "start"}, "start", "network"),
    ({"state": "uploading", "at": "capture"}, "fuse", "fusion"),  # not a step of the state
    ({"state": "uploading", "at": "nonsense"}, "fuse", "fusion"),
    ({"state": "uploading", "at": "fuse", "source": "/set"}, "upload", "network"),  # not its
    ({"state": "failed", "resume_state": "uploading", "at": "upload"}, "upload", None),
])
def test_steps_sharing_a_state_are_told_apart_by_where_the_job_is(
        record: dict, step: str, resource: str | None) -> None:
    found = next_step(record)
    assert found is not None and found.name == step
    assert needs(record) == (Resource(resource) if resource else None)
