"""Focus stacks fused as a job step: behind the capture, in a process of their own, resumable,
and what is uploaded (one fused photo a position, or every frame). A real daemon on the simulated
rig (whose camera renders depth of field); the cloud runs in the test."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openscan_pi.daemon.client import DaemonError
from openscan_pi.fsutil import read_json
from openscan_pi.sim.cloud import LocalCloud
from tests.conftest import cli_env, run_cli
from tests.daemon.conftest import DaemonProcess

pytest.importorskip("cv2", reason="OpenCV (the extra 'fusion') is not installed")

STACK = 3


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    with LocalCloud(tmp_path / "cloud", processing_s=0.2) as server:
        yield server


def stacked(make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud,
            upload: str = "fused") -> DaemonProcess:
    return make_daemon(cloud=cloud, camera={"resolution": [320, 240], "focus": {
        "stack": STACK, "stack_range": [2.0, 8.0], "upload": upload}}).start()


def archive_names(cloud: LocalCloud) -> list[str]:
    (name, _), = cloud.state()["projects"].items()
    with zipfile.ZipFile(cloud.archive_path(name)) as zf:
        assert zf.testzip() is None
        return zf.namelist()


def test_each_position_is_uploaded_as_one_fused_photo(make_daemon: Callable[..., DaemonProcess],
                                                      cloud: LocalCloud) -> None:
    d = stacked(make_daemon, cloud)
    job = d.call("scan", {"positions": 5})
    done = d.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", (done, d.log_text())
    folder = d.data / "jobs" / job["id"]
    fused = read_json(folder / "fused" / "manifest.json")
    assert sorted(e["position"] for e in fused) == list(range(5))
    for entry in fused:
        photo = folder / "fused" / entry["file"]
        assert photo.stat().st_size == entry["size"]
        assert entry["frames"] == [f"pos{entry['position']:04d}_{k}.jpg" for k in range(STACK)]
    assert archive_names(cloud) == [f"pos{i:04d}.jpg" for i in range(5)]
    # the frames stay in the job's folder
    assert len(list((folder / "images").glob("pos*_*.jpg"))) == 5 * STACK
    # OpenCV and numpy stayed out of the daemon: the fusion ran in a process of its own
    maps = Path(f"/proc/{d.proc.pid}/maps").read_text() if d.proc else ""
    assert "cv2" not in maps and "numpy" not in maps


def test_upload_all_sends_every_frame(make_daemon: Callable[..., DaemonProcess],
                                      cloud: LocalCloud) -> None:
    d = stacked(make_daemon, cloud, upload="all")
    job = d.call("scan", {"positions": 2})
    assert d.wait_job(job["id"], {"done", "failed"})["state"] == "done", d.log_text()
    assert sorted(archive_names(cloud)) == sorted(f"pos{i:04d}_{k}.jpg" for i in range(2)
                                                  for k in range(STACK))


def test_kill_9_while_fusing_then_the_next_daemon_fuses_what_is_left(
        make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud) -> None:
    d = stacked(make_daemon, cloud)
    job = d.call("scan", {"positions": 6})
    d.wait(lambda s: (s["job"] or {}).get("captured", 0) >= 3)
    d.kill()  # the fusion process finishes what it was given and goes
    d.start()
    done = d.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", (done, d.log_text())
    folder = d.data / "jobs" / job["id"] / "fused"
    fused = read_json(folder / "manifest.json")
    assert sorted(e["position"] for e in fused) == list(range(6))  # each once
    assert not [p for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert archive_names(cloud) == [f"pos{i:04d}.jpg" for i in range(6)]


def test_the_fusion_process_fuses_again_only_a_photo_that_went_missing(
        make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud) -> None:
    d = stacked(make_daemon, cloud)
    job = d.call("scan", {"positions": 3})
    assert d.wait_job(job["id"], {"done", "failed"})["state"] == "done"
    folder = d.data / "jobs" / job["id"]
    kept = (folder / "fused" / "pos0000.jpg").stat().st_mtime_ns
    (folder / "fused" / "pos0001.jpg").unlink()
    proc = subprocess.run([sys.executable, "-m", "openscan_pi.fusion.worker", str(folder),
                           "--stack", str(STACK)], capture_output=True, text=True, timeout=120,
                          env=cli_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["fused position 2: 3 stacks"]
    assert (folder / "fused" / "pos0001.jpg").is_file()
    assert (folder / "fused" / "pos0000.jpg").stat().st_mtime_ns == kept
    fused = read_json(folder / "fused" / "manifest.json")
    assert sorted(e["position"] for e in fused) == [0, 1, 2]


def test_the_fusion_process_runs_behind_the_rig(make_daemon: Callable[..., DaemonProcess],
                                                cloud: LocalCloud) -> None:
    # Its priority is read while it follows the capture (a process of the job, niced by 10).
    d = stacked(make_daemon, cloud)
    job = d.call("scan", {"positions": 12})
    d.wait(lambda s: (s["job"] or {}).get("captured", 0) >= 1)
    niceness = None
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"openscan_pi.fusion.worker" in cmd and str(d.data).encode() in b" ".join(cmd):
            niceness = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[16])
            break
    assert niceness is not None and niceness >= 10, niceness
    assert d.wait_job(job["id"], {"done", "failed"})["state"] == "done"


def test_a_scan_asks_for_its_own_focus_stack(make_daemon: Callable[..., DaemonProcess],
                                             cloud: LocalCloud) -> None:
    """`scan {focus_stack: K}` (the page's and `scan --focus-stack K`'s): this job's positions
    are stacks of K, whatever camera.focus.stack says; K = 1 is a scan without a stack."""
    d = make_daemon(cloud=cloud, camera={"resolution": [320, 240],
                                         "focus": {"stack": 1, "stack_range": [2.0, 8.0]}}).start()
    job = d.call("scan", {"positions": 2, "focus_stack": 4})
    assert job["focus_stack"] == 4
    done = d.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", (done, d.log_text())
    folder = d.data / "jobs" / job["id"]
    lenses = sorted({e["lens_position"] for e in read_json(folder / "images" / "manifest.json")})
    assert lenses == [2.0, 4.0, 6.0, 8.0]  # spread over camera.focus.stack_range
    assert archive_names(cloud) == ["pos0000.jpg", "pos0001.jpg"]  # fused, one a position
    plain = d.call("scan", {"positions": 2, "focus_stack": 1})
    assert "focus_stack" not in plain
    assert d.wait_job(plain["id"], {"done", "failed"})["state"] == "done"
    assert len(list((d.data / "jobs" / plain["id"] / "images").glob("*.jpg"))) == 2


@pytest.mark.parametrize("stack", [0, 33, "3", 2.5, True])
def test_a_focus_stack_out_of_range_is_refused(make_daemon: Callable[..., DaemonProcess],
                                               cloud: LocalCloud, stack: object) -> None:
    d = make_daemon(cloud=cloud).start()
    with pytest.raises(DaemonError) as refused:
        d.call("scan", {"positions": 2, "focus_stack": stack})
    assert str(refused.value) == ("invalid params: focus_stack must be an integer from 1 to 32, "
                                  f"got {stack!r}")
    assert d.call("jobs") == []


def test_the_cli_scans_with_its_own_focus_stack_here_and_in_the_daemon(
        make_daemon: Callable[..., DaemonProcess], cloud: LocalCloud) -> None:
    d = make_daemon(cloud=cloud, camera={"resolution": [320, 240]})
    here = run_cli("--config", str(d.config), "scan", "--positions", "2", "--focus-stack", "3",
                   "--json")
    assert here.returncode == 0, here.stderr
    assert json.loads(here.stdout.splitlines()[-1])["focus_stack"] == 3
    d.start()
    handed = run_cli("--config", str(d.config), "scan", "--positions", "2", "--focus-stack", "2")
    assert handed.returncode == 0, handed.stderr
    assert ", a focus stack of 2 photos at each" in handed.stdout
    bad = run_cli("--config", str(d.config), "scan", "--positions", "2", "--focus-stack", "40")
    assert (bad.returncode, bad.stderr.strip()) == (
        1, "openscan-pi: --focus-stack must be from 1 (no stack) to 32")
