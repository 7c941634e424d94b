"""The job record: typed, versioned, holding the job's transfer journal; release 1 folders
(``tests/legacy_jobs/v1``) migrated when read, written in this version's form at the next write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from openscan_pi.fsutil import read_json
from openscan_pi.jobs.record import VERSION, JobRecord
from openscan_pi.jobs.state import JobState
from openscan_pi.jobs.store import JobStore

#: Where tests/legacy_jobs/make_legacy.py (which runs only on the release that made the folder)
#: wrote the folder's path then.
ROOT_FILE = "made-in.txt"


LEGACY = Path(__file__).parent / "legacy_jobs" / "v1"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A copy of the release 1 data folder, its records naming their new place."""
    data = tmp_path / "data"
    shutil.copytree(LEGACY / "data", data)
    made_in = f"{(LEGACY / ROOT_FILE).read_text().strip()}/data"
    for path in data.rglob("*.json"):
        path.write_text(path.read_text().replace(made_in, str(data)))
    return data


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_record_round_trips_and_keeps_fields_it_does_not_know() -> None:
    data = {"id": "j", "project": "p.zip", "state": "uploading", "positions": 3, "created": 1.0,
            "updated": 2.0, "version": VERSION, "from_a_newer_patch": [1, 2]}
    record = JobRecord.from_dict(data)
    assert record.state is JobState.UPLOADING and record.rig_restarts == 0
    assert record.transfer is None and record.extra == {"from_a_newer_patch": [1, 2]}
    out = record.to_dict()
    assert out["from_a_newer_patch"] == [1, 2] and out["state"] == "uploading"
    assert JobRecord.from_dict(out) == record
    with pytest.raises(AttributeError, match="no field colour"):
        record.set(colour="blue")


def test_release_1_records_are_migrated_when_read_and_written_at_the_next_write(
        legacy: Path) -> None:
    before = _snapshot(legacy)
    jobs, broken = JobStore(legacy).survey()
    assert broken == [] and _snapshot(legacy) == before  # reading changes nothing
    by_project = {j.record.project: j for j in jobs}
    assert {p: j.state.value for p, j in by_project.items()} == {
        "done.zip": "done", "mid-scan.zip": "scanning", "mid-upload.zip": "uploading",
        "processing.zip": "processing", "failed.zip": "failed"}
    for project, job in by_project.items():
        assert job.migrated and job.record.version == VERSION
        journal = legacy / "transfers" / f"{project}.json"
        if project == "mid-scan.zip":
            assert job.record.transfer is None and not journal.exists()
            continue
        old = read_json(journal)
        old.pop("version")
        assert job.record.transfer == old  # the whole journal, in the record
        assert job.record.step not in ("done", "failed")  # no longer repeats the state
        job.save()
        assert not journal.exists()  # the record holds it now
        on_disk = read_json(job.folder / "job.json")
        assert on_disk["version"] == VERSION and on_disk["transfer"] == old
        assert on_disk["rig_restarts"] == 0
    again = {j.id: j for j in JobStore(legacy).all()}
    assert not any(j.migrated for p, j in again.items() if by_project["mid-scan.zip"].id != p)


def test_a_record_of_a_newer_version_is_reported_not_rewritten(legacy: Path) -> None:
    folder = next((legacy / "jobs").iterdir())
    record = read_json(folder / "job.json")
    record["version"] = VERSION + 1
    (folder / "job.json").write_text(json.dumps(record))
    jobs, broken = JobStore(legacy).survey()
    (report,) = broken
    assert f"version {VERSION + 1} of the job record, written by a newer openscan-pi" in report.problem
    assert read_json(folder / "job.json")["version"] == VERSION + 1
