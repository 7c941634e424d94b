"""``openscan-pi doctor``: the whole command as a user runs it (subprocesses), with every failing
check provoked for real (closed port, refused token, a file where the data folder should be, a
rig without GPIO, a world-writable daemon socket), and the checks that need a machine we do not
have (a Pi, a camera, a wrong clock, a full disk, a user without groups) with that part injected."""

from __future__ import annotations

import configparser
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from openscan_pi import doctor, doctor_versions
from openscan_pi.config import Config, load_config
from openscan_pi.doctor import (
    FAIL,
    OK,
    WARN,
    check_camera,
    check_data_dir,
    check_fusion,
    check_groups,
    check_pins,
)
from openscan_pi.doctor_cloud import check_clock
from openscan_pi.doctor_versions import check_versions
from openscan_pi.sim.cloud import LocalCloud, TokenLimits
from tests.conftest import TOKEN, cli_env, run_cli
from tests.daemon.conftest import DaemonProcess, daemon_config

NAMES = ["config", "pins", "camera", "fusion", "groups", "socket", "data_dir", "jobs", "cloud",
         "token", "clock", "versions"]


def write(path: Path, *, cloud_url: str = "local", token: str = TOKEN, rig: str = "simulated",
          data_dir: Path | None = None, **sections: Any) -> Path:
    """A config for doctor: its socket and data folder under ``path``'s folder."""
    root = path.parent
    data: dict[str, Any] = {
        "cloud": {"url": cloud_url, "token": token},
        "daemon": {"data_dir": str(data_dir or root / "data"), "socket": str(root / "d.sock")},
        "rig": {"model": rig},
        "camera": {"resolution": [320, 240]},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(data))
    return path


def cfg_of(tmp_path: Path, overrides: dict[str, Any] | None = None, **keys: Any) -> Config:
    """The loaded config of :func:`write` (``overrides`` merged last, as ``--simulate`` is)."""
    return load_config(write(tmp_path / "c.yaml", **keys), env={}, overrides=overrides)


def doctor_json(config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = run_cli("--config", str(config), "doctor", "--json", *extra)
    assert done.stdout.count("\n") == 1, (done.stdout, done.stderr)  # one JSON line, nothing else
    return done.returncode, json.loads(done.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the whole command ---------------------------------------------------------------------------


def test_simulate_passes_on_any_machine(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", rig="classic", cloud_url="http://127.0.0.1:1", token="")
    done = run_cli("--config", str(config), "doctor", "--simulate")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line[6:17].strip() for line in lines[:-1]] == NAMES
    assert all(line.startswith(("ok    ", "warn  ")) for line in lines[:-1]), done.stdout
    assert lines[2] == "ok    camera     simulated camera, 320x240"
    assert lines[3].startswith("ok    fusion     ")
    socket_line = lines[5]
    assert socket_line.startswith("warn  socket     the daemon is not running")
    assert socket_line.endswith("→ fix: sudo systemctl start openscan-pi (or run `openscan-pi daemon`)")
    assert "bundled local cloud at http://127.0.0.1:" in lines[8] and "online" in lines[8]
    assert lines[-1].startswith("all 12 checks passed")
    assert not (tmp_path / "data").exists()  # doctor writes nothing


def test_json_is_the_contract(tmp_path: Path) -> None:
    code, report = doctor_json(write(tmp_path / "c.yaml"), "--simulate")
    assert code == 0
    assert set(report) == {"ok", "checks"} and report["ok"] is True
    assert [c["name"] for c in report["checks"]] == NAMES
    for c in report["checks"]:
        assert set(c) == {"name", "status", "detail", "fix"}
        assert c["status"] in ("ok", "warn") and isinstance(c["detail"], str) and c["detail"]
        assert (c["fix"] is None) == (c["status"] == "ok")
    checks = by_name(report)
    assert checks["socket"]["status"] == "warn"
    assert checks["pins"]["detail"].startswith("simulated rig: gpiozero MockFactory")
    assert checks["config"]["detail"].startswith(f"{tmp_path / 'c.yaml'}: valid; rig simulated")


def test_a_broken_config_stops_before_any_check(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("cloud: {retries: lots}\n")
    done = run_cli("--config", str(config), "doctor", "--json")
    assert (done.returncode, done.stdout) == (78, "")
    assert done.stderr == "openscan-pi: config: cloud.retries: expected an integer, got 'lots'\n"


@pytest.fixture
def running_daemon() -> Iterator[DaemonProcess]:
    root = Path(tempfile.mkdtemp(prefix="osd", dir="/tmp"))  # a socket path fits 107 bytes
    d = DaemonProcess(root, daemon_config(root)).start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_socket_of_a_running_daemon(running_daemon: DaemonProcess) -> None:
    code, report = doctor_json(running_daemon.config)
    check = by_name(report)["socket"]
    assert code == 0 and report["ok"] is True, report
    assert check["status"] == "ok" and check["fix"] is None
    assert "idle on " + str(running_daemon.socket) in check["detail"]
    assert "(mode 0660, group " in check["detail"]

    os.chmod(running_daemon.socket, 0o666)  # as a careless socket unit would leave it
    code, report = doctor_json(running_daemon.config)
    check = by_name(report)["socket"]
    assert code == 1 and report["ok"] is False
    assert check["status"] == "fail" and "mode 0666" in check["detail"]
    assert "every user here can drive the scanner" in check["detail"]
    assert "SocketMode=0660" in check["fix"]
    assert [c["name"] for c in report["checks"] if c["status"] == "fail"] == ["socket"]


def test_unreachable_cloud_fails_cloud_and_token(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    done = run_cli("--config", str(write(tmp_path / "c.yaml", cloud_url=url)), "doctor")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = {line[6:17].strip(): line for line in done.stdout.splitlines()[:-1]}
    assert lines["cloud"].startswith(f"FAIL  cloud      cannot reach {url}/status: ")
    assert "refused" in lines["cloud"]
    assert lines["cloud"].endswith(f"→ fix: check the network and cloud.url ({url})")
    assert lines["token"].startswith("FAIL  token      not checked: the cloud did not answer")
    assert lines["clock"].startswith("ok    clock ")
    assert done.stdout.splitlines()[-1].startswith("2 of 12 checks failed")


def test_a_token_the_cloud_refuses(tmp_path: Path) -> None:
    tokens = {"somebody-else-0000000000": TokenLimits()}
    with LocalCloud(tmp_path / "store", tokens=tokens) as cloud:
        code, report = doctor_json(write(tmp_path / "c.yaml", cloud_url=cloud.url))
    checks = by_name(report)
    assert code == 1 and checks["cloud"]["status"] == "ok"
    token = checks["token"]
    assert token["status"] == "fail"
    assert token["detail"].startswith("the server refused the token …7890 (unknown token?)")
    assert TOKEN not in json.dumps(report)  # the secret itself never shows
    assert token["fix"].startswith(f"set cloud.token in {tmp_path / 'c.yaml'} or $OPENSCAN_PI_TOKEN")


def test_no_token_and_low_credit(tmp_path: Path) -> None:
    tokens = {TOKEN: TokenLimits(credit=300_000_000)}
    with LocalCloud(tmp_path / "store", tokens=tokens) as cloud:
        code, report = doctor_json(write(tmp_path / "a.yaml", cloud_url=cloud.url))
        assert code == 0
        token = by_name(report)["token"]
        assert token["status"] == "warn" and token["detail"].startswith("low credit 300 MB")
        assert token["fix"] == "ask cloud@openscan.eu for more credit"
        clock = by_name(report)["clock"]
        assert clock["status"] == "ok" and "of the cloud's clock" in clock["detail"]
        code, report = doctor_json(write(tmp_path / "b.yaml", cloud_url=cloud.url, token=""))
    assert code == 1
    assert by_name(report)["token"]["detail"] == "no token is set"


def test_a_file_where_the_data_folder_should_be(tmp_path: Path, cloud: LocalCloud) -> None:
    (tmp_path / "file").write_text("not a folder")
    config = write(tmp_path / "c.yaml", cloud_url=cloud.url, data_dir=tmp_path / "file" / "sub")
    code, report = doctor_json(config)
    check = by_name(report)["data_dir"]
    assert code == 1 and check["status"] == "fail"
    assert check["detail"] == f"{tmp_path}/file/sub cannot be created: {tmp_path}/file is not a folder"
    assert check["fix"] == "set daemon.data_dir to a folder this user can write"
    assert [c["name"] for c in report["checks"] if c["status"] == "fail"] == ["data_dir"]


@pytest.mark.skipif(bool(find_spec("lgpio") or find_spec("RPi") or find_spec("picamera2")),
                    reason="this machine has GPIO or camera libraries")
def test_a_real_rig_on_a_machine_without_gpio_or_camera(tmp_path: Path, cloud: LocalCloud) -> None:
    config = write(tmp_path / "c.yaml", cloud_url=cloud.url, rig="classic")
    done = run_cli("--config", str(config), "doctor")
    assert done.returncode == 1
    lines = {line[6:17].strip(): line for line in done.stdout.splitlines()[:-1]}
    assert lines["pins"].startswith("FAIL  pins       no GPIO here: gpiozero found no pin factory "
                                    "for rig.model classic; lgpio is not installed")
    assert lines["pins"].endswith("→ fix: run it on a Raspberry Pi (there: sudo apt install "
                                  "python3-lgpio), or use --simulate")
    assert lines["camera"].startswith("FAIL  camera     picamera2 is not installed")
    assert "→ fix: sudo apt install python3-picamera2" in lines["camera"]
    assert done.stdout.splitlines()[-1].startswith("2 of 12 checks failed")


# -- the parts that need hardware, a user or a clock we do not have --------------------------------


class FakeFactory:
    """What gpiozero's LGPIOFactory shows of itself."""

    board_info = SimpleNamespace(model="4B")


def test_pins_with_a_factory(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, rig="classic")
    have = check_pins(cfg, pin_factory_probe=FakeFactory, lgpio_probe=lambda: None)
    assert (have.status, have.detail) == (OK, "FakeFactory on a Raspberry Pi 4B, lgpio importable")

    def no_lgpio() -> None:
        raise ImportError("No module named 'lgpio'")

    slow = check_pins(cfg, pin_factory_probe=FakeFactory, lgpio_probe=no_lgpio)
    assert slow.status == WARN and slow.fix == doctor.LGPIO_FIX
    strict = check_pins(cfg_of(tmp_path, {"rig": {"step_backend": "lgpio"}}, rig="classic"),
                        pin_factory_probe=FakeFactory, lgpio_probe=no_lgpio)
    assert strict.status == FAIL and "rig.step_backend is lgpio" in strict.detail

    from gpiozero.pins.mock import MockFactory

    mock = check_pins(cfg, pin_factory_probe=MockFactory, lgpio_probe=lambda: None)
    assert mock.status == WARN and mock.fix == "unset GPIOZERO_PIN_FACTORY"

    def busy() -> None:
        raise OSError("can not open gpiochip")

    broken = check_pins(cfg, pin_factory_probe=busy, lgpio_probe=lambda: None)
    assert broken.status == FAIL and "can not open gpiochip" in broken.detail


def test_camera_backends(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, rig="classic")
    found = check_camera(cfg, camera_probe=lambda: [{"Model": "imx519", "Num": 0}])
    assert (found.status, found.detail) == (OK, "picamera2, camera 0: imx519; stills at 320x240")
    none = check_camera(cfg, camera_probe=list)
    assert (none.status, none.detail, none.fix) == (FAIL, "no camera detected", doctor.NO_CAMERA_FIX)
    assert "camera_auto_detect=1" in doctor.NO_CAMERA_FIX

    def missing() -> list[dict[str, Any]]:
        raise ImportError("No module named 'picamera2'")

    gone = check_camera(cfg, camera_probe=missing)
    assert gone.status == FAIL and gone.fix == doctor.PICAMERA2_FIX
    dslr = cfg_of(tmp_path, rig="classic", camera={"backend": "external"})
    assert check_camera(dslr) == doctor.Check("camera", OK, "external camera (DSLR), trigger pin 10")
    no_pin = cfg_of(tmp_path, {"rig": {"trigger": {"pin": None}}}, rig="classic",
                    camera={"backend": "external"})
    unwired = check_camera(no_pin)
    assert unwired.status == FAIL and unwired.fix is not None and "rig.trigger.pin" in unwired.fix


def test_groups_of_a_user(tmp_path: Path) -> None:
    assert check_groups(cfg_of(tmp_path), euid=0).status == OK
    real = check_groups(cfg_of(tmp_path, rig="classic"), euid=4242, group_names={"users"})
    assert real.status == FAIL
    assert real.detail.startswith("uid 4242 is not in gpio (the pins), video (the camera)")
    assert "usermod -aG gpio,video" in real.fix and real.fix.endswith("then log out and in again")
    sim = check_groups(cfg_of(tmp_path), euid=4242, group_names={"users"})
    assert sim.status == WARN
    everything = check_groups(cfg_of(tmp_path, rig="classic"), euid=4242,
                              group_names={"gpio", "video", "openscan"})
    assert everything.status == OK


def test_data_dir_space(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, camera={"resolution": [4056, 3040]})  # a scan: about 925 MB

    def free(n: int) -> Any:
        return lambda path: shutil._ntuple_diskusage(10**12, 10**12 - n, n)  # type: ignore[attr-defined]

    full = check_data_dir(cfg, disk_usage=free(200_000_000))
    assert full.status == FAIL and full.fix == doctor.SPACE_FIX
    assert full.detail.endswith("only 200 MB free, a 100-position scan needs about 925 MB")
    assert check_data_dir(cfg, disk_usage=free(1_500_000_000)).status == WARN
    roomy = check_data_dir(cfg, disk_usage=free(50 * 10**9))
    assert roomy.status == OK and roomy.detail.startswith(f"{tmp_path}/data: can be created, 50.0 GB")


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("")
    check = check_data_dir(cfg_of(tmp_path))
    assert (check.status, check.detail) == (FAIL, f"{tmp_path}/data is not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: permissions cannot be provoked")
def test_data_dir_not_writable(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o500)
    check = check_data_dir(cfg_of(tmp_path, data_dir=tmp_path / "ro" / "data"))
    assert check.status == FAIL
    assert check.detail.endswith(f"cannot be created: {tmp_path}/ro is not writable for "
                                 f"{doctor._user()}")


def test_clock() -> None:
    now = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    unset = check_clock(None, now=lambda: 0.0)
    assert unset.status == WARN and "1970-01-01" in unset.detail and "timedatectl" in unset.fix
    same = check_clock(format_datetime(datetime.fromtimestamp(now - 2, UTC), usegmt=True),
                       now=lambda: now)
    assert (same.status, same.detail) == (OK, "2025-06-01 12:00:00 UTC, within 2 s of the cloud's "
                                              "clock")
    ahead = check_clock("Sun, 01 Jun 2025 11:50:00 GMT", now=lambda: now)
    assert ahead.status == WARN and "600 s ahead of the cloud's clock" in ahead.detail
    behind = check_clock("Sun, 01 Jun 2025 13:00:00 GMT", now=lambda: now)
    assert behind.status == WARN and "3,600 s behind" in behind.detail
    assert check_clock("garbage", now=lambda: now).status == OK
    assert check_clock(None, now=lambda: now).detail.endswith("(not compared: the cloud sent no time)")


def test_a_hanging_check_does_not_stop_the_others(tmp_path: Path, cloud: LocalCloud,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "CHECK_TIMEOUT_S", 0.5)
    release = threading.Event()
    cfg = cfg_of(tmp_path, rig="classic", cloud_url=cloud.url)
    started = time.monotonic()
    try:
        checks = doctor.run_checks(cfg, pin_factory_probe=release.wait,
                                   camera_probe=lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    finally:
        release.set()
    assert time.monotonic() - started < 15
    assert [c.name for c in checks] == NAMES
    got = {c.name: c for c in checks}
    assert got["pins"].status == FAIL and got["pins"].detail == "no result within 0.5 s"
    assert got["camera"].detail == "picamera2 could not list the cameras: division by zero"
    assert got["cloud"].status == OK and got["token"].status == OK
    broke = doctor.bounded(["x", "y"], lambda: [][0], 5)
    assert [(c.name, c.status) for c in broke] == [("x", FAIL), ("y", FAIL)]
    assert broke[0].detail == "the check itself broke: IndexError: list index out of range"


# -- the versions in use ---------------------------------------------------------------------------


def fake_distributions(site: Path, versions: dict[str, str]) -> Path:
    """A folder of installed-package records (``NAME-VERSION.dist-info``) and nothing else: first
    on ``sys.path``, it is what the metadata of those packages says, as an apt or pip install is."""
    for name, version in versions.items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return site


def test_versions_shows_the_libraries_imported() -> None:
    import numpy
    import PIL
    import requests
    import tqdm
    import urllib3

    check = check_versions()
    assert check.status != FAIL, check  # what runs the tests is never below setup.cfg's minimums
    assert check.detail.startswith(f"Python {platform.python_version()}; PyYAML {yaml.__version__}, ")
    for name, module in [("requests", requests), ("urllib3", urllib3), ("tqdm", tqdm),
                         ("numpy", numpy), ("Pillow", PIL)]:
        assert f", {name} {module.__version__}" in check.detail, (name, check.detail)


def test_versions_flags_an_old_library_with_its_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = fake_distributions(tmp_path / "site", {"simplejpeg": "1.6.6", "gpiozero": "1.6.2"})
    monkeypatch.syspath_prepend(str(site))
    check = check_versions()
    assert check.status == FAIL
    assert "gpiozero 1.6.2, " in check.detail and ", simplejpeg 1.6.6" in check.detail
    assert check.detail.endswith("; gpiozero 1.6.2 is older than 2.0, the oldest openscan-pi is tested "
                                 "with; simplejpeg 1.6.6 is older than 1.8.0: it has no "
                                 "encode_jpeg_yuv_planes, so photos are encoded with Pillow instead "
                                 "(slower, more memory)")
    assert check.fix == (f"{sys.executable} -m pip install 'gpiozero>=2.0'; "
                         f"{sys.executable} -m pip install 'simplejpeg>=1.8.0'")
    # From apt (a venv with --system-site-packages on Raspberry Pi OS), apt is the first fix.
    monkeypatch.setattr(doctor_versions, "APT_SITE", site)
    from_apt = check_versions()
    assert from_apt.fix is not None and from_apt.fix.startswith(
        "sudo apt update && sudo apt install --only-upgrade python3-gpiozero (if the archive has no "
        f"2.0 yet: {sys.executable} -m pip install 'gpiozero>=2.0'); sudo apt update")


def test_an_old_simplejpeg_is_a_warning_of_the_doctor_command(tmp_path: Path) -> None:
    site = fake_distributions(tmp_path / "site", {"simplejpeg": "1.7.6"})
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    config = write(tmp_path / "c.yaml", cloud_url=f"http://127.0.0.1:{closed_port()}")
    done = subprocess.run([sys.executable, "-m", "openscan_pi", "--config", str(config), "doctor",
                           "--simulate"], capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr  # a warning: the scanner still works
    line = done.stdout.splitlines()[-2]
    assert line.startswith(f"warn  versions   Python {platform.python_version()}; PyYAML ")
    assert line.endswith("; simplejpeg 1.7.6 is older than 1.8.0: it has no encode_jpeg_yuv_planes, so "
                         "photos are encoded with Pillow instead (slower, more memory) → fix: "
                         f"{sys.executable} -m pip install 'simplejpeg>=1.8.0'")


@pytest.mark.parametrize(("version", "than", "is_older"), [
    ("1.26", "1.26.0", False), ("1.26.12", "1.26.2", False), ("2.0.1.post3", "2.0", False),
    ("0.2.2.0", "0.2.2", False), ("1.6.2", "2.0", True), ("1.7.6", "1.8.0", True), ("9.4.0", "11.1", True),
])
def test_version_order(version: str, than: str, is_older: bool) -> None:
    assert doctor_versions.older(version, than) is is_older


def test_the_minimums_are_those_of_setup_cfg() -> None:
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).parents[1] / "setup.cfg")
    lines = (setup["options"]["install_requires"] + setup["options.extras_require"]["pi"]).split()
    declared = dict(re.findall(r"^([A-Za-z0-9_.-]+)>=([0-9.]+)$", "\n".join(lines), re.MULTILINE))
    assert declared == doctor_versions.MINIMUMS
    assert set(declared) <= set(doctor_versions.APT_NAMES)


def test_fusion_line_needs_opencv_only_for_stacks(tmp_path: Path) -> None:
    stacked = load_config(write(tmp_path / "s.yaml", camera={"focus": {"stack": 5}}), env={})
    plain = load_config(write(tmp_path / "p.yaml"), env={})
    missing = check_fusion(stacked, version_probe=lambda: None)
    assert missing.status == FAIL and "camera.focus.stack is 5" in missing.detail
    assert "opencv" in missing.fix
    assert check_fusion(plain, version_probe=lambda: None).status == OK
    found = check_fusion(stacked, version_probe=lambda: "4.6.0")
    assert found.status == OK and found.detail == "OpenCV 4.6.0: stacks of 5 fused on the device"
