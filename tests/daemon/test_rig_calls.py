"""Hand-driven rig calls one after another: the rig is free again by the time a caller hears the
answer to the last one, so its next call is taken, never answered "the rig is busy"."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest

from openscan_pi.config import load_config
from openscan_pi.daemon.scheduler import Scheduler
from tests.daemon.conftest import daemon_config


@pytest.fixture
def daemon(short_dir: Path) -> Iterator[Scheduler]:
    d = Scheduler(load_config(daemon_config(short_dir), env={}))
    d.start()
    yield d
    d.stop()


def test_the_next_rig_call_asked_as_the_answer_arrives_is_taken(daemon: Scheduler) -> None:
    followed: concurrent.futures.Future[concurrent.futures.Future] = concurrent.futures.Future()

    def next_call(done: concurrent.futures.Future) -> None:  # runs as the answer is handed over
        try:
            followed.set_result(daemon.rig_call("light", lambda rig: rig.light.off()))
        except Exception as exc:
            followed.set_exception(exc)

    first = daemon.rig_call("move", lambda rig: rig.move(rotor=5.0))
    first.add_done_callback(next_call)
    first.result(60)
    followed.result(60).result(60)  # taken, and done
