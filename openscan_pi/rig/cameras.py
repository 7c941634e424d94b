"""Which camera a rig has: the backend ``camera.backend`` names, made (not opened).

Its own module, above the backends (:mod:`.camera` is the interface they all import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from openscan_pi.rig.camera import Camera
from openscan_pi.rig.errors import CameraError
from openscan_pi.schema import CameraConfig

if TYPE_CHECKING:
    from openscan_pi.rig.trigger import CameraTrigger


def make_camera(cfg: CameraConfig, *, rig_model: str, trigger: CameraTrigger | None = None) -> Camera:
    """The camera ``cfg.backend`` names; ``auto`` means the simulated camera on a simulated rig
    and the Pi camera (picamera2) otherwise. ``external`` needs the rig's trigger.

    Nothing is opened here; :meth:`Camera.start` does that.
    """
    backend = cfg.backend
    if backend == "auto":
        backend = "simulated" if rig_model == "simulated" else "picamera2"
    if backend == "simulated":
        from openscan_pi.sim.camera import SimulatedCamera

        return SimulatedCamera(cfg)
    if backend == "picamera2":
        from openscan_pi.rig.picam import Picamera2Camera

        return Picamera2Camera(cfg)
    if backend == "external":
        if trigger is None:
            raise CameraError("camera.backend is external but the rig has no trigger: set "
                              "rig.trigger.pin to the GPIO wired to the camera's shutter release")
        from openscan_pi.rig.trigger import ExternalCamera

        return ExternalCamera(trigger)
    raise CameraError(f"unknown camera.backend {backend!r} (auto, picamera2, external, simulated)")
