"""Broken job folders never stop the daemon: it starts, runs the good jobs, reports every broken
folder once (log, `jobs`, `status`) and leaves it byte for byte as it was."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openscan_pi.daemon.client import DaemonError
from openscan_pi.jobs.store import JobStore
from openscan_pi.sim.cloud import LocalCloud
from tests.broken_jobs import make_all, record, snapshot
from tests.conftest import run_cli
from tests.daemon.conftest import DaemonProcess


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    with LocalCloud(tmp_path / "cloud", processing_s=0.3) as server:
        yield server


def test_a_good_job_runs_next_to_every_kind_of_broken_folder(
        make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud, tmp_path: Path) -> None:
    d = make_daemon(cloud=cloud)
    root = d.data / "jobs"
    made = make_all(root)
    good = JobStore(d.data).create(positions=4, project=None, stack=1).id
    before = {name: snapshot(root / name) for name in made}

    d.start()
    assert d.wait_job(good, {"done", "failed"})["state"] == "done"
    log = d.log_text()
    for name, problem in made.items():
        assert log.count(f"broken job folder {root / name} (left as it is): ") == 1, name
        assert problem in log
    assert [j["id"] for j in d.call("jobs")] == [good]
    reports = d.call("jobs.broken")
    assert [b["id"] for b in reports] == sorted(made)
    for b in reports:
        assert made[b["id"]] in b["problem"] and b["path"] == str(root / b["id"]) and b["fix"]
    assert d.call("status")["broken"] == reports

    cfg = str(d.config)
    table = run_cli("--config", cfg, "jobs")
    assert table.returncode == 0 and good in table.stdout
    assert all(f"{root / name}: " in table.stdout for name in made)
    assert json.loads(run_cli("--config", cfg, "jobs", "--broken", "--json").stdout) == reports
    with pytest.raises(DaemonError, match=r"broken job folder .*bad-truncated \(left as it is\): "
                                          r"job.json is not valid JSON"):
        d.call("retry", {"job": "bad-truncated"})
    retried = run_cli("--config", cfg, "retry", "bad-no-id")
    assert retried.returncode == 1
    assert retried.stderr.strip() == (f"openscan-pi: broken job folder {root / 'bad-no-id'} (left as "
                                      f"it is): job.json has no id: fix job.json, or move the "
                                      f"folder out of {root}")
    for name in made:
        assert snapshot(root / name) == before[name], name

    # Moved away: no longer reported. Fixed: taken on without a restart, and retried.
    shutil.move(root / "bad-a-list", tmp_path / "moved-away")
    fixed = root / "bad-unknown-state"
    fixed.joinpath("job.json").write_text(json.dumps(record(
        "bad-unknown-state", state="failed", captured=0, bytes_total=0, error="stopped by hand",
        resume_state="scanning", positions=3)))
    (fixed / "images" / "pos0000_0.jpg").unlink()  # not a photo of this scan
    assert "bad-a-list" not in [b["id"] for b in d.call("jobs.broken")]
    assert "bad-unknown-state" in [j["id"] for j in d.call("jobs")]
    d.call("retry", {"job": "bad-unknown-state"})
    assert d.wait_job("bad-unknown-state", {"done", "failed"})["state"] == "done"
    assert d.stop() == 0
