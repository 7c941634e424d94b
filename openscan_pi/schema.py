"""What the configuration holds: one frozen dataclass per section, each field with its check.

:mod:`openscan_pi.config` walks these classes to validate the YAML; the defaults live in the
annotated file ``openscan_pi/data/openscan-pi.yaml`` and the rig profiles in
``openscan_pi/data/profiles.yaml``, not here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from openscan_pi import paths
from openscan_pi.paths import DEFAULT_DATA_DIR, DEFAULT_SOCKET, writable  # noqa: F401 (re-exported)

RIG_MODELS = ("classic", "mini", "mini-v2", "midi", "simulated")
#: The longest path a Unix socket can be bound to (``sun_path`` holds 108 bytes with its NUL).
MAX_SOCKET_PATH = 107
#: Most photos one position's focus stack may have (``camera.focus.stack``, a scan's own).
MAX_FOCUS_STACK = 32

Check = Callable[[Any], "str | None"]


def positive(value: float) -> str | None:
    """Check: > 0."""
    return None if value > 0 else f"{value} must be greater than 0"


def at_least(low: float) -> Check:
    """Check: >= low."""
    def check(value: float) -> str | None:
        return None if value >= low else f"{value} must be at least {low}"

    return check


def between(low: float, high: float) -> Check:
    """Check: low <= value <= high."""
    def check(value: float) -> str | None:
        return None if low <= value <= high else f"{value} is out of range ({low}-{high})"

    return check


def optional(check: Check) -> Check:
    """A check that lets None (null in YAML) through."""
    def wrapped(value: Any) -> str | None:
        return None if value is None else check(value)

    return wrapped


def _quote(value: str, limit: int = 160) -> str:
    """``repr(value)``, cut short (a message stays one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _url(value: str) -> str | None:
    if value == "local":
        return None
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return (f"{_quote(value)} holds spaces or control characters: give the URL alone, e.g. "
                "http://openscanfeedback.dnsuser.de:1334")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (checks the port: ValueError when it is not one)
    except ValueError as exc:
        return f"{_quote(value)} is not a URL ({exc})"
    if parts.scheme in ("http", "https") and parts.hostname:
        return None
    return f"{_quote(value)} is not an http(s) URL or 'local'"


def _absolute(value: str) -> str | None:
    return None if value.startswith(("/", "~")) else f"{_quote(value)} must be an absolute path"


def _socket(value: str) -> str | None:
    problem = _absolute(value)
    if problem:
        return problem
    size = len(os.fsencode(os.path.expanduser(value)))
    if size > MAX_SOCKET_PATH:
        return (f"{_quote(value)} is {size} bytes long; a Unix socket path may have at most "
                f"{MAX_SOCKET_PATH}: choose a shorter one")
    return None


def _group(value: str) -> str | None:
    import grp

    try:
        grp.getgrnam(value)
    except KeyError:
        return f"group {_quote(value)} does not exist (create it: `sudo groupadd {value}`)"
    return None


def _gpio(value: int) -> str | None:
    return None if 0 <= value <= 27 else f"{value} is not a GPIO number (0-27)"


def _pair(check: Check) -> Check:
    def pair(value: tuple[Any, ...]) -> str | None:
        if len(value) != 2:
            return f"expected a list of two, got {len(value)}"
        for v in value:
            problem = check(v)
            if problem:
                return problem
        return None

    return pair


def _resolution(value: tuple[int, ...]) -> str | None:
    if len(value) != 2:
        return "expected [width, height]"
    if not all(64 <= v <= 20000 for v in value):
        return f"{list(value)} is not a sensible resolution (each side 64-20000 pixels)"
    return None


def _field(check: Check | None = None) -> Any:
    return field(metadata={"check": check} if check else {})


# -- cloud --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalCloudConfig:
    """Settings of the bundled local cloud (``cloud.url: local``)."""

    processing_s: float = _field(at_least(0))


@dataclass(frozen=True)
class CloudConfig:
    """``cloud.*``: the OpenScan Cloud API and how patiently to talk to it."""

    url: str = _field(_url)
    token: str = _field()
    user: str = _field()
    password: str = _field()
    max_part_bytes: int = _field(between(4096, 200_000_000))
    poll_interval_s: float = _field(positive)
    poll_max_interval_s: float = _field(positive)
    connect_timeout_s: float = _field(positive)
    read_timeout_s: float = _field(positive)
    call_timeout_s: float = _field(positive)  # one API call, retries and their waits included
    stall_window_s: float = _field(positive)  # a transfer moving less than stall_min_bytes in
    stall_min_bytes: int = _field(between(1, 1 << 30))  # this window is cut
    retries: int = _field(between(0, 100))
    backoff_s: float = _field(between(0, 60))
    max_offline_s: float = _field(at_least(0))
    link_margin_s: float = _field(between(0, 3 * 3600))
    max_model_bytes: int = _field(positive)
    local: LocalCloudConfig = _field()

    @property
    def is_local(self) -> bool:
        """True when the bundled local cloud is used."""
        return self.url == "local"


# -- daemon -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonConfig:
    """``daemon.*``: where the daemon listens and keeps its data."""

    socket: str = _field(_socket)
    data_dir: str = _field(_absolute)
    socket_group: str | None = _field(optional(_group))  # null: the daemon's own group
    max_transfers: int = _field(between(1, 8))  # uploads/downloads running at once
    max_clients: int = _field(between(1, 10_000))  # socket connections served at once
    max_queued_bytes: int = _field(between(65_536, 1 << 30))  # queued for a client that does not read


@dataclass(frozen=True)
class JobsConfig:
    """``jobs.*``: what a restarted daemon does with unfinished jobs."""

    resume_scan: Literal["resume", "fail"] = _field()


# -- rig ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisConfig:
    """``rig.rotor.*`` / ``rig.turntable.*``: one stepper axis.

    Angles are degrees. The rotor uses elevation (0 = camera level with the object, +90 =
    above); the turntable turns without limits when ``min_angle``/``max_angle`` are null.
    """

    step_pin: int = _field(_gpio)
    dir_pin: int = _field(_gpio)
    enable_pin: int | None = _field(optional(_gpio))  # null: not switchable from the Pi
    steps_per_rev: float = _field(between(1, 1_000_000))
    max_speed: float = _field(between(1, 100_000))  # steps/s
    acceleration: float = _field(between(1, 10_000_000))  # steps/s²
    min_angle: float | None = _field(optional(between(-360, 360)))
    max_angle: float | None = _field(optional(between(-360, 360)))
    start_angle: float = _field(between(-360, 360))  # where the axis is at power-on
    invert: bool = _field()


@dataclass(frozen=True)
class EndstopConfig:
    """``rig.endstop.*``: the rotor's homing switch, where the board has one."""

    pin: int | None = _field(optional(_gpio))  # null: no endstop
    pull_up: bool = _field()
    angle: float = _field(between(-180, 180))  # rotor elevation when the switch closes
    direction: int = _field(lambda v: None if v in (-1, 1) else f"{v} must be -1 or 1")
    speed: float = _field(between(1, 100_000))  # steps/s while homing
    backoff_deg: float = _field(between(0, 90))
    timeout_s: float = _field(positive)
    bounce_s: float = _field(between(0, 1))


@dataclass(frozen=True)
class LightConfig:
    """``rig.light.*``: the ring light channels."""

    pins: tuple[int, ...] = _field(lambda v: next(filter(None, map(_gpio, v)), None))
    active_high: bool = _field()
    pwm: bool = _field()
    brightness: float = _field(between(0, 1))
    idle_off_s: float | None = _field(optional(at_least(0)))  # null: stays on


@dataclass(frozen=True)
class TriggerConfig:
    """``rig.trigger.*``: an external camera's shutter release (DSLR rigs)."""

    pin: int | None = _field(optional(_gpio))
    active_high: bool = _field()
    pulse_s: float = _field(between(0.001, 10))
    delay_before_s: float = _field(between(0, 60))
    delay_after_s: float = _field(between(0, 60))


@dataclass(frozen=True)
class RigConfig:
    """``rig.*``: the scanner hardware (a shipped profile, every field overridable)."""

    model: Literal["classic", "mini", "mini-v2", "midi", "simulated"] = _field()
    step_backend: Literal["auto", "python", "lgpio"] = _field()
    idle_disable_s: float | None = _field(optional(at_least(0)))
    sim_time_scale: float = _field(between(0, 1))
    settle_s: float = _field(between(0, 10))  # wait after a move before a photo
    max_restarts: int = _field(between(0, 100))  # rig worker restarts per scan, then failed
    idle_exit_s: float = _field(between(1, 86400))  # the rig worker leaves after this idle
    rotor: AxisConfig = _field()
    turntable: AxisConfig = _field()
    endstop: EndstopConfig = _field()
    light: LightConfig = _field()
    trigger: TriggerConfig = _field()


# -- camera -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FocusConfig:
    """``camera.focus.*``: autofocus, a fixed lens position, or a focus stack."""

    mode: Literal["auto", "manual"] = _field()
    lens_position: float = _field(between(0, 32))  # dioptres (1 / metres), manual mode
    stack: int = _field(between(1, MAX_FOCUS_STACK))  # lens positions per camera position
    stack_range: tuple[float, ...] = _field(_pair(between(0, 32)))  # dioptres, near..far
    upload: Literal["fused", "all"] = _field()  # a stack's fused photo, or every frame


@dataclass(frozen=True)
class CameraConfig:
    """``camera.*``: still capture settings."""

    backend: Literal["auto", "picamera2", "external", "simulated"] = _field()
    resolution: tuple[int, ...] = _field(_resolution)
    jpeg_quality: int = _field(between(1, 100))
    exposure_us: int | None = _field(optional(between(10, 10_000_000)))  # null: settle, lock
    analogue_gain: float | None = _field(optional(between(1, 64)))
    colour_gains: tuple[float, ...] | None = _field(optional(_pair(between(0, 32))))
    settle_s: float = _field(between(0, 30))
    crop: float = _field(between(0.05, 1))  # fraction of the sensor kept, centred
    orientation: int = _field(between(1, 8))  # EXIF orientation
    timeout_s: float = _field(between(0.1, 600))  # a camera call's wait for its frame
    retries: int = _field(between(0, 10))  # tries more of a stalled position, camera reopened
    focus: FocusConfig = _field()


# -- plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanConfig:
    """``plan.*``: which part of the sphere a scan covers."""

    rotor_min: float = _field(between(-90, 90))
    rotor_max: float = _field(between(-90, 90))
    turntable_span: float = _field(between(1, 360))
    turntable_only: bool = _field()
    rotor_fixed: float = _field(between(-90, 90))  # rotor angle in turntable-only mode


# -- web ----------------------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """``web.listen`` as (host, port): ``HOST:PORT``, an IPv6 host in brackets (``[::1]:8080``).
    ValueError with the reason when it is not one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(ch.isspace() or ch in "[]/" for ch in host):
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(value: str) -> str | None:
    try:
        parse_listen(value)
    except ValueError as exc:
        return f"{_quote(value)}: {exc}"
    return None


@dataclass(frozen=True)
class WebConfig:
    """``web.*``: the scanner's web page (a process of its own, started by the daemon)."""

    enabled: bool = _field()
    listen: str = _field(_listen)  # HOST:PORT; anything but loopback needs a password
    password: str | None = _field(optional(lambda v: None if v else "is empty: set a password "
                                           "or null"))


# -- all ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    cloud: CloudConfig
    daemon: DaemonConfig
    jobs: JobsConfig
    rig: RigConfig
    camera: CameraConfig
    plan: PlanConfig
    web: WebConfig
    #: Where the values came from: the file read on top of the defaults, or None.
    source: str | None = field(default=None, compare=False)

    @property
    def data_dir(self) -> Path:
        """``daemon.data_dir``, or ``~/.local/share/openscan-pi`` for a user who cannot write
        the default."""
        return paths.data_dir(self.daemon.data_dir)

    @property
    def socket_path(self) -> Path:
        """``daemon.socket``, or ``$XDG_RUNTIME_DIR/openscan-pi/openscan-pi.sock`` for a user
        who cannot create the default."""
        return paths.socket_path(self.daemon.socket)
