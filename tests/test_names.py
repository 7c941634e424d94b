"""Project names and job ids: one rule everywhere, and no name reaches outside data_dir through any
command. Each bad name through each command that takes one, as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
import yaml

from openscan_pi.cloud.journal import Journal, default_project_name, sanitize_project
from openscan_pi.errors import InputError, UserError
from openscan_pi.jobs.store import JobStore
from openscan_pi.names import MAX_NAME, check_job_id, check_project, fit_name

from .conftest import make_set, run_cli

GOOD = ["vase.zip", "vase-1700000000000.zip", "20261202-070104-969", "a" * MAX_NAME, "x", "_v", "-v",
        "v.", "A_b-C.9"]
BAD = ["../../x", "..", ".", "", ".hidden", "/abs", "a/b", "x\0y", "a" * (MAX_NAME + 1), "a" * 300,
       "my vase", "vasé.zip", "tab\there", "new\nline", "back\\slash"]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass_unchanged(name: str) -> None:
    assert check_project(name) == name and check_job_id(name) == name


@pytest.mark.parametrize("name", [*BAD, None, 5, ["x"]])
def test_bad_names_are_refused_in_one_line_saying_what_a_name_is(name: object) -> None:
    with pytest.raises(InputError) as err:
        check_project(name)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300
    assert "a name is 1-120 characters of A-Z a-z 0-9 _ . - and does not start with a dot" in str(err.value)
    with pytest.raises(InputError, match="is not valid: a job id looks like 20261202-070104-969"):
        check_job_id(name)


def test_a_refusal_suggests_a_name_that_fits() -> None:
    with pytest.raises(InputError, match=r"\(e\.g\. my_vase_2_\.zip\)$"):
        check_project("my vase (2).zip")


def test_derived_names_always_pass() -> None:
    rng = random.Random(7)
    alphabet = string.printable + "äé/\0."
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 300)))
        assert check_project(fit_name(text)) == sanitize_project(text) == fit_name(text)
    assert check_project(default_project_name(Path("/scans/../my vase (2)"), now=1.7e9))


def test_the_store_and_the_journal_refuse_them_too(tmp_path: Path) -> None:
    """Whatever reaches them (a damaged job record, a caller that forgot to check)."""
    (tmp_path / "x.json").write_text("{}")
    for name in ("../x", "/etc/passwd", ".."):
        with pytest.raises(InputError):
            JobStore(tmp_path / "data").load(name)
        with pytest.raises(InputError):
            Journal.find(tmp_path / "data", name)
        with pytest.raises(InputError):
            Journal.create(tmp_path / "data", name, source=None)
    assert not (tmp_path / "data").exists()
    with pytest.raises(UserError, match="no job 20261202-070104-969"):
        JobStore(tmp_path / "data").load("20261202-070104-969")


# -- every command that takes a name, as a user runs it ---------------------------------------------


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def sim(tmp_path: Path) -> Path:
    path = tmp_path / "run" / "c.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({
        "daemon": {"data_dir": str(tmp_path / "run" / "data"), "socket": str(tmp_path / "run" / "d.sock")},
        "rig": {"model": "simulated", "sim_time_scale": 0.001}, "camera": {"resolution": [320, 240]},
        "cloud": {"url": "local", "local": {"processing_s": 0.1}, "poll_interval_s": 0.05}}))
    make_set(tmp_path / "run" / "set", count=2, size=1000)
    return path


CLI_BAD = ["../../x", "..", ".hidden", "ABS", "a/b", "x\x01y", "a" * 300, "my vase"]
COMMANDS = [
    ["download", "NAME"],
    ["download", "NAME", "--out", "OUT"],
    ["upload", "SET", "--project", "NAME"],
    ["scan", "--positions", "1", "--project", "NAME"],
    ["retry", "NAME"],
    ["cancel", "NAME"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c[:3:2]))
def test_every_command_refuses_every_bad_name_and_touches_nothing(tmp_path: Path, sim: Path,
                                                                  command: list[str]) -> None:
    for name in CLI_BAD:
        name = str(tmp_path / "abs") if name == "ABS" else name
        before = tree(tmp_path)
        args = [{"NAME": name, "SET": str(sim.parent / "set"), "OUT": str(tmp_path / "out")}.get(a, a)
                for a in command]
        proc = run_cli("--config", str(sim), *args, timeout=60)
        assert proc.returncode == 1, (name, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        kind = "job id" if command[0] in ("retry", "cancel") else "project name"
        assert proc.stderr.startswith(f"openscan-pi: {kind} {name[:20]!r}"[:-1]), proc.stderr
        assert tree(tmp_path) == before, f"{command[0]} {name!r} created something"


def test_a_good_name_still_works_end_to_end(sim: Path) -> None:
    """upload --project NAME, then download NAME: the very same name, nothing sanitized."""
    done = run_cli("--config", str(sim), "upload", str(sim.parent / "set"), "--project", "vase_.zip",
                   "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["project"] == "vase_.zip"
    out = sim.parent / "model"
    got = run_cli("--config", str(sim), "download", "vase_.zip", "--out", str(out), "--json", timeout=120)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["model_dir"] == str(out) and any(out.iterdir())
