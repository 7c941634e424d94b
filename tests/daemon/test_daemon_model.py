"""The job's model folder on resume: a download cut by ``kill -9`` at any point (while the zip
comes in, while it is extracted, after the model folder was renamed into place but before the
records said so) ends ``done`` after a restart or a ``retry``, with nothing left behind; a job
that failed with "model exists and is not empty" is finished by ``retry``."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from openscan_pi.fsutil import read_json
from openscan_pi.sim.cloud import LocalCloud
from tests.conftest import run_cli
from tests.daemon.conftest import DaemonProcess


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    with LocalCloud(tmp_path / "cloud", processing_s=0.3) as server:
        yield server


def leftovers(folder: Path) -> list[str]:
    """What a download leaves beside ``model/`` (hidden names other than the job's lock)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock")


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def downloads(cloud: LocalCloud) -> int:
    return int(cloud.state()["requests"].get("share", 0))


def test_kill_9_while_the_zip_comes_in_then_restart_ends_done_with_nothing_left(
        make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud) -> None:
    # Large photos make a model zip of more than one read of the download (1 MiB), so a part of
    # it is on disk, in a temp file, when the daemon is killed.
    cloud.inject("download_slow", bps=400_000)
    d = make_daemon(cloud=cloud, camera={"resolution": [4056, 3040], "jpeg_quality": 100}).start()
    job_id = d.call("scan", {"positions": 2})["id"]
    folder = d.data / "jobs" / job_id
    d.wait_job(job_id, {"downloading"})
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".part") and p.stat().st_size for p in folder.iterdir()):
        assert time.monotonic() < deadline, "no part of the model zip reached the disk"
        time.sleep(0.01)  # poll interval of a file another process writes
    d.kill()
    assert read_json(folder / "job.json")["state"] == "downloading"
    assert leftovers(folder) and not (folder / "model").exists()
    cloud.inject("download_slow", bps=0)
    d.start()
    done = d.wait_job(job_id, {"done", "failed"})
    assert done["state"] == "done", (done, d.log_text())
    assert leftovers(folder) == []
    assert (folder / "model" / "model.obj").is_file()
    assert d.stop() == 0


def finished_job(d: DaemonProcess) -> tuple[str, Path, dict[str, bytes]]:
    """A job run to ``done`` by the daemon (then stopped): its id, folder and model."""
    d.start()
    job_id = d.call("scan", {"positions": 4})["id"]
    assert d.wait_job(job_id, {"done", "failed"})["state"] == "done"
    assert d.stop() == 0
    folder = d.data / "jobs" / job_id
    return job_id, folder, tree(folder / "model")


def rewind(d: DaemonProcess, folder: Path, state: str, **fields: Any) -> None:
    """Put the records back where a kill at that point of the download left them: the job in
    ``state``, its journal at "processed"."""
    record = read_json(folder / "job.json")
    record.update(state=state, step="downloading the model", model_dir=None, **fields)
    journal = record["transfer"]  # the job's transfer journal is part of its record
    journal.update(phase="processed", model_dir=None)
    journal.pop("files", None)
    (folder / "job.json").write_text(json.dumps(record))


def cut_download(folder: Path, window: str, model: dict[str, bytes]) -> None:
    """The files a kill -9 leaves in ``window`` of the download."""
    zip_file = folder / ".model.model.zip"
    if window in ("zip", "extracting", "renamed"):
        zip_file.write_bytes(b"PK\x03\x04 the downloaded zip, complete")
    if window == "zip":
        (folder / "..model.model.zip.x1y2z3.part").write_bytes(b"PK\x03\x04 half")
    if window == "extracting":
        half = folder / ".model.ab12cd.partial"
        half.mkdir()
        (half / "model.obj").write_bytes(model["model.obj"][:100])
    if window != "renamed":
        shutil.rmtree(folder / "model")


FAILED = {"state": "failed", "resume_state": "downloading",
          "error": "/x/jobs/y/model exists and is not empty: choose another --out or remove it"}


@pytest.mark.parametrize(("window", "via"), [
    ("zip", "restart"), ("extracting", "restart"), ("renamed", "restart"),
    ("extracting", "cli"), ("renamed", "cli"),
    ("failed", "retry"), ("failed", "cli")])
def test_a_download_cut_at_any_point_is_finished(
        window: str, via: str, make_daemon: Callable[..., DaemonProcess],
        cloud: LocalCloud) -> None:
    d = make_daemon(cloud=cloud)
    job_id, folder, model = finished_job(d)
    if window == "failed":  # what the version before this one did with the "renamed" window
        rewind(d, folder, **FAILED)
        cut_download(folder, "renamed", model)
    else:
        rewind(d, folder, "downloading")
        cut_download(folder, window, model)
    fetched = downloads(cloud)
    if via == "cli":
        done_proc = run_cli("--config", str(d.config), "retry", job_id, "--json")
        assert done_proc.returncode == 0, done_proc.stderr
        done = json.loads(done_proc.stdout.splitlines()[-1])
    else:
        d.start()
        if via == "retry":
            assert d.call("job", {"job": job_id})["state"] == "failed"  # waits for the user
            assert d.call("retry", {"job": job_id})["state"] in ("downloading", "done")
        done = d.wait_job(job_id, {"done", "failed"})
    assert done["state"] == "done", done
    assert done["model_dir"] == str(folder / "model") and done["error"] is None
    assert leftovers(folder) == []
    assert tree(folder / "model") == model
    kept = window in ("renamed", "failed")
    assert downloads(cloud) == fetched + (0 if kept else 1)  # a complete model is not fetched again
    journal = read_json(folder / "job.json")["transfer"]
    assert journal["phase"] == "downloaded" and len(journal["files"]) == len(model)
    if via != "cli":
        log = d.log_text()
        if kept:
            assert f"the model in {folder / 'model'} was complete already" in log
        assert d.stop() == 0
