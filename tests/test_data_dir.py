"""A ``daemon.data_dir`` that cannot be written (read-only, or under a file): every command that
needs to write it says so in one line naming the key, exit 78 (the daemon too, so that systemd does
not restart it in a loop), and nothing is written anywhere."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import make_set, run_cli


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(params=["under-a-file", "read-only"])
def data_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """An unwritable data_dir: one that cannot be created (a file is in the way), or an existing
    folder on a read-only file system (a read-only tmpfs as root, else a folder without w)."""
    if request.param == "under-a-file":
        (tmp_path / "file").write_text("not a folder\n")
        yield tmp_path / "file" / "data"
        return
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("command", [
    ["daemon"], ["move", "--rotor", "10"], ["home"], ["scan", "--positions", "2"], ["upload", "SET"],
    ["upload", "SET", "--project", "vase.zip"], ["download", "vase.zip"],
    ["retry", "20261202-070104-969"], ["token"],
], ids=lambda c: "-".join(c[:2]))
def test_an_unwritable_data_dir_is_one_line_and_exit_78(tmp_path: Path, data_dir: Path,
                                                         command: list[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "daemon": {"data_dir": str(data_dir), "socket": str(tmp_path / "d.sock")},
        "rig": {"model": "simulated"}, "cloud": {"url": "local"}}))
    images = make_set(tmp_path / "set", count=2, size=1000)
    before = tree(tmp_path)
    proc = run_cli("--config", str(config), *[str(images) if a == "SET" else a for a in command],
                   timeout=60)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.startswith(f"openscan-pi: config: daemon.data_dir: {data_dir}")
    assert proc.stderr.endswith("(set daemon.data_dir to a folder this user can write)\n")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert tree(tmp_path) == before


def test_doctor_names_it_too(tmp_path: Path, data_dir: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"daemon": {"data_dir": str(data_dir)},
                                      "rig": {"model": "simulated"}, "cloud": {"url": "local"}}))
    proc = run_cli("--config", str(config), "doctor", timeout=120)
    assert proc.returncode == 1
    line, = [x for x in proc.stdout.splitlines() if " data_dir " in x]
    assert line.startswith("FAIL") and str(data_dir) in line
    if os.geteuid() == 0 and data_dir.name == "ro":  # the read-only tmpfs: said as it is
        assert f"{data_dir} is on a read-only file system" in line
    assert "set daemon.data_dir to a folder this user can write" in line
