"""Life under systemd: sd_notify over a real NOTIFY_SOCKET, the watchdog fed from the event loop,
journal fields, SIGTERM mid-move, SIGHUP with a valid and an invalid config."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from openscan_pi.config import load_config
from openscan_pi.daemon.service import Service
from openscan_pi.daemon.systemd import journal_handler, status_line
from openscan_pi.fsutil import read_json
from tests.daemon.conftest import DaemonProcess, service_in_thread

pytest.importorskip("systemd.daemon", reason="systemd-python is not installed")


class NotifyReceiver:
    """A NOTIFY_SOCKET: the datagrams systemd would get, with their arrival times. Read all the
    time, as systemd does (a full socket would block the sender)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._read = 0  # how many messages next() has handed out
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536).decode()
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), data))
                self._cond.notify_all()

    def next(self, timeout: float = 60.0) -> str:
        """The next message not yet handed out."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) > self._read, timeout):
                raise TimeoutError("no notification")
            self._read += 1
            return self.messages[self._read - 1][1]

    def until(self, check: Callable[[str], bool], timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.1, deadline - time.monotonic()))
            if check(message):
                return message

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver(short_dir: Path) -> Iterator[NotifyReceiver]:
    r = NotifyReceiver(short_dir / "notify")
    yield r
    r.close()


def test_ready_status_watchdog_and_stopping(make_daemon: Callable[..., DaemonProcess],
                                            receiver: NotifyReceiver,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(receiver.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # fed every 0.2 s
    d = make_daemon()
    d.start()
    first = receiver.until(lambda m: "READY=1" in m)
    assert "STATUS=idle" in first
    before_ready = [m for _, m in list(receiver.messages)[:-1]]
    assert "EXTEND_TIMEOUT_USEC=60000000" in before_ready  # asked while the camera started
    job = d.call("scan", {"positions": 4})
    statuses = []
    while not any("done" in s for s in statuses):
        message = receiver.next()
        if message.startswith("STATUS="):
            statuses.append(message)
    assert any(f"job {job['id']} scanning: capturing" in s for s in statuses)
    assert any(f"job {job['id']} uploading" in s for s in statuses)
    pings = [t for t, m in list(receiver.messages) if m == "WATCHDOG=1"]
    assert len(pings) >= 3
    gaps = sorted(b - a for a, b in zip(pings, pings[1:], strict=False))
    assert 0.1 <= gaps[len(gaps) // 2] <= 0.4  # the median gap: half of WATCHDOG_USEC
    assert d.stop() == 0
    receiver.until(lambda m: m == "STOPPING=1", timeout=10)


@pytest.fixture
def service(short_dir: Path, monkeypatch: pytest.MonkeyPatch, receiver: NotifyReceiver
            ) -> Iterator[Service]:
    """The service in a thread of this process, talking to a real NOTIFY_SOCKET."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(receiver.path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # fed every 0.05 s
    config = short_dir / "config.yaml"
    config.write_text(yaml.safe_dump({
        "daemon": {"socket": str(short_dir / "s.sock"), "data_dir": str(short_dir / "data")},
        "rig": {"model": "simulated"}, "cloud": {"url": "local", "local": {"processing_s": 0.2},
                                                 "poll_interval_s": 0.05},
        "camera": {"resolution": [320, 240]}}))
    with service_in_thread(load_config(config, env={}), lambda: load_config(config, env={})) as svc:
        yield svc


def test_a_hung_loop_starves_the_watchdog(service: Service, receiver: NotifyReceiver) -> None:
    receiver.until(lambda m: m == "WATCHDOG=1")
    window: dict[str, float] = {}

    def hang() -> None:  # the event loop stuck in a blocking call
        window["from"] = time.monotonic()
        time.sleep(0.5)
        window["to"] = time.monotonic()

    assert service.loop is not None
    service.loop.call_soon_threadsafe(hang)
    while "to" not in window:
        receiver.next(10)
    receiver.until(lambda m: m == "WATCHDOG=1", timeout=5)  # fed again once it runs
    pings = [t for t, m in list(receiver.messages) if m == "WATCHDOG=1"]
    during = [t for t in pings if window["from"] + 0.06 < t < window["to"]]
    assert during == []
    assert any(t < window["from"] for t in pings) and any(t > window["to"] for t in pings)


def test_a_notify_socket_that_goes_away_and_comes_back(service: Service,
                                                       receiver: NotifyReceiver) -> None:
    """``systemd.daemon.notify`` raises OSError when sd_notify fails (systemd re-executing itself
    during an upgrade leaves no notify socket for a moment). A scan runs on through that, and the
    watchdog pings resume as soon as the socket is back."""
    receiver.until(lambda m: m == "WATCHDOG=1")
    receiver.close()
    receiver.path.unlink()  # from now on every notification fails: FileNotFoundError
    assert service.scheduler is not None
    job = service.scheduler.scan(3, "outage.zip")
    ended = threading.Event()
    service.scheduler.jobs[job["id"]].on_change(
        lambda j: ended.set() if j.state.value in ("done", "failed") else None)
    assert ended.wait(120)
    assert service.scheduler.jobs[job["id"]].state.value == "done"
    back = NotifyReceiver(receiver.path)
    try:
        # pinged again, and systemctl status shows what the daemon does now, not what it did
        # before the outage; in either order (the job's last status may be the first to go
        # through, or be sent again after the first ping that does)
        now = f"STATUS=idle; last job {job['id']} done"
        seen: set[str] = set()
        back.until(lambda m: seen.add(m) is None and {"WATCHDOG=1", now} <= seen, timeout=10)
        assert [m for _, m in list(back.messages) if m.startswith("STATUS=")][-1] == now
    finally:
        back.close()


def test_journal_fields_through_the_sender_hook(service: Service) -> None:
    import logging

    sent: list[tuple[str, dict[str, Any]]] = []

    def sender(text: str, /, **fields: Any) -> None:  # journal.send(MESSAGE, **fields)
        sent.append((text, fields))

    handler = journal_handler(sender=sender)
    assert handler is not None
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        assert service.scheduler is not None
        job = service.scheduler.scan(3, "journal-test.zip")
        done = threading.Event()
        service.scheduler.jobs[job["id"]].on_change(
            lambda j: done.set() if j.state.value in ("done", "failed") else None)
        assert done.wait(120)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    fields = [f for m, f in sent if "->" in m and f.get("JOB_ID") == job["id"]]
    assert {f["JOB_STATE"] for f in fields} >= {"scanning", "uploading", "processing", "done"}
    assert all(f["PROJECT"] == "journal-test.zip" for f in fields)
    assert all(f["SYSLOG_IDENTIFIER"] == "openscan-pi" for f in fields)


def test_status_line_for_systemctl() -> None:
    job = {"id": "j1", "state": "scanning", "step": "capturing 3/10"}
    busy = {"state": "busy", "job": job, "rig": {"task": None}, "queued": ["j2"]}
    assert status_line(busy) == "job j1 scanning: capturing 3/10 (+1 queued)"
    assert status_line({"state": "idle", "job": None, "rig": {}}) == "idle"
    assert status_line({"state": "idle", "job": {**job, "state": "done"}, "rig": {}}) == (
        "idle; last job j1 done")
    assert status_line({"state": "busy", "job": None, "rig": {"task": "move"}}) == "rig: move"


def test_sigterm_mid_move_stops_at_once_and_the_job_resumes(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    d = make_daemon(rig={"model": "simulated", "sim_time_scale": 1.0})  # moves in real time
    d.start()
    job_id = d.call("scan", {"positions": 8})["id"]
    d.wait(lambda s: (s["job"] or {}).get("captured", 0) >= 1)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=5) == 0  # the promise: out within 5 s
    assert not d.socket.exists()
    assert read_json(d.data / "jobs" / job_id / "job.json")["state"] == "scanning"
    kept = read_json(d.data / "jobs" / job_id / "images" / "manifest.json")
    assert 1 <= len(kept) < 8
    assert "stopping: every job continues at the next start" in d.log_text()
    d.config.write_text(d.config.read_text().replace("sim_time_scale: 1.0", "sim_time_scale: 0.02"))
    d.start()
    assert d.wait_job(job_id, {"done", "failed"})["state"] == "done"
    manifest = read_json(d.data / "jobs" / job_id / "images" / "manifest.json")
    assert sorted(e["position"] for e in manifest) == list(range(8))


def _photo_size(d: DaemonProcess) -> tuple[int, int]:
    from PIL import Image

    shot = d.call("rig.capture")
    return Image.open(io.BytesIO(base64.b64decode(shot["jpeg_base64"]))).size


def test_sighup_reloads_a_valid_config_and_refuses_an_invalid_one(daemon: DaemonProcess) -> None:
    assert _photo_size(daemon) == (320, 240)
    before = daemon.call("status")["config"]["loaded"]
    data = yaml.safe_load(daemon.config.read_text())
    data["camera"]["resolution"] = [400, 300]
    daemon.config.write_text(yaml.safe_dump(data))
    status = daemon.reload()
    assert status["config"]["loaded"] > before
    assert "config reloaded from" in daemon.log_text()
    assert _photo_size(daemon) == (400, 300)

    good = daemon.config.read_text()
    daemon.config.write_text(good.replace("resolution:", "resolutoin:"))
    loaded = status["config"]["loaded"]
    status = daemon.reload()
    assert status["config"]["loaded"] == loaded
    assert "config reload refused, keeping the old config: config: camera.resolutoin" in (
        daemon.log_text())
    assert _photo_size(daemon) == (400, 300)  # the old config, still working

    daemon.config.write_text(good)
    job = daemon.call("scan", {"positions": 20})
    daemon.wait(lambda s: s["rig"]["job"] == job["id"])
    status = daemon.reload()
    assert "is running: send SIGHUP again when the daemon is idle" in daemon.log_text()
    assert daemon.call("cancel")["state"] == "cancelled"
    assert os.path.exists(daemon.socket)
