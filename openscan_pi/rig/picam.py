"""The Raspberry Pi camera through picamera2.

picamera2 and libcamera come from Raspberry Pi OS apt packages and cannot be imported anywhere
else, so they are imported in :meth:`Picamera2Camera.start`, never when this module loads.

How the camera is driven, and why:

- It stays open for the daemon's life with ONE still configuration, set once: a YUV420 main
  stream at ``camera.resolution`` with a single buffer. Full-resolution RGB buffers get the
  process OOM-killed on a Pi Zero 2 W; YUV420 is half the size of RGB888. What ``configure``
  grants is what is used: another 4:2:0 layout (NV12 on cameras without a planar format), or
  another size (the nearest the camera has).
- Exposure, analogue gain and colour gains are fixed for the whole scan so every photo matches:
  the configured values, or whatever the auto algorithms settle on during ``camera.settle_s``.
- Focus per capture: an autofocus cycle (lens position None) or a manual ``LensPosition`` in
  dioptres, waited for until the frame metadata reports it. A sensor without ``AfMode`` (HQ
  camera, fixed-focus lenses) ignores focus requests and says so in :meth:`start`'s info.
- The JPEG is encoded here from the YUV420 planes (simplejpeg, which picamera2 depends on, or
  Pillow), because picamera2's own savers only take RGB streams in most released versions and
  take EXIF only as piexif dictionaries. The EXIF block comes from
  :func:`~openscan_pi.rig.camera.exif_bytes`; the file is written by
  :func:`~openscan_pi.rig.camera.write_photo`.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from openscan_pi.rig.camera import Shot, exif_bytes, write_photo
from openscan_pi.rig.errors import CameraError
from openscan_pi.schema import CameraConfig

log = logging.getLogger(__name__)

MAKE = "Raspberry Pi"
#: How close (dioptres) the reported lens position must come to the requested one.
LENS_TOLERANCE = 0.05
#: Frames to wait for the lens before capturing anyway (with a warning).
LENS_MAX_FRAMES = 60
#: Frames to let pass after a lens move when the metadata does not report the lens position.
LENS_BLIND_FRAMES = 3
#: The YUV 4:2:0 layouts (picamera2's names) the JPEG encoders take.
YUV420_FORMATS = ("YUV420", "YVU420", "NV12", "NV21")
NO_CAMERA = ("no camera found: check the ribbon cable and `rpicam-hello --list-cameras` "
             "(on a Pi 4 or older, also `camera_auto_detect=1` in /boot/firmware/config.txt)")


class Picamera2Camera:
    """The Pi camera (Camera Module 3, HQ camera, ...) through picamera2.

    ``picamera2_module`` and ``controls_module`` stand in for ``picamera2`` and
    ``libcamera.controls`` in tests; ``sleep`` waits out the exposure settle.

    Example::

        camera = Picamera2Camera(cfg.camera)
        info = camera.start()          # {"model": "imx708", "has_autofocus": True, ...}
        shot = camera.capture(Path("IMG_0001.jpg"), rotor=15, turntable=30, index=1)
        camera.close()
    """

    name = "picamera2"

    def __init__(self, cfg: CameraConfig, *, picamera2_module: ModuleType | Any = None,
                 controls_module: ModuleType | Any = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg = cfg
        self._picamera2_module = picamera2_module
        self._controls = controls_module
        self._sleep = sleep
        self._cam: Any = None
        self._info: dict[str, Any] = {}
        self._size: tuple[int, int] = (0, 0)
        self._format = "YUV420"  # the layout configure granted
        self._has_af = False
        self._model = "unknown"
        self._lens: float | None = None  # the manual lens position last set, None after AF

    # -- life -------------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Open the camera, configure it once, settle and lock exposure; return its info.

        Calling it again returns the same info without touching the camera.
        """
        if self._cam is not None:
            return self._info
        module, controls = self._import()
        try:
            cam = module.Picamera2()
        except (RuntimeError, IndexError) as exc:
            raise CameraError(f"{NO_CAMERA}; picamera2 said: {exc}") from exc
        try:
            self._info = self._setup(cam, controls)
        except RuntimeError as exc:
            _close_quietly(cam)
            raise CameraError(f"the camera did not start: {exc}") from exc
        except BaseException:
            _close_quietly(cam)
            raise
        self._cam = cam
        log.info("camera: %s", self._info)
        return self._info

    def close(self) -> None:
        """Stop and release the camera; calling it again does nothing."""
        cam, self._cam = self._cam, None
        if cam is not None:
            _close_quietly(cam)

    def __enter__(self) -> Picamera2Camera:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- capture ----------------------------------------------------------------------------

    def capture(self, path: Path, *, rotor: float, turntable: float, index: int,
                lens_position: float | None = None) -> Shot:
        """Focus (autofocus cycle, or ``lens_position`` dioptres), take one frame, write it as a
        JPEG with EXIF to ``path``."""
        self.start()
        cam = self._cam
        try:
            self._focus(cam, lens_position)
            request = cam.capture_request()
            try:
                frame = request.make_array("main")
                metadata = request.get_metadata()
            finally:
                request.release()
        except RuntimeError as exc:
            raise CameraError(f"capture failed: {exc}") from exc
        captured_at = time.time()
        if not self._has_af:
            lens = None
        elif lens_position is not None:
            lens = float(lens_position)
        else:
            reported = metadata.get("LensPosition")
            lens = None if reported is None else float(reported)
        exif = exif_bytes(orientation=self.cfg.orientation, rotor=rotor, turntable=turntable,
                          index=index, lens_position=lens, make=MAKE, model=self._model)
        width, height = self._size
        y, u, v = yuv_planes(frame, width, height, self._format)
        data = encode_jpeg_yuv420(y, u, v, quality=self.cfg.jpeg_quality, exif=exif)
        del frame, y, u, v
        size, crc = write_photo(path, data)
        return Shot(path=path, size=size, crc32=crc, lens_position=lens, captured_at=captured_at,
                    rotor=rotor, turntable=turntable, index=index)

    # -- internals --------------------------------------------------------------------------

    def _import(self) -> tuple[Any, Any]:
        module, controls = self._picamera2_module, self._controls
        try:
            if module is None:
                import picamera2 as module  # type: ignore[import-not-found, no-redef]
            if controls is None:
                from libcamera import controls  # type: ignore[import-not-found, no-redef]
        except ImportError as exc:
            raise CameraError("picamera2 is not installed: on Raspberry Pi OS run `sudo apt install "
                              "python3-picamera2` and create the venv with --system-site-packages, "
                              f"or set camera.backend (import said: {exc})") from exc
        self._controls = controls
        return module, controls

    def _setup(self, cam: Any, controls: Any) -> dict[str, Any]:
        cfg = self.cfg
        props = dict(cam.camera_properties)
        available = dict(cam.camera_controls)
        self._model = str(props.get("Model", "unknown"))
        config = cam.create_still_configuration(
            main={"size": (int(cfg.resolution[0]), int(cfg.resolution[1])), "format": "YUV420"},
            buffer_count=1)
        cam.configure(config)
        main = cam.camera_configuration()["main"]
        self._size = (int(main["size"][0]), int(main["size"][1]))
        asked = (int(cfg.resolution[0]), int(cfg.resolution[1]))
        if self._size != asked:
            log.info("camera.resolution %dx%d is not offered by this camera: photos are %dx%d",
                     *asked, *self._size)
        self._format = str(main.get("format", "YUV420"))
        if self._format not in YUV420_FORMATS:
            raise CameraError(f"the camera gave {self._format} frames where YUV420 was asked: only YUV "
                              f"4:2:0 ({', '.join(YUV420_FORMATS)}) can be encoded; this camera is "
                              "not supported by the picamera2 backend")
        cam.options["quality"] = cfg.jpeg_quality  # for picamera2's own savers, should any run
        self._has_af = "AfMode" in available and "LensPosition" in available
        if not self._has_af:
            log.info("camera has no autofocus (no AfMode/LensPosition control): camera.focus is "
                     "ignored; focus the lens by hand")
        crop = scaler_crop(props.get("PixelArraySize"), cfg.crop)
        if crop is not None:
            if "ScalerCrop" in available:
                cam.set_controls({"ScalerCrop": crop})
            else:
                log.warning("camera.crop is %s but this camera has no ScalerCrop: ignored", cfg.crop)
                crop = None
        cam.start()
        locked = self._lock_exposure(cam, available)
        if self._has_af:
            focus = "autofocus per position, or manual LensPosition (dioptres)"
        else:
            focus = "fixed-focus lens: camera.focus settings are ignored (focus the lens by hand)"
        pixel_array = props.get("PixelArraySize")
        return {"backend": self.name, "model": self._model,
                "pixel_array": list(pixel_array) if pixel_array else None,
                "resolution": list(self._size), "format": self._format,
                "has_autofocus": self._has_af, "focus": focus,
                "scaler_crop": list(crop) if crop else None, "jpeg_quality": cfg.jpeg_quality,
                "jpeg_encoder": jpeg_encoder_name(), **locked}

    def _lock_exposure(self, cam: Any, available: dict[str, Any]) -> dict[str, Any]:
        """Settle once with the auto algorithms, then fix exposure, gain and colour gains.

        A camera without exposure controls (AeEnable, ExposureTime, AnalogueGain) says so in one
        log line; nothing is settled or locked for it, and configured values it cannot take are
        not reported as locked."""
        cfg = self.cfg
        fixed: dict[str, Any] = {}
        if cfg.exposure_us is not None:
            fixed["ExposureTime"] = int(cfg.exposure_us)
        if cfg.analogue_gain is not None:
            fixed["AnalogueGain"] = float(cfg.analogue_gain)
        if cfg.colour_gains is not None:
            fixed["ColourGains"] = (float(cfg.colour_gains[0]), float(cfg.colour_gains[1]))
        has_exposure = any(k in available for k in ("AeEnable", "ExposureTime", "AnalogueGain"))
        if not has_exposure:
            ignored = [key for control, key in (("ExposureTime", "camera.exposure_us"),
                                                ("AnalogueGain", "camera.analogue_gain"))
                       if fixed.pop(control, None) is not None]
            log.warning("camera has no exposure controls (AeEnable, ExposureTime, AnalogueGain): its "
                        "exposure cannot be locked, so photos may differ in brightness%s",
                        f"; {' and '.join(ignored)} ignored" if ignored else "")
        auto_ae = has_exposure and ("ExposureTime" not in fixed or "AnalogueGain" not in fixed)
        auto_awb = "ColourGains" not in fixed and "ColourGains" in available
        measured: dict[str, Any] = {}
        if auto_ae or auto_awb:
            # A fixed value given alongside stays fixed while the rest settles around it.
            _set(cam, available, {"AeEnable": auto_ae, "AwbEnable": auto_awb, **fixed})
            self._sleep(cfg.settle_s)
            metadata = cam.capture_metadata()
            for key in ("ExposureTime", "AnalogueGain", "ColourGains"):
                if key not in fixed and metadata.get(key) is not None:
                    measured[key] = metadata[key]
        locked = {**measured, **fixed}
        if "ExposureTime" in locked:
            locked["ExposureTime"] = int(locked["ExposureTime"])
        if "AnalogueGain" in locked:
            locked["AnalogueGain"] = float(locked["AnalogueGain"])
        if "ColourGains" in locked:
            locked["ColourGains"] = tuple(float(g) for g in locked["ColourGains"])
        _set(cam, available, {"AeEnable": False, "AwbEnable": False, **locked})
        gains = locked.get("ColourGains")
        if not has_exposure:
            source = "none (the camera has no exposure controls)"
        else:
            source = "configured" if not measured else f"settled for {cfg.settle_s} s"
        return {"exposure_us": locked.get("ExposureTime"), "analogue_gain": locked.get("AnalogueGain"),
                "colour_gains": list(gains) if gains else None, "exposure_source": source}

    def _focus(self, cam: Any, lens_position: float | None) -> None:
        if not self._has_af:
            return
        if lens_position is None:
            self._lens = None
            if not cam.autofocus_cycle():
                log.warning("autofocus did not lock; capturing anyway")
            return
        target = float(lens_position)
        if self._lens == target:
            return
        cam.set_controls({"AfMode": self._controls.AfModeEnum.Manual, "LensPosition": target})
        self._lens = target
        for frame in range(LENS_MAX_FRAMES):
            reported = cam.capture_metadata().get("LensPosition")
            if reported is None:
                if frame + 1 >= LENS_BLIND_FRAMES:
                    return
            elif abs(float(reported) - target) <= LENS_TOLERANCE:
                return
        log.warning("the lens did not reach %.3f dioptres within %d frames; capturing anyway",
                    target, LENS_MAX_FRAMES)


def scaler_crop(pixel_array: Any, fraction: float) -> tuple[int, int, int, int] | None:
    """The centred ScalerCrop ``(x, y, width, height)`` keeping ``fraction`` of each side of the
    sensor's pixel array; None when the whole sensor is kept or its size is unknown."""
    if fraction >= 1 or not pixel_array:
        return None
    full_w, full_h = int(pixel_array[0]), int(pixel_array[1])
    width = max(2, round(full_w * fraction) // 2 * 2)
    height = max(2, round(full_h * fraction) // 2 * 2)
    return ((full_w - width) // 2, (full_h - height) // 2, width, height)


def yuv420_planes(frame: Any, width: int, height: int) -> tuple[Any, Any, Any]:
    """Y, U and V views of picamera2's YUV420 array (``height * 3 / 2`` rows of ``stride`` bytes:
    the Y plane, then the U and V planes with half the stride and half the rows)."""
    stride = frame.shape[1]
    flat = frame.reshape(-1)
    chroma_stride, chroma_rows = stride // 2, height // 2
    u_start = height * stride
    v_start = u_start + chroma_rows * chroma_stride
    y = flat[:u_start].reshape(height, stride)[:, :width]
    u = flat[u_start:v_start].reshape(chroma_rows, chroma_stride)[:, :width // 2]
    v = flat[v_start:v_start + chroma_rows * chroma_stride].reshape(chroma_rows, chroma_stride)
    return y, u, v[:, :width // 2]


def yuv_planes(frame: Any, width: int, height: int, fmt: str) -> tuple[Any, Any, Any]:
    """Y, U and V planes of picamera2's array of a frame in the 4:2:0 layout ``fmt``: planar
    (``YUV420``, or ``YVU420`` with V first; see :func:`yuv420_planes`) or semi-planar (``NV12``,
    or ``NV21`` with V first: after the Y rows, ``height / 2`` rows of interleaved chroma pairs)."""
    if fmt in ("YUV420", "YVU420"):
        y, first, second = yuv420_planes(frame, width, height)
    elif fmt in ("NV12", "NV21"):
        import numpy as np

        stride = frame.shape[1]
        flat = frame.reshape(-1)
        luma = height * stride
        y = flat[:luma].reshape(height, stride)[:, :width]
        pairs = flat[luma:luma + height // 2 * stride].reshape(height // 2, stride)[:, :width // 2 * 2]
        pairs = pairs.reshape(height // 2, width // 2, 2)
        first, second = np.ascontiguousarray(pairs[..., 0]), np.ascontiguousarray(pairs[..., 1])
    else:
        raise CameraError(f"cannot encode {fmt} frames (only {', '.join(YUV420_FORMATS)})")
    return (y, first, second) if fmt in ("YUV420", "NV12") else (y, second, first)


def jpeg_encoder_name() -> str:
    """Which library encodes the JPEGs: simplejpeg where installed, else Pillow."""
    try:
        import simplejpeg  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return "Pillow"
    return "simplejpeg"


def encode_jpeg_yuv420(y: Any, u: Any, v: Any, *, quality: int, exif: bytes) -> bytes:
    """A JPEG of the YUV420 planes (full-range BT.601, picamera2's default colour space for
    stills, which is JPEG's own), with the EXIF block ``exif`` in an APP1 segment.

    simplejpeg (libjpeg-turbo) encodes the planes as they are; Pillow needs the chroma planes
    scaled up to full size first, which costs time and memory on a small board.
    """
    try:
        import simplejpeg
    except ImportError:
        simplejpeg = None
    if simplejpeg is not None:
        return insert_exif(simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality), exif)
    from PIL import Image

    height, width = y.shape
    planes = [Image.fromarray(y)] + [Image.fromarray(c).resize((width, height), Image.Resampling.NEAREST)
                                     for c in (u, v)]
    buffer = io.BytesIO()
    Image.merge("YCbCr", planes).save(buffer, format="JPEG", quality=quality, subsampling=2, exif=exif)
    return buffer.getvalue()


def insert_exif(jpeg: bytes, exif: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding ``exif`` (``b"Exif\\0\\0"`` + TIFF data) right after
    SOI, or after the JFIF APP0 segment where there is one."""
    if jpeg[:2] != b"\xff\xd8":
        raise CameraError("the JPEG encoder returned something that is not a JPEG")
    if len(exif) > 0xFFFF - 2:
        raise ValueError(f"EXIF block too large for one APP1 segment: {len(exif)} bytes")
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":
        pos = 4 + int.from_bytes(jpeg[4:6], "big")
    segment = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    return jpeg[:pos] + segment + jpeg[pos:]


def _set(cam: Any, available: dict[str, Any], controls: dict[str, Any]) -> None:
    """set_controls with only the controls this camera advertises (picamera2 refuses others)."""
    wanted = {k: v for k, v in controls.items() if k in available}
    skipped = sorted(set(controls) - set(wanted))
    if skipped:
        log.debug("camera does not advertise %s: not set", ", ".join(skipped))
    cam.set_controls(wanted)


def _close_quietly(cam: Any) -> None:
    try:
        cam.stop()
        cam.close()
    except Exception as exc:  # closing is best effort: the process may be on its way out
        log.warning("closing the camera failed: %s", exc)
