"""Cameras: the small interface every camera backend implements, and the helpers they share.

Three backends implement :class:`Camera`:

- :class:`~openscan_pi.rig.picam.Picamera2Camera`: the Pi camera through picamera2 (imported
  only when the camera starts; picamera2 exists only on Raspberry Pi OS);
- :class:`~openscan_pi.sim.camera.SimulatedCamera`: renders a textured object from the rig angles;
- :class:`~openscan_pi.rig.trigger.ExternalCamera`: a DSLR fired through the trigger pin; the DSLR
  keeps the photos, so its shots have no path.

A backend is started once (open, configure, settle and lock exposure), captures many times, and is
closed once. Each capture writes one JPEG atomically (:func:`write_photo`) and returns a
:class:`Shot` that carries the file's size and CRC-32, computed from the bytes in memory, so the
packaging step never has to read the photo again. A camera that gives no frame in time, even
after being opened again, raises :class:`CameraStalled`; a backend that can wedge in a library
call keeps a :class:`CallWatch` as ``watch`` (what call is in progress, and whether it is past
its bound). A call that never returns is ended from outside: the daemon's side of the rig worker
(:mod:`openscan_pi.rig.remote`) kills a worker whose capture overruns its bound.

Example::

    camera = make_camera(cfg.camera, rig_model=cfg.rig.model)  # openscan_pi.rig.cameras
    info = camera.start()
    for lens in lens_positions(cfg.camera.focus, info["has_autofocus"]):
        shot = camera.capture(folder / "IMG_0000.jpg", rotor=15, turntable=0, index=0,
                              lens_position=lens)
    camera.close()
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from openscan_pi.fsutil import atomic_write_bytes, disk_error
from openscan_pi.rig.errors import CameraError
from openscan_pi.schema import FocusConfig

if TYPE_CHECKING:
    pass

#: EXIF tag numbers written by :func:`exif_bytes`.
TAG_IMAGE_DESCRIPTION = 0x010E
TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
TAG_ORIENTATION = 0x0112
TAG_EXIF_IFD = 0x8769
TAG_USER_COMMENT = 0x9286

#: The 8-byte character code that starts an EXIF UserComment holding ASCII text.
USER_COMMENT_ASCII = b"ASCII\x00\x00\x00"


class CameraStalled(CameraError):
    """The camera gave no frame within ``camera.timeout_s``, on every try (``camera.retries``
    more, the camera closed and opened again before each): the scan stops at that position."""


class CallWatch:
    """The call into a camera library in progress and how long it may take, readable from any
    thread while the rig's thread is in the call. A call past its bound means
    the camera is wedged: a camera library that does not honour its timeout, a close that never
    returns.

    Example::

        with watch.bound("capture_request", 25.0):
            request = cam.capture_request(wait=10.0)
        watch.overdue()  # from another thread: None, or what has not returned for how long
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: tuple[str, float, float] | None = None  # (what, began, bound)

    @contextlib.contextmanager
    def bound(self, what: str, seconds: float) -> Iterator[None]:
        """The ``with`` body is a call named ``what`` that must return within ``seconds``."""
        with self._lock:
            previous, self._current = self._current, (what, time.monotonic(), seconds)
        try:
            yield
        finally:
            with self._lock:
                self._current = previous

    def overdue(self, now: float | None = None) -> str | None:
        """What call has been running past its bound, and for how long; None when none has."""
        with self._lock:
            current = self._current
        if current is None:
            return None
        what, began, seconds = current
        running = (time.monotonic() if now is None else now) - began
        if running <= seconds:
            return None
        return f"the camera's {what} has not returned for {running:.0f} s (bound {seconds:.0f} s)"


@dataclass(frozen=True)
class Shot:
    """What one capture produced.

    ``path`` is None for an external camera (the DSLR keeps the photo); then ``size`` and
    ``crc32`` are 0. ``crc32`` is the CRC-32 of the file's bytes, computed while writing.
    ``lens_position`` is in dioptres, or None when the camera focused by itself or has a
    fixed-focus lens. ``captured_at`` is wall-clock time (:func:`time.time`).
    """

    path: Path | None
    size: int
    crc32: int
    lens_position: float | None
    captured_at: float
    rotor: float
    turntable: float
    index: int


@runtime_checkable
class Camera(Protocol):
    """A camera the rig can use: start once, capture at each position, close once."""

    name: str

    def start(self) -> dict[str, Any]:
        """Open and configure the camera once, settle and lock exposure, gain and colour gains.

        Returns what a user wants to know: sensor model, resolution, ``has_autofocus`` (always
        present), the locked settings.
        """
        ...

    def capture(self, path: Path, *, rotor: float, turntable: float, index: int,
                lens_position: float | None = None) -> Shot:
        """Take one photo at the rig's current angles and write it to ``path``.

        ``lens_position`` (dioptres) focuses the lens there first; None runs an autofocus cycle
        on a camera that has autofocus.
        """
        ...

    def close(self) -> None:
        """Release the camera; calling it again does nothing."""
        ...


def lens_positions(focus: FocusConfig, has_autofocus: bool,
                   stack: int | None = None) -> list[float | None]:
    """The lens positions to capture at each camera position, in order; ``stack`` (a scan's
    own) replaces ``focus.stack``.

    - A camera without a focus motor (HQ camera with a manual lens, a DSLR that focuses itself):
      ``[None]`` whatever the settings; there is nothing to move, so a stack would only repeat
      the same photo.
    - ``stack == 1``: ``[None]`` in ``auto`` mode (an autofocus cycle per position),
      ``[focus.lens_position]`` in ``manual`` mode.
    - ``stack == k > 1``: ``k`` positions spread evenly over ``stack_range``, both ends included.
    """
    stack = focus.stack if stack is None else stack
    if not has_autofocus:
        return [None]
    if stack > 1:
        near, far = focus.stack_range
        step = (far - near) / (stack - 1)
        return [round(near + step * i, 6) for i in range(stack)]
    if focus.mode == "manual":
        return [float(focus.lens_position)]
    return [None]


def position_record(*, rotor: float, turntable: float, index: int,
                    lens_position: float | None) -> dict[str, Any]:
    """The position facts stored in each photo's EXIF (angles in degrees, lens in dioptres)."""
    return {"rotor": round(float(rotor), 4), "turntable": round(float(turntable), 4),
            "index": int(index),
            "lens_position": None if lens_position is None else round(float(lens_position), 4)}


def exif_bytes(*, orientation: int, rotor: float, turntable: float, index: int,
               lens_position: float | None, make: str, model: str) -> bytes:
    """An EXIF block (``b"Exif\\0\\0"`` + TIFF data, as Pillow's ``save(exif=...)`` takes it).

    Holds Orientation, Make, Model, ImageDescription = compact JSON
    ``{"rotor":..,"turntable":..,"index":..,"lens_position":..}`` and the same JSON as an ASCII
    UserComment in the Exif IFD (some tools show only one of the two).
    """
    from PIL import Image

    text = json.dumps(position_record(rotor=rotor, turntable=turntable, index=index,
                                      lens_position=lens_position), separators=(",", ":"))
    exif = Image.Exif()
    exif[TAG_ORIENTATION] = int(orientation)
    exif[TAG_MAKE] = make
    exif[TAG_MODEL] = model
    exif[TAG_IMAGE_DESCRIPTION] = text
    # The Exif IFD is assigned, not filled through get_ifd(): before Pillow 11.1 (Raspberry Pi OS
    # bookworm has 9.4) get_ifd() returns a fresh dict the Exif does not keep.
    exif[TAG_EXIF_IFD] = {TAG_USER_COMMENT: USER_COMMENT_ASCII + text.encode("ascii")}
    return exif.tobytes()


def write_photo(path: Path, data: bytes) -> tuple[int, int]:
    """Durably write ``data`` to ``path`` (temp file beside it, fsync, rename, fsync the folder).

    Returns ``(size, crc32)`` computed from ``data``. A failed write raises
    :class:`~openscan_pi.errors.DiskError` and leaves no temp file and no partial photo.
    """
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:  # mkdir of the folder; atomic_write_bytes converts the rest itself
        raise disk_error(exc, path) from exc
    return len(data), zlib.crc32(data)
