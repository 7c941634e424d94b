"""``openscan-pi doctor``: check what a scan needs, one :class:`Check` each, with the fix.

The checks, in order: ``config``, ``pins``, ``camera``, ``groups``, ``socket``, ``data_dir``,
``jobs``, ``cloud``, ``token``, ``clock``, ``versions``. Each runs in its own thread with a time
bound, and a check that fails, hangs or breaks never stops the others. Nothing here drives a pin,
opens the camera or writes a file; hardware modules are imported only inside the checks that need them. With
``cloud.url: local`` the cloud checks ask a throwaway bundled local cloud (its store in a
temporary folder, so a running daemon's local cloud is never touched).

Example::

    for check in run_checks(cfg):
        print(check.status, check.name, check.detail, check.fix or "")
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openscan_pi import paths
from openscan_pi.config import SYSTEM_CONFIG, Config
from openscan_pi.doctor_check import (  # noqa: F401 (re-exported)
    FAIL,
    GB,
    OK,
    SCAN_POSITIONS,
    WARN,
    Check,
    Status,
    size,
)

log = logging.getLogger(__name__)

#: Warn when the data folder has less free space than this (or than two scans).
LOW_DISK_BYTES = GB
#: Time bounds: the daemon's answer, one check, the cloud checks together.
DAEMON_TIMEOUT_S = 5.0
CHECK_TIMEOUT_S = 20.0
CLOUD_CHECKS_TIMEOUT_S = 40.0

LGPIO_FIX = "sudo apt install python3-lgpio (in a venv: create it with --system-site-packages)"
PINS_FIX = "run it on a Raspberry Pi (there: sudo apt install python3-lgpio), or use --simulate"
PICAMERA2_FIX = ("sudo apt install python3-picamera2 (in a venv: create it with "
                 "--system-site-packages), or set camera.backend")
NO_CAMERA_FIX = ("check the ribbon cable (contacts, orientation, both ends) and `camera_auto_detect=1` "
                 "or the camera's dtoverlay in /boot/firmware/config.txt, then reboot")
DAEMON_FIX = "sudo systemctl start openscan-pi (or run `openscan-pi daemon`)"
DATA_DIR_FIX = "set daemon.data_dir to a folder this user can write"
SPACE_FIX = "free some space, or set daemon.data_dir to a bigger disk"


def _user(uid: int | None = None) -> str:
    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# -- the checks ----------------------------------------------------------------------------------


def check_config(cfg: Config) -> Check:
    """Which file was read (it is valid: a broken one stops the command before any check)."""
    where = cfg.source or f"built-in defaults (no --config, $OPENSCAN_PI_CONFIG or {SYSTEM_CONFIG})"
    cloud = "local (bundled)" if cfg.cloud.is_local else cfg.cloud.url
    return Check("config", OK, f"{where}: valid; rig {cfg.rig.model}, camera {cfg.camera.backend}, "
                               f"cloud {cloud}")


def _rig_pin_factory() -> Any:
    from openscan_pi.rig.rig import _pin_factory

    return _pin_factory()


def _import_lgpio() -> Any:
    from openscan_pi.rig.lgpio_import import import_lgpio

    return import_lgpio()


def check_pins(cfg: Config, *, pin_factory_probe: Callable[[], Any] | None = None,
               lgpio_probe: Callable[[], Any] | None = None) -> Check:
    """The gpiozero pin factory the rig would use, and lgpio; no pin is claimed or driven."""
    if cfg.rig.model == "simulated":
        return Check("pins", OK, "simulated rig: gpiozero MockFactory, no GPIO touched")
    from openscan_pi.rig.errors import RigError
    from openscan_pi.rig.lgpio_import import LgpioUnavailable

    lgpio, lgpio_fix, lgpio_broken = None, LGPIO_FIX, False
    try:
        (lgpio_probe or _import_lgpio)()
    except LgpioUnavailable as exc:  # missing, or there but unable to start (its LG_WD)
        lgpio, lgpio_broken = str(exc), exc.installed
        lgpio_fix = exc.fix if exc.installed else LGPIO_FIX
    except ImportError as exc:
        lgpio = f"lgpio is not installed ({exc})"
    try:
        factory = (pin_factory_probe or _rig_pin_factory)()
    except RigError:
        why = f"; {lgpio}" if lgpio else ""
        return Check("pins", FAIL, f"no GPIO here: gpiozero found no pin factory for rig.model "
                                   f"{cfg.rig.model}{why}", lgpio_fix if lgpio_broken else PINS_FIX)
    except Exception as exc:  # lgpio cannot open /dev/gpiochip*, ...
        return Check("pins", FAIL, f"gpiozero could not open the GPIO: {type(exc).__name__}: {exc}",
                     "check /dev/gpiochip* and that you are in the gpio group (see groups)")
    name = type(factory).__name__
    with contextlib.suppress(Exception):  # board_info is only a nicety
        name += f" on a Raspberry Pi {factory.board_info.model}"
    if name.startswith("MockFactory"):
        return Check("pins", WARN, f"gpiozero uses its {name} for rig.model {cfg.rig.model}: "
                                   "nothing would move", "unset GPIOZERO_PIN_FACTORY")
    if lgpio and cfg.rig.step_backend == "lgpio":
        return Check("pins", FAIL, f"{name}, but rig.step_backend is lgpio and {lgpio}", lgpio_fix)
    if lgpio:
        return Check("pins", WARN, f"{name}; {lgpio}: STEP pulses come from Python (less even)",
                     lgpio_fix)
    return Check("pins", OK, f"{name}, lgpio importable")


def _picamera2_cameras() -> list[dict[str, Any]]:
    from picamera2 import Picamera2

    return list(Picamera2.global_camera_info())


def check_camera(cfg: Config, *,
                 camera_probe: Callable[[], list[dict[str, Any]]] | None = None) -> Check:
    """The camera backend in use and, for picamera2, the sensors attached (nothing is opened)."""
    backend = cfg.camera.backend
    if backend == "auto":
        backend = "simulated" if cfg.rig.model == "simulated" else "picamera2"
    width, height = cfg.camera.resolution
    if backend == "simulated":
        return Check("camera", OK, f"simulated camera, {width}x{height}")
    if backend == "external":
        pin = cfg.rig.trigger.pin
        if pin is None:
            return Check("camera", FAIL, "camera.backend is external but rig.trigger.pin is not set",
                         "set rig.trigger.pin to the GPIO wired to the camera's shutter release")
        return Check("camera", OK, f"external camera (DSLR), trigger pin {pin}")
    try:
        cameras = (camera_probe or _picamera2_cameras)()
    except ImportError as exc:
        return Check("camera", FAIL, f"picamera2 is not installed ({exc})", PICAMERA2_FIX)
    except Exception as exc:
        return Check("camera", FAIL, f"picamera2 could not list the cameras: {exc}", NO_CAMERA_FIX)
    if not cameras:
        return Check("camera", FAIL, "no camera detected", NO_CAMERA_FIX)
    models = ", ".join(f"camera {i}: {c.get('Model', 'unknown')}" for i, c in enumerate(cameras))
    return Check("camera", OK, f"picamera2, {models}; stills at {width}x{height}")


def check_fusion(cfg: Config, *, version_probe: Callable[[], str | None] | None = None) -> Check:
    """OpenCV, which fuses focus stacks on the device: needed when ``camera.focus.stack > 1``."""
    from openscan_pi.fusion import opencv_version
    from openscan_pi.fusion.opencv import install_hint

    version = (version_probe or opencv_version)()
    stack = cfg.camera.focus.stack
    if version is None:
        if stack > 1:
            return Check("fusion", FAIL, f"camera.focus.stack is {stack} but OpenCV cannot be "
                         "imported: the stacks cannot be fused", install_hint())
        return Check("fusion", OK, "focus stacks off (camera.focus.stack 1); OpenCV, which fuses "
                     f"them, is not installed ({install_hint()})")
    if stack > 1:
        return Check("fusion", OK, f"OpenCV {version}: stacks of {stack} fused on the device")
    return Check("fusion", OK, f"OpenCV {version}; focus stacks off (camera.focus.stack 1)")


def _socket_group(cfg: Config) -> str | None:
    """The group that may talk to the daemon: the socket file's, else the configured or usual one."""
    for path in paths.socket_candidates(cfg.daemon.socket):
        try:
            return _group_name(path.stat().st_gid)
        except OSError:
            continue
    name = cfg.daemon.socket_group or "openscan"
    try:
        grp.getgrnam(name)
    except KeyError:
        return None  # no daemon installed here: nothing to join
    return name


def check_groups(cfg: Config, *, euid: int | None = None,
                 group_names: set[str] | None = None) -> Check:
    """This user's groups: gpio (pins), video (camera), the socket's group (the daemon)."""
    euid = os.geteuid() if euid is None else euid
    if euid == 0:
        return Check("groups", OK, "running as root: pins, camera and socket are open to it")
    user = _user(euid)
    have = group_names if group_names is not None else {
        _group_name(g) for g in {*os.getgroups(), os.getegid()}}
    why = {"gpio": "the pins", "video": "the camera"}
    sock = _socket_group(cfg)
    if sock:
        why.setdefault(sock, "the daemon's socket")
    missing = [g for g in why if g not in have]
    if not missing:
        return Check("groups", OK, f"{user} is in {', '.join(why)}")
    hardware = cfg.rig.model != "simulated" and any(g in ("gpio", "video") for g in missing)
    detail = f"{user} is not in {', '.join(f'{g} ({why[g]})' for g in missing)}"
    pending = [g for g in missing if user in (_members(g) or [])]
    if pending:
        detail += f"; added to {', '.join(pending)} already, but this login does not have it yet"
    absent = [g for g in missing if _members(g) is None]
    fix = f"sudo groupadd {' '.join(absent)}; " if absent else ""
    fix += f"sudo usermod -aG {','.join(missing)} $USER, then log out and in again"
    return Check("groups", FAIL if hardware else WARN, detail, fix)


def _members(group: str) -> list[str] | None:
    try:
        return list(grp.getgrnam(group).gr_mem)
    except KeyError:
        return None


def check_socket(cfg: Config, *, timeout: float = DAEMON_TIMEOUT_S) -> Check:
    """A daemon answering on the socket, and the socket's mode (no access for other users)."""
    from openscan_pi.daemon.client import DaemonClient, NotRunning
    from openscan_pi.errors import UserError

    candidates = paths.socket_candidates(cfg.daemon.socket)
    for path in candidates:
        try:
            client = DaemonClient.connect(path, timeout)
        except NotRunning:
            continue
        except UserError:  # no permission
            return Check("socket", FAIL, f"no permission to talk to the daemon on {path}",
                         f"sudo usermod -aG {_socket_group(cfg)} $USER, then log out and in again")
        try:
            with client:
                answer = client.call("status")
            st = path.stat()
            status = answer if isinstance(answer, dict) else {}
        except (UserError, OSError) as exc:
            return Check("socket", FAIL, f"the daemon on {path} did not answer `status`: {exc}",
                         "sudo systemctl restart openscan-pi; `journalctl -u openscan-pi` says why")
        mode = stat.S_IMODE(st.st_mode)
        detail = (f"daemon {status.get('version', '?')} {status.get('state', '?')} on {path} "
                  f"(mode {mode:04o}, group {_group_name(st.st_gid)})")
        if mode & 0o007:
            return Check("socket", FAIL, f"{detail}: every user here can drive the scanner",
                         "sudo systemctl restart openscan-pi (it makes the socket 0660); with "
                         "openscan-pi.socket: SocketMode=0660 there, then restart that unit")
        return Check("socket", OK, detail)
    where = ", ".join(map(str, candidates))
    return Check("socket", WARN, f"the daemon is not running (nothing answers on {where}); "
                                 "commands run in this process meanwhile", DAEMON_FIX)


def check_data_dir(cfg: Config, *,
                   disk_usage: Callable[[Path], Any] = shutil.disk_usage) -> Check:
    """The data folder exists or can be made, is writable, and holds a 100-position scan."""
    from openscan_pi.jobs.runner import DISK_MARGIN, estimated_bytes

    path = cfg.data_dir
    where = str(path)
    if path != Path(cfg.daemon.data_dir).expanduser():
        where += f" (daemon.data_dir {cfg.daemon.data_dir} is not writable for {_user()})"
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        verb = "is" if existing == path else f"cannot be created: {existing} is"
        return Check("data_dir", FAIL, f"{where} {verb} not a folder", DATA_DIR_FIX)
    if not os.access(existing, os.W_OK | os.X_OK):
        why = paths.why_not_writable(existing)
        verb = why if existing == path else f"cannot be created: {existing} {why}"
        return Check("data_dir", FAIL, f"{where} {verb}",
                     f"{DATA_DIR_FIX} (or make {existing} writable)")
    free = disk_usage(existing).free
    need = int(estimated_bytes(cfg, SCAN_POSITIONS) * DISK_MARGIN)
    figures = f"{size(free)} free, a {SCAN_POSITIONS}-position scan needs about {size(need)}"
    if free < need:
        return Check("data_dir", FAIL, f"{where}: only {figures}", SPACE_FIX)
    if free < max(LOW_DISK_BYTES, 2 * need):
        return Check("data_dir", WARN, f"{where}: {figures}", SPACE_FIX)
    made = "writable" if existing == path else "can be created"
    return Check("data_dir", OK, f"{where}: {made}, {figures}")


def check_jobs(cfg: Config) -> Check:
    """The job folders under the data folder: every one a job this version can run (read only)."""
    from openscan_pi.jobs.store import JobStore

    store = JobStore(cfg.data_dir)
    jobs, broken = store.survey()
    if broken and broken[0].path == store.root:  # the folder itself cannot be listed
        return Check("jobs", WARN, f"{store.root} cannot be read by {_user()}: the job folders "
                                   "were not checked", "run `sudo openscan-pi doctor`")
    if not broken:
        return Check("jobs", OK, f"{len(jobs)} job{'s' if len(jobs) != 1 else ''} in {store.root}, "
                                 "none broken")
    shown = "; ".join(f"{b.path}: {b.problem}" for b in broken[:3])
    if len(broken) > 3:
        shown += f"; and {len(broken) - 3} more (`openscan-pi jobs --broken` lists them)"
    many = len(broken) != 1
    fix = broken[0].fix if not many else (
        f"move each out of {store.root}, or fix the file named (`openscan-pi jobs --broken` "
        "says what is wrong with each)")
    return Check("jobs", WARN, f"{len(broken)} job folder{'s' if many else ''} cannot be run "
                               f"(the other {len(jobs)} run on): {shown}", fix)


# -- running them --------------------------------------------------------------------------------


def bounded(names: list[str], fn: Callable[[], list[Check]], timeout: float) -> list[Check]:
    """``fn()`` in a thread, given ``timeout`` seconds; a hang or a crash becomes failed checks."""
    result: list[list[Check]] = []
    crash: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except Exception as exc:
            log.debug("doctor: %s broke", names, exc_info=True)
            crash.append(exc)

    thread = threading.Thread(target=run, name=f"doctor-{names[0]}", daemon=True)
    thread.start()
    thread.join(timeout)
    if result:
        return result[0]
    if crash:
        detail = f"the check itself broke: {type(crash[0]).__name__}: {crash[0]}"
        fix = "run `openscan-pi --debug doctor` and report what it shows"
    else:
        detail, fix = f"no result within {timeout:g} s", "run it again; `--debug` shows where it hangs"
    return [Check(name, FAIL, detail, fix) for name in names]


def run_checks(cfg: Config, *, now: Callable[[], float] = time.time,
               pin_factory_probe: Callable[[], Any] | None = None,
               camera_probe: Callable[[], list[dict[str, Any]]] | None = None) -> list[Check]:
    """Every check, in order; each bounded in time, none stopping the others."""
    from openscan_pi.doctor_cloud import check_clock, cloud_checks
    from openscan_pi.doctor_versions import check_versions

    dates: list[str] = []
    plan: list[tuple[list[str], Callable[[], list[Check]], float]] = [
        (["config"], lambda: [check_config(cfg)], CHECK_TIMEOUT_S),
        (["pins"], lambda: [check_pins(cfg, pin_factory_probe=pin_factory_probe)], CHECK_TIMEOUT_S),
        (["camera"], lambda: [check_camera(cfg, camera_probe=camera_probe)], CHECK_TIMEOUT_S),
        (["fusion"], lambda: [check_fusion(cfg)], CHECK_TIMEOUT_S),
        (["groups"], lambda: [check_groups(cfg)], CHECK_TIMEOUT_S),
        (["socket"], lambda: [check_socket(cfg)], 3 * DAEMON_TIMEOUT_S),
        (["data_dir"], lambda: [check_data_dir(cfg)], CHECK_TIMEOUT_S),
        (["jobs"], lambda: [check_jobs(cfg)], CHECK_TIMEOUT_S),
        (["cloud", "token"], lambda: cloud_checks(cfg, dates), CLOUD_CHECKS_TIMEOUT_S),
        (["clock"], lambda: [check_clock(next(filter(None, reversed(dates)), None), now=now)],
         CHECK_TIMEOUT_S),
        (["versions"], lambda: [check_versions()], CHECK_TIMEOUT_S),
    ]
    checks: list[Check] = []
    for names, fn, timeout in plan:
        checks += bounded(names, fn, timeout)
    return checks
