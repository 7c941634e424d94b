"""Job folders written by release 1 of the job record (``tests/legacy_jobs/v1``): a daemon of
this version migrates each record (the job's transfer journal taken in), takes each job on from
where it stood and ends it ``done``, on the same cloud project."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from openscan_pi.fsutil import read_json
from openscan_pi.jobs.record import VERSION as RECORD_VERSION
from openscan_pi.sim.cloud import LocalCloud

from .conftest import DaemonProcess
from .test_daemon_jobs import check_images

LEGACY = Path(__file__).parent.parent / "legacy_jobs" / "v1"
#: The files tests/legacy_jobs/make_legacy.py wrote beside the data (that script runs only on the
#: release that made the folder): the cloud's address then, and the folder's path then.
URL_FILE = "cloud-url.txt"
ROOT_FILE = "made-in.txt"


def _relocate(folder: Path, old: str, new: str) -> None:
    """Put ``new`` in place of ``old`` in every record under ``folder`` (a moved data folder)."""
    for path in folder.rglob("*.json"):
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))


def test_release_1_folders_continue_to_done_on_their_projects(
        make_daemon: Callable[..., DaemonProcess], short_dir: Path) -> None:
    store = short_dir / "cloud-store"
    shutil.copytree(LEGACY / "cloud-store", store)
    with LocalCloud(store, processing_s=0.3) as cloud:
        d = make_daemon(cloud=cloud)
        shutil.copytree(LEGACY / "data", d.data)
        made_in = (LEGACY / ROOT_FILE).read_text().strip()
        _relocate(d.data, f"{made_in}/data", str(d.data))
        _relocate(d.data, (LEGACY / URL_FILE).read_text().strip(), cloud.url)
        before = {read_json(p)["project"]: read_json(p) for p in d.data.glob("jobs/*/job.json")}
        assert {n: j["state"] for n, j in before.items()} == {
            "done.zip": "done", "mid-scan.zip": "scanning", "mid-upload.zip": "uploading",
            "processing.zip": "processing", "failed.zip": "failed"}
        d.start()
        for path in d.data.glob("jobs/*/job.json"):  # every record written in the new form
            record = read_json(path)
            assert record["version"] == RECORD_VERSION and record["rig_restarts"] == 0, path
            if record["project"] != "mid-scan.zip":  # (that one may be uploading by now)
                assert record["transfer"]["project"] == record["project"], path
        assert not list((d.data / "transfers").glob("*.json"))  # the journals are in the records
        failed = before["failed.zip"]["id"]
        assert d.call("job", {"job": failed})["state"] == "failed"  # waits for retry
        d.call("retry", {"job": failed})
        for job in before.values():
            done = d.wait_job(job["id"], {"done", "failed"})
            assert done["state"] == "done", (done, d.log_text())
            assert any((d.data / "jobs" / job["id"] / "model").iterdir())
            check_images(d, job["id"], positions=3)
        projects = cloud.state()["projects"]
        assert sorted(projects) == sorted(before)
        for name, project in projects.items():  # one project each, never a second one
            assert project["created_count"] == project["reset_count"] + 1, (name, project)
            assert project["start_count"] == 1, (name, project)
        assert d.stop() == 0
