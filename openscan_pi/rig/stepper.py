"""Stepper axes: DIR and EN as outputs of :mod:`openscan_pi.rig.outputs`, STEP through a step backend.

The integer step count is the truth (steppers have no encoders); angles are derived from it.
:class:`Axis` is one driver (rotor or turntable), :class:`SharedEnable` the drivers' EN line (one pin
shared by both axes on Blackshield boards, absent on Greenshield boards) and :class:`Motion` moves
both axes at the same time. Example (simulated pins, instant moves)::

    factory = MockFactory()
    enable = SharedEnable(22, pin_factory=factory, idle_disable_s=None)
    rotor = Axis("rotor", cfg.rotor, pin_factory=factory,
                 backend=PythonStepBackend(cfg.rotor.step_pin, pin_factory=factory),
                 enable=enable, wrap=False)
    rotor.move_to(30, time_scale=0)
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from gpiozero import DigitalOutputDevice

from openscan_pi.rig.backends import StepBackend
from openscan_pi.rig.errors import MoveCancelled, RigError
from openscan_pi.rig.motion import move_time, step_deadlines
from openscan_pi.rig.outputs import LgpioOutput, output_device
from openscan_pi.schema import AxisConfig

log = logging.getLogger(__name__)

#: DIR setup time before the first STEP edge (A4988: 200 ns, DRV8825: 650 ns; with a margin).
DIR_SETUP_S = 5e-6


def clear_pin_history(*devices: Any) -> None:
    """Empty the recorded history of the devices' pins when they are gpiozero ``MockPin`` s.

    A simulated rig calls this after each move so that long runs do not grow the histories
    without bound; on real pins it does nothing.
    """
    for device in devices:
        pin = getattr(device, "pin", None)
        clear = getattr(pin, "clear_states", None)
        if callable(clear):
            clear()


class SharedEnable:
    """The drivers' EN line (active low on A4988/DRV8825), reference counted.

    :meth:`acquire` before a move enables the drivers, :meth:`release` after it. When the last user
    has released, the drivers are disabled again after ``idle_disable_s`` seconds without a move
    (``None``: they stay enabled and hold their position). One instance serves every axis wired to
    the same pin.
    """

    def __init__(self, pin: int, *, pin_factory: Any = None, idle_disable_s: float | None = None,
                 active_high: bool = False) -> None:
        self.pin_number = pin
        self.idle_disable_s = idle_disable_s
        self._device = output_device(pin, active_high=active_high, initial_value=False,
                                     pin_factory=pin_factory)
        self._cond = threading.Condition()
        self._users = 0
        self._timer: threading.Timer | None = None
        self._closed = False

    @property
    def device(self) -> DigitalOutputDevice | LgpioOutput:
        """The output on EN (``value`` 1 = drivers enabled; see :mod:`openscan_pi.rig.outputs`)."""
        return self._device

    @property
    def is_enabled(self) -> bool:
        """True while the drivers are enabled."""
        with self._cond:
            return bool(self._device.value)

    def acquire(self) -> None:
        """Enable the drivers for a move (nestable; pair with :meth:`release`)."""
        with self._cond:
            if self._closed:
                raise RigError(f"the drivers' enable line (GPIO {self.pin_number}) is closed")
            self._users += 1
            self._cancel_timer()
            if not self._device.value:
                self._device.on()
                self._cond.notify_all()

    def release(self) -> None:
        """End a move; the last release starts the idle timer."""
        with self._cond:
            if self._users == 0:
                raise RuntimeError("SharedEnable.release() without acquire()")
            self._users -= 1
            if self._users or self._closed or self.idle_disable_s is None:
                return
            if self.idle_disable_s == 0:
                self._disable()
                return
            timer = threading.Timer(self.idle_disable_s, self._idle_timeout)
            timer.daemon = True
            self._timer = timer
            timer.start()

    def wait_disabled(self, timeout: float | None = None) -> bool:
        """Block until the drivers are disabled; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._device.value, timeout)

    def clear_pin_history(self) -> None:
        """See :func:`clear_pin_history`."""
        clear_pin_history(self._device)

    def close(self) -> None:
        """Disable the drivers and release the pin (on a Pi it stays driven "disabled")."""
        with self._cond:
            self._closed = True
            self._cancel_timer()
            if not self._device.closed:
                self._disable()
                self._device.close()

    def _idle_timeout(self) -> None:
        with self._cond:
            if self._timer is threading.current_thread() and self._users == 0 and not self._closed:
                self._timer = None
                self._disable()

    def _disable(self) -> None:
        self._device.off()
        self._cond.notify_all()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def shared_enables(rotor: AxisConfig, turntable: AxisConfig, *, pin_factory: Any = None,
                   idle_disable_s: float | None = None) -> tuple[SharedEnable | None, SharedEnable | None]:
    """One :class:`SharedEnable` per distinct EN pin (shared when both axes use the same pin)."""
    cache: dict[int, SharedEnable] = {}

    def get(pin: int | None) -> SharedEnable | None:
        if pin is None:
            return None
        if pin not in cache:
            cache[pin] = SharedEnable(pin, pin_factory=pin_factory, idle_disable_s=idle_disable_s)
        return cache[pin]

    return get(rotor.enable_pin), get(turntable.enable_pin)


class _LinkedEvent(threading.Event):
    """An event that also reads as set when its parent is set (backends poll ``is_set``)."""

    def __init__(self, parent: threading.Event | None) -> None:
        super().__init__()
        self._parent = parent

    def is_set(self) -> bool:
        return super().is_set() or (self._parent is not None and self._parent.is_set())


class Axis:
    """One stepper axis.

    ``wrap=True`` (turntable): any angle, reached the shortest way round, any number of turns.
    ``wrap=False`` (rotor): every move that would end outside ``cfg.min_angle..cfg.max_angle`` is
    refused before a pin changes, whichever way it was asked for (:meth:`move_to`,
    :meth:`move_by_steps`, :class:`Motion`); only homing's :meth:`seek` may cross them, since it is
    what finds out where the axis is. ``steps_per_rev`` may be fractional: the target of an angle is
    ``round(angle * steps_per_rev / 360)`` steps, always computed from the absolute angle, so that
    moves never drift. Takes ownership of ``backend``, not of ``enable``.
    """

    def __init__(self, name: str, cfg: AxisConfig, *, pin_factory: Any = None, backend: StepBackend,
                 enable: SharedEnable | None, wrap: bool) -> None:
        self.name = name
        self.cfg = cfg
        self.wrap = wrap
        self._backend = backend
        self._enable = enable
        self._dir = output_device(cfg.dir_pin, initial_value=False, pin_factory=pin_factory)
        self._lock = threading.Lock()
        self._steps = self._normalise(self.steps_for(cfg.start_angle))
        self._last_move = 0

    # -- position -------------------------------------------------------------------------------

    @property
    def steps(self) -> int:
        """The step position (0 = angle 0)."""
        return self._steps

    @property
    def position(self) -> int:
        """The step position (same as :attr:`steps`); assigning it is :meth:`set_steps`."""
        return self._steps

    @position.setter
    def position(self, steps: int) -> None:
        self.set_steps(steps)

    @property
    def last_move_steps(self) -> int:
        """Signed steps the last move actually emitted (also after a cancel)."""
        return self._last_move

    @property
    def angle(self) -> float:
        """Degrees, from the step position (in [0, 360) for a wrapping axis)."""
        angle = self._steps * 360.0 / self.cfg.steps_per_rev
        return angle % 360.0 if self.wrap else angle

    def steps_for(self, angle: float) -> int:
        """The step position of an absolute angle."""
        return round(angle * self.cfg.steps_per_rev / 360.0)

    def set_angle(self, angle: float) -> None:
        """Declare where the axis is, without moving (homing, calibration)."""
        self.set_steps(self.steps_for(angle))

    def set_steps(self, steps: int) -> None:
        """Declare the step position, without moving (e.g. restored from rig-state.json)."""
        with self._lock:
            self._steps = self._normalise(int(steps))

    def _normalise(self, steps: int) -> int:
        # A wrapping axis with a whole number of steps per turn keeps its count in one turn.
        spr = self.cfg.steps_per_rev
        if self.wrap and float(spr).is_integer():
            return steps % int(spr)
        return steps

    def target_steps(self, angle: float) -> int:
        """The step position a move to ``angle`` ends at; RigError beyond a limit."""
        if not math.isfinite(angle):
            raise RigError(f"the {self.name} cannot go to {angle}°")
        if self.wrap:
            current = self._steps * 360.0 / self.cfg.steps_per_rev
            turns = round((current - angle) / 360.0)
            nearest = angle + 360.0 * turns
            # round() breaks ties to even: make the way round deterministic (shorter, else forward)
            if nearest - current > 180.0:
                nearest -= 360.0
            elif nearest - current < -180.0:
                nearest += 360.0
            return self.steps_for(nearest)
        low, high = self.cfg.min_angle, self.cfg.max_angle
        eps = 1e-9
        if (low is not None and angle < low - eps) or (high is not None and angle > high + eps):
            raise RigError(f"the {self.name} cannot go to {angle:g}°: {self._limits_text()}")
        return self.steps_for(angle)

    @property
    def limited(self) -> bool:
        """True for an axis that must stay within ``min_angle..max_angle`` (not a wrapping one)."""
        return not self.wrap and (self.cfg.min_angle is not None or self.cfg.max_angle is not None)

    def _limits_text(self) -> str:
        low, high = self.cfg.min_angle, self.cfg.max_angle
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        return (f"its limits are {lo}° to {hi}° (rig.{self.name}.min_angle / "
                f"rig.{self.name}.max_angle)")

    def check_steps(self, steps: int) -> None:
        """RigError when a move of ``steps`` from here would end outside the limits.

        The limits in steps are those of :meth:`steps_for`, so that a move to a limit itself is
        allowed whatever the gearing.
        """
        if not self.limited or steps == 0:
            return
        end = self._steps + steps
        low, high = self.cfg.min_angle, self.cfg.max_angle
        if (low is not None and end < self.steps_for(low)) or (
                high is not None and end > self.steps_for(high)):
            spr = self.cfg.steps_per_rev
            raise RigError(f"the {self.name} cannot turn by {steps * 360.0 / spr:.4g}° from "
                           f"{self.angle:.4g}°: it would end at {end * 360.0 / spr:.4g}°, and "
                           f"{self._limits_text()}")

    def planned_steps(self, angle: float) -> int:
        """Signed steps a move from here to ``angle`` takes; RigError beyond a limit."""
        return self.target_steps(angle) - self._steps

    def move_time_to(self, angle: float) -> float:
        """Seconds a move from here to ``angle`` takes (the planner's cost)."""
        return move_time(self.planned_steps(angle), self.cfg.max_speed, self.cfg.acceleration)

    # -- moving ---------------------------------------------------------------------------------

    def move_to(self, angle: float, *, cancel: threading.Event | None = None,
                time_scale: float = 1.0) -> None:
        """Move to ``angle`` degrees (see :meth:`move_by_steps` for cancel and time_scale)."""
        self.move_by_steps(self.planned_steps(angle), cancel=cancel, time_scale=time_scale)

    def move_by_steps(self, steps: int, *, cancel: threading.Event | None = None, time_scale: float = 1.0,
                      speed: float | None = None) -> None:
        """Move ``steps`` steps (negative: backwards) along the trapezoid profile.

        A move that would end outside the limits raises RigError before any pin changes.
        ``speed``: a constant speed in steps/s without a ramp instead. ``time_scale`` multiplies
        every time (0: instant, for simulation). The position is updated by the steps actually
        emitted; when ``cancel`` stopped the move it then raises :class:`MoveCancelled`.
        """
        self._move(int(steps), cancel=cancel, time_scale=time_scale, speed=speed, checked=True)

    def seek(self, steps: int, *, speed: float, cancel: threading.Event | None = None,
             time_scale: float = 1.0) -> None:
        """Homing's move: ``steps`` at a constant ``speed``, not checked against the limits.

        Only homing uses it: it is how the axis finds out where it really is, so what it believes
        may be past a limit. Homing bounds this travel itself (the axis' range and
        ``rig.endstop.timeout_s``, see :mod:`openscan_pi.rig.homing`).
        """
        self._move(int(steps), cancel=cancel, time_scale=time_scale, speed=speed, checked=False)

    def _move(self, steps: int, *, cancel: threading.Event | None, time_scale: float,
              speed: float | None, checked: bool) -> None:
        if steps == 0:
            return
        if speed is None:
            profile = step_deadlines(steps, self.cfg.max_speed, self.cfg.acceleration)
        else:
            profile = step_deadlines(steps, speed, math.inf)
        deadlines: list[float] = profile.tolist()  # StepBackend.run takes a Sequence: an array is not one
        stop = cancel if cancel is not None else threading.Event()
        sign = 1 if steps > 0 else -1
        with self._lock:
            if checked:
                self.check_steps(steps)
            emitted = 0
            self._last_move = 0
            if self._enable is not None:
                self._enable.acquire()
            try:
                self._dir.value = (sign > 0) != self.cfg.invert
                settled = time.perf_counter() + DIR_SETUP_S
                while time.perf_counter() < settled:
                    pass
                emitted = self._backend.run(deadlines, cancel=stop, time_scale=time_scale)
            except BaseException:
                log.error("the %s move failed: its position may be off by up to %d steps",
                          self.name, abs(steps))
                raise
            finally:
                self._last_move = sign * emitted
                self._steps = self._normalise(self._steps + sign * emitted)
                if self._enable is not None:
                    self._enable.release()
        if emitted < abs(steps):
            raise MoveCancelled(f"the {self.name} move was cancelled after {emitted} of {abs(steps)} steps; "
                                f"it is at {self.angle:.3f}°")

    def clear_pin_history(self) -> None:
        """See :func:`clear_pin_history` (DIR, STEP on a Python backend; not the shared EN)."""
        clear_pin_history(self._dir, getattr(self._backend, "device", None))

    def close(self) -> None:
        """Release DIR and the step backend."""
        with self._lock:
            self._dir.close()
            self._backend.close()

    def __repr__(self) -> str:
        return f"<Axis {self.name} steps={self._steps} angle={self.angle:.3f}>"


class Motion:
    """Both axes, moved at the same time."""

    def __init__(self, rotor: Axis, turntable: Axis) -> None:
        self.rotor = rotor
        self.turntable = turntable

    def time_to(self, rotor: float | None, turntable: float | None) -> float:
        """Seconds a :meth:`move` to these angles takes from here (the slower axis)."""
        times = [axis.move_time_to(angle) for axis, angle in self._targets(rotor, turntable)]
        return max(times, default=0.0)

    def move(self, rotor: float | None, turntable: float | None, *, cancel: threading.Event | None = None,
             time_scale: float = 1.0) -> None:
        """Move the rotor and the turntable to their angles (None: stays) concurrently.

        Both targets are checked before anything moves. A cancel stops both; an error in one axis
        stops the other and is re-raised once both threads have ended.
        """
        jobs = [(axis, axis.planned_steps(angle)) for axis, angle in self._targets(rotor, turntable)]
        jobs = [(axis, steps) for axis, steps in jobs if steps]
        if not jobs:
            return
        if len(jobs) == 1:
            axis, steps = jobs[0]
            axis.move_by_steps(steps, cancel=cancel, time_scale=time_scale)
            return
        stop = _LinkedEvent(cancel)
        errors: list[BaseException] = []

        def run(axis: Axis, steps: int) -> None:
            try:
                axis.move_by_steps(steps, cancel=stop, time_scale=time_scale)
            except BaseException as exc:  # re-raised in the caller's thread below
                errors.append(exc)
                stop.set()

        threads = [threading.Thread(target=run, args=job, name=f"move-{job[0].name}") for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            real = [e for e in errors if not isinstance(e, MoveCancelled)]
            raise (real or errors)[0]

    def clear_pin_history(self) -> None:
        """Clear both axes' MockPin histories (see :func:`clear_pin_history`)."""
        self.rotor.clear_pin_history()
        self.turntable.clear_pin_history()

    def _targets(self, rotor: float | None, turntable: float | None) -> list[tuple[Axis, float]]:
        return [(axis, angle) for axis, angle in ((self.rotor, rotor), (self.turntable, turntable))
                if angle is not None]
