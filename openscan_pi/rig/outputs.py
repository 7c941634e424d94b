"""The output pins the rig drives (EN, DIR, ring light, camera trigger), never left floating.

gpiozero's ``LGPIOPin.close()`` "resets" a pin by claiming it again as an input with no pull, and
its factory does that to every pin when the process ends. An output the rig let go of then floats:
the drivers' EN (active low, pulled down on A4988/DRV8825 boards) enables the motors, which stay
energised and heat up after every ``openscan-pi move``; a floating trigger line can fire a DSLR.
gpiozero also claims an output at level 0 before it writes the initial value: a short enable
pulse at every start.

So on gpiozero's ``LGPIOFactory`` (a Raspberry Pi) :func:`output_device` gives an
:class:`LgpioOutput`: the pin is claimed on a gpiochip handle of the rig's own, directly at its
initial level, and :meth:`LgpioOutput.close` writes the idle level and keeps the line claimed;
lgpio only releases it when the last output of that chip closes, without re-claiming it as an
input. Raspberry Pi kernels keep a released output driven (``dtparam=strict_gpiod`` in
``config.txt`` makes them return it to an input: then only a pull resistor on the board holds the
line). On any other pin factory (gpiozero's mock pins, RPi.GPIO, native) it is gpiozero's
``DigitalOutputDevice``. A dimmed ring light (``rig.light.pwm``) stays a gpiozero
``PWMOutputDevice`` (its PWM is lgpio's, through gpiozero), and so does STEP with
``rig.step_backend: python``: those float once closed.

Example::

    en = output_device(22, pin_factory=Device.pin_factory, active_high=False)
    en.on()       # drivers enabled (pin low)
    en.close()    # drivers disabled (pin high), and kept so
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from gpiozero import DigitalOutputDevice

from openscan_pi.rig.errors import RigError
from openscan_pi.rig.lgpio_import import LgpioUnavailable, import_lgpio

_chips_lock = threading.Lock()
#: (id of the lgpio module, gpiochip) -> [handle, outputs using it, the module]
_chips: dict[tuple[int, int], list[Any]] = {}


def lgpio_call(lg: Any, name: str, *args: Any, where: str) -> Any:
    """``lgpio.<name>(*args)``; a negative status or an ``lgpio.error`` becomes a RigError that
    starts with ``where``."""
    try:
        result = getattr(lg, name)(*args)
    except lg.error as exc:
        raise RigError(f"{where}: {exc}") from exc
    if isinstance(result, int) and result < 0:
        raise RigError(f"{where}: {lg.error_text(result)}")
    return result


def is_lgpio_factory(pin_factory: Any) -> bool:
    """True for gpiozero's ``LGPIOFactory`` (imported only when it is in use)."""
    module = sys.modules.get("gpiozero.pins.lgpio")
    return module is not None and isinstance(pin_factory, module.LGPIOFactory)


class LgpioOutput:
    """One output GPIO claimed through lgpio on a handle shared by the rig's outputs of that chip,
    with the part of gpiozero's ``DigitalOutputDevice`` the rig uses: ``value`` (1 = active),
    :meth:`on`, :meth:`off`, :meth:`close`, :attr:`closed`. ``lgpio_module`` injects a double."""

    pin = None  #: not a gpiozero pin (no MockPin history to clear)

    def __init__(self, gpio: int, *, chip: int = 0, active_high: bool = True,
                 initial_value: bool = False, lgpio_module: Any = None) -> None:
        if lgpio_module is None:
            try:
                lgpio_module = import_lgpio()
            except LgpioUnavailable as exc:
                raise RigError(f"GPIO {gpio}: {exc} ({exc.fix})") from exc
        self._lg = lgpio_module
        self.gpio = gpio
        self.chip = chip
        self.active_high = active_high
        self._lock = threading.Lock()
        self._handle: int | None = None
        self._value = bool(initial_value)
        handle = self._acquire()
        try:
            # The same handle may hold the line already (a rig opened again): then the claim keeps
            # the old level, so the level is written as well.
            self._call("gpio_claim_output", handle, gpio, self._level(self._value))
            self._call("gpio_write", handle, gpio, self._level(self._value))
        except BaseException:
            self._release()
            raise
        self._handle = handle

    # -- gpiozero's interface -----------------------------------------------------------------------

    @property
    def value(self) -> int:
        """1 while active (e.g. the drivers enabled), else 0."""
        return int(self._value)

    @value.setter
    def value(self, value: Any) -> None:
        with self._lock:
            if self._handle is None:
                raise RigError(f"GPIO {self.gpio} is closed")
            self._call("gpio_write", self._handle, self.gpio, self._level(bool(value)))
            self._value = bool(value)

    def on(self) -> None:
        """Make the output active."""
        self.value = True

    def off(self) -> None:
        """Make the output inactive."""
        self.value = False

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """Drive the inactive level and leave the line so (idempotent)."""
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            try:
                self._call("gpio_write", handle, self.gpio, self._level(False))
                self._value = False
            finally:
                self._release()

    # -- internals ----------------------------------------------------------------------------------

    def _level(self, active: bool) -> int:
        return 1 if active == self.active_high else 0

    def _call(self, name: str, *args: Any) -> Any:
        return lgpio_call(self._lg, name, *args,
                          where=f"lgpio {name} on GPIO {self.gpio} (gpiochip{self.chip}) failed")

    def _acquire(self) -> int:
        key = (id(self._lg), self.chip)
        with _chips_lock:
            entry = _chips.get(key)
            if entry is None or entry[2] is not self._lg:
                entry = _chips[key] = [self._call("gpiochip_open", self.chip), 0, self._lg]
            entry[1] += 1
            return entry[0]

    def _release(self) -> None:
        """The last output of the chip closes the handle: its lines are released as they are."""
        key = (id(self._lg), self.chip)
        with _chips_lock:
            entry = _chips.get(key)
            if entry is None or entry[2] is not self._lg:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _chips[key]
        self._call("gpiochip_close", entry[0])

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"value={self.value}"
        return f"<LgpioOutput GPIO {self.gpio} gpiochip{self.chip} {state}>"


def output_device(gpio: int, *, pin_factory: Any, active_high: bool = True,
                  initial_value: bool = False) -> LgpioOutput | DigitalOutputDevice:
    """An output the rig drives: an :class:`LgpioOutput` on gpiozero's ``LGPIOFactory`` (on its
    gpiochip), else gpiozero's ``DigitalOutputDevice`` on ``pin_factory``."""
    if is_lgpio_factory(pin_factory):
        return LgpioOutput(gpio, chip=getattr(pin_factory, "chip", 0), active_high=active_high,
                           initial_value=initial_value)
    return DigitalOutputDevice(gpio, active_high=active_high, initial_value=initial_value,
                               pin_factory=pin_factory)
