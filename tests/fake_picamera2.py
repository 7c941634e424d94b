"""A test double of the picamera2 API the camera adapter uses, recording every call.

It mirrors picamera2's names, arguments and data shapes (read from raspberrypi/picamera2:
``picamera2.py``, ``request.py``):

- ``Picamera2(camera_num=0, tuning=None)`` raises RuntimeError("Camera __init__ sequence did
  not complete.") when there is no camera;
- ``camera_properties`` (``Model``, ``PixelArraySize``, ...) and ``camera_controls``
  (name -> ``(min, max, default)``);
- ``create_still_configuration(main={}, lores=None, raw={}, transform=None, colour_space=None,
  buffer_count=1, controls={}, display=None, encode=None, queue=True)`` returns a dict;
  ``configure`` fills in ``stride`` and ``framesize``; ``camera_configuration()`` returns it;
- ``set_controls`` refuses controls the camera does not advertise, as picamera2 does;
- ``capture_metadata()`` returns ``ExposureTime``, ``AnalogueGain``, ``DigitalGain``,
  ``ColourGains``, ``Lux``, ``ScalerCrop``, plus ``LensPosition``/``AfState`` on an AF camera;
- ``capture_request()`` returns a request with ``make_array("main")`` (YUV420: ``height * 3 / 2``
  rows of ``stride`` bytes; Y plane, then U and V with half the stride), ``get_metadata()`` and
  ``release()``; a second request while one is held fails, as with ``buffer_count=1``;
- ``autofocus_cycle()`` sets ``AfMode`` Auto + ``AfTrigger`` Start and returns True on focus.

The frame shows a known pattern, inside the RGB gamut: Y rises left to right from 60 to 190; U
is 110 in the left half and 150 in the right; V is 150 in the top half and 110 in the bottom; the
stride padding holds 0xEE so a reader that ignores the stride produces visibly wrong colours.
"""

from __future__ import annotations

import enum
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


#: Stands in for ``libcamera.controls``.
controls = SimpleNamespace(AfModeEnum=AfModeEnum, AfTriggerEnum=AfTriggerEnum, AfStateEnum=AfStateEnum)

IMX708 = {  # Camera Module 3: autofocus
    "properties": {"Model": "imx708", "PixelArraySize": (4608, 2592),
                   "PixelArrayActiveAreas": [(16, 24, 4608, 2592)],
                   "ScalerCropMaximum": (0, 0, 4608, 2592), "ColorFilterArrangement": 0,
                   "Location": 2, "Rotation": 180},
    "autofocus": True,
}
IMX477 = {  # HQ camera: no focus motor
    "properties": {"Model": "imx477", "PixelArraySize": (4056, 3040),
                   "PixelArrayActiveAreas": [(8, 16, 4056, 3040)],
                   "ScalerCropMaximum": (0, 0, 4056, 3040), "ColorFilterArrangement": 0,
                   "Location": 2, "Rotation": 180},
    "autofocus": False,
}

AUTO_EXPOSURE = 23456
AUTO_GAIN = 2.5
AUTO_COLOUR_GAINS = (1.9, 1.6)
AF_FOUND = 7.25  # where an autofocus cycle puts the lens (dioptres)


def _controls_for(autofocus: bool) -> dict[str, tuple[Any, Any, Any]]:
    result: dict[str, tuple[Any, Any, Any]] = {
        "AeEnable": (False, True, None), "AwbEnable": (False, True, None),
        "ExposureTime": (26, 220417486, 20000), "AnalogueGain": (1.0, 16.0, 1.0),
        "ColourGains": (0.0, 32.0, None), "ScalerCrop": ((0, 0, 64, 64), (0, 0, 4608, 2592), None),
        "FrameDurationLimits": (100, 1000000000, None), "NoiseReductionMode": (0, 4, 0),
    }
    if autofocus:
        result |= {"AfMode": (0, 2, 0), "AfTrigger": (0, 1, 0), "LensPosition": (0.0, 32.0, 1.0)}
    return result


class FakeRequest:
    """A completed request: the frame and its metadata, held until released."""

    def __init__(self, camera: FakePicamera2, frame: np.ndarray, metadata: dict[str, Any]) -> None:
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
        self._camera._held = None


class FakePicamera2:
    """One camera. ``calls`` records every method call as ``(name, *args)``."""

    def __init__(self, module: FakePicamera2Module, camera_num: int = 0, tuning: Any = None) -> None:
        self.module = module
        self.calls: list[tuple[Any, ...]] = [("__init__", camera_num)]
        spec = module.spec
        self._props = dict(spec["properties"])
        self._controls = _controls_for(spec["autofocus"])
        self.options: dict[str, Any] = {}
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        self.frame = 0
        self._held: FakeRequest | None = None
        # sensor state
        self.ae = True
        self.awb = True
        self.exposure = AUTO_EXPOSURE
        self.gain = AUTO_GAIN
        self.colour_gains = AUTO_COLOUR_GAINS
        self.scaler_crop = (0, 0, *self._props["PixelArraySize"])
        self.af_mode = AfModeEnum.Manual
        self.lens = 1.0
        self.lens_target = 1.0
        #: The lens position at each capture_request.
        self.lens_at_capture: list[float | None] = []

    # -- properties ---------------------------------------------------------------------------

    @property
    def camera_properties(self) -> dict[str, Any]:
        return {} if self.closed else dict(self._props)

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        return dict(self._controls)

    # -- configuration ------------------------------------------------------------------------

    def create_still_configuration(self, main: dict[str, Any] | None = None, lores: Any = None,
                                   raw: Any = None, transform: Any = None, colour_space: Any = None,
                                   buffer_count: int = 1, controls: dict[str, Any] | None = None,
                                   display: Any = None, encode: Any = None, queue: bool = True
                                   ) -> dict[str, Any]:
        self.calls.append(("create_still_configuration", {"main": main, "buffer_count": buffer_count}))
        stream = {"format": "BGR888", "size": tuple(self._props["PixelArraySize"])}
        for key, value in (main or {}).items():
            if key not in ("format", "size"):
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are ('format', 'size')")
            stream[key] = value
        width, height = stream["size"]
        stream["size"] = (width - width % 2, height - height % 2)  # align_stream(optimal=False)
        return {"use_case": "still", "transform": transform, "colour_space": colour_space,
                "buffer_count": buffer_count, "queue": queue, "main": stream, "lores": lores,
                "raw": raw, "controls": dict(controls or {}), "display": display, "encode": encode}

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
        self.camera_config = config

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config  # type: ignore[return-value]

    # -- running ------------------------------------------------------------------------------

    def start(self, config: Any = None, show_preview: bool = False) -> None:
        self.calls.append(("start",))
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def stop(self) -> None:
        self.calls.append(("stop",))
        self.started = False

    def close(self) -> None:
        self.calls.append(("close",))
        self.started = False  # picamera2's close() stops the camera first
        self.closed = True

    def set_controls(self, controls: dict[str, Any]) -> None:
        self.calls.append(("set_controls", dict(controls)))
        for key in controls:
            if key not in self._controls:
                raise RuntimeError(f"Control {key} is not advertised by libcamera")
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
            elif key == "LensPosition":
                self.lens_target = float(value)

    def _next_frame(self) -> dict[str, Any]:
        """One frame passes: the lens moves a third of the way (at least 0.5 dioptre) to its target."""
        if not self.started:
            raise RuntimeError("Camera is not running")
        self.frame += 1
        if self.af_mode == AfModeEnum.Manual and self.lens != self.lens_target:
            step = max(0.5, abs(self.lens_target - self.lens) / 3)
            delta = self.lens_target - self.lens
            self.lens = self.lens_target if abs(delta) <= step else self.lens + (step if delta > 0 else -step)
        metadata: dict[str, Any] = {
            "ExposureTime": AUTO_EXPOSURE if self.ae else self.exposure,
            "AnalogueGain": AUTO_GAIN if self.ae else self.gain, "DigitalGain": 1.0,
            "ColourGains": AUTO_COLOUR_GAINS if self.awb else self.colour_gains,
            "Lux": 400.0, "ScalerCrop": self.scaler_crop, "SensorTimestamp": self.frame * 33_000_000,
        }
        if self.module.spec["autofocus"]:
            metadata["LensPosition"] = self.lens
            metadata["AfState"] = AfStateEnum.Focused if self.af_mode == AfModeEnum.Auto else AfStateEnum.Idle
        return metadata

    def capture_metadata(self, wait: Any = None, signal_function: Any = None) -> dict[str, Any]:
        self.calls.append(("capture_metadata",))
        return self._next_frame()

    def capture_request(self, wait: Any = None, signal_function: Any = None) -> FakeRequest:
        self.calls.append(("capture_request",))
        if self._held is not None:
            raise RuntimeError("the only buffer is still held by an unreleased request")
        if self.module.fail_capture:
            raise RuntimeError("Camera frontend has timed out!")
        metadata = self._next_frame()
        self.lens_at_capture.append(metadata.get("LensPosition"))
        self._held = FakeRequest(self, self.yuv420_frame(), metadata)
        return self._held

    def autofocus_cycle(self, wait: Any = None, signal_function: Any = None) -> bool:
        self.calls.append(("autofocus_cycle",))
        self.set_controls({"AfMode": AfModeEnum.Auto, "AfTrigger": AfTriggerEnum.Start})
        self._next_frame()
        self.lens = self.lens_target = AF_FOUND
        return self.module.af_succeeds

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


class FakePicamera2Module:
    """Stands in for the ``picamera2`` module: ``module.Picamera2()`` makes a :class:`FakePicamera2`.

    ``present=False`` makes ``Picamera2()`` fail as picamera2 does without a camera.
    """

    def __init__(self, spec: dict[str, Any] | None = None, *, present: bool = True,
                 af_succeeds: bool = True, fail_capture: bool = False) -> None:
        self.spec = spec or IMX708
        self.present = present
        self.af_succeeds = af_succeeds
        self.fail_capture = fail_capture
        self.instances: list[FakePicamera2] = []

    def Picamera2(self, camera_num: int = 0, tuning: Any = None) -> FakePicamera2:
        if not self.present:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        camera = FakePicamera2(self, camera_num, tuning)
        self.instances.append(camera)
        return camera

    @property
    def camera(self) -> FakePicamera2:
        return self.instances[-1]
