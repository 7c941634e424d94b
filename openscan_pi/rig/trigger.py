"""An external camera (a DSLR or mirrorless) fired through its wired shutter release.

:class:`CameraTrigger` pulses one GPIO (through an optocoupler on the shield) the way a cable
release closes the shutter contact. :class:`ExternalCamera` is the
:class:`~openscan_pi.rig.camera.Camera` for such a rig: each capture fires the trigger, and the
photo stays on the camera's card, so its :class:`~openscan_pi.rig.camera.Shot` has no path.

So the photos on the card can be matched to positions afterwards, :class:`ExternalCamera` appends
one CSV line per shot to ``trigger-log.csv`` in the folder of the path it was asked to capture to:
the position index, rotor and turntable angles, lens position, trigger time (Unix seconds, UTC,
and ISO 8601) and the file name the photo would have had. The n-th photo on the card is the n-th
line. Each line is flushed and fsynced as it is written, so a power cut loses no line already
reported. The shots are also kept in memory (:attr:`ExternalCamera.shots`).
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openscan_pi.fsutil import disk_error
from openscan_pi.rig.camera import Shot
from openscan_pi.rig.errors import RigError
from openscan_pi.rig.outputs import output_device
from openscan_pi.schema import TriggerConfig

LOG_NAME = "trigger-log.csv"
LOG_HEADER = ("index", "rotor", "turntable", "lens_position", "triggered_at", "triggered_at_utc", "file")


class CameraTrigger:
    """The shutter-release pin: wait ``delay_before_s`` (the rig stops swinging), hold the pin
    active for ``pulse_s``, wait ``delay_after_s`` (the camera exposes and stores the photo).

    ``sleep`` is injectable for tests. Example::

        trigger = CameraTrigger(cfg.rig.trigger, pin_factory=MockFactory())
        when = trigger.fire()      # time.time() of the active edge
        trigger.close()
    """

    def __init__(self, cfg: TriggerConfig, *, pin_factory: Any = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if cfg.pin is None:
            raise RigError("rig.trigger.pin is not set: set it to the GPIO wired to the camera's "
                           "shutter release (10 on a Greenshield, 5 on a Blackshield)")
        self.cfg = cfg
        self._sleep = sleep
        self._lock = threading.Lock()
        # on a Pi the pin stays driven idle when closed (a floating line could fire the camera)
        self._device = output_device(cfg.pin, active_high=cfg.active_high, initial_value=False,
                                     pin_factory=pin_factory)

    @property
    def pin(self) -> int:
        """The BCM number of the trigger pin."""
        return int(self.cfg.pin)  # type: ignore[arg-type]

    def fire(self) -> float:
        """Release the shutter once; returns the wall-clock time (:func:`time.time`) at which
        the pin went active. Takes ``delay_before_s + pulse_s + delay_after_s``."""
        with self._lock:
            if self._device.closed:
                raise RigError("the camera trigger is closed")
            self._sleep(self.cfg.delay_before_s)
            fired_at = time.time()
            self._device.on()
            try:
                self._sleep(self.cfg.pulse_s)
            finally:
                self._device.off()
            self._sleep(self.cfg.delay_after_s)
            return fired_at

    def close(self) -> None:
        """Leave the pin idle and release it; calling it again does nothing."""
        with self._lock:
            self._device.close()

    def __enter__(self) -> CameraTrigger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ExternalCamera:
    """A camera that is only told when to shoot; it keeps its photos itself.

    The trigger belongs to the rig: :meth:`close` does not close it.
    """

    name = "external"

    def __init__(self, trigger: CameraTrigger, *, log_name: str | None = LOG_NAME) -> None:
        self.trigger = trigger
        self.log_name = log_name
        #: Every shot taken, in order.
        self.shots: list[Shot] = []

    def start(self) -> dict[str, Any]:
        """Nothing to open; reports how the camera is driven."""
        cfg = self.trigger.cfg
        return {"backend": self.name, "model": "external camera", "has_autofocus": False,
                "trigger_pin": self.trigger.pin, "pulse_s": cfg.pulse_s,
                "delay_before_s": cfg.delay_before_s, "delay_after_s": cfg.delay_after_s,
                "photos": "kept by the camera", "log": self.log_name}

    def capture(self, path: Path, *, rotor: float, turntable: float, index: int,
                lens_position: float | None = None) -> Shot:
        """Fire the trigger; record the shot in memory and in ``path.parent / trigger-log.csv``."""
        fired_at = self.trigger.fire()
        shot = Shot(path=None, size=0, crc32=0, lens_position=lens_position, captured_at=fired_at,
                    rotor=rotor, turntable=turntable, index=index)
        self.shots.append(shot)
        if self.log_name:
            self._log(Path(path).parent / self.log_name, shot, Path(path).name)
        return shot

    def close(self) -> None:
        """Nothing to release (the trigger is the rig's)."""

    def _log(self, log_path: Path, shot: Shot, file_name: str) -> None:
        utc = datetime.datetime.fromtimestamp(shot.captured_at, datetime.UTC)
        row = io.StringIO()
        writer = csv.writer(row, lineterminator="\n")
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a", encoding="utf-8", newline="") as fh:
                if fh.tell() == 0:
                    writer.writerow(LOG_HEADER)
                writer.writerow((shot.index, shot.rotor, shot.turntable,
                                 "" if shot.lens_position is None else shot.lens_position,
                                 f"{shot.captured_at:.3f}", utc.isoformat(timespec="milliseconds"),
                                 file_name))
                fh.write(row.getvalue())
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise disk_error(exc, log_path) from exc
