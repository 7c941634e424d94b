"""A Pi camera that stalls, met through the daemon as a user meets it: the picamera2 adapter on the
picamera2 double (which blocks as the real one does) in the rig worker's process
(``tests/fakelib`` on its ``PYTHONPATH``), a simulated rig, the bundled cloud."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openscan_pi.config import Config, load_config
from openscan_pi.daemon.client import DaemonClient
from openscan_pi.daemon.service import Service
from tests.daemon.conftest import WAIT_S, service_in_thread
from tests.daemon.test_systemd import NotifyReceiver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def picamera2(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """``picamera2(**options)``: the picamera2 double (an HQ camera: no autofocus) with these
    options in the worker started after it; returns the file whose creation unstalls it."""
    unstall = short_dir / "unstall"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests" / "fakelib")]))

    def configure(**options: Any) -> Path:
        monkeypatch.setenv("FAKE_PICAMERA2", json.dumps({**options, "unstall_file": str(unstall)}))
        return unstall

    return configure


def camera_config(short_dir: Path) -> Config:
    path = short_dir / "config.yaml"
    path.write_text(json.dumps({
        "daemon": {"socket": str(short_dir / "s.sock"), "data_dir": str(short_dir / "data")},
        "rig": {"model": "simulated", "sim_time_scale": 0.001},
        "cloud": {"url": "local", "local": {"processing_s": 0.2}, "poll_interval_s": 0.05},
        "camera": {"backend": "picamera2", "resolution": [320, 240], "settle_s": 0,
                   "timeout_s": 0.3, "retries": 1}}))
    return load_config(path, env={})


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
        short_dir: Path, picamera2: Callable[..., Path]) -> None:
    unstall = picamera2(stall_after=3, stall_reopens=None)  # stalls at the 4th photo, for good
    with service_in_thread(camera_config(short_dir)) as service:
        job = call(service, "scan", {"positions": 6})
        failed = wait_job(service, job["id"], lambda j: j["state"] in ("failed", "done"))
        assert failed["state"] == "failed" and failed["captured"] == 3
        assert failed["error"] == (
            "camera stalled at position 4/6 (no frame within 0.3 s, 2 tries (the camera closed "
            "and opened again between them)): the 3 photos taken are kept; check the camera's "
            f"ribbon cable and the power supply, then `openscan-pi retry {job['id']}` continues "
            "at position 4")
        images = service.cfg.data_dir / "jobs" / job["id"] / "images"
        kept = {p.name: p.stat().st_mtime_ns for p in images.glob("*.jpg")}
        assert len(kept) == 3
        unstall.touch()  # the ribbon cable seated again
        call(service, "retry", {"job": job["id"]})
        done = wait_job(service, job["id"], lambda j: j["state"] in ("failed", "done"))
        assert done["state"] == "done" and done["captured"] == 6
        # positions 1-3 were not taken again
        assert {p.name: p.stat().st_mtime_ns for p in images.glob("*.jpg") if p.name in kept} == kept
        manifest = json.loads((images / "manifest.json").read_text())
        assert sorted(e["position"] for e in manifest) == list(range(6))


def test_a_camera_wedged_past_its_bound_restarts_the_worker_and_the_watchdog_stays_fed(
        short_dir: Path, picamera2: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """picamera2 before 0.3.20 ignores wait=SECONDS, so a stalled capture never returns: past
    its bound the worker is killed and started again, the scan goes on where it was, and the
    daemon stays healthy (the watchdog is fed; STATUS= says the camera restarts). The log names
    the camera call the worker was stuck in (its beats carry the camera's call watch)."""
    receiver = NotifyReceiver(short_dir / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(receiver.path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # fed every 0.05 s
    # Each worker's camera stalls for good after 2 photos: the second worker takes the last 2.
    picamera2(legacy=True, stall_after=2, stall_reopens=None)
    try:
        with service_in_thread(camera_config(short_dir)) as service:
            job = call(service, "scan", {"positions": 4})
            receiver.until(lambda m: "STATUS=restarting the camera" in m, timeout=WAIT_S)
            restarting = time.monotonic()
            done = wait_job(service, job["id"], lambda j: j["state"] in ("failed", "done"))
            assert done["state"] == "done" and done["captured"] == 4
            record = json.loads((service.cfg.data_dir / "jobs" / job["id"] / "job.json")
                                .read_text())
            assert record["rig_restarts"] == 1
            killed = [r.getMessage() for r in caplog.records if "killed" in r.getMessage()]
            assert any("has not returned for" in m and "capture" in m for m in killed), killed
    finally:
        receiver.close()
    pings = [t for t, m in list(receiver.messages) if m == "WATCHDOG=1"]
    assert any(t > restarting for t in pings)  # never starved: the daemon itself is healthy
