"""``scan --passes K``: the job waits between passes for the user to turn the object over, keeps
waiting across a ``kill -9``, resumes a pass cut short in that pass, and sends every pass as one
set to one cloud project. A real daemon on the simulated rig; the cloud runs in the test."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from openscan_pi.daemon.client import DaemonError
from openscan_pi.daemon.protocol import INVALID_PARAMS
from openscan_pi.fsutil import read_json
from openscan_pi.sim.cloud import LocalCloud
from tests.conftest import run_cli
from tests.daemon.conftest import DaemonProcess

EACH = 6


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    with LocalCloud(tmp_path / "cloud", processing_s=0.2) as server:
        yield server


def manifest_positions(d: DaemonProcess, job_id: str) -> list[int]:
    return sorted(e["position"] for e in read_json(d.data / "jobs" / job_id / "images" /
                                                   "manifest.json"))


def plan(d: DaemonProcess, job_id: str) -> list[dict[str, float]]:
    return read_json(d.data / "jobs" / job_id / "plan.json")


def wait_between_passes(d: DaemonProcess, job_id: str) -> dict[str, Any]:
    job = d.wait_job(job_id, {"waiting", "failed", "done"})
    assert job["state"] == "waiting", job
    return job


def test_two_passes_into_one_project_with_a_wait_that_survives_kill_9(
        make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud) -> None:
    d = make_daemon(cloud=cloud).start()
    job = d.call("scan", {"positions": EACH, "passes": 2, "project": "vase.zip"})
    assert job["positions"] == 2 * EACH
    waiting = wait_between_passes(d, job["id"])
    assert waiting["captured"] == EACH
    assert (waiting["pass"], waiting["passes"]) == (2, 2)  # the next pass, waited for
    assert "turn the object over, then `openscan-pi continue" in waiting["step"]
    status = d.call("status")
    assert status["rig"]["light"] is False and status["job"]["state"] == "waiting"
    assert len(plan(d, job["id"])) == EACH  # the second pass is planned when it begins
    assert cloud.state()["projects"] == {}  # nothing is sent before the last pass
    shown = run_cli("--config", str(d.config), "status")
    assert "waiting" in shown.stdout and "turn the object over" in shown.stdout

    d.kill()
    d.start()
    assert d.call("job", {"job": job["id"]})["state"] == "waiting"  # still waiting
    first = plan(d, job["id"])
    went_on = run_cli("--config", str(d.config), "continue", "--wait", "--json")
    assert went_on.returncode == 0, went_on.stderr
    done = d.call("job", {"job": job["id"]})
    assert done["state"] == "done" and done["captured"] == 2 * EACH
    assert manifest_positions(d, job["id"]) == list(range(2 * EACH))  # each once
    both = plan(d, job["id"])
    assert len(both) == 2 * EACH and both[:EACH] == first
    (name, project), = cloud.state()["projects"].items()
    assert name == "vase.zip" and project["created_count"] == 1
    with zipfile.ZipFile(cloud.archive_path(name)) as zf:
        assert len(zf.namelist()) == 2 * EACH


def test_kill_9_in_the_second_pass_resumes_in_that_pass(
        make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud) -> None:
    d = make_daemon(cloud=cloud).start()
    job = d.call("scan", {"positions": EACH, "passes": 2})
    wait_between_passes(d, job["id"])
    d.call("continue", {"job": job["id"]})
    d.wait(lambda s: (s["job"] or {}).get("captured", 0) >= EACH + 2)
    second = plan(d, job["id"])
    d.kill()
    d.start()
    done = d.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert manifest_positions(d, job["id"]) == list(range(2 * EACH))
    assert plan(d, job["id"]) == second  # the pass went on as planned, not planned again
    assert len(cloud.state()["projects"]) == 1


@pytest.mark.parametrize(("params", "text"), [
    ({"positions": 5, "passes": 0}, "passes"),
    ({"positions": 5, "passes": 21}, "passes"),
    ({"positions": 1000, "passes": 11}, "at most 10000 in all"),
    ({"positions": 5, "passes": "2"}, "passes"),
])
def test_bad_passes_are_refused(daemon: DaemonProcess, params: dict, text: str) -> None:
    with pytest.raises(DaemonError) as refused:
        daemon.call("scan", params)
    assert refused.value.code == INVALID_PARAMS and text in str(refused.value)
    assert daemon.call("jobs") == []


def test_the_cli_scans_passes_here_and_continue_goes_on(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"daemon:\n  data_dir: {tmp_path / 'data'}\n  socket: {tmp_path / 's.sock'}\n"
                   "camera:\n  resolution: [320, 240]\ncloud:\n  poll_interval_s: 0.1\n"
                   "  local:\n    processing_s: 0.2\n")
    first = run_cli("--config", str(cfg), "scan", "--positions", "3", "--passes", "2",
                    "--simulate")
    assert first.returncode == 0, first.stderr
    assert "pass 1 of 2 done: turn the object over, then `openscan-pi continue" in first.stdout
    bad = run_cli("--config", str(cfg), "scan", "--positions", "3", "--passes", "0",
                  "--simulate")
    assert bad.returncode == 1 and "--passes must be from 1 to 20" in bad.stderr
    again = run_cli("--config", str(cfg), "continue", "--simulate")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("model of ")
