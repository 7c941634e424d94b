"""Handlers of ``plan``, ``move``, ``home``, ``light``, ``capture`` and ``calibrate``.

When a daemon listens, it owns the hardware and these commands go through it (``rig.*`` methods);
with none, they drive the rig in this process.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from openscan_pi.commands.common import emit_json
from openscan_pi.commands.daemon import daemon_for
from openscan_pi.config import SYSTEM_CONFIG, Config, find_config_file, load_config
from openscan_pi.errors import ConfigError, InputError
from openscan_pi.fsutil import atomic_write_bytes


def _angles(cfg: Config) -> tuple[float, float]:
    """Where the rig is now: its saved position, or its configured start angles."""
    from openscan_pi.rig.state import load_position

    saved = load_position(cfg.data_dir, cfg.rig)
    if saved is None:
        return cfg.rig.rotor.start_angle, cfg.rig.turntable.start_angle
    return (saved[0] * 360.0 / cfg.rig.rotor.steps_per_rev,
            saved[1] * 360.0 / cfg.rig.turntable.steps_per_rev % 360.0)


def plan(args: argparse.Namespace, cfg: Config) -> int:
    """``plan --positions N``: the positions in capture order, with the motion time saved."""
    from openscan_pi.plan import MAX_POSITIONS, make_plan
    from openscan_pi.rig.estimate import rig_time_fn

    if args.positions < 1:
        raise InputError("--positions must be at least 1")
    if args.positions > MAX_POSITIONS:
        raise InputError(f"--positions must be at most {MAX_POSITIONS}")
    start = _angles(cfg)
    result = make_plan(args.positions, cfg.plan, rig_time_fn(cfg.rig), start)
    if args.json:
        emit_json([{"rotor": round(p.rotor, 3), "turntable": round(p.turntable, 3)}
                   for p in result.positions])
        return 0
    band = (f"rotor {cfg.plan.rotor_fixed:g}° (turntable only)" if cfg.plan.turntable_only
            else f"rotor {cfg.plan.rotor_min:g}..{cfg.plan.rotor_max:g}°")
    print(f"{len(result.positions)} positions, {band}, turntable over {cfg.plan.turntable_span:g}°"
          f" ({cfg.rig.model}), starting from rotor {start[0]:.1f}°, turntable {start[1]:.1f}°")
    print("    #    rotor  turntable")
    for number, p in enumerate(result.positions, 1):
        print(f"{number:5d}  {p.rotor:7.2f}  {p.turntable:9.2f}")
    saved = result.index_order_time_s - result.motion_time_s
    share = saved / result.index_order_time_s * 100 if result.index_order_time_s else 0.0
    print(f"estimated motion time: {result.motion_time_s:.1f} s (in lattice order: "
          f"{result.index_order_time_s:.1f} s; this order saves {share:.0f} %)")
    return 0


def _report(args: argparse.Namespace, text: str, data: dict[str, Any]) -> int:
    if args.json:
        emit_json(data)
    else:
        print(text)
    return 0


def move(args: argparse.Namespace, cfg: Config) -> int:
    """``move --rotor DEG --turntable DEG``."""
    from openscan_pi.rig.rig import Rig

    if args.rotor is None and args.turntable is None:
        raise InputError("give --rotor DEG and/or --turntable DEG")
    client = daemon_for(args, cfg)
    if client is not None:
        with client:
            at = client.call("rig.move", {k: v for k, v in (("rotor", args.rotor),
                                                             ("turntable", args.turntable))
                                          if v is not None})
        return _report(args, f"rotor {at['rotor']:.2f}°, turntable {at['turntable']:.2f}°", at)
    with Rig(cfg) as rig:
        rig.move(rotor=args.rotor, turntable=args.turntable)
        rotor, turntable = rig.angles()
    return _report(args, f"rotor {rotor:.2f}°, turntable {turntable:.2f}°",
                   {"rotor": rotor, "turntable": turntable})


def home(args: argparse.Namespace, cfg: Config) -> int:
    """``home``: find the endstop, or say where the start angle comes from."""
    from openscan_pi.rig.rig import Rig

    client = daemon_for(args, cfg)
    if client is not None:
        with client:
            result = client.call("rig.home")
        return _report(args, result["message"], result)
    with Rig(cfg) as rig:
        message = rig.home()
        rotor, turntable = rig.angles()
    return _report(args, message, {"message": message, "rotor": rotor, "turntable": turntable})


def light(args: argparse.Namespace, cfg: Config) -> int:
    """``light on|off``."""
    from openscan_pi.rig.rig import Rig

    if args.brightness is not None and not 0.0 <= args.brightness <= 1.0:
        raise InputError("--brightness must be between 0 and 1")
    client = daemon_for(args, cfg)
    if client is not None:
        params: dict[str, Any] = {"on": args.state == "on"}
        if args.brightness is not None:
            params["brightness"] = args.brightness
        with client:
            return _report(args, f"light {args.state}", client.call("rig.light", params))
    with Rig(cfg, camera=False) as rig:
        if args.state == "on":
            rig.light.on(args.brightness)
        else:
            rig.light.off()
        state = {"on": rig.light.is_on, "brightness": rig.light.brightness}
    return _report(args, f"light {args.state}", state)


def capture(args: argparse.Namespace, cfg: Config) -> int:
    """``capture FILE``: one photo at the current position."""
    from openscan_pi.rig.rig import Rig

    path = Path(args.file).expanduser().resolve()
    if path.is_dir():
        raise InputError(f"{path} is a folder: give a file name, e.g. {path / 'photo.jpg'}")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent} does not exist: create it first")
    client = daemon_for(args, cfg)
    if client is not None:
        return _capture_through(args, client, path)
    with Rig(cfg) as rig:
        shot = rig.capture(path, lens_position=args.lens_position)
    data = {"path": str(shot.path) if shot.path else None, "size": shot.size,
            "crc32": shot.crc32, "rotor": shot.rotor, "turntable": shot.turntable,
            "lens_position": shot.lens_position}
    where = f"{shot.path} ({shot.size / 1e6:.1f} MB)" if shot.path else "the external camera"
    return _report(args, f"photo saved to {where} at rotor {shot.rotor:.1f}°, turntable "
                         f"{shot.turntable:.1f}°", data)


def _capture_through(args: argparse.Namespace, client: Any, path: Path) -> int:
    """``capture`` by the daemon: the photo comes back in the answer and is written here."""
    import base64

    with client:
        result = client.call("rig.capture", {} if args.lens_position is None
                             else {"lens_position": args.lens_position})
    encoded = result.pop("jpeg_base64")
    if encoded is None:
        where = "the external camera"
        result["path"] = None
    else:
        atomic_write_bytes(path, base64.b64decode(encoded))
        where = f"{path} ({result['size'] / 1e6:.1f} MB)"
        result["path"] = str(path)
    return _report(args, f"photo saved to {where} at rotor {result['rotor']:.1f}°, turntable "
                         f"{result['turntable']:.1f}°", result)


def calibrate(args: argparse.Namespace, cfg: Config) -> int:
    """``calibrate AXIS``: turn by --degrees, or compute (and save) steps_per_rev."""
    axis_cfg = getattr(cfg.rig, args.axis)
    # The rotor's default fits every profile's limits from its start angle (0°).
    degrees = args.degrees if args.degrees is not None else (360.0 if args.axis == "turntable"
                                                            else 60.0)
    if degrees == 0:
        raise InputError("--degrees must not be 0")
    old = axis_cfg.steps_per_rev
    if args.measured is None:
        if args.write:
            raise InputError("--write needs --measured M (how far the axis really turned)")
        from openscan_pi.rig.rig import Rig

        client = daemon_for(args, cfg)
        if client is not None:
            with client:
                client.call("rig.turn", {"axis": args.axis, "degrees": degrees})
        else:
            with Rig(cfg, camera=False) as rig:
                rig.turn_by(args.axis, degrees)
        return _report(args, (
            f"turned the {args.axis} by {degrees:g}° using steps_per_rev {old:g} "
            f"({round(degrees * old / 360)} steps). Measure how far it really turned, then run:\n"
            f"  openscan-pi calibrate {args.axis} --degrees {degrees:g} --measured DEG --write"),
            {"axis": args.axis, "degrees": degrees, "steps_per_rev": old})
    if args.measured <= 0:
        raise InputError("--measured must be a positive number of degrees")
    new = round(old * degrees / args.measured, 2)
    result = {"axis": args.axis, "steps_per_rev": new, "previous": old, "written": None}
    text = f"rig.{args.axis}.steps_per_rev: {old:g} -> {new:g}"
    if args.write:
        target = _write_steps(args, args.axis, new)
        result["written"] = str(target)
        text += f" (saved in {target})"
    else:
        text += " (add --write to save it)"
    return _report(args, text, result)


def _write_steps(args: argparse.Namespace, axis: str, value: float) -> Path:
    """Set rig.<axis>.steps_per_rev in the config file in use; keep a .bak copy."""
    target = find_config_file(args.config) or SYSTEM_CONFIG
    data: dict[str, Any] = {}
    if target.exists():
        data = yaml.safe_load(target.read_text("utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{target}: expected a mapping of sections")
        shutil.copy2(target, target.with_name(target.name + ".bak"))
    rig = data.setdefault("rig", {})
    if not isinstance(rig, dict):
        raise ConfigError(f"{target}: rig: expected a mapping")
    section = rig.setdefault(axis, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{target}: rig.{axis}: expected a mapping")
    section["steps_per_rev"] = value
    text = yaml.safe_dump(data, sort_keys=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, text.encode())
    load_config(target, env={k: v for k, v in os.environ.items() if k != "OPENSCAN_PI_CONFIG"})
    return target
