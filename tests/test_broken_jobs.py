"""A job folder that cannot be run is reported (store, `jobs`, `retry`, `doctor`) with its path,
what is wrong and the fix, and left byte for byte as it was; the other jobs are not affected."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from openscan_pi.config import load_config
from openscan_pi.doctor import OK, WARN, check_jobs
from openscan_pi.jobs.store import JobStore
from tests.broken_jobs import KINDS, kind_params, make_all, record, snapshot

from .conftest import run_cli


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"daemon": {"data_dir": str(tmp_path / "data"),
                                               "socket": str(tmp_path / "none.sock")},
                                    "rig": {"model": "simulated"}, "cloud": {"url": "local"}}))
    return path


def good_job(root: Path) -> str:
    """A sound failed job next to the broken ones."""
    name = "20250101-120000-001"
    folder = root / name
    (folder / "images").mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(record(name, state="failed", captured=0,
                                                       bytes_total=0, error="the disk was full",
                                                       resume_state="scanning")))
    return name


@pytest.mark.parametrize("kind", kind_params())
def test_each_kind_is_reported_and_left_as_it_is(kind: str, config: Path, tmp_path: Path) -> None:
    root = tmp_path / "data" / "jobs"
    make, problem = KINDS[kind]
    path = make(root, f"bad-{kind}")
    good = good_job(root)
    before = snapshot(path)

    jobs, broken = JobStore(tmp_path / "data").survey()
    assert [j.id for j in jobs] == [good]
    (report,) = broken
    assert report.path == path and problem in report.problem, report
    assert str(root) in report.fix or "plan.json" in report.fix

    table = run_cli("--config", str(config), "jobs")
    assert table.returncode == 0, table.stderr
    assert good in table.stdout
    assert f"{path}: {report.problem}" in table.stdout and f"fix: {report.fix}" in table.stdout

    listed = run_cli("--config", str(config), "jobs", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)] == [good]  # the contract's list, as it was
    assert f"broken job folder {path}: {report.problem}" in listed.stderr

    only = run_cli("--config", str(config), "jobs", "--broken", "--json")
    assert json.loads(only.stdout) == [{"id": path.name, "path": str(path),
                                        "problem": report.problem, "fix": report.fix}]

    if path.is_dir():
        retried = run_cli("--config", str(config), "retry", path.name)
        assert retried.returncode == 1
        assert retried.stderr.strip() == f"openscan-pi: {report.line()}"  # one line, no traceback
    assert snapshot(path) == before


def test_doctor_names_every_broken_folder_with_the_fix(config: Path, tmp_path: Path) -> None:
    cfg = load_config(config, env={})
    assert check_jobs(cfg).status == OK
    root = tmp_path / "data" / "jobs"
    good_job(root)
    assert check_jobs(cfg).detail == f"1 job in {root}, none broken"
    made = make_all(root)
    before = snapshot(root)
    check = check_jobs(cfg)
    assert check.status == WARN
    assert check.detail.startswith(f"{len(made)} job folders cannot be run (the other 1 run on): ")
    first = sorted(made)[:3]
    for name in first:
        assert f"{root / name}: {made[name]}" in check.detail
    assert check.detail.endswith(f"; and {len(made) - 3} more (`openscan-pi jobs --broken` lists "
                                 "them)")
    assert check.fix == (f"move each out of {root}, or fix the file named (`openscan-pi jobs "
                         "--broken` says what is wrong with each)")
    done = run_cli("--config", str(config), "doctor", "--json")
    (line,) = [c for c in json.loads(done.stdout)["checks"] if c["name"] == "jobs"]
    assert line == check.as_dict()
    assert snapshot(root) == before


def test_an_empty_folder_is_a_job_being_created_not_a_broken_one(tmp_path: Path) -> None:
    root = tmp_path / "data" / "jobs"
    (root / "20250101-120000-002" / "images").mkdir(parents=True)
    (root / ".hidden").mkdir()
    assert JobStore(tmp_path / "data").survey() == ([], [])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_doctor_says_when_it_cannot_read_the_job_folders(config: Path, tmp_path: Path) -> None:
    root = tmp_path / "data" / "jobs"
    root.mkdir(parents=True)
    root.chmod(0)
    try:
        check = check_jobs(load_config(config, env={}))
    finally:
        root.chmod(0o755)
    assert check.status == WARN and check.detail.startswith(f"{root} cannot be read by ")
