"""The rig worker through the daemon as a user meets it: a worker killed (SIGKILL, ``os.abort``),
a capture that hangs forever, the daemon killed under a running worker, a worker that leaves
when idle. Every scan here must end ``done`` with each position in its manifest exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from openscan_pi.daemon.client import DaemonError
from openscan_pi.sim.camera import FAULT_ENV
from tests.conftest import cli_env
from tests.daemon.conftest import WAIT_S, DaemonProcess, daemon_config

#: A slow enough simulated rig that a scan is mostly moves (a kill lands in one).
SLOW = {"sim_time_scale": 0.05}


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``check`` (a process's end has no other signal to wait on) until truthy."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return found


def worker_pid(daemon: DaemonProcess) -> int:
    """The running worker's pid, as ``status`` says it."""
    return int(daemon.wait(lambda s: (s["rig"].get("worker") or {}).get("pid")))


def record(daemon: DaemonProcess, job_id: str) -> dict[str, Any]:
    return json.loads((daemon.data / "jobs" / job_id / "job.json").read_text())


def assert_each_position_once(daemon: DaemonProcess, job: dict[str, Any]) -> None:
    manifest = json.loads((daemon.data / "jobs" / job["id"] / "images" / "manifest.json")
                          .read_text())
    positions = sorted(entry["position"] for entry in manifest)
    assert positions == list(range(job["positions"]))


@pytest.fixture
def fault(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, int], None]:
    """``fault("hang" | "abort", index)``: the simulated camera's fault switch, for the daemon
    started after it (the environment is inherited by its worker)."""
    path = short_dir / "fault"
    monkeypatch.setenv(FAULT_ENV, str(path))

    def arm(what: str, index: int) -> None:
        path.write_text(f"{what} {index}")

    return arm


def test_a_worker_killed_mid_scan_is_restarted_and_the_scan_ends_done(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(rig=SLOW).start()
    job = daemon.call("scan", {"positions": 8})
    first = worker_pid(daemon)
    daemon.wait(lambda s: s["job"] and s["job"]["captured"] >= 2)
    os.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    restarted = daemon.wait(lambda s: (s["rig"]["worker"]["pid"] not in (None, first))
                            and s["rig"]["worker"]["state"] == "running")
    assert restarted
    recovery = time.monotonic() - killed
    done = daemon.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert_each_position_once(daemon, done)
    assert record(daemon, job["id"])["rig_restarts"] == 1
    assert not alive(first)
    assert "killed by SIGKILL" in daemon.log_text()
    print(f"recovery after SIGKILL: {recovery:.2f} s")


def test_a_capture_that_hangs_forever_kills_the_worker_and_the_scan_goes_on(
        make_daemon: Callable[..., DaemonProcess], fault: Callable[[str, int], None]) -> None:
    fault("hang", 3)
    daemon = make_daemon(camera={"timeout_s": 0.5, "retries": 0}).start()
    job = daemon.call("scan", {"positions": 6})
    said = daemon.wait(lambda s: s["rig"]["worker"]["state"] == "restarting" and s)
    assert said["rig"]["worker"]["restarts"] == 1
    done = daemon.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert_each_position_once(daemon, done)
    assert record(daemon, job["id"])["rig_restarts"] == 1
    assert "capture did not return within its bound" in daemon.log_text()


def test_os_abort_in_the_worker_is_a_restart(
        make_daemon: Callable[..., DaemonProcess], fault: Callable[[str, int], None]) -> None:
    fault("abort", 2)
    daemon = make_daemon().start()
    job = daemon.call("scan", {"positions": 5})
    done = daemon.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert_each_position_once(daemon, done)
    assert "killed by SIGABRT" in daemon.log_text()


def test_past_max_restarts_the_job_fails_with_the_reason_and_retry_continues(
        make_daemon: Callable[..., DaemonProcess], fault: Callable[[str, int], None]) -> None:
    fault("abort", 1)
    daemon = make_daemon(rig={"max_restarts": 0}).start()
    job = daemon.call("scan", {"positions": 4})
    failed = daemon.wait_job(job["id"], {"done", "failed"})
    assert failed["state"] == "failed"
    assert "killed by SIGABRT" in failed["error"]
    assert f"openscan-pi retry {job['id']}" in failed["error"]
    daemon.call("retry", {"job": job["id"]})
    done = daemon.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert_each_position_once(daemon, done)


def test_a_worker_killed_mid_move_fails_that_call_only(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(rig={"sim_time_scale": 1.0}).start()
    first = worker_pid(daemon)
    answer: dict[str, Any] = {}

    def move() -> None:
        try:
            answer["result"] = daemon.call("rig.turn", {"axis": "turntable",
                                                       "degrees": 3600})
        except DaemonError as exc:
            answer["error"] = str(exc)

    mover = threading.Thread(target=move)
    mover.start()
    # The worker's heartbeats say what it runs.
    wait_until(lambda: daemon.call("status")["rig"]["worker"]["op"] == "turn_by",
               "the move to start")
    os.kill(first, signal.SIGKILL)
    mover.join(WAIT_S)
    assert "error" in answer, (answer, daemon.log_text())
    assert "killed by SIGKILL" in answer["error"] and "try again" in answer["error"]
    moved = daemon.call("rig.move", {"rotor": 10})  # the next call starts another worker
    assert moved["rotor"] == pytest.approx(10, abs=0.01)
    assert worker_pid(daemon) != first


def test_the_daemon_killed_takes_its_worker_with_it_and_the_motors_are_released(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(rig=SLOW).start()
    job = daemon.call("scan", {"positions": 20})
    pid = worker_pid(daemon)
    daemon.wait(lambda s: s["job"]["id"] == job["id"] and s["job"]["captured"] >= 1)
    daemon.kill()
    wait_until(lambda: not alive(pid), "the worker to end")
    state = json.loads((daemon.data / "rig-worker.json").read_text())
    assert state["pid"] == pid and state["motors"] == "released", daemon.log_text()


def test_the_worker_leaves_when_idle_and_the_next_command_starts_it(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(rig={"idle_exit_s": 1}).start()
    pid = worker_pid(daemon)
    daemon.wait(lambda s: s["rig"]["worker"]["state"] == "stopped")
    wait_until(lambda: not alive(pid), "the idle worker to end")
    assert json.loads((daemon.data / "rig-worker.json").read_text())["motors"] == "released"
    light = daemon.call("rig.light", {"on": True})
    assert light["on"] is True
    assert worker_pid(daemon) != pid


def test_the_daemon_process_imports_none_of_the_rig_libraries(short_dir: Path) -> None:
    """A scan and a hand-driven capture through the scheduler leave numpy, Pillow, picamera2,
    lgpio and gpiozero out of the daemon's process: they live in the worker's."""
    config = daemon_config(short_dir)
    code = f"""
import sys, threading
from openscan_pi.config import load_config
from openscan_pi.daemon.methods import _capture
from openscan_pi.daemon.scheduler import Scheduler
from openscan_pi.sim.local_cloud import local_cloud
done = threading.Event()
with local_cloud(load_config({str(config)!r}, env={{}})) as cfg:  # as `openscan-pi daemon` does
    s = Scheduler(cfg, on_status=lambda st: (
        st["job"] and st["job"]["state"] in ("done", "failed") and done.set()))
    s.start()
    s.scan(3, None)
    assert done.wait(120)
    shot = s.rig_call("capture", lambda rig: _capture(rig, None)).result(60)
    assert shot["jpeg_base64"]
    s.stop()
print(",".join(m for m in ("numpy", "PIL", "picamera2", "lgpio", "gpiozero") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=cli_env(), timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_a_reload_whose_rig_cannot_open_keeps_the_old_configs_worker(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon().start()
    first = worker_pid(daemon)
    good = daemon.config.read_text()
    data = yaml.safe_load(good)
    data["camera"]["backend"] = "picamera2"  # valid, but this machine has no Pi camera
    daemon.config.write_text(yaml.safe_dump(data))
    status = daemon.reload()
    said = [line for line in daemon.log_text().splitlines() if "config reload" in line]
    assert "keeping the old config" in said[-1] and "picamera2" in said[-1]
    assert status["rig"]["worker"]["state"] == "running"
    assert status["rig"]["worker"]["pid"] not in (None, first)  # the old config's, started again
    shot = daemon.call("rig.capture")
    assert shot["size"] > 0  # the simulated camera of the old config


def test_a_worker_killed_mid_capture_is_restarted_and_the_scan_ends_done(
        make_daemon: Callable[..., DaemonProcess], fault: Callable[[str, int], None],
        short_dir: Path) -> None:
    fault("hang", 2)  # holds the capture of position 3 until the kill (its bound is 60 s)
    daemon = make_daemon(camera={"timeout_s": 60, "retries": 0}).start()
    first = worker_pid(daemon)
    job = daemon.call("scan", {"positions": 5})
    wait_until(lambda: not (short_dir / "fault").exists(), "the capture to hang")
    os.kill(first, signal.SIGKILL)
    done = daemon.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert_each_position_once(daemon, done)
    assert record(daemon, job["id"])["rig_restarts"] == 1
    assert "killed by SIGKILL" in daemon.log_text()
