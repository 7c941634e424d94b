"""The rig assembled from the configuration: two axes, ring light, trigger, camera.

``rig.model: simulated`` runs the very same stepper, motion, light and camera code on the pins of
:class:`openscan_pi.sim.pins.SimulatedPins` (gpiozero's ``MockFactory`` with a simulated endstop),
only faster than real time by ``rig.sim_time_scale``, and with the simulated camera. On a Pi the
pins come from gpiozero's default factory (lgpio) and the STEP trains from lgpio's own thread
(``rig.step_backend``).

Example::

    with Rig(cfg) as rig:
        rig.move(rotor=30, turntable=90)
        shot = rig.capture(Path("/tmp/a.jpg"))
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from gpiozero.exc import GPIOZeroError

from openscan_pi.config import Config
from openscan_pi.paths import prepare_data_dir
from openscan_pi.rig.camera import Camera, Shot, lens_positions
from openscan_pi.rig.cameras import make_camera
from openscan_pi.rig.errors import RigError
from openscan_pi.rig.preview import Preview
from openscan_pi.rig.state import load_position, save_position
from openscan_pi.schema import AxisConfig

if TYPE_CHECKING:
    from openscan_pi.sim.pins import SimulatedPins

log = logging.getLogger(__name__)


def _pin_factory() -> Any:
    """gpiozero's default pin factory (lgpio on a Pi, or whatever ``GPIOZERO_PIN_FACTORY``
    names); a machine without GPIO gets a one-line RigError instead of gpiozero's traceback.

    ``Device.ensure_pin_factory()`` returns None: it only sets ``Device.pin_factory``, which is
    the factory every device made without one uses, so that is the one returned."""
    from gpiozero import Device
    from gpiozero.exc import BadPinFactory, PinFactoryFallback

    from openscan_pi.rig.lgpio_import import LgpioUnavailable, import_lgpio

    broken: LgpioUnavailable | None = None
    if Device.pin_factory is None:
        try:
            import_lgpio()  # before gpiozero's own import: LG_WD set, the working folder kept
        except LgpioUnavailable as exc:
            broken = exc if exc.installed else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PinFactoryFallback)
        try:
            Device.ensure_pin_factory()
        except BadPinFactory:
            if broken is not None:
                raise RigError(f"no GPIO here: gpiozero found no pin factory, and {broken}: "
                               f"{broken.fix}") from None
            raise RigError("no GPIO here: gpiozero found no pin factory (on a Raspberry Pi: "
                           "apt install python3-lgpio; elsewhere: --simulate or rig.model: "
                           "simulated)") from None
    if broken is not None:
        log.warning("%s (%s): gpiozero uses %s instead", broken, broken.fix,
                    type(Device.pin_factory).__name__)
    return Device.pin_factory


def calibrate_within(axis: str, cfg: AxisConfig, degrees: float) -> str:
    """How to calibrate an axis with limits: from one end, by most of its range."""
    low, high = cfg.min_angle, cfg.max_angle
    assert low is not None and high is not None  # only an axis with limits refuses a turn
    span = max(10, int((high - low) * 0.8) // 10 * 10)
    start, by = (low, span) if degrees > 0 else (high, -span)
    return (f"calibrate the {axis} within its range: `openscan-pi move --{axis} {start:g}`, then "
            f"`openscan-pi calibrate {axis} --degrees {by:g}`, and measure how far it turned")


class Rig:
    """The scanner's hardware, built from ``cfg`` (use as a context manager, or ``close()``)."""

    def __init__(self, cfg: Config, *, pin_factory: Any = None,
                 camera: Camera | None | bool = None,
                 cancel: threading.Event | None = None) -> None:
        from openscan_pi.rig.backends import make_backend
        from openscan_pi.rig.light import RingLight
        from openscan_pi.rig.stepper import Axis, Motion, SharedEnable
        from openscan_pi.rig.trigger import CameraTrigger

        prepare_data_dir(cfg.data_dir)  # where the position is kept: writable before anything moves
        self.cfg = cfg
        rig = cfg.rig
        self.simulated = rig.model == "simulated"
        self.sim: SimulatedPins | None = None
        if self.simulated:  # the one place the simulated parts are picked (the camera: make_camera)
            from openscan_pi.sim.pins import SimulatedPins

            self.sim = SimulatedPins(cfg, pin_factory=pin_factory)
            pin_factory = self.sim.factory
        self.time_scale = self.sim.time_scale if self.sim else 1.0
        self.pin_factory = pin_factory if pin_factory is not None else _pin_factory()
        self._closers: list[Any] = []
        self._own_cancel = cancel is None
        self.cancel = cancel if cancel is not None else threading.Event()
        try:
            pf = self.pin_factory
            kind = "python" if self.simulated else rig.step_backend
            enables: dict[int, SharedEnable] = {}

            def enable_for(pin: int | None) -> SharedEnable | None:
                if pin is None:
                    return None
                if pin not in enables:
                    enables[pin] = SharedEnable(pin, idle_disable_s=rig.idle_disable_s,
                                                pin_factory=pf)
                    self._closers.append(enables[pin])
                return enables[pin]

            axes = []
            # The turntable turns freely (the shortest way round) unless it has limits.
            for name, axis_cfg, wrap in (("rotor", rig.rotor, False),
                                         ("turntable", rig.turntable, rig.turntable.min_angle is None)):
                enable = enable_for(axis_cfg.enable_pin)
                backend = make_backend(kind, axis_cfg.step_pin, pin_factory=pf)
                try:
                    axis = Axis(name, axis_cfg, pin_factory=pf, backend=backend, enable=enable,
                                wrap=wrap)
                except BaseException:
                    backend.close()  # the axis owns it only once it exists
                    raise
                self._closers.append(axis)
                axes.append(axis)
            self.rotor, self.turntable = axes
            self.motion = Motion(self.rotor, self.turntable)
            saved = load_position(cfg.data_dir, rig)
            if saved is not None:
                self.rotor.position, self.turntable.position = saved
            self.light = RingLight(rig.light, pin_factory=pf)
            self._closers.append(self.light)
            self.trigger = (CameraTrigger(rig.trigger, pin_factory=pf)
                            if rig.trigger.pin is not None else None)
            if self.trigger is not None:
                self._closers.append(self.trigger)
            if self.sim:
                self.sim.attach(self)
            self.camera: Camera | None = None
            self._camera_started = False
            self._camera_info: dict[str, Any] = {}
            if camera is None or camera is True:
                self.camera = make_camera(cfg.camera, rig_model=rig.model, trigger=self.trigger)
            elif camera is not False:
                self.camera = camera
        except GPIOZeroError as exc:
            self.close()
            raise RigError(f"GPIO: {exc} (is another program, or the daemon, using the pins?)"
                           ) from None
        except BaseException:
            self.close()
            raise

    # -- motion -----------------------------------------------------------------------------------

    def angles(self) -> tuple[float, float]:
        """(rotor elevation, turntable angle in [0, 360)) in degrees."""
        return self.rotor.angle, self.turntable.angle % 360.0

    def _save(self) -> None:
        save_position(self.cfg.data_dir, self.cfg.rig, self.rotor.position, self.turntable.position)

    def move(self, *, rotor: float | None = None, turntable: float | None = None) -> None:
        """Move both axes at once; the position is saved even when the move is cut short."""
        try:
            self.motion.move(rotor, turntable, cancel=self.cancel, time_scale=self.time_scale)
        finally:
            self._save()
            if self.sim:
                self.sim.after_move()

    def turn_by(self, axis: str, degrees: float) -> None:
        """Turn one axis by ``degrees`` (calibration: the turntable may go round more than once;
        the rotor only within its limits, like every rotor move)."""
        if axis not in ("rotor", "turntable"):
            raise RigError(f"no axis {axis!r}: rotor or turntable")
        target: Any = getattr(self, axis)
        steps = round(degrees * target.cfg.steps_per_rev / 360.0)
        try:
            target.check_steps(steps)
        except RigError as exc:
            raise RigError(f"{exc}; {calibrate_within(axis, target.cfg, degrees)}") from None
        try:
            target.move_by_steps(steps, cancel=self.cancel, time_scale=self.time_scale)
        finally:
            self._save()

    def home(self) -> str:
        """Home the rotor on its endstop (or say why not); returns what happened."""
        from openscan_pi.rig.homing import home

        try:
            message = home(self.rotor, self.cfg.rig.endstop, pin_factory=self.pin_factory,
                           cancel=self.cancel, time_scale=self.time_scale,
                           on_step=self.sim.update_endstop if self.sim else None)
        finally:
            self._save()
        return message

    # -- camera -----------------------------------------------------------------------------------

    def start_camera(self) -> dict[str, Any]:
        """Open and settle the camera (once); returns what it says about itself."""
        if self.camera is None:
            raise RigError("this rig was opened without a camera")
        if not self._camera_started:
            self.light.on()  # settle exposure and colour under the scan's light
            self._camera_info = self.camera.start()
            self._camera_started = True
        return self._camera_info

    def capture(self, path: Path, *, index: int = 0, lens_position: float | None = None) -> Shot:
        """One photo at the current position, with the light on."""
        self.start_camera()
        if self.camera is None:
            raise RigError("this rig was opened without a camera")
        self.light.on()
        rotor, turntable = self.angles()
        return self.camera.capture(path, rotor=rotor, turntable=turntable, index=index,
                                   lens_position=lens_position)

    def preview(self, *, lens_position: float | None = None) -> Preview:
        """What the camera sees now, with the light on (see :mod:`openscan_pi.rig.preview`).
        Without ``lens_position``, the lens goes where a scan's photos are taken when that is one
        place (``camera.focus.mode: manual``); else it stays where it is."""
        info = self.start_camera()
        if lens_position is None:
            planned = lens_positions(self.cfg.camera.focus, bool(info.get("has_autofocus")))
            lens_position = planned[0] if len(planned) == 1 else None
        preview = getattr(self.camera, "preview", None)
        if preview is None:
            raise RigError("the external camera shows its picture on its own screen or "
                           "viewfinder: there is no preview here (camera.backend: external)")
        self.light.on()
        rotor, turntable = self.angles()
        return preview(rotor=rotor, turntable=turntable, lens_position=lens_position)

    # -- life -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop, switch off, release every pin (in reverse order of opening)."""
        if self._own_cancel:
            self.cancel.set()
        if getattr(self, "camera", None) is not None:
            self.camera.close()  # type: ignore[union-attr]
        for item in reversed(self._closers):
            item.close()
        self._closers.clear()

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
