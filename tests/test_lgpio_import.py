"""``import lgpio`` as it really goes (on the lgpio double): it makes a FIFO in ``$LG_WD`` or the
current folder, moves the process there, and raises FileNotFoundError where it cannot write. The
rig, the step backend, doctor and the CLI must start from any folder, keep theirs, and say in one
line what is wrong when ``LG_WD`` is."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from openscan_pi.doctor import FAIL, OK, check_pins
from openscan_pi.rig.backends import LgpioStepBackend, lgpio_available
from openscan_pi.rig.errors import RigError
from openscan_pi.rig.lgpio_import import ensure_workdir
from openscan_pi.rig.rig import _pin_factory
from tests.conftest import cli_env
from tests.fake_lgpio import PI_4B, Installed, gpiochip_here, install
from tests.test_rig_pins import rig_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Installed]:
    """A Pi 4B (gpiozero's LGPIOFactory on the lgpio double), ``$LG_WD`` not set, a user runtime
    folder of its own."""
    gpiochip_here(monkeypatch)
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("LG_WD", raising=False)
    yield from install(monkeypatch, revision=PI_4B)


def fifo_in(folder: Path) -> bool:
    path = folder / ".lgd-nfy0"
    return path.exists() and stat.S_ISFIFO(path.stat().st_mode)


def test_the_rig_starts_from_a_folder_it_cannot_write(pi: Installed, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A service's folder is often / (read-only under ProtectSystem): lgpio's import fails there
    with FileNotFoundError, which gpiozero swallows (falling back to another factory) and the step
    backend's check did not catch. With LG_WD set for it, lgpio starts, and the folder stays."""
    monkeypatch.chdir("/proc")  # no FIFO can be made here, by anyone
    assert lgpio_available(0)
    assert type(_pin_factory()).__name__ == "LGPIOFactory"
    assert os.getcwd() == "/proc"
    assert fifo_in(tmp_path / "run-user"), "the FIFO went to $XDG_RUNTIME_DIR"
    assert os.environ["LG_WD"] == str(tmp_path / "run-user")


def test_importing_lgpio_keeps_the_working_folder(pi: Installed, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    here, lgwd = tmp_path / "here", tmp_path / "lgwd"
    here.mkdir()
    lgwd.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("LG_WD", str(lgwd))  # set by the user (or the unit): kept
    factory = _pin_factory()
    assert type(factory).__name__ == "LGPIOFactory"
    assert os.getcwd() == str(here), "relative paths (capture FILE, --config) still mean what they did"
    assert fifo_in(lgwd) and not fifo_in(here)


def test_an_lg_wd_lgpio_cannot_use_is_one_line(pi: Installed, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("LG_WD", "/proc/no-such-folder")
    cfg = rig_config(tmp_path, step_backend="lgpio")
    check = check_pins(cfg)
    assert check.status == FAIL and "lgpio cannot start" in check.detail
    assert "/proc/no-such-folder" in check.detail and "LG_WD" in check.fix
    with pytest.raises(RigError, match=r"lgpio cannot start: .*/proc/no-such-folder.*LG_WD"):
        LgpioStepBackend(27)
    with caplog.at_level(logging.WARNING):  # rig.step_backend auto: Python times the pulses
        assert not lgpio_available(0)
    assert "lgpio cannot start" in caplog.text and "LG_WD" in caplog.text


def doctor_from(folder: str, config: Path, **env: str) -> dict[str, object]:
    environ = {k: v for k, v in cli_env().items() if k != "LG_WD"} | env
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests" / "fakelib")])
    done = subprocess.run([sys.executable, "-m", "openscan_pi", "--config", str(config), "doctor",
                           "--json"], cwd=folder, capture_output=True, text=True, env=environ,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    return {c["name"]: c for c in report["checks"]}["pins"]


def test_doctor_on_a_pi_from_any_folder(tmp_path: Path) -> None:
    """The CLI as a user runs it, with lgpio's import as it really goes (the double, in the
    subprocess): from / or /proc, doctor's pins line names the factory, and nothing is left in
    the user's folders."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"daemon": {"data_dir": str(tmp_path / "data"),
                                                 "socket": str(tmp_path / "d.sock")},
                                      "rig": {"model": "mini-v2"}, "cloud": {"url": "local"}}))
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    pins = doctor_from("/proc", config, FAKE_LGPIO_PI_REVISION="c03114", XDG_RUNTIME_DIR=str(runtime))
    assert (pins["status"], pins["detail"]) == (OK, "LGPIOFactory on a Raspberry Pi 4B, lgpio importable")
    assert fifo_in(runtime)
    pins = doctor_from(str(tmp_path), config, FAKE_LGPIO_PI_REVISION="c03114",
                       LG_WD=str(tmp_path / "missing"))
    assert pins["status"] == FAIL and "lgpio cannot start" in str(pins["detail"]), pins
    assert "LG_WD" in str(pins["fix"])


def test_the_default_folder_is_this_users_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    env: dict[str, str] = {}
    assert ensure_workdir(env) == env["LG_WD"] == str(tmp_path / f"openscan-pi-{os.geteuid()}")
    assert stat.S_IMODE(os.stat(env["LG_WD"]).st_mode) == 0o700
    assert ensure_workdir({"LG_WD": "/srv/lg"}) == "/srv/lg", "a folder given is kept"
    # a link planted where the folder goes (the temp folder is shared) is not followed
    os.rmdir(env["LG_WD"])
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", env["LG_WD"])
    assert ensure_workdir(planted := {}) is None and "LG_WD" not in planted
