"""Where the axes are, kept on disk between runs (``<data_dir>/rig-state.json``).

Steppers have no encoders: the position the rig believes in is the steps it has sent. Saving it
after every move lets ``openscan-pi move`` in one run continue from where the last run left the
rig. A saved position is only trusted for the same model and gearing (steps per revolution).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from openscan_pi.fsutil import atomic_write_json, read_json
from openscan_pi.schema import RigConfig

log = logging.getLogger(__name__)

FILE_NAME = "rig-state.json"


def _identity(cfg: RigConfig) -> dict[str, Any]:
    return {"model": cfg.model, "rotor_steps_per_rev": cfg.rotor.steps_per_rev,
            "turntable_steps_per_rev": cfg.turntable.steps_per_rev}


def load_position(data_dir: Path, cfg: RigConfig) -> tuple[int, int] | None:
    """(rotor steps, turntable steps) saved for this rig, or None."""
    path = data_dir / FILE_NAME
    try:
        data = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s (%s): the rig starts from its configured start angles", path, exc)
        return None
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in _identity(cfg).items()):
        return None
    rotor, turntable = data.get("rotor_steps"), data.get("turntable_steps")
    if not isinstance(rotor, int) or not isinstance(turntable, int):
        return None
    return rotor, turntable


def save_position(data_dir: Path, cfg: RigConfig, rotor_steps: int, turntable_steps: int) -> None:
    """Durably record where the axes are."""
    atomic_write_json(data_dir / FILE_NAME, {**_identity(cfg), "rotor_steps": rotor_steps,
                                             "turntable_steps": turntable_steps})
