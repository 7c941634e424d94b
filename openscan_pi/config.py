"""Configuration: find, merge and validate the YAML into typed, frozen objects.

The built-in defaults are the annotated file ``openscan_pi/data/openscan-pi.yaml`` (the same file as
``config/openscan-pi.yaml`` in the repository); a user's file only holds the keys it changes. Every
key is checked here, once, at start: an unknown key, a wrong type or an impossible value raises
:class:`~openscan_pi.errors.ConfigError` naming the key path, e.g.
``config: cloud.max_part_bytes: expected an integer, got 'lots'``.

Example::

    cfg = load_config("/etc/openscan-pi/config.yaml")
    cfg.cloud.max_part_bytes  # -> 200000000
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from openscan_pi.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/openscan-pi/config.yaml")
DEFAULT_DATA_DIR = "/var/lib/openscan-pi"
DEFAULT_SOCKET = "/run/openscan-pi/openscan-pi.sock"
RIG_MODELS = ("classic", "mini", "mini-v2", "midi", "simulated")

Check = Callable[[Any], "str | None"]


def _positive(value: float) -> str | None:
    return None if value > 0 else f"{value} must be greater than 0"


def _at_least(low: float) -> Check:
    def check(value: float) -> str | None:
        return None if value >= low else f"{value} must be at least {low}"

    return check


def _between(low: float, high: float) -> Check:
    def check(value: float) -> str | None:
        return None if low <= value <= high else f"{value} is out of range ({low}-{high})"

    return check


def _url(value: str) -> str | None:
    if value == "local":
        return None
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname:
        return None
    return f"{value!r} is not an http(s) URL or 'local'"


def _not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _absolute(value: str) -> str | None:
    return None if value.startswith(("/", "~")) else f"{value!r} must be an absolute path"


def _resolution(value: tuple[int, ...]) -> str | None:
    if len(value) != 2:
        return "expected [width, height]"
    if not all(64 <= v <= 20000 for v in value):
        return f"{list(value)} is not a sensible resolution (each side 64-20000 pixels)"
    return None


def _field(check: Check | None = None) -> Any:
    return field(metadata={"check": check} if check else {})


@dataclass(frozen=True)
class LocalCloudConfig:
    """Settings of the bundled local cloud (``cloud.url: local``)."""

    processing_s: float = _field(_at_least(0))


@dataclass(frozen=True)
class CloudConfig:
    """``cloud.*``: the OpenScan Cloud API and how patiently to talk to it."""

    url: str = _field(_url)
    token: str = _field()
    user: str = _field()
    password: str = _field()
    max_part_bytes: int = _field(_between(4096, 200_000_000))
    poll_interval_s: float = _field(_positive)
    poll_max_interval_s: float = _field(_positive)
    connect_timeout_s: float = _field(_positive)
    read_timeout_s: float = _field(_positive)
    retries: int = _field(_between(0, 100))
    backoff_s: float = _field(_between(0, 60))
    max_offline_s: float = _field(_at_least(0))
    link_margin_s: float = _field(_between(0, 3 * 3600))
    max_model_bytes: int = _field(_positive)
    local: LocalCloudConfig = _field()

    @property
    def is_local(self) -> bool:
        """True when the bundled local cloud is used."""
        return self.url == "local"


@dataclass(frozen=True)
class DaemonConfig:
    """``daemon.*``: where the daemon listens and keeps its data."""

    socket: str = _field(_absolute)
    data_dir: str = _field(_absolute)


@dataclass(frozen=True)
class RigConfig:
    """``rig.*``: the scanner hardware."""

    model: Literal["classic", "mini", "mini-v2", "midi", "simulated"] = _field()


@dataclass(frozen=True)
class CameraConfig:
    """``camera.*``: still capture settings."""

    resolution: tuple[int, ...] = _field(_resolution)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    cloud: CloudConfig
    daemon: DaemonConfig
    rig: RigConfig
    camera: CameraConfig
    #: Where the values came from: the file read on top of the defaults, or None.
    source: str | None = field(default=None, compare=False)

    @property
    def data_dir(self) -> Path:
        """``daemon.data_dir``, or ``~/.local/share/openscan-pi`` for a user who cannot write the default."""
        configured = Path(self.daemon.data_dir).expanduser()
        if self.daemon.data_dir == DEFAULT_DATA_DIR and not _writable(configured):
            base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
            return Path(base) / "openscan-pi"
        return configured

    @property
    def socket_path(self) -> Path:
        """``daemon.socket``, or ``$XDG_RUNTIME_DIR/openscan-pi/openscan-pi.sock`` for a user
        who cannot create the default."""
        configured = Path(self.daemon.socket).expanduser()
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if self.daemon.socket == DEFAULT_SOCKET and runtime and not _writable(configured.parent):
            return Path(runtime) / "openscan-pi" / "openscan-pi.sock"
        return configured


def _writable(path: Path) -> bool:
    """True when ``path`` exists and is writable, or could be created by this user."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return os.access(probe, os.W_OK | os.X_OK)


def default_config_text() -> str:
    """The annotated defaults file shipped inside the package."""
    return resources.files("openscan_pi").joinpath("data/openscan-pi.yaml").read_text("utf-8")


def _parse_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{origin}: {where}{exc.problem or exc} (not valid YAML)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections (cloud:, daemon:, ...), "
                          f"got {_describe(data)}")
    return data


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in its typed form."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            return _fail(path, f"expected one of {', '.join(map(str, choices))}, got {_describe(value)}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, path)
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(value, list):
            return _fail(path, f"expected a list, got {_describe(value)}")
        return tuple(_convert(item_type, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            return _fail(path, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return _fail(path, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _fail(path, f"expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            return _fail(path, f"expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a programming error


def _fail(path: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{path}: {message}")


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        _fail(path, f"expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name != "source"]
    known = {f.name for f in fields}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            _fail(where, f"unknown key (known here: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for f in fields:
        where = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            _fail(where, "missing")
        value = _convert(hints[f.name], data[f.name], where)
        check = f.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            _fail(where, problem)
        values[f.name] = value
    return cls(**values)


def find_config_file(explicit: str | os.PathLike[str] | None,
                     env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read, in lookup order, or None for the built-in defaults only."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("OPENSCAN_PI_CONFIG"):
        return Path(env["OPENSCAN_PI_CONFIG"])
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    return None


def load_config(path: str | os.PathLike[str] | None = None, *,
                env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Load the configuration in the documented lookup order and validate it.

    ``overrides`` (e.g. ``{"cloud": {"url": "local"}}`` for ``--simulate``) is merged last.
    Raises :class:`ConfigError` (exit status 78) on any problem.
    """
    env = os.environ if env is None else env
    data = _parse_yaml(default_config_text(), "built-in defaults")
    chosen = find_config_file(path, env)
    if chosen is not None:
        try:
            text = chosen.read_text("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{chosen}: no such file (check --config or $OPENSCAN_PI_CONFIG)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{chosen}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
        data = _merge(data, _parse_yaml(text, str(chosen)))
    if overrides:
        data = _merge(data, overrides)
    token = env.get("OPENSCAN_PI_TOKEN")
    if token and isinstance(data.get("cloud"), dict):
        data["cloud"]["token"] = token
    cfg = _build(Config, data, "")
    return dataclasses.replace(cfg, source=str(chosen) if chosen else None)


SIMULATE_OVERRIDES: dict[str, Any] = {"rig": {"model": "simulated"}, "cloud": {"url": "local"}}
