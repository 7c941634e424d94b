"""Homing the rotor against its endstop switch, where the board has one.

Homing is the one motion that may cross what the axis believes are its limits (it is how the rotor
finds out where it really is), so it bounds its own travel. What protects the camera arm while it
searches: the switch itself stops the approach at the very next step (Python backend) or within one
short burst (lgpio); the search never goes further than the rotor could be from the switch — the
farther end of ``rig.rotor.min_angle..max_angle`` plus :data:`SEARCH_MARGIN_DEG` — nor longer than
``rig.endstop.timeout_s`` (in steps at ``rig.endstop.speed`` and on the wall clock); and the
back-off moves away from the switch.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from gpiozero import Button

from openscan_pi.rig.errors import MoveCancelled, RigError
from openscan_pi.rig.stepper import Axis
from openscan_pi.schema import EndstopConfig

log = logging.getLogger(__name__)

#: Homing moves in bursts of about this much time, checking the switch and cancel in between.
#: With the Python backend the switch also stops a burst at the very next step; with lgpio
#: (which queues a burst at once) it bounds the overshoot past the switch to one burst.
BURST_S = 0.02
#: The wall-clock guard: this many times the scaled ``timeout_s``, plus ``BURST_OVERHEAD_S`` per
#: burst (lgpio starts each burst's train up to 20 ms late and run() polls its end every 10 ms;
#: Python costs a little per burst, which dominates at tiny simulated time scales).
WALL_CLOCK_FACTOR = 2.0
BURST_OVERHEAD_S = 0.03
#: The search goes at most this far beyond the farther limit's distance from the switch (the arm's
#: mechanical range is a little wider than its configured limits).
SEARCH_MARGIN_DEG = 10.0


def home(axis: Axis, endstop_cfg: EndstopConfig, *, pin_factory: Any = None,
         cancel: threading.Event | None = None, time_scale: float = 1.0,
         on_step: Callable[[], None] | None = None) -> str:
    """Find the axis' position with its endstop; returns what happened, for the user.

    With ``endstop_cfg.pin``: moves toward the switch (``direction``) at ``speed`` steps/s until it
    closes, declares the angle there to be ``endstop_cfg.angle``, then backs off ``backoff_deg``.
    If the switch has not closed after the rotor's range (see :func:`search_degrees`) or
    ``timeout_s`` of homing motion (``speed * timeout_s`` steps, which also holds for instant
    simulated moves), whichever is shorter, or when the wall time exceeds
    ``WALL_CLOCK_FACTOR * timeout_s * time_scale`` plus ``BURST_OVERHEAD_S`` per burst (a backend
    that stalls), it raises RigError; the position is still known. Without an endstop nothing
    moves: the position comes from the config.

    ``on_step`` (a simulated rig's endstop model) is called before the approach, after each of its
    steps (the approach then moves one step at a time) and after the back-off.
    """
    name = axis.name
    cfg = endstop_cfg
    if cfg.pin is None:
        return (f"the {name} has no endstop (rig.endstop.pin is null): its start angle comes from the "
                f"config (rig.{name}.start_angle = {axis.cfg.start_angle:g}°); nothing moved")
    button = Button(cfg.pin, pull_up=cfg.pull_up, bounce_time=cfg.bounce_s or None, pin_factory=pin_factory)
    try:
        found = _approach(axis, cfg, button, cancel, time_scale, on_step)
        axis.set_angle(cfg.angle)
        backoff = -cfg.direction * round(cfg.backoff_deg * axis.cfg.steps_per_rev / 360.0)
        axis.seek(backoff, cancel=cancel, time_scale=time_scale, speed=cfg.speed)  # off the switch
        if on_step is not None:
            on_step()
        note = "; warning: the endstop still reads closed after backing off" if button.is_pressed else ""
        if note:
            log.warning("homing the %s: the endstop on GPIO %d is still closed after backing off",
                        name, cfg.pin)
        return (f"homed the {name}: the endstop closed after {found} steps at {cfg.angle:g}°; backed off "
                f"{abs(backoff)} steps to {axis.angle:.3f}°{note}")
    finally:
        button.close()


def search_degrees(axis: Axis, cfg: EndstopConfig) -> float | None:
    """How far the search may go: from the farther limit to the switch, plus the margin (None for
    an axis without limits)."""
    ends = [a for a in (axis.cfg.min_angle, axis.cfg.max_angle) if a is not None]
    if not ends:
        return None
    return max(abs(cfg.angle - end) for end in ends) + SEARCH_MARGIN_DEG


def _approach(axis: Axis, cfg: EndstopConfig, button: Button, cancel: threading.Event | None,
              time_scale: float, on_step: Callable[[], None] | None) -> int:
    """Step toward the switch until it closes; returns the steps taken."""
    pressed = threading.Event()
    button.when_pressed = pressed.set
    if on_step is not None:
        on_step()
    if button.is_pressed:
        pressed.set()
    burst = 1 if on_step is not None else max(1, round(cfg.speed * BURST_S))
    max_steps = math.ceil(cfg.speed * cfg.timeout_s)
    reach = search_degrees(axis, cfg)
    reach_steps = None if reach is None else round(reach * axis.cfg.steps_per_rev / 360.0)
    by_range = False
    if reach_steps is not None and reach_steps < max_steps:
        max_steps, by_range = reach_steps, True
    import numpy  # noqa: F401  (the step math's first import can take a second: not on the clock)

    started = time.monotonic()
    allowed = WALL_CLOCK_FACTOR * cfg.timeout_s * time_scale
    taken = bursts = 0
    try:
        while not pressed.is_set():
            if cancel is not None and cancel.is_set():
                raise MoveCancelled(f"homing the {axis.name} was cancelled after {taken} steps")
            stalled = time.monotonic() - started > allowed + bursts * BURST_OVERHEAD_S
            if taken >= max_steps and by_range:
                raise RigError(f"homing the {axis.name}: the endstop on GPIO {cfg.pin} did not trigger "
                               f"within {reach:g}° (the {axis.name}'s range, rig.{axis.name}.min_angle / "
                               f"rig.{axis.name}.max_angle, and a margin): check its wiring, or "
                               "rig.endstop.*")
            if taken >= max_steps or (time_scale > 0 and stalled):
                raise RigError(f"homing the {axis.name}: the endstop on GPIO {cfg.pin} did not trigger "
                               f"within {cfg.timeout_s:g} s: check its wiring, or rig.endstop.*")
            n = min(burst, max_steps - taken)
            bursts += 1
            try:
                axis.seek(cfg.direction * n, cancel=pressed, time_scale=time_scale, speed=cfg.speed)
            except MoveCancelled:
                if not pressed.is_set():
                    raise
            finally:
                taken += abs(axis.last_move_steps)
            if on_step is not None:
                on_step()
    finally:
        button.when_pressed = None
    return taken
