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
import math
import os
import types
import typing
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal

import yaml

from openscan_pi.errors import ConfigError
from openscan_pi.paths import SYSTEM_CONFIG, find_config_file
from openscan_pi.schema import RIG_MODELS, Config, is_loopback, parse_listen
from openscan_pi.yamlload import HugeNumber, YamlRefused, digits, load

#: No config number needs more: larger ones (and anything Python cannot make a float of) are refused.
MAX_NUMBER = 10**18
#: Values and keys quoted in a message are cut to this many characters.
SHOWN = 60

__all__ = ["SYSTEM_CONFIG", "Config", "ConfigError", "SIMULATE_OVERRIDES", "find_config_file",
           "load_config"]

ENABLE_PINS = ("rig.rotor.enable_pin", "rig.turntable.enable_pin")


def default_config_text() -> str:
    """The annotated defaults file shipped inside the package."""
    return resources.files("openscan_pi").joinpath("data/openscan-pi.yaml").read_text("utf-8")


def profiles() -> dict[str, Any]:
    """The shipped rig profiles, by model name."""
    text = resources.files("openscan_pi").joinpath("data/profiles.yaml").read_text("utf-8")
    return _parse_yaml(text, "rig profiles")


def _parse_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = load(text)
    except YamlRefused as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{origin}: {where}{exc.problem}") from None
    except RecursionError:  # the loader's depth guard should have caught it first
        raise ConfigError(f"{origin}: nested too deeply (not a config)") from None
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
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_NUMBER:
        return f"a number of {digits(value)} digits"
    return _cut(repr(value))


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN else text[:SHOWN - 1] + "…"


def _numeric(value: Any) -> bool:
    """A string Python reads as a number (YAML 1.1 does not: ``1e3`` needs a dot and a sign)."""
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _too_large(value: Any) -> bool:
    return isinstance(value, HugeNumber) or (
        isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_NUMBER)


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in its typed form."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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
    if tp in (int, float) and _too_large(value):
        return _fail(path, f"{_describe(value)} is far too large")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return _fail(path, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (YAML reads that as text: write e.g. 1.0e+3 or 1000)" if _numeric(value) else ""
            return _fail(path, f"expected a number, got {_describe(value)}{hint}")
        if not math.isfinite(value):
            return _fail(path, f"expected a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            return _fail(path, f"expected a string, got {_describe(value)}")
        if "\0" in value:
            return _fail(path, "contains a NUL byte: remove it")
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
            name = _cut(str(key))
            where = f"{path}.{name}" if path else name
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
        except IsADirectoryError:
            raise ConfigError(f"{chosen}: is a folder: give --config a YAML file") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{chosen}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                              f"position {exc.start}): save it as UTF-8") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{chosen}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
        data = _merge(data, _parse_yaml(text, str(chosen)))
    if overrides:
        data = _merge(data, overrides)
    token = env.get("OPENSCAN_PI_TOKEN")
    if token and isinstance(data.get("cloud"), dict):
        data["cloud"]["token"] = token
    rig = data.get("rig")
    if isinstance(rig, dict) and rig.get("model") in RIG_MODELS:
        # The profile first, then whatever the files say about the rig.
        data["rig"] = _merge(profiles()[rig["model"]], rig)
    cfg = _build(Config, data, "")
    _check_rig(cfg)
    _check_web(cfg)
    return dataclasses.replace(cfg, source=str(chosen) if chosen else None)


def _check_rig(cfg: Config) -> None:
    """Checks that span several keys: pins used once, limits that make sense."""
    rig = cfg.rig
    pins: list[tuple[str, int | None]] = []
    for axis in ("rotor", "turntable"):
        a = getattr(rig, axis)
        pins += [(f"rig.{axis}.step_pin", a.step_pin), (f"rig.{axis}.dir_pin", a.dir_pin),
                 (f"rig.{axis}.enable_pin", a.enable_pin)]
        if (a.min_angle is None) != (a.max_angle is None):
            raise ConfigError(f"rig.{axis}: set both min_angle and max_angle, or neither")
        if a.min_angle is not None and a.max_angle is not None:
            if a.min_angle >= a.max_angle:
                raise ConfigError(f"rig.{axis}.min_angle: {a.min_angle} must be below "
                                  f"max_angle ({a.max_angle})")
            if not a.min_angle <= a.start_angle <= a.max_angle:
                raise ConfigError(f"rig.{axis}.start_angle: {a.start_angle} is outside "
                                  f"{a.min_angle}..{a.max_angle}")
    if rig.rotor.min_angle is None:
        raise ConfigError("rig.rotor: min_angle and max_angle are needed (the rotor has limits)")
    pins += [(f"rig.light.pins[{i}]", p) for i, p in enumerate(rig.light.pins)]
    pins += [("rig.endstop.pin", rig.endstop.pin), ("rig.trigger.pin", rig.trigger.pin)]
    seen: dict[int, str] = {}
    for key, pin in pins:
        if pin is None:
            continue
        other = seen.get(pin)
        if other is not None and not (key in ENABLE_PINS and other in ENABLE_PINS):
            raise ConfigError(f"{key}: GPIO {pin} is already {other} (only the two enable_pin "
                              "keys may share a pin)")
        seen.setdefault(pin, key)
    plan = cfg.plan
    if plan.rotor_min >= plan.rotor_max:
        raise ConfigError(f"plan.rotor_min: {plan.rotor_min} must be below plan.rotor_max "
                          f"({plan.rotor_max})")
    low, high = rig.rotor.min_angle, rig.rotor.max_angle
    assert low is not None and high is not None
    for key, value in (("rotor_min", plan.rotor_min), ("rotor_max", plan.rotor_max),
                       ("rotor_fixed", plan.rotor_fixed)):
        if not low <= value <= high:
            raise ConfigError(f"plan.{key}: {value} is outside the rotor's limits "
                              f"(rig.rotor.min_angle {low} .. max_angle {high})")


def _check_web(cfg: Config) -> None:
    """The web page off loopback only with a password."""
    web = cfg.web
    host, _port = parse_listen(web.listen)
    if web.enabled and web.password is None and not is_loopback(host):
        raise ConfigError(f"web.listen: {web.listen} is reachable from other machines and "
                          "web.password is not set: set web.password, or listen on "
                          "127.0.0.1:8080 and use `ssh -L 8080:localhost:8080 pi@scanner`")


SIMULATE_OVERRIDES: dict[str, Any] = {"rig": {"model": "simulated"}, "cloud": {"url": "local"}}
