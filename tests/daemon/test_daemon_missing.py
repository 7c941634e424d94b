"""A photo, the manifest, the plan or the transfer journal deleted from a job that is scanning,
uploading, processing or downloading: one line says what is missing (the path) and what is done
about it (or what `retry` will do), and the job then ends ``done`` — with the daemon and with
`retry` in the foreground. Never "internal error"."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from openscan_pi.fsutil import atomic_write_json, read_json
from openscan_pi.sim.cloud import LocalCloud
from tests.conftest import run_cli
from tests.daemon.conftest import DaemonProcess
from tests.daemon.test_daemon_jobs import check_images

POSITIONS = 6


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    with LocalCloud(tmp_path / "cloud", processing_s=0.3) as server:
        yield server


def stopped_in(d: DaemonProcess, cloud: LocalCloud, state: str) -> str:
    """A job the daemon was stopped (SIGTERM) in ``state``; the cloud back to full speed."""
    if state == "uploading":
        cloud.inject("part_slow", bps=20_000)
    elif state == "processing":
        cloud.processing_s = 60.0
    elif state == "downloading":
        cloud.inject("download_slow", bps=5_000)
    d.start()
    job_id = d.call("scan", {"positions": POSITIONS})["id"]
    if state == "scanning":
        d.wait(lambda s: (s["job"] or {}).get("state") == "scanning"
               and s["job"].get("captured", 0) >= 2)
    elif state == "uploading":
        d.wait(lambda s: (s["job"] or {}).get("state") == "uploading"
               and s["job"]["bytes_uploaded"] > 0)
    else:
        d.wait_job(job_id, {state})
    assert d.stop() == 0
    cloud.inject("abort_uploads")  # what a power cut does to a part in flight
    cloud.wait_for(lambda s: s["uploads_in_progress"] == 0, timeout=30)
    cloud.inject("part_slow", bps=0)
    cloud.inject("download_slow", bps=0)
    cloud.processing_s = 0.3
    assert read_json(d.data / "jobs" / job_id / "job.json")["state"] == state
    return job_id


def delete(d: DaemonProcess, job_id: str, what: str) -> dict[str, Any]:
    """Delete ``what`` of the job; returns the names the expected lines use."""
    folder = d.data / "jobs" / job_id
    record = read_json(folder / "job.json")
    names: dict[str, Any] = {"job": job_id, "project": record["project"],
                             "images": folder / "images", "manifest": folder / "images" / "manifest.json",
                             "plan": folder / "plan.json", "plan_before": read_json(folder / "plan.json"),
                             "journal": d.data / "transfers" / f"{record['project']}.json"}
    first = read_json(names["manifest"])[0]["file"]
    names["photo"] = folder / "images" / first
    names["photos"] = len(list(names["images"].glob("pos*.jpg")))
    if what == "journal":
        # The journal is part of the job record now: what can lose it is a folder of release 1
        # (journal in data_dir/transfers) whose journal file went before the record was migrated.
        record.pop("transfer", None)
        record.pop("version", None)
        atomic_write_json(folder / "job.json", record)
        names["journal"].unlink(missing_ok=True)
    else:
        names[what].unlink()
    return names


#: (what is deleted, the job's state) -> (fails first, the line, with {names})
CASES: dict[tuple[str, str], tuple[bool, str | None]] = {
    ("photo", "scanning"): (False, "{photo} is missing: captured again at position 1"),
    ("manifest", "scanning"): (False, "{manifest} is missing: rebuilt from the {photos} photos in {images}"),
    ("plan", "scanning"): (False, "{plan} is missing: made again, keeping the positions of the "),
    ("photo", "uploading"): (True, "{photo} is missing: the upload needs it; `openscan-pi retry {job}` "
                                   "captures it again (position 1) and uploads the set (put the file "
                                   "back first to keep the original)"),
    ("manifest", "uploading"): (False, "{manifest} is missing: rebuilt from the {photos} photos in {images}"),
    ("plan", "uploading"): (False, None),  # not needed any more
    ("journal", "uploading"): (False, "transfer journal {journal} is missing: project {project} (its "
                                      "name is in the job) is asked for on the cloud and its photos "
                                      "are sent again"),
    ("photo", "processing"): (False, None),  # the cloud has the set
    ("journal", "processing"): (False, "transfer journal {journal} is missing: polling project "
                                       "{project} again (its name is in the job)"),
    ("journal", "downloading"): (False, "transfer journal {journal} is missing: polling project "
                                        "{project} again (its name is in the job)"),
}


def near(a: dict[str, float], b: dict[str, float]) -> bool:
    turn = abs(a["turntable"] - b["turntable"]) % 360
    return math.hypot(a["rotor"] - b["rotor"], min(turn, 360 - turn)) < 1.0


@pytest.mark.parametrize("via", ["daemon", "cli"])
@pytest.mark.parametrize(("what", "state"), list(CASES))
def test_a_deleted_file_is_named_and_the_job_ends_done(
        what: str, state: str, via: str, make_daemon: Callable[..., DaemonProcess],
        cloud: LocalCloud) -> None:
    d = make_daemon(cloud=cloud)
    job_id = stopped_in(d, cloud, state)
    names = delete(d, job_id, what)
    fails, line = CASES[(what, state)]
    expected = line.format(**names) if line else None
    if via == "daemon":
        d.start()
        job = d.wait_job(job_id, {"done", "failed"})
        if fails:
            assert job["state"] == "failed" and job["error"] == expected, job
            d.call("retry", {"job": job_id})
            job = d.wait_job(job_id, {"done", "failed"})
        told = d.log_text()
        assert d.stop() == 0
    else:
        proc = run_cli("--config", str(d.config), "retry", job_id)
        told = proc.stderr
        if fails:
            assert proc.returncode == 1
            assert proc.stderr.strip().splitlines()[-1] == f"openscan-pi: {expected}"
            proc = run_cli("--config", str(d.config), "retry", job_id)
            told += proc.stderr
        assert proc.returncode == 0, proc.stderr
        job = read_json(d.data / "jobs" / job_id / "job.json")
    assert job["state"] == "done", (job, told)
    assert "internal error" not in told and "Traceback" not in told
    if expected and not fails:
        assert expected in told, told
    if (what, state) != ("photo", "processing"):  # that one stays deleted: the cloud has it
        check_images(d, job_id, POSITIONS)
    assert len(cloud.state()["projects"]) == 1  # never a second cloud project
    assert (d.data / "jobs" / job_id / "model" / "model.obj").is_file()
    if what == "plan" and state == "scanning":  # every position of the lost plan, once
        plan = read_json(names["plan"])
        assert all(any(near(p, q) for q in plan) for p in names["plan_before"])


def test_a_photo_deleted_while_it_is_uploaded_fails_the_job_saying_so(
        make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud) -> None:
    cloud.inject("part_slow", bps=20_000)
    d = make_daemon(cloud=cloud)
    config = yaml.safe_load(d.config.read_text())
    config["cloud"]["max_part_bytes"] = 20_000  # several parts: a later one reads the photo
    d.config.write_text(yaml.safe_dump(config))
    d.start()
    job_id = d.call("scan", {"positions": POSITIONS})["id"]
    d.wait(lambda s: (s["job"] or {}).get("state") == "uploading" and s["job"]["bytes_uploaded"] > 0)
    images = d.data / "jobs" / job_id / "images"
    last = read_json(images / "manifest.json")[-1]
    (images / last["file"]).unlink()
    failed = d.wait_job(job_id, {"done", "failed"})
    assert failed["state"] == "failed"
    assert failed["error"] == (
        f"{images / last['file']} is missing: the upload needs it; `openscan-pi retry {job_id}` "
        f"captures it again (position {last['position'] + 1}) and uploads the set (put the file "
        "back first to keep the original)")
    cloud.inject("part_slow", bps=0)
    assert d.call("retry", {"job": job_id})["state"] == "scanning"
    assert d.wait_job(job_id, {"done", "failed"})["state"] == "done"
    check_images(d, job_id, POSITIONS)
    assert len(cloud.state()["projects"]) == 1
    assert "internal error" not in d.log_text()
