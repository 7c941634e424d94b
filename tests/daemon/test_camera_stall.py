"""A Pi camera that stalls, met through the daemon as a user meets it: the picamera2 adapter on the
picamera2 double (which blocks as the real one does), a simulated rig, the bundled cloud."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from openscan_pi.config import Config, load_config
from openscan_pi.daemon.client import DaemonClient
from openscan_pi.daemon.main import Service
from tests import fake_picamera2 as fake
from tests.daemon.conftest import WAIT_S, service_in_thread
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
