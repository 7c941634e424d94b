"""The systemd units in ``systemd/``: ``systemd-analyze verify`` and ``security``, and the settings
the daemon and its users rely on.

``systemd-analyze verify`` exits 0 on an unknown key or a value it cannot parse, so any output on
stderr counts as a failure. It is run on copies whose ExecStart= is ``/bin/true`` (the real binary
lives in the venv the installer makes), both units in one folder so that the socket finds its
service. The user ``openscan`` need not exist: verify does not resolve User=.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from openscan_pi import paths
from openscan_pi.config import load_config

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "systemd" / "openscan-pi.service"
SOCKET = ROOT / "systemd" / "openscan-pi.socket"
MAX_EXPOSURE = 3.5

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """A unit file as ``{section: {key: [values]}}``, the way systemd reads it: ``#`` and ``;``
    comments, backslash continuations, repeated keys accumulate, an empty value resets the list."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    for line in logical:
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"a setting outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=Value line: {line!r}"
        key, value = key.strip(), value.strip()
        if value:
            section.setdefault(key, []).append(value)
        else:
            section[key] = []
    return unit


@functools.cache
def service() -> Unit:
    return parse_unit(SERVICE.read_text("utf-8"))


@functools.cache
def socket_unit() -> Unit:
    return parse_unit(SOCKET.read_text("utf-8"))


def one(unit: Unit, section: str, key: str) -> str:
    """The value of a key set exactly once."""
    values = unit.get(section, {}).get(key)
    assert values and len(values) == 1, f"[{section}] {key}= should be set once, got {values!r}"
    return values[0]


def words(unit: Unit, section: str, key: str) -> list[str]:
    """Every space-separated word of a list setting, over all its lines."""
    return [w for value in unit.get(section, {}).get(key, []) for w in value.split()]


def default_config():
    """The shipped defaults, whatever /etc/openscan-pi/config.yaml or the environment say."""
    saved = paths.SYSTEM_CONFIG
    paths.SYSTEM_CONFIG = Path("/nonexistent/openscan-pi/config.yaml")
    try:
        return load_config(None, env={})
    finally:
        paths.SYSTEM_CONFIG = saved


# -- systemd-analyze --------------------------------------------------------------------------------

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@functools.cache
def analyze_help() -> str:
    assert ANALYZE is not None
    done = subprocess.run([ANALYZE, "--help"], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def analyze_env() -> dict[str, str]:
    """No SYSTEMD_* settings from the caller (log level, colours, pager), plain ASCII."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")}
    env.update(LANG="C.UTF-8", SYSTEMD_COLORS="0", SYSTEMD_PAGER="", PAGER="cat")
    return env


def unit_copies(folder: Path, extra_service_lines: str = "") -> tuple[Path, Path]:
    """Both units in ``folder``, ExecStart= replaced by /bin/true (the only change)."""
    folder.mkdir(parents=True, exist_ok=True)
    text, count = re.subn(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", SERVICE.read_text("utf-8"))
    assert count == 1
    if extra_service_lines:
        text = text.replace("[Service]\n", "[Service]\n" + extra_service_lines, 1)
    service_copy = folder / SERVICE.name
    service_copy.write_text(text, "utf-8")
    socket_copy = folder / SOCKET.name
    shutil.copyfile(SOCKET, socket_copy)
    return service_copy, socket_copy


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` as the project runs it: no man page lookups, and (where this
    systemd has the option) errors of the named units only, not of targets they mention."""
    assert ANALYZE is not None
    flags = ["--man=no"]
    if "--recursive-errors" in analyze_help():
        flags.append("--recursive-errors=no")
    return subprocess.run([ANALYZE, "verify", *flags, *map(str, units)], capture_output=True,
                          text=True, timeout=120, env=analyze_env())


@needs_analyze
def test_units_verify_without_any_complaint(tmp_path: Path) -> None:
    service_copy, socket_copy = unit_copies(tmp_path / "units")
    done = verify(service_copy, socket_copy)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


@needs_analyze
def test_verify_harness_sees_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    """The check above is only worth something if a typo would show: verify exits 0 on these."""
    service_copy, socket_copy = unit_copies(
        tmp_path / "units", "WatchdogSecs=30\nTimeoutStopSec=fifteen\n")
    done = verify(service_copy, socket_copy)
    assert "WatchdogSecs" in done.stderr
    assert "fifteen" in done.stderr


@needs_analyze
def test_socket_alone_is_refused(tmp_path: Path) -> None:
    """The socket unit names its service; verified without it, systemd says so."""
    _, socket_copy = unit_copies(tmp_path / "units")
    (tmp_path / "units" / SERVICE.name).unlink()
    done = verify(socket_copy)
    assert "openscan-pi.service" in done.stderr


@needs_analyze
def test_security_exposure_is_low(tmp_path: Path) -> None:
    if "--offline" not in analyze_help():
        pytest.skip("this systemd-analyze has no security --offline (systemd 252 or newer has)")
    service_copy, _ = unit_copies(tmp_path / "units")
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(service_copy)],
                          capture_output=True, text=True, timeout=120, env=analyze_env())
    found = re.search(r"Overall exposure level for openscan-pi\.service:\s*([0-9]+(?:\.[0-9]+)?)",
                      done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    exposure = float(found.group(1))
    print(f"systemd-analyze security: overall exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, done.stdout


# -- the settings ---------------------------------------------------------------------------------

def test_service_life_cycle() -> None:
    unit = service()
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "WatchdogSec") == "30"
    assert one(unit, "Service", "Restart") == "on-failure"
    # A broken config (exit 78, EX_CONFIG) is not retried.
    from openscan_pi.errors import EX_CONFIG
    assert str(EX_CONFIG) in words(unit, "Service", "RestartPreventExitStatus")
    # The daemon exits within 5 s of SIGTERM: systemd must wait longer than that.
    stop = one(unit, "Service", "TimeoutStopSec")
    assert stop.isdigit() and 5 < int(stop) <= 60
    exec_start = one(unit, "Service", "ExecStart")
    assert exec_start.endswith("openscan-pi daemon")
    assert exec_start.split()[0] == "/opt/openscan-pi/venv/bin/openscan-pi"
    assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert words(unit, "Install", "WantedBy") == ["multi-user.target"]


def test_service_identity_and_folders() -> None:
    unit = service()
    assert one(unit, "Service", "User") == "openscan"
    assert one(unit, "Service", "Group") == "openscan"
    groups = words(unit, "Service", "SupplementaryGroups")
    assert "gpio" in groups and "video" in groups
    cfg = default_config()
    # The socket's folder is the RuntimeDirectory; it outlives a stop so that a socket made in it
    # by openscan-pi.socket survives.
    runtime = one(unit, "Service", "RuntimeDirectory")
    assert Path("/run") / runtime == Path(cfg.daemon.socket).parent
    assert one(unit, "Service", "RuntimeDirectoryMode") == "0750"
    assert one(unit, "Service", "RuntimeDirectoryPreserve") in ("yes", "restart")
    # The data is the StateDirectory (systemd creates it and gives it to User=).
    state = one(unit, "Service", "StateDirectory")
    assert Path("/var/lib") / state == Path(cfg.daemon.data_dir)
    assert one(unit, "Service", "StateDirectoryMode") == "0750"
    # lgpio's notify FIFOs go in its working directory, which must be writable.
    assert one(unit, "Service", "WorkingDirectory") == cfg.daemon.data_dir
    assert f"LG_WD={cfg.daemon.data_dir}" in words(unit, "Service", "Environment")
    # The token file is optional ("-") and read by systemd before it drops privileges.
    assert one(unit, "Service", "EnvironmentFile") == "-/etc/openscan-pi/token.env"
    assert one(unit, "Service", "UMask") == "0027"


def test_service_sandbox_keeps_gpio_and_camera_reachable() -> None:
    unit = service()
    assert unit["Service"].get("PrivateDevices", ["no"])[-1] in ("no", "false", "0")
    assert one(unit, "Service", "DevicePolicy") == "closed"
    allowed = {v.split()[0]: v.split()[1] for v in unit["Service"]["DeviceAllow"]}
    for device in ("char-gpiochip", "char-video4linux", "char-media", "char-dma_heap"):
        assert allowed.get(device) == "rw", f"DeviceAllow={device} rw is missing"
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert one(unit, "Service", "ProtectHome") == "yes"
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert unit["Service"]["CapabilityBoundingSet"] == []
    families = words(unit, "Service", "RestrictAddressFamilies")
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families)
    # gpiozero reads the board revision from /proc/device-tree or /proc/cpuinfo.
    assert "ProcSubset" not in unit["Service"]


def test_service_descriptor_limit_leaves_room_for_clients_and_jobs() -> None:
    """LimitNOFILE= is set (systemd's soft default is 1024) and holds the default number of clients
    the daemon serves at once, the descriptors it keeps for its jobs, and its own (camera, pins,
    journal) with room to spare."""
    from openscan_pi.daemon.server import FD_RESERVE

    limit = one(service(), "Service", "LimitNOFILE")
    soft, _, hard = limit.partition(":")
    assert soft.isdigit() and (not hard or hard.isdigit()), limit
    assert int(soft) >= 2 * (default_config().daemon.max_clients + FD_RESERVE), limit


def test_socket_unit_matches_the_config_default() -> None:
    unit = socket_unit()
    cfg = default_config()
    assert one(unit, "Socket", "ListenStream") == cfg.daemon.socket
    assert one(unit, "Socket", "SocketMode") == "0660"
    assert one(unit, "Socket", "SocketUser") == "openscan"
    assert one(unit, "Socket", "SocketGroup") == "openscan"
    assert one(unit, "Socket", "DirectoryMode") == "0750"
    assert one(unit, "Socket", "Service") == SERVICE.name
    assert words(unit, "Install", "WantedBy") == ["sockets.target"]
    # The folder belongs to the daemon's user before anyone connects (ExecStartPre=).
    pre = one(unit, "Socket", "ExecStartPre").split()
    assert pre[-1] == str(Path(cfg.daemon.socket).parent)
    assert "-o" in pre and pre[pre.index("-o") + 1] == "openscan"


def test_parse_unit_reads_like_systemd() -> None:
    unit = parse_unit("[A]\n# c\n; c\nK=1\nK=2\\\n  3\nL=x\nL=\nM=\n")
    assert unit == {"A": {"K": ["1", "2 3"], "L": [], "M": []}}
