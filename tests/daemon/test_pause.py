"""``pause`` and ``continue``: a scan stops before its next position, stays paused across a
``kill -9`` of the daemon, goes on where it stopped, and ``cancel`` works on it. A real daemon
on the simulated rig, over its socket and through the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from openscan_pi.daemon.client import DaemonError
from openscan_pi.daemon.protocol import REFUSED
from openscan_pi.fsutil import read_json
from tests.conftest import run_cli
from tests.daemon.conftest import DaemonProcess

POSITIONS = 40


def paused_mid_scan(d: DaemonProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    """A scan paused after a few positions: (the answer to pause, the job once paused)."""
    job = d.call("scan", {"positions": POSITIONS})
    d.wait_job(job["id"], {"scanning"})
    d.wait(lambda s: (s["job"] or {}).get("captured", 0) >= 3)
    asked = d.call("pause", {})
    assert asked["id"] == job["id"]
    return asked, d.wait_job(job["id"], {"paused", "uploading", "done", "failed"})


def positions_in_manifest(d: DaemonProcess, job_id: str) -> list[int]:
    return sorted(e["position"] for e in read_json(d.data / "jobs" / job_id / "images" /
                                                   "manifest.json"))


def test_pause_stops_before_the_next_position_and_continue_goes_on(daemon: DaemonProcess
                                                                   ) -> None:
    asked, paused = paused_mid_scan(daemon)
    assert paused["state"] == "paused", paused
    assert 3 <= paused["captured"] < POSITIONS
    record = read_json(daemon.data / "jobs" / paused["id"] / "job.json")
    assert record["state"] == "paused" and record.get("pause_requested") is None
    assert positions_in_manifest(daemon, paused["id"]) == list(range(paused["captured"]))
    status = daemon.call("status")
    assert status["job"]["state"] == "paused" and status["rig"]["light"] is False
    # the rig is free while paused: the object can be turned by hand
    assert daemon.call("rig.turn", {"axis": "turntable", "degrees": 10})
    went_on = daemon.call("continue", {})
    assert went_on["id"] == paused["id"] and went_on["state"] == "scanning"
    done = daemon.wait_job(paused["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert positions_in_manifest(daemon, paused["id"]) == list(range(POSITIONS))  # each once


def test_a_paused_scan_stays_paused_across_kill_9(make_daemon: Callable[..., DaemonProcess]
                                                  ) -> None:
    d = make_daemon().start()
    _, paused = paused_mid_scan(d)
    assert paused["state"] == "paused"
    d.kill()
    d.start()
    again = d.call("job", {"job": paused["id"]})
    assert again["state"] == "paused" and again["captured"] == paused["captured"]
    assert d.call("status")["state"] == "idle"
    d.call("continue", {"job": paused["id"]})
    assert d.wait_job(paused["id"], {"done", "failed"})["state"] == "done"
    assert positions_in_manifest(d, paused["id"]) == list(range(POSITIONS))


def test_a_pause_recorded_before_a_crash_is_kept(make_daemon: Callable[..., DaemonProcess]
                                                 ) -> None:
    # The pause is on disk before the daemon answers; a daemon killed before its worker let go
    # of the scan makes the job paused at its next start, not scanning on.
    d = make_daemon().start()
    job = d.call("scan", {"positions": POSITIONS})
    d.wait(lambda s: (s["job"] or {}).get("captured", 0) >= 2)
    d.call("pause", {"job": job["id"]})
    d.kill()
    record = read_json(d.data / "jobs" / job["id"] / "job.json")
    assert record["state"] == "paused" or record.get("pause_requested"), record
    d.start()
    assert d.call("job", {"job": job["id"]})["state"] == "paused"


def test_cancel_works_on_a_paused_scan(daemon: DaemonProcess) -> None:
    _, paused = paused_mid_scan(daemon)
    cancelled = daemon.call("cancel", {"job": paused["id"]})
    assert cancelled["state"] == "cancelled"
    with pytest.raises(DaemonError) as refused:
        daemon.call("continue", {"job": paused["id"]})
    assert refused.value.code == REFUSED and "cancelled, not paused" in str(refused.value)


def test_what_cannot_be_paused_or_continued_is_refused_in_one_line(daemon: DaemonProcess
                                                                   ) -> None:
    for method, text in (("pause", "nothing to pause"), ("continue", "nothing to continue")):
        with pytest.raises(DaemonError) as refused:
            daemon.call(method, {})
        assert refused.value.code == REFUSED and text in str(refused.value)
    job = daemon.call("scan", {"positions": 2})
    done = daemon.wait_job(job["id"], {"done", "failed"})
    with pytest.raises(DaemonError) as refused:
        daemon.call("pause", {"job": done["id"]})
    assert "only a scan can be paused" in str(refused.value)


def test_the_cli_pauses_and_continues_through_the_daemon(daemon: DaemonProcess) -> None:
    job = daemon.call("scan", {"positions": POSITIONS})
    daemon.wait(lambda s: (s["job"] or {}).get("captured", 0) >= 2)
    proc = run_cli("--config", str(daemon.config), "pause")
    assert proc.returncode == 0, proc.stderr
    assert f"job {job['id']} pause" in proc.stdout
    daemon.wait_job(job["id"], {"paused"})
    shown = run_cli("--config", str(daemon.config), "status")
    assert "paused" in shown.stdout and f"openscan-pi continue {job['id']}" in shown.stdout
    proc = run_cli("--config", str(daemon.config), "continue", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["state"] == "done"


def test_without_a_daemon_pause_says_how_and_continue_runs_here(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    d = make_daemon().start()
    _, paused = paused_mid_scan(d)
    assert d.stop() == 0
    proc = run_cli("--config", str(d.config), "pause")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "no daemon is running" in proc.stderr
    proc = run_cli("--config", str(d.config), "continue", "--simulate", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["state"] == "done"
    assert positions_in_manifest(d, paused["id"]) == list(range(POSITIONS))
