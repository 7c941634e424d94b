"""Motion time estimates from the configuration alone (no pins opened): for the planner.

Both axes move at the same time, so a move takes as long as the slower axis; the turntable takes
the shortest way round (unless it has limits). Times follow the same trapezoid profiles the steppers run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from openscan_pi.rig.motion import move_time
from openscan_pi.schema import AxisConfig, RigConfig

#: Seconds from one ``(rotor, turntable)`` pose to another (what ``openscan_pi.plan.TimeFn`` takes:
#: the planner and the rig do not import each other).
TimeFn = Callable[[tuple[float, float], tuple[float, float]], float]
#: Step counts whose move time each axis of :func:`rig_time_fn` keeps.
CACHE_SIZE = 1 << 16


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
    """The planner's time function for this rig: ``(rotor, turntable) -> (rotor, turntable)``.

    A move's time depends only on its step count, so each axis remembers the times it has worked
    out (at most one per step count a move can have: the planner asks millions of times)."""
    rotor_time = functools.lru_cache(maxsize=CACHE_SIZE)(
        lambda steps: move_time(steps, rig.rotor.max_speed, rig.rotor.acceleration))
    turntable_time = functools.lru_cache(maxsize=CACHE_SIZE)(
        lambda steps: move_time(steps, rig.turntable.max_speed, rig.turntable.acceleration))

    wrap = rig.turntable.min_angle is None  # a turntable with limits never goes round

    def seconds(a: tuple[float, float], b: tuple[float, float]) -> float:
        return max(rotor_time(axis_steps(rig.rotor, a[0], b[0], wrap=False)),
                   turntable_time(axis_steps(rig.turntable, a[1], b[1], wrap=wrap)))

    return seconds
