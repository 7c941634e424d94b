"""The simulated rig's pins: gpiozero's ``MockFactory``, the rotor's endstop, the time scale.

``rig.model: simulated`` runs the very same stepper, motion, light and camera code as a real rig;
only the pins come from here. :class:`SimulatedPins` is what :class:`~openscan_pi.rig.rig.Rig`
asks for, in one place, when the rig is simulated: the pin factory, how much faster than real
time the moves run (``rig.sim_time_scale``), and what to do after each move (close or open the
simulated endstop to match the rotor's angle, and empty the ``MockPin`` histories, which would
otherwise grow with every step of a long run).

Example::

    sim = SimulatedPins(cfg)
    with Rig(cfg, pin_factory=sim.factory) as rig:  # what Rig(cfg) does for a simulated rig
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openscan_pi.config import Config

if TYPE_CHECKING:
    from openscan_pi.rig.rig import Rig


def mock_factory() -> Any:
    """gpiozero's ``MockFactory`` with PWM-capable pins (the ring light dims)."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    return MockFactory(pin_class=MockPWMPin)


class SimulatedPins:
    """The simulated parts of a rig: pins, endstop model and time scale, for ``cfg``."""

    def __init__(self, cfg: Config, *, pin_factory: Any = None) -> None:
        self.cfg = cfg
        self.factory = pin_factory if pin_factory is not None else mock_factory()
        #: Seconds of a simulated move per second of the real move.
        self.time_scale = cfg.rig.sim_time_scale
        self._rig: Rig | None = None

    def attach(self, rig: Rig) -> None:
        """Follow ``rig``'s rotor from now on; the endstop is set for where it stands."""
        self._rig = rig
        self.update_endstop()

    def update_endstop(self) -> None:
        """Drive the endstop pin to match the rotor's angle: closed at (or beyond) the endstop's
        angle in its direction, open elsewhere. Nothing without ``rig.endstop.pin``."""
        rig = self._rig
        cfg = self.cfg.rig.endstop
        if rig is None or cfg.pin is None:
            return
        pin = self.factory.pin(cfg.pin)
        beyond = (rig.rotor.angle - cfg.angle) * cfg.direction >= -1e-9
        closed = pin.drive_low if cfg.pull_up else pin.drive_high
        opened = pin.drive_high if cfg.pull_up else pin.drive_low
        (closed if beyond else opened)()

    def after_move(self) -> None:
        """The endstop follows the rotor; the MockPin histories are emptied."""
        self.update_endstop()
        if self._rig is not None:
            self._rig.motion.clear_pin_history()
