"""The ring light: two channels (two GPIOs) switched together, dimmable where the board drives
them with PWM, switched off by itself after a while unused."""

from __future__ import annotations

import logging
import threading
from typing import Any

from gpiozero import DigitalOutputDevice, PWMOutputDevice

from openscan_pi.rig.errors import RigError
from openscan_pi.rig.outputs import LgpioOutput, output_device
from openscan_pi.schema import LightConfig

log = logging.getLogger(__name__)

#: PWM frequency for dimming. Well above camera frame rates and typical exposures, so a photo
#: integrates many cycles and shows no banding.
PWM_FREQUENCY = 1000


class RingLight:
    """The ring light's channels, as one light.

    With ``cfg.pwm`` each channel is a :class:`gpiozero.PWMOutputDevice` and ``on(brightness)``
    dims it; otherwise each is an output of :func:`~openscan_pi.rig.outputs.output_device` (on a
    Pi left driven off when closed) and any brightness above 0 is fully on.
    ``cfg.active_high`` False drives the pins low for on.

    With ``cfg.idle_off_s`` set, the light switches itself off that long after the last
    :meth:`on` or :meth:`touch` (a scan touches it at every photo); None keeps it on.

    Example::

        light = RingLight(cfg.rig.light, pin_factory=MockFactory())
        light.on()            # cfg.brightness
        light.on(0.3)         # dimmer, on a PWM board
        light.off()
        light.close()
    """

    def __init__(self, cfg: LightConfig, *, pin_factory: Any = None) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._timer: threading.Timer | None = None
        self._generation = 0  # bumped on every on/touch/off: a stale timer does nothing
        self._brightness = 0.0
        self._closed = False
        self._devices: list[DigitalOutputDevice | PWMOutputDevice | LgpioOutput] = []
        try:
            for pin in cfg.pins:
                if cfg.pwm:
                    self._devices.append(PWMOutputDevice(pin, active_high=cfg.active_high, initial_value=0,
                                                         frequency=PWM_FREQUENCY, pin_factory=pin_factory))
                else:
                    self._devices.append(output_device(pin, active_high=cfg.active_high,
                                                       initial_value=False, pin_factory=pin_factory))
        except Exception:
            for device in self._devices:
                device.close()
            raise

    # -- state ------------------------------------------------------------------------------

    @property
    def is_on(self) -> bool:
        """True while the light is on (at any brightness above 0)."""
        with self._lock:
            return self._brightness > 0

    @property
    def brightness(self) -> float:
        """The current brightness, 0 (off) to 1."""
        with self._lock:
            return self._brightness

    # -- switching --------------------------------------------------------------------------

    def on(self, brightness: float | None = None) -> None:
        """Switch on at ``brightness`` (0-1; ``cfg.brightness`` when None) and re-arm the idle
        timer. On a board without PWM any brightness above 0 is full on; 0 switches off."""
        level = self.cfg.brightness if brightness is None else float(brightness)
        if not 0 <= level <= 1:
            raise RigError(f"light brightness {level} is out of range (0-1)")
        if not self.cfg.pwm and level > 0:
            level = 1.0
        with self._lock:
            self._check_open()
            self._apply(level)
            if level > 0:
                self._arm()
            else:
                self._disarm()

    def off(self) -> None:
        """Switch off and stop the idle timer."""
        with self._lock:
            if self._closed:
                return
            self._apply(0.0)
            self._disarm()

    def touch(self) -> None:
        """Note that the light is in use: the idle timer starts again. Does not switch it on."""
        with self._lock:
            self._check_open()
            if self._brightness > 0:
                self._arm()

    def wait_off(self, timeout: float | None = None) -> bool:
        """Block until the light is off (by :meth:`off`, the idle timer or :meth:`close`);
        False if ``timeout`` seconds passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._brightness == 0, timeout)

    def close(self) -> None:
        """Switch off, stop the timer and release the pins; calling it again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._apply(0.0)
            self._disarm()
            self._closed = True
            for device in self._devices:
                device.close()

    def __enter__(self) -> RingLight:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (called with the lock held) ----------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RigError("the ring light is closed")

    def _apply(self, level: float) -> None:
        for device in self._devices:
            device.value = level if self.cfg.pwm else level > 0
        self._brightness = level
        self._changed.notify_all()

    def _arm(self) -> None:
        self._disarm()
        if self.cfg.idle_off_s is None:
            return
        generation = self._generation
        self._timer = threading.Timer(self.cfg.idle_off_s, self._idle_off, args=(generation,))
        self._timer.daemon = True
        self._timer.name = "ring-light-idle"
        self._timer.start()

    def _disarm(self) -> None:
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle_off(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or self._closed:
                return
            log.info("ring light: off after %s s unused", self.cfg.idle_off_s)
            self._apply(0.0)
            self._timer = None
            self._generation += 1
