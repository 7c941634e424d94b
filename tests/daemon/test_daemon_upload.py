"""``upload PATH`` as a job of the daemon: the CLI hands it over, ``status``/``jobs``/``cancel``/
``retry`` cover it, a ``kill -9`` mid-part loses nothing, and bad requests are refused in one line.
The daemon is a real subprocess; the local cloud runs in the test so that it can misbehave."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openscan_pi.daemon.client import DaemonError
from openscan_pi.daemon.protocol import INVALID_PARAMS, REFUSED
from openscan_pi.fsutil import read_json
from openscan_pi.sim.cloud import LocalCloud
from tests.conftest import make_set, run_cli
from tests.daemon.conftest import WAIT_S, DaemonProcess
from tests.test_transfer import assert_archive


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    with LocalCloud(tmp_path / "cloud", processing_s=0.3) as server:
        yield server


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_the_cli_hands_an_upload_to_the_daemon(make_daemon: Callable[..., DaemonProcess],
                                               cloud: LocalCloud, tmp_path: Path) -> None:
    d = make_daemon(cloud=cloud).start()
    photos = make_set(tmp_path / "vase", count=8)
    before = tree(photos)
    out = tmp_path / "model"
    proc = run_cli("--config", str(d.config), "upload", str(photos), "--wait", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    (name, project), = cloud.state()["projects"].items()
    assert f"uploading {photos} as project {name}: 8 photos, job " in proc.stderr
    assert proc.stdout.strip() == f"model of {name}: {out}"
    assert (out / "model.obj").is_file()
    assert_archive(cloud, name, photos)
    assert project["created_count"] == 1
    (job,) = d.call("jobs")
    assert (job["state"], job["project"], job["source"]) == ("done", name, str(photos))
    assert "job " + job["id"] + ": uploading " + str(photos) in d.log_text()
    assert tree(photos) == before  # read where it is, never changed
    assert not (d.data / "transfers").exists() or not any((d.data / "transfers").iterdir())


def test_kill_9_mid_part_then_the_restarted_daemon_sends_only_the_rest(
        make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud, tmp_path: Path) -> None:
    cloud.inject("part_slow", bps=50_000)
    d = make_daemon(cloud=cloud).start()
    photos = make_set(tmp_path / "set", count=12)
    job = d.call("upload", {"path": str(photos), "project": "mug.zip"})
    assert job["state"] in ("queued", "uploading") and job["continued"] is False

    def mid_part(state: dict) -> bool:
        project = state["projects"].get("mug.zip")
        done = (read_json(d.data / "jobs" / job["id"] / "job.json").get("transfer") or {}).get(
            "done") or {}
        return bool(project and len(done) >= 2 and len(project["parts_received"]) == len(done)
                    and project["bytes_receiving"] > 0)

    cloud.wait_for(mid_part, timeout=WAIT_S)
    d.kill()
    cloud.inject("abort_uploads")  # a power cut: the part in flight never arrives
    cloud.wait_for(lambda s: s["uploads_in_progress"] == 0, timeout=30)
    received = set(cloud.state()["projects"]["mug.zip"]["parts_received"])
    sent = cloud.state()["requests"]["upload"]
    cloud.inject("part_slow", bps=0)
    d.start()
    done = d.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    project = cloud.state()["projects"]["mug.zip"]
    assert (project["created_count"], project["reset_count"]) == (1, 0)
    assert cloud.state()["requests"]["upload"] - sent == project["parts"] - len(received)
    assert_archive(cloud, "mug.zip", photos)
    assert (Path(done["model_dir"]) / "model.obj").is_file()


def test_cancel_and_retry_cover_an_upload(make_daemon: Callable[..., DaemonProcess],
                                          cloud: LocalCloud, tmp_path: Path) -> None:
    cloud.inject("part_trickle", 1000)
    d = make_daemon(cloud=cloud).start()
    photos = make_set(tmp_path / "set", count=6)
    job = d.call("upload", {"path": str(photos)})
    cloud.wait_for(lambda s: any(p["parts_received"] for p in s["projects"].values()),
                   timeout=WAIT_S)
    assert d.call("status")["job"]["id"] == job["id"]
    cancelled = d.call("cancel", {"job": job["id"]})
    assert cancelled["state"] == "cancelled"
    with pytest.raises(DaemonError) as refused:
        d.call("retry", {"job": job["id"]})
    assert refused.value.code == REFUSED and "cancelled: nothing to retry" in str(refused.value)
    # the same set again is a new job (the cancelled one is not taken up again)
    cloud.inject("part_trickle", 0)
    again = d.call("upload", {"path": str(photos)})
    assert again["id"] != job["id"] and again["continued"] is False
    assert d.wait_job(again["id"], {"done", "failed"})["state"] == "done"


def test_the_same_upload_asked_twice_is_one_job(make_daemon: Callable[..., DaemonProcess],
                                                cloud: LocalCloud, tmp_path: Path) -> None:
    cloud.inject("part_trickle", 1000)
    d = make_daemon(cloud=cloud).start()
    photos = make_set(tmp_path / "set", count=4)
    first = d.call("upload", {"path": str(photos)})
    second = d.call("upload", {"path": str(photos)})
    assert second["id"] == first["id"] and second["continued"] is True
    with pytest.raises(DaemonError) as taken:
        d.call("upload", {"path": str(make_set(tmp_path / "other", count=2)),
                          "project": first["project"]})
    assert taken.value.code == REFUSED and f"was begun with {photos}" in str(taken.value)
    cloud.inject("part_trickle", 0)
    assert d.wait_job(first["id"], {"done", "failed"})["state"] == "done"
    assert len(d.call("jobs")) == 1 and len(cloud.state()["projects"]) == 1


@pytest.mark.parametrize(("params", "code", "text"), [
    ({}, INVALID_PARAMS, "path"),
    ({"path": "relative/set"}, INVALID_PARAMS, "an absolute path"),
    ({"path": 7}, INVALID_PARAMS, "path"),
    ({"path": "/x", "project": "no spaces allowed"}, INVALID_PARAMS, "project"),
    ({"path": "/x", "extra": 1}, INVALID_PARAMS, "unknown parameter 'extra'"),
    ({"path": "/nonexistent/set"}, REFUSED, "/nonexistent/set: no such file or folder"),
])
def test_bad_upload_requests_are_refused_in_one_line(daemon: DaemonProcess, params: dict,
                                                     code: int, text: str) -> None:
    with pytest.raises(DaemonError) as refused:
        daemon.call("upload", params)
    assert refused.value.code == code and text in str(refused.value)
    assert "\n" not in str(refused.value)
    assert daemon.call("jobs") == []


def test_a_folder_without_images_is_refused_and_left_as_it_is(daemon: DaemonProcess,
                                                              tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("hi")
    with pytest.raises(DaemonError) as refused:
        daemon.call("upload", {"path": str(notes)})
    assert refused.value.code == REFUSED and "holds no images" in str(refused.value)
    assert (notes / "readme.txt").read_text() == "hi" and daemon.call("jobs") == []
    assert json.loads(json.dumps(daemon.call("status")))["job"] is None
