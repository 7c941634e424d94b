"""`openscan-pi scan` in the foreground on the simulated rig and the local cloud; jobs and retry."""

from __future__ import annotations

import json
import signal
import time
import zlib
from pathlib import Path

import pytest
import yaml

from openscan_pi.jobs.state import (
    ACTIVE,
    FINISHED,
    HELD,
    TRANSITIONS,
    BadTransition,
    JobState,
    check_transition,
)

from .conftest import run_cli, start_cli


@pytest.fixture
def scan_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "daemon": {"data_dir": str(tmp_path / "data")},
        "rig": {"sim_time_scale": 0.001},
        "camera": {"resolution": [320, 240]},
        "cloud": {"local": {"processing_s": 0.5}},
    }))
    return path


def test_transition_table() -> None:
    assert set(TRANSITIONS) == set(JobState)
    assert set(JobState) == ACTIVE | FINISHED | HELD
    assert not ACTIVE & FINISHED and not ACTIVE & HELD and not HELD & FINISHED
    assert check_transition(JobState.QUEUED, JobState.SCANNING)
    assert not check_transition(JobState.SCANNING, JobState.SCANNING)  # a no-op
    with pytest.raises(BadTransition, match="from done to scanning"):
        check_transition(JobState.DONE, JobState.SCANNING)
    assert all(JobState.CANCELLED in TRANSITIONS[s] for s in ACTIVE | HELD)


def test_simulated_scan_to_a_model(scan_config: Path) -> None:
    proc = run_cli("--config", str(scan_config), "scan", "--positions", "8", "--simulate", "--json")
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout.splitlines()[-1])
    assert job["state"] == "done" and job["captured"] == 8 and job["positions"] == 8
    assert set(job) >= {"id", "project", "state", "positions", "captured", "bytes_total",
                        "bytes_uploaded", "cloud_status", "model_dir", "error", "created",
                        "updated"}
    model = Path(job["model_dir"])
    assert (model / "model.obj").is_file()
    images = model.parent / "images"
    manifest = json.loads((images / "manifest.json").read_text())
    assert len(manifest) == 8
    for entry in manifest:  # CRCs recorded at capture time match the files
        data = (images / entry["file"]).read_bytes()
        assert (entry["size"], entry["crc32"]) == (len(data), zlib.crc32(data))
    listed = json.loads(run_cli("--config", str(scan_config), "jobs", "--json").stdout)
    assert [j["id"] for j in listed] == [job["id"]]


def test_interrupted_scan_continues_at_the_first_missing_position(scan_config: Path,
                                                                  tmp_path: Path) -> None:
    proc = start_cli("--config", str(scan_config), "scan", "--positions", "30", "--simulate")
    jobs = tmp_path / "data" / "jobs"
    try:
        deadline = time.monotonic() + 120
        while True:  # the manifest grows image by image (atomically); stop the scan part-way
            manifests = list(jobs.glob("*/images/manifest.json"))
            if manifests and len(json.loads(manifests[0].read_text())) >= 5:
                break
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the scan never got to 5 images"
            time.sleep(0.01)  # poll interval of a file another process writes
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    (job_dir,) = jobs.iterdir()
    before = {e["file"]: e["crc32"] for e in json.loads((job_dir / "images/manifest.json").read_text())}
    assert 5 <= len(before) < 30
    retried = run_cli("--config", str(scan_config), "retry", job_dir.name, "--simulate", "--json")
    assert retried.returncode == 0, retried.stderr
    job = json.loads(retried.stdout.splitlines()[-1])
    assert job["state"] == "done" and job["captured"] == 30
    after = {e["file"]: e["crc32"] for e in json.loads((job_dir / "images/manifest.json").read_text())}
    assert len(after) == 30
    assert {k: after[k] for k in before} == before  # nothing captured twice or lost
    assert sorted(p.name for p in (job_dir / "images").iterdir()) == sorted([*after, "manifest.json"])


@pytest.mark.parametrize(("upload", "refused"), [("fused", False), ("all", True)])
def test_the_token_check_counts_the_photos_that_go_up(tmp_path: Path, upload: str,
                                                      refused: bool) -> None:
    # 100 positions x a stack of 5: fused, 100 photos go up; all, 500 (the token allows 300)
    from openscan_pi.cloud.api import TokenInfo
    from openscan_pi.config import load_config
    from openscan_pi.errors import UserError
    from openscan_pi.jobs.runner import preflight

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"daemon": {"data_dir": str(tmp_path / "data")},
                                    "cloud": {"token": "t"}, "camera": {
                                        "resolution": [640, 480],
                                        "focus": {"stack": 5, "upload": upload}}}))
    cfg = load_config(path, env={})
    info = TokenInfo(credit=10**12, limit_filesize=10**12, limit_photos=300)
    if refused:
        with pytest.raises(UserError, match="the set has 500 photos; the token allows 300"):
            preflight(cfg, 100, token_info=lambda: info)
    else:
        assert preflight(cfg, 100, token_info=lambda: info) == []
