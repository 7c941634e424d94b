"""How STEP pulses are made: a Python deadline loop, or lgpio's own C thread.

A backend emits one STEP pulse per deadline (seconds from the start of the move, see
:func:`openscan_pi.rig.motion.step_deadlines`) and reports how many it actually emitted, so that the
axis always knows where it is, even after a cancel.

- :class:`PythonStepBackend` drives a gpiozero :class:`~gpiozero.DigitalOutputDevice` from Python.
  It runs on any pin factory (gpiozero's ``MockFactory`` in the simulation and the tests) but its
  timing depends on the GIL and the scheduler.
- :class:`LgpioStepBackend` hands the pulse train to lgpio, whose transmit thread (C, started by
  ``gpiochip_open``) sleeps to absolute ``CLOCK_MONOTONIC`` times with 1 µs resolution; Python only
  keeps its wave queue topped up. It claims the STEP GPIO itself on its own gpiochip handle, so
  gpiozero must not claim STEP as well.

:func:`make_backend` picks one by name (``rig.step_backend``: ``auto``, ``python`` or ``lgpio``).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from gpiozero import DigitalOutputDevice

from openscan_pi.rig.errors import RigError
from openscan_pi.rig.lgpio_import import LgpioUnavailable, import_lgpio
from openscan_pi.rig.outputs import lgpio_call

log = logging.getLogger(__name__)

#: Minimum STEP high time. A4988 needs 1 µs, DRV8825 1.9 µs.
PULSE_S = 2e-6


@runtime_checkable
class StepBackend(Protocol):
    """Emits STEP pulses at given deadlines."""

    def run(self, deadlines: Sequence[float], *, cancel: threading.Event, time_scale: float = 1.0) -> int:
        """Emit one pulse per deadline, ``deadline * time_scale`` seconds after the call.

        Stops before the next step as soon as ``cancel.is_set()`` (backends poll ``is_set``; they
        never ``wait`` on it). Returns the number of steps actually emitted, and only returns once
        they have all left the pin (so DIR may change afterwards).
        """
        ...

    def close(self) -> None:
        """Release the STEP pin."""
        ...


def _as_floats(deadlines: Sequence[float]) -> list[float]:
    tolist = getattr(deadlines, "tolist", None)
    return tolist() if callable(tolist) else [float(d) for d in deadlines]


class PythonStepBackend:
    """STEP pulses from a Python deadline loop on a gpiozero output.

    Each step waits for its absolute deadline (``time.perf_counter``): it sleeps until ``spin_s``
    before it, then spins. A late step is emitted at once and the next one is still aimed at its own
    deadline, so lateness never accumulates. The pulse is held high at least :data:`PULSE_S`.

    Example::

        backend = PythonStepBackend(27, pin_factory=MockFactory())
        backend.run(step_deadlines(200, 5000, 20000), cancel=threading.Event())
    """

    def __init__(self, step_pin: int, *, pin_factory: Any = None, spin_s: float = 200e-6) -> None:
        self._device = DigitalOutputDevice(step_pin, initial_value=False, pin_factory=pin_factory)
        self.spin_s = spin_s

    @property
    def device(self) -> DigitalOutputDevice:
        """The gpiozero output on STEP (its ``pin`` is a ``MockPin`` in the simulation)."""
        return self._device

    def run(self, deadlines: Sequence[float], *, cancel: threading.Event, time_scale: float = 1.0) -> int:
        """See :meth:`StepBackend.run`."""
        times = _as_floats(deadlines)
        pin = self._device.pin
        clock = time.perf_counter
        sleep = time.sleep
        spin = self.spin_s
        start = clock()
        for done, deadline in enumerate(times):
            if cancel.is_set():
                return done
            due = start + deadline * time_scale
            remaining = due - clock()
            if remaining > spin:
                sleep(remaining - spin)
            while clock() < due:
                pass
            pin.state = True
            high = clock()
            while clock() - high < PULSE_S:
                pass
            pin.state = False
        return len(times)

    def close(self) -> None:
        """Close the STEP output."""
        self._device.close()


class LgpioStepBackend:
    """STEP pulses as lgpio ``tx_wave`` trains, timed by lgpio's C thread.

    The deadlines are rounded once to absolute microseconds and turned into pulses (one ``pulse``
    high for ``pulse_us``, one low until the next step), so the n-th rising edge is due exactly at
    the n-th rounded deadline: no error accumulates. The train is cut into chunks of about
    ``chunk_s`` of motion; at most ``max_ahead = ceil(lead_s / chunk_s)`` of them (and never more
    than ``tx_room`` allows) are handed to lgpio at a time, and Python tops the queue up every
    ``poll_s``. Python may therefore stall for about ``lead_s - chunk_s`` without the motor
    noticing; GIL contention and disk I/O do not move the edges.

    Cancel: once ``cancel`` is set no further chunk is queued; the chunks already queued still run.
    The motor therefore stops at most about ``lead_s`` (plus one step interval per queued chunk and
    ``poll_s`` to notice) after the cancel, 0.25 s with the defaults, and :meth:`run` returns the
    steps of the chunks that were sent, once they have been emitted. lgpio starts a new train at its
    thread's next wake-up, up to 20 ms after the first chunk is queued.

    ``lgpio_module`` injects a test double of the ``lgpio`` module and ``sleep`` a clock to go
    with it; by default ``lgpio`` is imported here (:func:`import_lgpio`), never at module level.
    """

    def __init__(self, step_pin: int, *, chip: int = 0, lgpio_module: Any = None, pulse_us: int = 5,
                 chunk_s: float = 0.05, lead_s: float = 0.25, poll_s: float = 0.01,
                 max_chunk_steps: int = 1000, sleep: Callable[[float], None] | None = None) -> None:
        if lgpio_module is None:
            try:
                lgpio_module = import_lgpio()
            except LgpioUnavailable as exc:
                if exc.installed:
                    raise RigError(f"rig.step_backend is lgpio but {exc}: {exc.fix}, or set "
                                   "rig.step_backend: python") from exc
                raise RigError("rig.step_backend is lgpio but the lgpio module is not installed: "
                               "apt install python3-lgpio, or set rig.step_backend: python") from exc
        self._lg = lgpio_module
        self.step_pin = step_pin
        self.chip = chip
        self.pulse_us = max(1, int(pulse_us))
        self.chunk_s = chunk_s
        self.lead_s = lead_s
        self.poll_s = poll_s
        self.max_chunk_steps = max(1, max_chunk_steps)
        self._sleep = sleep or time.sleep
        self._handle: int | None = None
        handle = self._call("gpiochip_open", chip)
        try:
            self._call("gpio_claim_output", handle, step_pin, 0)
        except BaseException:
            self._call("gpiochip_close", handle)
            raise
        self._handle = handle

    def _call(self, name: str, *args: Any) -> Any:
        """Call ``lgpio.<name>``; a negative status or an ``lgpio.error`` becomes a RigError."""
        return lgpio_call(self._lg, name, *args,
                          where=f"lgpio {name} on GPIO {self.step_pin} (gpiochip{self.chip}) failed")

    @property
    def max_ahead(self) -> int:
        """How many chunks may be queued in lgpio at once (before ``tx_room`` caps it)."""
        return max(1, math.ceil(self.lead_s / self.chunk_s - 1e-9))

    def encode(self, deadlines: Sequence[float], time_scale: float = 1.0) -> list[int]:
        """Deadlines as absolute integer microseconds, at least ``2 * pulse_us`` apart."""
        gap = 2 * self.pulse_us
        out: list[int] = []
        last = -gap
        for d in _as_floats(deadlines):
            t = max(round(d * time_scale * 1e6), last + gap, 0)
            out.append(t)
            last = t
        return out

    def chunks(self, times_us: Sequence[int]) -> list[tuple[int, list[Any]]]:
        """Cut a train into ``(steps, pulses)`` chunks of about ``chunk_s`` each."""
        return list(self._iter_chunks(times_us))

    def _iter_chunks(self, times_us: Sequence[int]) -> Any:
        pulse = self._lg.pulse
        width = self.pulse_us
        chunk_us = max(1, round(self.chunk_s * 1e6))
        n = len(times_us)
        i = 0
        while i < n:
            j = i + 1
            while j < n and j - i < self.max_chunk_steps and times_us[j] - times_us[i] < chunk_us:
                j += 1
            pulses = [pulse(0, 1, times_us[0])] if i == 0 else []  # low until the first step
            for k in range(i, j):
                gap = times_us[k + 1] - times_us[k] if k + 1 < n else width
                pulses.append(pulse(1, 1, width))
                pulses.append(pulse(0, 1, gap - width))
            yield j - i, pulses
            i = j

    def run(self, deadlines: Sequence[float], *, cancel: threading.Event, time_scale: float = 1.0) -> int:
        """See :meth:`StepBackend.run` and the class docstring for the cancel bound."""
        if self._handle is None:
            raise RigError(f"the lgpio step backend on GPIO {self.step_pin} is closed")
        times = self.encode(deadlines, time_scale)
        if not times:
            return 0
        lg, h, gpio = self._lg, self._handle, self.step_pin
        capacity = self._call("tx_room", h, gpio, lg.TX_WAVE)
        if capacity < 1 or self._call("tx_busy", h, gpio, lg.TX_WAVE):
            raise RigError(f"GPIO {gpio} is still sending a step train")
        ahead = min(self.max_ahead, capacity)
        sent = 0
        for steps, pulses in self._iter_chunks(times):
            while not cancel.is_set() and capacity - self._call("tx_room", h, gpio, lg.TX_WAVE) >= ahead:
                self._sleep(self.poll_s)
            if cancel.is_set():
                break
            self._call("tx_wave", h, gpio, pulses)
            sent += steps
        while self._call("tx_busy", h, gpio, lg.TX_WAVE):
            self._sleep(self.poll_s)
        return sent

    def close(self) -> None:
        """Free the STEP GPIO and close the gpiochip handle (idempotent)."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            self._call("gpio_free", handle, self.step_pin)
        finally:
            self._call("gpiochip_close", handle)


def lgpio_available(chip: int = 0) -> bool:
    """True when the ``lgpio`` module imports (see :func:`import_lgpio`) and ``/dev/gpiochip<chip>``
    exists. lgpio installed but unable to start is logged as a warning, with the fix."""
    try:
        import_lgpio()
    except LgpioUnavailable as exc:
        if exc.installed:
            log.warning("%s: STEP pulses will be timed by Python (%s)", exc, exc.fix)
        return False
    return os.path.exists(f"/dev/gpiochip{chip}")


def make_backend(kind: str, step_pin: int, *, pin_factory: Any = None,
                 chip: int | None = None) -> StepBackend:
    """The step backend named by ``rig.step_backend``.

    ``"python"``: :class:`PythonStepBackend` on ``pin_factory``; ``"lgpio"``:
    :class:`LgpioStepBackend`; ``"auto"``: lgpio when it imports and the gpiochip exists, unless
    the pin factory (``pin_factory``, else gpiozero's ``Device.pin_factory``) is gpiozero's
    ``MockFactory`` (a simulated rig, or ``GPIOZERO_PIN_FACTORY=mock``, never touches real GPIO), else
    python. ``chip`` defaults to the pin factory's own (``LGPIOFactory.chip``: 4 on a Pi 5 with an
    older kernel), else 0.
    """
    factory = pin_factory
    if factory is None:
        from gpiozero import Device

        factory = Device.pin_factory  # gpiozero's default, once a device has created it
    if chip is None:
        chip = getattr(factory, "chip", 0)
        chip = chip if isinstance(chip, int) else 0
    if kind == "python":
        return PythonStepBackend(step_pin, pin_factory=pin_factory)
    if kind == "lgpio":
        return LgpioStepBackend(step_pin, chip=chip)
    if kind != "auto":
        raise ValueError(f"unknown step backend {kind!r} (expected auto, python or lgpio)")
    from gpiozero.pins.mock import MockFactory

    if not isinstance(factory, MockFactory) and lgpio_available(chip):
        try:
            return LgpioStepBackend(step_pin, chip=chip)
        except RigError as exc:
            log.warning("lgpio step backend unavailable (%s): STEP pulses will be timed by Python", exc)
    return PythonStepBackend(step_pin, pin_factory=pin_factory)
