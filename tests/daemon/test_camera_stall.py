"""A Pi camera that stalls, met through the daemon as a user meets it: the picamera2 adapter on the
picamera2 double (which blocks as the real one does), a simulated rig, the bundled cloud."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from openscan_pi.config import Config, load_config
from openscan_pi.daemon.client import DaemonClient
from openscan_pi.daemon.service import Service
from tests import fake_picamera2 as fake
from tests.daemon.conftest import WAIT_S, service_in_thread
from tests.daemon.test_systemd import NotifyReceiver
from tests.fake_picamera2 import FakePicamera2Module


@pytest.fixture
def picamera2(monkeypatch: pytest.MonkeyPatch) -> FakePicamera2Module:
    """The picamera2 double in place of picamera2 and libcamera (an HQ camera: no autofocus)."""
    module = FakePicamera2Module(fake.IMX477)
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setitem(sys.modules, "libcamera", SimpleNamespace(controls=fake.controls))
    return module


def camera_config(short_dir: Path) -> Config:
    path = short_dir / "config.yaml"
    path.write_text(json.dumps({
        "daemon": {"socket": str(short_dir / "s.sock"), "data_dir": str(short_dir / "data")},
        "rig": {"model": "simulated", "sim_time_scale": 0.001},
        "cloud": {"url": "local", "local": {"processing_s": 0.2}, "poll_interval_s": 0.05},
        "camera": {"backend": "picamera2", "resolution": [320, 240], "settle_s": 0,
                   "timeout_s": 0.3, "retries": 1}}))
    return load_config(path, env={})


@pytest.fixture
def service(short_dir: Path, picamera2: FakePicamera2Module) -> Iterator[Service]:
    with service_in_thread(camera_config(short_dir)) as svc:
        yield svc


def wait_job(service: Service, job_id: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The job once ``check(job)`` holds, re-read on every status notification."""
    with DaemonClient.connect(service.cfg.socket_path, WAIT_S) as client:
        client.call("subscribe")
        deadline = time.monotonic() + WAIT_S
        while True:
            job = client.call("job", {"job": job_id})
            if check(job):
                return job
            assert time.monotonic() < deadline, f"timed out; last: {job}"
            next(client.notifications())


def call(service: Service, method: str, params: dict[str, Any] | None = None) -> Any:
    with DaemonClient.connect(service.cfg.socket_path, WAIT_S) as client:
        return client.call(method, params)


def test_a_stalled_camera_fails_the_job_at_its_position_and_retry_goes_on_there(
        service: Service, picamera2: FakePicamera2Module) -> None:
    picamera2.stall_after, picamera2.stall_reopens = 3, None  # stalls at the 4th photo, for good
    job = call(service, "scan", {"positions": 6})
    failed = wait_job(service, job["id"], lambda j: j["state"] in ("failed", "done"))
    assert failed["state"] == "failed" and failed["captured"] == 3
    assert failed["error"] == (
        "camera stalled at position 4/6 (no frame within 0.3 s, 2 tries (the camera closed and "
        "opened again between them)): the 3 photos taken are kept; check the camera's ribbon "
        f"cable and the power supply, then `openscan-pi retry {job['id']}` continues at position 4")
    images = service.cfg.data_dir / "jobs" / job["id"] / "images"
    kept = {p.name: p.stat().st_mtime_ns for p in images.glob("*.jpg")}
    assert len(kept) == 3
    assert picamera2.forever == []
    picamera2.unstall()  # the ribbon cable seated again
    call(service, "retry", {"job": job["id"]})
    done = wait_job(service, job["id"], lambda j: j["state"] in ("failed", "done"))
    assert done["state"] == "done" and done["captured"] == 6
    assert picamera2.requests == 6  # positions 1-3 were not taken again
    assert {p.name: p.stat().st_mtime_ns for p in images.glob("*.jpg") if p.name in kept} == kept


class Said(logging.Handler):
    """The lines of one logger with their times; ``starved`` is set at the first that says the
    watchdog is no longer fed."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[float, str]] = []
        self.starved = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.monotonic(), record.getMessage()))
        if "no more watchdog pings" in record.getMessage():
            self.starved.set()


def test_a_camera_wedged_past_its_bound_starves_the_watchdog(
        short_dir: Path, picamera2: FakePicamera2Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """picamera2 before 0.3.20 ignores wait=SECONDS, so a stalled capture never returns; past its
    bound the daemon stops feeding the watchdog (systemd restarts it and the scan goes on)."""
    receiver = NotifyReceiver(short_dir / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(receiver.path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # fed every 0.05 s
    picamera2.legacy, picamera2.stall_after, picamera2.stall_reopens = True, 2, None
    said = Said()
    logger = logging.getLogger("openscan_pi.daemon.service")
    logger.addHandler(said)
    try:
        with service_in_thread(camera_config(short_dir)) as service:
            job = call(service, "scan", {"positions": 4})
            assert picamera2.blocked.wait(WAIT_S)
            blocked = time.monotonic()
            assert said.starved.wait(WAIT_S)
            wedged_at, line = next((t, s) for t, s in said.lines if "no more watchdog pings" in s)
            assert line.startswith("the camera's capture_request has not returned for ")
            with pytest.raises(TimeoutError):  # watch what comes for a second (checked below)
                receiver.until(lambda m: False, timeout=1.0)
            picamera2.unstall()
            unstalled = time.monotonic()
            receiver.until(lambda m: m == "WATCHDOG=1", timeout=10)  # fed again once it returns
            done = wait_job(service, job["id"], lambda j: j["state"] in ("failed", "done"))
            assert done["state"] == "done" and done["captured"] == 4
    finally:
        logger.removeHandler(said)
        receiver.close()
    pings = [t for t, m in list(receiver.messages) if m == "WATCHDOG=1"]
    assert any(blocked < t < wedged_at - 1 for t in pings)  # fed while the call was within its bound
    assert [t for t in pings if wedged_at + 0.06 < t < unstalled] == []
    assert picamera2.forever == []
    starved = [s for _, s in said.lines if "no more watchdog pings" in s]
    assert len(starved) == 1  # said once, not at every interval
