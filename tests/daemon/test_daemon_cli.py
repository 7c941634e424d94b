"""The commands as a user types them, with and without a daemon listening."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from openscan_pi.config import load_config
from openscan_pi.daemon.client import find_daemon
from openscan_pi.fsutil import read_json
from openscan_pi.paths import DEFAULT_SOCKET, SYSTEM_CONFIG, socket_candidates
from tests.conftest import run_cli
from tests.daemon.conftest import DaemonProcess


def cli(d: DaemonProcess, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_cli("--config", str(d.config), *args, timeout=timeout)


def test_status_without_a_daemon_says_so_and_exits_3(make_daemon: Callable[..., DaemonProcess]
                                                     ) -> None:
    d = make_daemon()
    for args in (("status",), ("status", "--json"), ("status", "--watch")):
        done = cli(d, *args)
        assert done.returncode == 3, done
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1
        assert "the daemon is not running" in done.stderr and "openscan-pi daemon" in done.stderr


def test_status_without_a_config_or_a_daemon_names_the_default_socket() -> None:
    """No config file anywhere: the message names the socket the built-in defaults give (found
    without loading them: they hold nothing that could be reported instead)."""
    if SYSTEM_CONFIG.exists():
        pytest.skip(f"{SYSTEM_CONFIG} exists here")
    expected = load_config(None, env={}).socket_path
    if find_daemon(socket_candidates(DEFAULT_SOCKET)) is not None:
        pytest.skip("a daemon answers on the default socket here")
    done = run_cli("status")
    assert (done.returncode, done.stdout) == (3, ""), done
    assert done.stderr == (f"openscan-pi: the daemon is not running (nothing answers on {expected}): "
                           "start it with `sudo systemctl start openscan-pi`, or `openscan-pi daemon`\n")


def test_scan_wait_through_the_daemon_then_status_and_jobs(daemon: DaemonProcess) -> None:
    idle = cli(daemon, "status")
    assert idle.returncode == 0, idle.stderr
    assert "idle" in idle.stdout and "no jobs yet" in idle.stdout

    done = cli(daemon, "scan", "--positions", "5", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout.splitlines()[-1])
    assert job["state"] == "done" and job["captured"] == 5
    assert job["model_dir"].startswith(str(daemon.data))

    people = cli(daemon, "scan", "--positions", "3", "--wait")
    assert people.returncode == 0, people.stderr
    assert "scanning" in people.stderr and "uploading" in people.stderr  # progress, on stderr
    assert people.stdout.startswith("model of ") and str(daemon.data) in people.stdout
    job = json.loads(cli(daemon, "status", "--json").stdout)["job"]

    human = cli(daemon, "status")
    assert human.returncode == 0
    assert f"job {job['id']}" in human.stdout and f"done: model in {job['model_dir']}" in human.stdout

    status = json.loads(cli(daemon, "status", "--json").stdout)
    assert set(status) >= {"state", "version", "rig", "job"}
    assert status["state"] == "idle" and status["job"]["id"] == job["id"]
    assert set(status["job"]) >= {"id", "project", "state", "positions", "captured", "bytes_total",
                                  "bytes_uploaded", "cloud_status", "model_dir", "error",
                                  "created", "updated"}

    listed = json.loads(cli(daemon, "jobs", "--json").stdout)
    assert [j["id"] for j in listed][-1] == job["id"] and len(listed) == 2
    table = cli(daemon, "jobs")
    assert job["id"] in table.stdout and "done" in table.stdout


def test_scan_without_wait_hands_over_and_watch_follows(daemon: DaemonProcess) -> None:
    handed = cli(daemon, "scan", "--positions", "4", "--json")
    assert handed.returncode == 0, handed.stderr
    job = json.loads(handed.stdout)
    assert job["state"] == "queued"
    # --watch --json: one status per line, following the job until it is done
    from tests.conftest import start_cli

    watch = start_cli("--config", str(daemon.config), "status", "--watch", "--json")
    try:
        assert watch.stdout is not None
        states = []
        for line in watch.stdout:
            status = json.loads(line)
            if status["job"] and status["job"]["id"] == job["id"]:
                states.append(status["job"]["state"])
                if states[-1] == "done":
                    break
    finally:
        watch.terminate()
        watch.wait(30)
    assert states[-1] == "done"
    assert "scanning" in states or "uploading" in states or "processing" in states


def test_simulate_scan_goes_to_a_simulated_daemon(daemon: DaemonProcess) -> None:
    done = cli(daemon, "scan", "--positions", "3", "--simulate", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["id"] in [j["id"] for j in daemon.call("jobs")]


def test_rig_commands_go_through_the_daemon(daemon: DaemonProcess, tmp_path: Path) -> None:
    moved = cli(daemon, "move", "--rotor", "10", "--turntable", "90", "--json")
    assert moved.returncode == 0, moved.stderr
    at = json.loads(moved.stdout)
    assert at == pytest.approx({"rotor": 10.0, "turntable": 90.0}, abs=0.01)  # whole steps
    rig = daemon.call("status")["rig"]
    assert (rig["rotor"], rig["turntable"]) == pytest.approx((10.0, 90.0), abs=0.01)  # its own rig

    assert cli(daemon, "light", "on").returncode == 0
    assert daemon.call("status")["rig"]["light"] is True
    assert cli(daemon, "light", "off").returncode == 0
    assert daemon.call("status")["rig"]["light"] is False

    photo = tmp_path / "p.jpg"
    shot = cli(daemon, "capture", str(photo), "--json")
    assert shot.returncode == 0, shot.stderr
    data = photo.read_bytes()
    assert data[:2] == b"\xff\xd8" and len(data) == json.loads(shot.stdout)["size"]
    assert not list((daemon.data / "tmp").iterdir())

    homed = cli(daemon, "home", "--json")
    assert homed.returncode == 0, homed.stderr
    assert "endstop" in json.loads(homed.stdout)["message"]


def test_rig_commands_are_refused_while_a_scan_has_the_rig(daemon: DaemonProcess) -> None:
    job = daemon.call("scan", {"positions": 30})
    daemon.wait(lambda s: s["rig"]["job"] == job["id"])
    busy = cli(daemon, "move", "--rotor", "5")
    assert busy.returncode == 1
    assert f"the rig is busy scanning job {job['id']}" in busy.stderr
    cancelled = cli(daemon, "cancel")
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job['id']}: cancelled" in cancelled.stdout


def test_retry_and_cancel_without_a_daemon_work_on_disk(daemon: DaemonProcess) -> None:
    job = daemon.call("scan", {"positions": 30})
    daemon.wait(lambda s: (s["job"] or {}).get("captured", 0) >= 2)
    daemon.kill()
    record = read_json(daemon.data / "jobs" / job["id"] / "job.json")
    assert record["state"] == "scanning"
    # no daemon: `jobs` reads the disk, `cancel JOB` cancels there
    listed = json.loads(cli(daemon, "jobs", "--json").stdout)
    assert listed[0]["state"] == "scanning"
    no_job = cli(daemon, "cancel")
    assert no_job.returncode == 1 and "give the job" in no_job.stderr
    done = cli(daemon, "cancel", job["id"], "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "cancelled"
    again = cli(daemon, "retry", job["id"])
    assert again.returncode == 1 and "nothing to retry" in again.stderr
