"""Typed events: the runner's names read in one place, the bus delivering by type, on a loop
in publishing order, a failing handler never reaching the publisher."""

from __future__ import annotations

import asyncio
import threading

from openscan_pi.daemon.events import EventBus
from openscan_pi.jobs.events import JobChanged, JobNote, JobProgress, StatusChanged, from_runner
from openscan_pi.jobs.state import JobState


def test_runner_events_become_typed_events() -> None:
    assert from_runner("j", "upload", {"part": 0, "done": 5, "total": 9}) == JobProgress(
        "j", "upload", 5, 9)
    assert from_runner("j", "download", {"done": 5, "total": None}) == JobProgress(
        "j", "download", 5, None)
    assert from_runner("j", "warning", {"text": "disk"}) == JobNote("j", "disk", warning=True)
    assert from_runner("j", "stage", {"text": "2 parts uploaded"}) == JobNote("j", "2 parts uploaded")
    assert from_runner("j", "part", {"part": 0, "parts": 2, "hash": "ab"}) is None


def test_handlers_get_the_events_of_their_type_and_a_failing_one_is_contained() -> None:
    bus = EventBus()
    got: list[object] = []

    def broken(event: JobNote) -> None:
        raise RuntimeError("a subscriber's bug")

    bus.subscribe(JobNote, broken)
    bus.subscribe(JobNote, got.append)
    bus.subscribe(JobChanged, got.append)
    note, change = JobNote("j", "x"), JobChanged("j", JobState.DONE, "downloading", "p.zip")
    bus.publish(note)
    bus.publish(change)
    bus.publish(StatusChanged({"state": "idle"}))  # nobody subscribed: dropped
    assert got == [note, change]


def test_loop_subscribers_get_events_from_other_threads_on_the_loop_in_order() -> None:
    async def main() -> None:
        bus = EventBus()
        loop = asyncio.get_running_loop()
        seen: list[tuple[int, bool]] = []
        done = asyncio.Event()

        def on_status(event: StatusChanged) -> None:
            seen.append((event.status["n"], threading.current_thread() is threading.main_thread()))
            if event.status["n"] == 99:
                done.set()

        bus.subscribe(StatusChanged, on_status, loop=loop)
        worker = threading.Thread(target=lambda: [bus.publish(StatusChanged({"n": n}))
                                                  for n in range(100)])
        worker.start()
        await asyncio.wait_for(done.wait(), 30)
        worker.join()
        assert seen == [(n, True) for n in range(100)]

    asyncio.run(main())
