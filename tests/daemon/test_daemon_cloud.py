"""The daemon against a cloud it cannot trust: ``cancel`` ends a stuck cloud call at once and is
durable (a daemon killed right after it never resumes the job), a trickling cloud does not hold a
scan's pre-flight, the cloud's text in a job is text, and an unusable link fails a job with one
line. The daemon is a real subprocess; the bundled local cloud runs in the test."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from openscan_pi.fsutil import read_json
from openscan_pi.sim.cloud import LocalCloud
from tests.daemon.conftest import WAIT_S, DaemonProcess

#: A raw control character or terminal escape: C0 (but tab and newline), DEL, C1, bidi controls.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    """A local cloud in this process, so that a test can make it misbehave and count its calls."""
    with LocalCloud(tmp_path / "cloud", processing_s=0.3) as server:
        yield server


def stuck_upload(make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud
                 ) -> tuple[DaemonProcess, str]:
    """A daemon whose job waits on the trickled answer to its first part."""
    cloud.inject("part_trickle", 1000)
    d = make_daemon(cloud=cloud).start()
    job_id = d.call("scan", {"positions": 6})["id"]
    cloud.wait_for(lambda s: any(p["parts_received"] for p in s["projects"].values()),
                   timeout=WAIT_S)
    return d, job_id


def starts(cloud: LocalCloud) -> int:
    return sum(p["start_count"] for p in cloud.state()["projects"].values())


def test_cancel_ends_a_stuck_cloud_call_at_once(make_daemon: Callable[..., DaemonProcess],
                                                cloud: LocalCloud) -> None:
    d, job_id = stuck_upload(make_daemon, cloud)
    job = d.call("cancel", {"job": job_id})
    assert job["state"] == "cancelled", job
    record = read_json(d.data / "jobs" / job_id / "job.json")
    assert record["state"] == "cancelled" and record["cancel_requested"], record  # durable first
    assert job_id not in d.call("status")["transfers"]
    assert starts(cloud) == 0
    assert d.stop() == 0


def test_a_cancel_is_kept_by_a_daemon_killed_right_after_it(
        make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud) -> None:
    d, job_id = stuck_upload(make_daemon, cloud)
    record = d.data / "jobs" / job_id / "job.json"
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(d.socket))
        request = {"jsonrpc": "2.0", "id": 1, "method": "cancel", "params": {"job": job_id}}
        conn.sendall(json.dumps(request).encode() + b"\n")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the kill follows the durable record at once
            data = read_json(record)
            if data.get("cancel_requested") or data["state"] == "cancelled":
                break
            time.sleep(0.001)
        assert d.proc is not None
        d.proc.send_signal(signal.SIGSTOP)  # frozen where it is: most often before the worker
        d.kill()                            # has let go of the job (what this test is about)
    cloud.inject("part_trickle", 0)  # a resumed job would now get through to startProject
    d.start()
    job = d.call("job", {"job": job_id})
    assert job["state"] == "cancelled", job
    assert job_id not in d.call("status")["transfers"]
    assert starts(cloud) == 0
    assert d.stop() == 0
    assert starts(cloud) == 0


def test_a_recorded_cancel_wins_over_resuming(make_daemon: Callable[..., DaemonProcess],
                                              cloud: LocalCloud) -> None:
    """The window the test above can only hope to hit, made on disk: the daemon died after the
    cancel was recorded and before its worker let go of the job (still `uploading`)."""
    d, job_id = stuck_upload(make_daemon, cloud)
    d.kill()
    path = d.data / "jobs" / job_id / "job.json"
    record = read_json(path)
    assert record["state"] == "uploading", record
    path.write_text(json.dumps({**record, "cancel_requested": time.time()}))
    cloud.inject("part_trickle", 0)  # a resumed job would now get through to startProject
    d.start()
    assert d.call("job", {"job": job_id})["state"] == "cancelled"
    assert d.stop() == 0
    assert starts(cloud) == 0 and read_json(path)["state"] == "cancelled"


def test_a_trickling_cloud_does_not_hold_a_scan(make_daemon: Callable[..., DaemonProcess],
                                                cloud: LocalCloud) -> None:
    cloud.inject("api_trickle")
    d = make_daemon(cloud=cloud).start()
    job = d.call("scan", {"positions": 3})  # the token check gives up after a few seconds
    assert job["state"] == "queued"
    assert "could not check the token" in d.log_text() and cloud.url in d.log_text()
    assert d.wait_job(job["id"], {"done", "failed"})["state"] == "done"


def no_controls(obj: Any) -> None:
    text = json.dumps(obj, ensure_ascii=False)
    assert not CONTROL.search(text), text


def test_escapes_in_a_status_are_text_in_the_job(make_daemon: Callable[..., DaemonProcess],
                                                 cloud: LocalCloud) -> None:
    cloud.processing_s = 60.0
    cloud.inject("status_escapes", 1000)
    d = make_daemon(cloud=cloud).start()
    job_id = d.call("scan", {"positions": 3})["id"]
    job = d.wait(lambda s: s["job"] if "\\x1b[2J" in ((s["job"] or {}).get("cloud_status") or "")
                 else None)
    no_controls(job)
    no_controls(read_json(d.data / "jobs" / job_id / "job.json"))
    assert d.call("cancel", {"job": job_id})["state"] == "cancelled"
    assert d.stop() == 0
    assert not CONTROL.search(d.log_text())


def test_escapes_in_an_error_page_are_text_in_the_job(make_daemon: Callable[..., DaemonProcess],
                                                      cloud: LocalCloud) -> None:
    cloud.inject("api_escapes", 1000)
    d = make_daemon(cloud=cloud)
    config = yaml.safe_load(d.config.read_text())
    config["cloud"]["max_offline_s"] = 0  # no waiting out the cloud: the job fails at once
    d.config.write_text(yaml.safe_dump(config))
    d.start()
    job_id = d.call("scan", {"positions": 3})["id"]
    job = d.wait_job(job_id, {"done", "failed"})
    assert job["state"] == "failed" and "\\x1b[2J" in job["error"], job
    no_controls(job)
    assert d.stop() == 0
    assert not CONTROL.search(d.log_text())


def test_an_unusable_upload_link_fails_the_job_with_one_line(
        make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud) -> None:
    cloud.inject("ulink_bad_ipv6")
    d = make_daemon(cloud=cloud).start()
    job_id = d.call("scan", {"positions": 3})["id"]
    job = d.wait_job(job_id, {"done", "failed"})
    assert job["state"] == "failed", job
    assert "cannot use the link" in job["error"] and cloud.url in job["error"], job["error"]
    assert "internal error" not in d.log_text() and "Traceback" not in d.log_text()
