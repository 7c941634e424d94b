"""A test double of the picamera2 API the camera adapter uses, recording every call, and failing
the way the real one does.

It mirrors picamera2's names, arguments and data shapes (read from raspberrypi/picamera2 0.3.x:
``picamera2.py``, ``job.py``, ``request.py``; the divergences a simple double would hide are
listed in the project's notes on the real stack):

- ``Picamera2(camera_num=0, tuning=None)`` raises IndexError when there is no camera, and
  RuntimeError("Failed to acquire camera: Device or resource busy") while another instance still
  holds it (one that was never closed, or whose close failed);
- ``camera_properties`` (``Model``, ``PixelArraySize``, ...; ``{}`` once closed) and
  ``camera_controls`` (name -> ``(min, max, default)``); ``camera_controls["ScalerCrop"][1]`` is
  the crop of the sensor mode the last ``configure`` chose (a small output size gets a cropped,
  binned mode, as libcamera picks it), not the whole pixel array;
- ``create_still_configuration(main={}, lores=None, raw={}, ..., buffer_count=1, controls={},
  ..., sensor={}, use_case="still")``: a raw stream by default (at the main size) and the
  ``NoiseReductionMode`` and ``FrameDurationLimits (100, 1e9)`` controls added; stream keys
  ``format``, ``size``, ``stride``, ``preserve_ar``; ``configure`` fills in ``stride`` and
  ``framesize`` (the raw stream's too: that buffer is memory a small Pi does not have);
- ``set_controls`` refuses controls the camera does not advertise, and a control takes effect
  :data:`CONTROL_DELAY` frames later (the next recycled request, then the sensor's own delay);
  controls set before ``start`` go with the first frames;
- frames come at ``frame_s`` intervals of real time while the camera is started;
- every call that waits for a frame (``capture_request``, ``capture_metadata``,
  ``autofocus_cycle``) takes ``wait``: ``None``/``True`` waits as long as it takes, a number of
  seconds raises ``TimeoutError`` when no result came in time. A call that times out stays queued
  (as a picamera2 job does) until ``cancel_all_and_flush()``;
- a stalled camera (``stall_after``) delivers no frame: a call blocks until its ``wait`` runs out,
  then raises ``TimeoutError``. With no ``wait`` it would block for ever on a real camera; here it
  blocks for :data:`FOREVER_S` (or until the stall ends) and then raises :class:`BlockedForever`
  (a BaseException, so no ``except Exception`` swallows it), recorded in ``module.forever``;
- with one buffer, a second request while one is held stalls the same way (it does not raise);
- ``autofocus_cycle()`` sets ``AfMode`` Auto + ``AfTrigger`` Start, then waits for a frame whose
  ``AfState`` is Scanning, then one that is Focused, Failed or Idle: the scan takes
  :data:`AF_SCAN_FRAMES` frames after the controls' delay, hundreds of ms on a real camera;
- ``stop()`` while started goes through the camera's job queue: behind a job that timed out on a
  stalled camera (not flushed) it blocks for ever; ``stop_errors`` makes libcamera's stop fail
  (RuntimeError), leaving the camera started and acquired;
- ``close()`` stops the camera itself (directly, not through the queue), then releases it; when
  that stop fails, close raises and the camera stays acquired; closing again is allowed;
- ``legacy=True`` is picamera2 before 0.3.20: no ``cancel_all_and_flush`` and a numeric ``wait``
  is taken as "wait as long as it takes".

The frame shows a known pattern, inside the RGB gamut: Y rises left to right from 60 to 190; U
is 110 in the left half and 150 in the right; V is 150 in the top half and 110 in the bottom; the
stride padding holds 0xEE so a reader that ignores the stride produces visibly wrong colours.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np


class AfModeEnum(enum.IntEnum):
    Manual = 0
    Auto = 1
    Continuous = 2


class AfTriggerEnum(enum.IntEnum):
    Start = 0
    Cancel = 1


class AfStateEnum(enum.IntEnum):
    Idle = 0
    Scanning = 1
    Focused = 2
    Failed = 3


class NoiseReductionModeEnum(enum.IntEnum):
    Off = 0
    Fast = 1
    HighQuality = 2


#: Stands in for ``libcamera.controls``.
controls = SimpleNamespace(AfModeEnum=AfModeEnum, AfTriggerEnum=AfTriggerEnum, AfStateEnum=AfStateEnum,
                           draft=SimpleNamespace(NoiseReductionModeEnum=NoiseReductionModeEnum))

#: Frames between ``set_controls`` and the frame that shows the new values.
CONTROL_DELAY = 3
#: Frames an autofocus scan takes once it has started.
AF_SCAN_FRAMES = 8
#: How long a call that blocks for ever on a real camera blocks here before failing the test.
FOREVER_S = 20.0


class BlockedForever(BaseException):  # noqa: N818 - it is not an error of the code under test's making
    """A call that a real picamera2 would never return from (no ``wait`` on a stalled camera, a
    ``stop()`` queued behind a hung job). A BaseException so that no ``except Exception`` in the
    code under test hides it."""


IMX708 = {  # Camera Module 3: autofocus
    "properties": {"Model": "imx708", "PixelArraySize": (4608, 2592),
                   "PixelArrayActiveAreas": [(16, 24, 4608, 2592)],
                   "ScalerCropMaximum": (0, 0, 4608, 2592), "ColorFilterArrangement": 0,
                   "Location": 2, "Rotation": 180},
    # sensor modes: output size -> the part of the pixel array it sees (ScalerCrop's maximum)
    "modes": [((1536, 864), (768, 432, 3072, 1728)), ((2304, 1296), (0, 0, 4608, 2592)),
              ((4608, 2592), (0, 0, 4608, 2592))],
    "raw_format": "SRGGB10_CSI2P",
    "autofocus": True,
}
IMX477 = {  # HQ camera: no focus motor
    "properties": {"Model": "imx477", "PixelArraySize": (4056, 3040),
                   "PixelArrayActiveAreas": [(8, 16, 4056, 3040)],
                   "ScalerCropMaximum": (0, 0, 4056, 3040), "ColorFilterArrangement": 0,
                   "Location": 2, "Rotation": 180},
    "modes": [((1332, 990), (696, 528, 2664, 1980)), ((2028, 1080), (0, 440, 4056, 2160)),
              ((2028, 1520), (0, 0, 4056, 3040)), ((4056, 3040), (0, 0, 4056, 3040))],
    "raw_format": "SBGGR12_CSI2P",
    "autofocus": False,
}

AUTO_EXPOSURE = 23456
AUTO_GAIN = 2.5
AUTO_COLOUR_GAINS = (1.9, 1.6)
AF_FOUND = 7.25  # where an autofocus cycle puts the lens (dioptres)


def _controls_for(spec: dict[str, Any], crop: tuple[int, int, int, int]) -> dict[str, tuple[Any, Any, Any]]:
    result: dict[str, tuple[Any, Any, Any]] = {
        "AeEnable": (False, True, None), "AwbEnable": (False, True, None),
        "ExposureTime": (26, 220417486, 20000), "AnalogueGain": (1.0, 16.0, 1.0),
        "ColourGains": (0.0, 32.0, None), "ScalerCrop": ((0, 0, 64, 64), crop, crop),
        "FrameDurationLimits": (100, 1000000000, None), "NoiseReductionMode": (0, 4, 0),
    }
    if spec["autofocus"]:
        result |= {"AfMode": (0, 2, 0), "AfTrigger": (0, 1, 0), "LensPosition": (0.0, 32.0, 1.0)}
    return result


def choose_mode(spec: dict[str, Any], size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, ...]]:
    """The sensor mode libcamera picks for an output of ``size``: the smallest that covers it,
    else the largest (a simplification of the Raspberry Pi pipeline's scoring)."""
    modes = sorted(spec["modes"], key=lambda m: m[0][0] * m[0][1])
    for mode_size, crop in modes:
        if mode_size[0] >= size[0] and mode_size[1] >= size[1]:
            return mode_size, crop
    return modes[-1]


class FakeRequest:
    """A completed request: the frame and its metadata, held (a buffer) until released."""

    def __init__(self, camera: FakePicamera2Legacy, frame: np.ndarray, metadata: dict[str, Any]) -> None:
        self._camera = camera
        self._frame = frame
        self._metadata = metadata
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        self._camera.calls.append(("request.make_array", name))
        if name != "main":
            raise RuntimeError(f"Stream {name!r} is not defined")
        return self._frame.copy()

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def release(self) -> None:
        self._camera.calls.append(("request.release",))
        if self.released:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        self.released = True
        with self._camera.module.cond:
            self._camera.held.remove(self)
            self._camera.module.cond.notify_all()


class FakePicamera2Legacy:
    """One camera, as picamera2 before 0.3.20 drives it. ``calls`` records every method call as
    ``(name, *args)``."""

    def __init__(self, module: FakePicamera2Module, camera_num: int = 0, tuning: Any = None) -> None:
        self.module = module
        self.calls: list[tuple[Any, ...]] = [("__init__", camera_num)]
        spec = module.spec
        self._props = dict(spec["properties"])
        full = (0, 0, *self._props["PixelArraySize"])
        self._controls = _controls_for(spec, full)
        self.options: dict[str, Any] = {}
        self.camera_config: dict[str, Any] | None = None
        self.mode: tuple[tuple[int, int], tuple[int, ...]] | None = None
        self.started = False
        self.is_open = True
        self.event_loop = False  # picamera2's NullPreview thread, started by start()
        self.closed = False
        self.frame = 0
        self.held: list[FakeRequest] = []
        self.hung_jobs = 0  # jobs that timed out and are still queued
        self._pending: list[tuple[int, dict[str, Any]]] = []  # (frame due, controls)
        # sensor state
        self.ae = True
        self.awb = True
        self.exposure = AUTO_EXPOSURE
        self.gain = AUTO_GAIN
        self.colour_gains = AUTO_COLOUR_GAINS
        self.scaler_crop: tuple[int, ...] = full
        self.af_mode = AfModeEnum.Manual
        self.af_state = AfStateEnum.Idle
        self._af_frames = 0
        self.lens = 1.0
        self.lens_target = 1.0
        #: The lens position at each capture_request, and each one's metadata.
        self.lens_at_capture: list[float | None] = []
        self.captured: list[dict[str, Any]] = []

    # -- properties ---------------------------------------------------------------------------

    @property
    def camera_properties(self) -> dict[str, Any]:
        return {} if self.closed else dict(self._props)

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        return {} if self.closed else dict(self._controls)

    @property
    def stalled(self) -> bool:
        """No frames come: the camera stalled, or the only buffers are held."""
        return (self in self.module.stalled_cameras
                or len(self.held) >= int((self.camera_config or {}).get("buffer_count", 1)))

    # -- configuration ------------------------------------------------------------------------

    def create_still_configuration(self, main: dict[str, Any] | None = None, lores: Any = None,
                                   raw: Any = {}, transform: Any = None,  # noqa: B006 - picamera2's own default
                                   colour_space: Any = None, buffer_count: int = 1,
                                   controls: dict[str, Any] | None = None, display: Any = None,
                                   encode: Any = None, queue: bool = True, sensor: Any = {},  # noqa: B006
                                   use_case: str = "still") -> dict[str, Any]:
        self.calls.append(("create_still_configuration", {"main": main, "raw": raw,
                                                          "buffer_count": buffer_count}))
        if self.closed:
            raise RuntimeError("Camera not opened")
        sensor_size = tuple(max(self.module.spec["modes"], key=lambda m: m[0][0] * m[0][1])[0])
        stream = self._stream({"format": "BGR888", "size": sensor_size, "preserve_ar": True}, main)
        width, height = stream["size"]
        stream["size"] = (width - width % 2, height - height % 2)  # align_stream(optimal=False)
        raw_stream = None if raw is None else self._stream(
            {"format": self.module.spec["raw_format"], "size": stream["size"]}, raw)
        extra = {"NoiseReductionMode": NoiseReductionModeEnum.HighQuality,
                 "FrameDurationLimits": (100, 1000000 * 1000)}
        return {"use_case": use_case, "transform": transform, "colour_space": colour_space,
                "buffer_count": buffer_count, "queue": queue, "main": stream, "lores": lores,
                "raw": raw_stream, "controls": extra | dict(controls or {}), "sensor": sensor,
                "display": display, "encode": encode}

    @staticmethod
    def _stream(base: dict[str, Any], updates: dict[str, Any] | None) -> dict[str, Any]:
        valid = ("format", "size", "stride", "preserve_ar")
        for key, value in (updates or {}).items():
            if key not in valid:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {valid}")
            base[key] = value
        return base

    def configure(self, camera_config: dict[str, Any]) -> None:
        self.calls.append(("configure", camera_config))
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        config = dict(camera_config)
        main = dict(config["main"])
        width, height = main["size"]
        if main["format"] == "YUV420":
            main["stride"] = -(-width // 64) * 64
            main["framesize"] = main["stride"] * height * 3 // 2
        else:
            main["stride"] = width * 3
            main["framesize"] = main["stride"] * height
        config["main"] = main
        raw = config.get("raw")
        self.mode = choose_mode(self.module.spec, tuple(raw["size"]) if raw else (width, height))
        if raw is not None:
            raw = dict(raw, size=self.mode[0])
            raw["stride"] = -(-raw["size"][0] * 5 // 4 // 32) * 32
            raw["framesize"] = raw["stride"] * raw["size"][1]
            config["raw"] = raw
        self._controls = _controls_for(self.module.spec, tuple(self.mode[1]))  # type: ignore[arg-type]
        self.scaler_crop = tuple(self.mode[1])
        self.camera_config = config
        with self.module.cond:  # the configuration's controls, as picamera2 sets them (no call)
            self._pending = [(0, {k: v for k, v in (config.get("controls") or {}).items()
                                  if k in self._controls})]

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config  # type: ignore[return-value]

    # -- running ------------------------------------------------------------------------------

    def start(self, config: Any = None, show_preview: bool | None = False) -> None:
        self.calls.append(("start",))
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        if show_preview is not None:
            self.event_loop = True  # start_preview(False): a NullPreview thread runs the loop
        with self.module.cond:
            self.started = True
            # controls set before start go with the first requests
            for _, values in self._pending:
                self._apply(values)
            self._pending.clear()

    def stop(self) -> None:
        """Through the job queue when the event loop runs: behind a hung job it never returns."""
        self.calls.append(("stop",))
        if not self.started:
            return
        if self.event_loop and self.hung_jobs:
            self._block("stop", None, lambda: self.hung_jobs == 0 or not self.stalled)
        self._stop()

    def _stop(self) -> None:
        if self.module.stop_errors > 0:
            self.module.stop_errors -= 1
            raise RuntimeError("Failed to stop camera: Connection timed out")
        with self.module.cond:
            self.started = False
            self.hung_jobs = 0
            self.module.cond.notify_all()

    def close(self) -> None:
        """Stop the preview loop, stop the camera directly, release it."""
        self.calls.append(("close",))
        self.event_loop = False
        if not self.is_open:
            return
        if self.started:
            self._stop()  # raises: the camera stays started and acquired
        with self.module.cond:
            self.is_open = False
            self.closed = True
            self.module.stalled_cameras.discard(self)
            if self.module.holder is self:
                self.module.holder = None
            self.module.cond.notify_all()

    def set_controls(self, controls: dict[str, Any]) -> None:
        self.calls.append(("set_controls", dict(controls)))
        for key in controls:
            if key not in self._controls:
                raise RuntimeError(f"Control {key} is not advertised by libcamera")
        with self.module.cond:
            self._pending.append((self.frame + CONTROL_DELAY, dict(controls)))

    def _apply(self, controls: dict[str, Any]) -> None:
        for key, value in controls.items():
            if key == "AeEnable":
                self.ae = bool(value)
            elif key == "AwbEnable":
                self.awb = bool(value)
            elif key == "ExposureTime":
                self.exposure = value
            elif key == "AnalogueGain":
                self.gain = value
            elif key == "ColourGains":
                self.colour_gains = tuple(value)
            elif key == "ScalerCrop":
                self.scaler_crop = tuple(value)
            elif key == "AfMode":
                self.af_mode = AfModeEnum(value)
                if self.af_mode == AfModeEnum.Manual:
                    self.af_state = AfStateEnum.Idle
            elif key == "AfTrigger" and value == AfTriggerEnum.Start and self.af_mode == AfModeEnum.Auto:
                self.af_state = AfStateEnum.Scanning
                self._af_frames = AF_SCAN_FRAMES
            elif key == "LensPosition":
                self.lens_target = float(value)

    # -- frames and jobs ----------------------------------------------------------------------

    def _next_frame(self) -> dict[str, Any]:
        """One frame passes (``frame_s`` of real time): due controls apply, the lens moves a third
        of the way (at least 0.5 dioptre) to its target, an autofocus scan goes on."""
        if self.module.frame_s:
            time.sleep(self.module.frame_s)
        with self.module.cond:
            self.frame += 1
            due = [c for f, c in self._pending if f <= self.frame]
            self._pending = [(f, c) for f, c in self._pending if f > self.frame]
        for values in due:
            self._apply(values)
        if self.af_mode == AfModeEnum.Manual and self.lens != self.lens_target:
            step = max(0.5, abs(self.lens_target - self.lens) / 3)
            delta = self.lens_target - self.lens
            self.lens = self.lens_target if abs(delta) <= step else self.lens + (step if delta > 0 else -step)
        elif self.af_state == AfStateEnum.Scanning:
            self._af_frames -= 1
            self.lens += (AF_FOUND - self.lens) / 2
            if self._af_frames <= 0:
                if self.module.af_succeeds:
                    self.lens = self.lens_target = AF_FOUND
                    self.af_state = AfStateEnum.Focused
                else:
                    self.af_state = AfStateEnum.Failed
        metadata: dict[str, Any] = {
            "ExposureTime": AUTO_EXPOSURE if self.ae else self.exposure,
            "AnalogueGain": AUTO_GAIN if self.ae else self.gain, "DigitalGain": 1.0,
            "ColourGains": AUTO_COLOUR_GAINS if self.awb else self.colour_gains,
            "Lux": 400.0, "ScalerCrop": self.scaler_crop, "SensorTimestamp": self.frame * 33_000_000,
        }
        if self.module.spec["autofocus"]:
            metadata["LensPosition"] = self.lens
            metadata["AfState"] = self.af_state
        return metadata

    def _timeout(self, wait: Any) -> float | None:
        """picamera2's ``dispatch_functions``: None/True wait for ever, a number is seconds."""
        if wait is None or wait is True:
            return None
        if wait is False:
            raise NotImplementedError("the double runs no asynchronous jobs")
        return float(wait)

    def _block(self, name: str, deadline: float | None, done: Callable[[], bool]) -> None:
        """Wait (no frames come) until ``done()``, or raise TimeoutError at ``deadline``, or
        BlockedForever after FOREVER_S when there is no deadline."""
        module = self.module
        with module.cond:
            if done():
                return
            module.blocked.set()
            limit = time.monotonic() + FOREVER_S if deadline is None else deadline
            while not done():
                left = limit - time.monotonic()
                if left <= 0:
                    if deadline is not None:
                        self.hung_jobs += 1  # the job stays queued, as picamera2's does
                        raise TimeoutError()
                    message = (f"{name} on a stalled camera without wait=SECONDS: a real picamera2 "
                               "blocks here for ever")
                    module.forever.append(message)
                    raise BlockedForever(message)
                module.cond.wait(left)

    def _job(self, name: str, wait: Any, step: Callable[[dict[str, Any]], tuple[bool, Any]]) -> Any:
        """Run a job the way picamera2's event loop does: ``step(metadata)`` on each new frame
        until it says it is done."""
        timeout = None if self.module.legacy else self._timeout(wait)
        if self.module.legacy:
            self._timeout(wait)  # a number is accepted, and ignored
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.stalled or not self.started:
                self._block(name, deadline, lambda: not self.stalled and self.started)
            if self.hung_jobs:  # the jobs queued before this one take the frames first
                self.hung_jobs -= 1
                self._next_frame()
                continue
            metadata = self._next_frame()
            done, result = step(metadata)
            if done:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                self.hung_jobs += 1
                raise TimeoutError()

    def capture_metadata(self, wait: Any = None, signal_function: Any = None) -> dict[str, Any]:
        self.calls.append(("capture_metadata",))
        return self._job("capture_metadata", wait, lambda metadata: (True, metadata))

    def capture_request(self, wait: Any = None, signal_function: Any = None, flush: Any = None
                        ) -> FakeRequest:
        self.calls.append(("capture_request",))
        metadata = self._job("capture_request", wait, lambda metadata: (True, metadata))
        module = self.module
        if module.fail_capture:
            raise RuntimeError("Failed to map the main stream's buffer")
        self.lens_at_capture.append(metadata.get("LensPosition"))
        self.captured.append(metadata)
        request = FakeRequest(self, self.yuv420_frame(), metadata)
        with module.cond:
            self.held.append(request)
            module.requests += 1
            if module.stall_after is not None and module.requests >= module.stall_after:
                module.stall_after = None
                module.begin_stall(self)
        return request

    def autofocus_cycle(self, wait: Any = None, signal_function: Any = None) -> bool:
        self.calls.append(("autofocus_cycle",))
        self.set_controls({"AfMode": AfModeEnum.Auto, "AfTrigger": AfTriggerEnum.Start})
        phases = [{AfStateEnum.Scanning}, {AfStateEnum.Focused, AfStateEnum.Failed, AfStateEnum.Idle}]

        def step(metadata: dict[str, Any]) -> tuple[bool, Any]:
            if metadata["AfState"] in phases[0]:
                phases.pop(0)
            return not phases, metadata["AfState"] == AfStateEnum.Focused

        return self._job("autofocus_cycle", wait, step)

    # -- the picture --------------------------------------------------------------------------

    def yuv420_frame(self) -> np.ndarray:
        """The known pattern (see the module docstring) in picamera2's YUV420 array layout."""
        main = self.camera_config["main"]  # type: ignore[index]
        width, height = main["size"]
        stride = main["stride"]
        flat = np.full(stride * height * 3 // 2, 0xEE, dtype=np.uint8)
        y = flat[:stride * height].reshape(height, stride)
        y[:, :width] = np.linspace(60, 190, width).astype(np.uint8)[None, :]
        chroma = stride // 2 * (height // 2)
        u = flat[stride * height:stride * height + chroma].reshape(height // 2, stride // 2)
        v = flat[stride * height + chroma:].reshape(height // 2, stride // 2)
        u[:, :width // 4] = 110
        u[:, width // 4:width // 2] = 150
        v[:height // 4, :width // 2] = 150
        v[height // 4:, :width // 2] = 110
        return flat.reshape(height * 3 // 2, stride)


class FakePicamera2(FakePicamera2Legacy):
    """One camera, as picamera2 0.3.20 and later drive it."""

    def cancel_all_and_flush(self) -> None:
        """Cancel every queued job (one that timed out included)."""
        self.calls.append(("cancel_all_and_flush",))
        with self.module.cond:
            self.hung_jobs = 0
            self.module.cond.notify_all()


class FakePicamera2Module:
    """Stands in for the ``picamera2`` module: ``module.Picamera2()`` makes a :class:`FakePicamera2`.

    - ``present=False``: ``Picamera2()`` raises IndexError, as picamera2 does without a camera;
    - ``af_succeeds``: whether autofocus scans end Focused (else Failed);
    - ``fail_capture``: ``capture_request`` raises a RuntimeError once it has its frame;
    - ``stall_after=N``: the camera stalls once N requests have been captured (0: from the first
      open); the stall outlives
      ``stall_reopens`` closings and reopenings (``None``: all of them, until :meth:`unstall`);
    - ``stop_errors=N``: libcamera's stop fails the next N times;
    - ``legacy``: picamera2 before 0.3.20 (see the module docstring);
    - ``frame_s``: the time between frames.

    ``blocked`` is set when a call starts waiting on a stalled camera; ``forever`` lists the
    calls that would have blocked for ever.
    """

    def __init__(self, spec: dict[str, Any] | None = None, *, present: bool = True,
                 af_succeeds: bool = True, fail_capture: bool = False, stall_after: int | None = None,
                 stall_reopens: int | None = 0, stop_errors: int = 0, legacy: bool = False,
                 frame_s: float = 0.001) -> None:
        self.spec = spec or IMX708
        self.present = present
        self.af_succeeds = af_succeeds
        self.fail_capture = fail_capture
        self.stall_after = stall_after
        self.stall_reopens = stall_reopens
        self.stop_errors = stop_errors
        self.legacy = legacy
        self.frame_s = frame_s
        self.instances: list[FakePicamera2Legacy] = []
        self.cond = threading.Condition()
        self.stalled_cameras: set[FakePicamera2Legacy] = set()
        self._stall_opens_left: int | None = None  # reopens the current stall still outlives
        self.stalling = False
        self.holder: FakePicamera2Legacy | None = None  # the instance that has the camera acquired
        self.requests = 0
        self.blocked = threading.Event()
        self.forever: list[str] = []

    def Picamera2(self, camera_num: int = 0, tuning: Any = None) -> FakePicamera2Legacy:  # noqa: N802
        if not self.present:
            raise IndexError("list index out of range")
        with self.cond:
            if self.holder is not None:
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
            camera = (FakePicamera2Legacy if self.legacy else FakePicamera2)(self, camera_num, tuning)
            self.holder = camera
            self.instances.append(camera)
            if self.stall_after == 0:  # stalled from the start
                self.stall_after = None
                self.begin_stall(camera)
                self._stall_opens_left = self.stall_reopens
                return camera
            if self.stalling:
                if self._stall_opens_left is None or self._stall_opens_left > 0:
                    self.stalled_cameras.add(camera)
                    if self._stall_opens_left is not None:
                        self._stall_opens_left -= 1
                else:
                    self.stalling = False
        return camera

    def begin_stall(self, camera: FakePicamera2Legacy) -> None:
        """The camera stops delivering frames (called with ``cond`` held)."""
        self.stalling = True
        self._stall_opens_left = self.stall_reopens
        self.stalled_cameras.add(camera)

    def unstall(self) -> None:
        """The stall ends: frames come again, a blocked call goes on."""
        with self.cond:
            self.stalling = False
            self.stalled_cameras.clear()
            self.cond.notify_all()

    @property
    def camera(self) -> FakePicamera2Legacy:
        return self.instances[-1]
