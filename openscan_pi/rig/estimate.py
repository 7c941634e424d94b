"""Motion time estimates from the configuration alone (no pins opened): for the planner.

Both axes move at the same time, so a move takes as long as the slower axis; the turntable takes
the shortest way round (unless it has limits). Times follow the same trapezoid profiles the steppers run.
"""

from __future__ import annotations

from openscan_pi.plan import TimeFn
from openscan_pi.rig.motion import move_time
from openscan_pi.schema import AxisConfig, RigConfig


def axis_steps(cfg: AxisConfig, start: float, end: float, *, wrap: bool) -> int:
    """How many steps a move from ``start`` to ``end`` degrees takes."""
    delta = end - start
    if wrap:
        delta = (delta + 180.0) % 360.0 - 180.0
    return abs(round(delta * cfg.steps_per_rev / 360.0))


def axis_seconds(cfg: AxisConfig, start: float, end: float, *, wrap: bool) -> float:
    """Seconds one axis needs from ``start`` to ``end`` degrees."""
    return move_time(axis_steps(cfg, start, end, wrap=wrap), cfg.max_speed, cfg.acceleration)


def rig_time_fn(rig: RigConfig) -> TimeFn:
    """The planner's time function for this rig: ``(rotor, turntable) -> (rotor, turntable)``."""
    def seconds(a: tuple[float, float], b: tuple[float, float]) -> float:
        return max(axis_seconds(rig.rotor, a[0], b[0], wrap=False),
                   axis_seconds(rig.turntable, a[1], b[1], wrap=rig.turntable.min_angle is None))

    return seconds
