"""The Raspberry Pi camera through picamera2.

picamera2 and libcamera come from Raspberry Pi OS apt packages and cannot be imported anywhere
else, so they are imported in :meth:`Picamera2Camera.start`, never when this module loads.

How the camera is driven, and why:

- It stays open for the daemon's life with ONE still configuration, set once: a YUV420 main
  stream at ``camera.resolution`` with a single buffer, and no raw stream (picamera2 adds one by
  default). Full-resolution RGB buffers get the process OOM-killed on a Pi Zero 2 W; YUV420 is
  half the size of RGB888. ``camera.crop`` is centred in the field of view of the sensor mode
  libcamera chose (``camera_controls["ScalerCrop"][1]`` after configuring), which for a small
  resolution may be a cropped mode.
- Every picamera2 call that waits for a frame passes ``wait=`` (``camera.timeout_s``): without
  it a stalled camera blocks for ever. On a timeout picamera2's queue is flushed, the camera
  closed (``close()`` alone: it stops the camera itself) and opened again with the exposure
  locked before, and the position tried again, ``camera.retries`` times; then
  :class:`~openscan_pi.rig.camera.CameraStalled`. Each call runs under :attr:`watch`; one that
  does not return (picamera2 before 0.3.20 ignores ``wait=``) is ended by the daemon, which kills
  the rig worker once the capture overruns its bound and starts another.
  What ``configure`` grants is what is used: another 4:2:0 layout (NV12 on cameras without a
  planar format), or another size (the nearest the camera has).
- Exposure, analogue gain and colour gains are fixed for the whole scan so every photo matches:
  the configured values, or whatever the auto algorithms settle on during ``camera.settle_s``.
- Focus per capture: an autofocus cycle (lens position None) or a manual ``LensPosition`` in
  dioptres, waited for until the frame metadata reports it. A sensor without ``AfMode`` (HQ
  camera, fixed-focus lenses) ignores focus requests and says so in :meth:`start`'s info.
- A preview (:meth:`Picamera2Camera.preview`) is one frame of that same configuration, taken as
  a capture's is (bounded, tried again on a reopened camera), the lens moved only when asked (no
  autofocus cycle), scaled down in :mod:`openscan_pi.rig.preview`: no second stream (a ``lores``
  buffer would come with every photo of every scan) and no reconfiguring between preview and
  scan.
- The JPEG is encoded here from the YUV420 planes (simplejpeg 1.8.0 or later, which picamera2
  depends on, or else Pillow), because picamera2's own savers only take RGB streams in most
  released versions and take EXIF only as piexif dictionaries. The EXIF block comes from
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

from openscan_pi.rig.camera import CallWatch, CameraStalled, Shot, exif_bytes, write_photo
from openscan_pi.rig.errors import CameraError
from openscan_pi.rig.preview import Preview, preview_of_planes
from openscan_pi.schema import CameraConfig

log = logging.getLogger(__name__)

MAKE = "Raspberry Pi"
#: How close (dioptres) the reported lens position must come to the requested one.
LENS_TOLERANCE = 0.05
#: Frames to wait for the lens before capturing anyway (with a warning).
LENS_MAX_FRAMES = 60
#: Frames to let pass after a lens move when the metadata does not report the lens position.
LENS_BLIND_FRAMES = 3
#: A call waits at least this many frames' exposure for its frame (long exposures).
EXPOSURE_FRAMES = 4
#: A picamera2 call past twice its wait plus this (opening, configuring, closing: no wait of
#: their own) means the camera is wedged: :attr:`Picamera2Camera.watch` says so, the worker's
#: beats carry it, and the daemon names the call when it kills the worker (at the capture's
#: bound, which is longer).
WEDGED_MARGIN_S = 1.0
NO_FRAME = "check the camera's ribbon cable and the power supply"
OLD_PICAMERA2 = ("picamera2 before 0.3.20 cannot time out a stalled camera (then only the daemon "
                 "ends the wait, by restarting the rig worker): `sudo apt install "
                 "--only-upgrade python3-picamera2`")
#: The controls of a camera whose exposure can be set (a virtual camera has none of them).
EXPOSURE_CONTROLS = ("AeEnable", "ExposureTime", "AnalogueGain")
NO_EXPOSURE = "none (the camera has no exposure controls)"
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
        self._encoder: tuple[Callable[..., bytes] | None, str] | None = None  # decided once
        #: Exposure, gain and colour gains locked at the first start (kept when a stalled camera
        #: is opened again, so every photo of a scan matches), and what start() said of them.
        self._locked: dict[str, Any] | None = None
        self._locked_info: dict[str, Any] = {}
        self._told_old = False
        #: The picamera2 call in progress and its bound.
        self.watch = CallWatch()

    # -- life -------------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Open the camera, configure it once, settle and lock exposure; return its info.

        Calling it again returns the same info without touching the camera. A camera closed
        after a stall is opened again with the exposure locked before (no new settle).
        """
        if self._cam is None:
            self._cam = self._open()
        return self._info

    def close(self) -> None:
        """Stop and release the camera; calling it again does nothing."""
        cam, self._cam = self._cam, None
        self._locked, self._lens = None, None  # a camera started again settles again
        if cam is not None:
            self._discard(cam)

    def __enter__(self) -> Picamera2Camera:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- capture ----------------------------------------------------------------------------

    def capture(self, path: Path, *, rotor: float, turntable: float, index: int,
                lens_position: float | None = None) -> Shot:
        """Focus (autofocus cycle, or ``lens_position`` dioptres), take one frame, write it as a
        JPEG with EXIF to ``path``. A camera that gives no frame in time is closed and opened
        again, ``camera.retries`` times, before :class:`CameraStalled` is raised."""
        frame, metadata = self._frame(lens_position)
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
        data = encode_jpeg_yuv420(y, u, v, quality=self.cfg.jpeg_quality, exif=exif,
                                  planes_encoder=self._encoder[0] if self._encoder else None)
        del frame, y, u, v
        size, crc = write_photo(path, data)
        return Shot(path=path, size=size, crc32=crc, lens_position=lens, captured_at=captured_at,
                    rotor=rotor, turntable=turntable, index=index)

    def preview(self, *, rotor: float, turntable: float,
                lens_position: float | None = None) -> Preview:
        """What the camera sees now (see :mod:`openscan_pi.rig.preview`): a frame of the one
        still configuration (no second stream, no reconfiguring), taken, bounded and tried
        again as a capture's is. The lens moves only when ``lens_position`` is given (no
        autofocus cycle: the user is focusing); the exposure is the frame's own metadata."""
        frame, metadata = self._frame(lens_position, autofocus=False)
        locked = self._locked or {}
        width, height = self._size
        y, u, v = yuv_planes(frame, width, height, self._format)
        return preview_of_planes(
            y, u, v, exposure_us=metadata.get("ExposureTime", locked.get("ExposureTime")),
            gain=metadata.get("AnalogueGain", locked.get("AnalogueGain")),
            lens_position=metadata.get("LensPosition", self._lens) if self._has_af else None)

    def _frame(self, lens_position: float | None, *,
               autofocus: bool = True) -> tuple[Any, dict[str, Any]]:
        """The frame (and its metadata) of one capture, tried again on a reopened camera when a
        call times out: picamera2's queue is flushed and the camera closed first. Without
        ``autofocus``, a lens position of None leaves the lens where it is."""
        tries = self.cfg.retries + 1
        for attempt in range(1, tries + 1):
            try:
                self.start()
            except CameraError as exc:
                if attempt == 1:
                    raise
                raise CameraStalled(f"no frame within {self._wait_s():g} s, then the camera did not "
                                    f"open again: {exc}") from None
            try:
                return self._take(self._cam, lens_position, autofocus)
            except TimeoutError:
                cam, self._cam, self._lens = self._cam, None, None
                self._discard(cam, flush=True)
                log.warning("camera: no frame within %g s (try %d of %d)%s", self._wait_s(), attempt,
                            tries, ": closed, opening it again" if attempt < tries else "")
        again = (f", {tries} tries (the camera closed and opened again between them)"
                 if tries > 1 else "")
        raise CameraStalled(f"no frame within {self._wait_s():g} s{again}")

    def _take(self, cam: Any, lens_position: float | None,
              autofocus: bool = True) -> tuple[Any, dict[str, Any]]:
        try:
            if autofocus or lens_position is not None:
                self._focus(cam, lens_position)
            request = self._call("capture_request", cam.capture_request, wait=True)
            try:
                frame = request.make_array("main")
                metadata = request.get_metadata()
            finally:
                request.release()
        except RuntimeError as exc:
            raise CameraError(f"capture failed: {exc}") from exc
        return frame, metadata

    # -- internals --------------------------------------------------------------------------

    def _import(self) -> tuple[Any, Any]:
        module, controls = self._picamera2_module, self._controls
        try:
            if module is None:
                import picamera2 as module  # type: ignore[no-redef]
            if controls is None:
                from libcamera import controls  # type: ignore[no-redef]
        except ImportError as exc:
            raise CameraError("picamera2 is not installed: on Raspberry Pi OS run `sudo apt install "
                              "python3-picamera2` and create the venv with --system-site-packages, "
                              f"or set camera.backend (import said: {exc})") from exc
        self._controls = controls
        return module, controls

    def _open(self) -> Any:
        """Open and configure the camera (see :meth:`start`); nothing is left open on failure."""
        module, controls = self._import()
        if self._encoder is None:
            self._encoder = yuv_planes_encoder()
            if self._encoder[0] is None and self._encoder[1] != "Pillow":
                log.debug("JPEGs are encoded with %s", self._encoder[1])
        try:
            cam = self._call("Picamera2()", module.Picamera2)
        except (RuntimeError, IndexError) as exc:
            raise CameraError(f"{NO_CAMERA}; picamera2 said: {exc}") from exc
        if not hasattr(cam, "cancel_all_and_flush") and not self._told_old:
            self._told_old = True
            log.warning("%s", OLD_PICAMERA2)
        again = self._locked is not None
        try:
            self._info = self._setup(cam, controls)
        except TimeoutError:
            self._discard(cam, flush=True)
            raise CameraError(f"the camera did not start: no frame within {self._wait_s():g} s "
                              f"({NO_FRAME})") from None
        except RuntimeError as exc:
            self._discard(cam)
            raise CameraError(f"the camera did not start: {exc}") from exc
        except BaseException:
            self._discard(cam)
            raise
        if again:
            log.info("camera opened again, with the exposure locked before")
        else:
            log.info("camera: %s", self._info)
        return cam

    def _wait_s(self) -> float:
        """How long a call waits for its frame: ``camera.timeout_s``, or a few frames' exposure
        when that is longer."""
        exposure_us = (self._locked or {}).get("ExposureTime") or self.cfg.exposure_us or 0
        return max(float(self.cfg.timeout_s), EXPOSURE_FRAMES * exposure_us / 1e6)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, wait: bool = False) -> Any:
        """``fn(*args)`` under the watch; with ``wait``, bounded by picamera2's own ``wait=``
        (a timeout raises TimeoutError). Past its bound, the watch says the camera is wedged."""
        seconds = self._wait_s()
        with self.watch.bound(what, 2 * seconds + WEDGED_MARGIN_S):
            return fn(*args, wait=seconds) if wait else fn(*args)

    def _discard(self, cam: Any, *, flush: bool = False) -> None:
        """Release ``cam``: after a timeout, picamera2's job queue is flushed first (the call
        that timed out is still queued there). Then ``close()`` alone: picamera2's close stops
        the camera itself, directly; a ``stop()`` of our own goes through the job queue, and one
        that raised would skip the close and leave the camera acquired. A close that failed is
        tried once more (picamera2 allows it), so a passing failure does not keep the camera
        from the next open. Best effort: the process may be on its way out."""
        cancel = getattr(cam, "cancel_all_and_flush", None)  # picamera2 0.3.20 and later
        if flush and cancel is not None:
            try:
                self._call("cancel_all_and_flush", cancel)
            except Exception as exc:
                log.warning("flushing the camera's queue failed: %s", exc)
        for attempt in (1, 2):
            try:
                self._call("close", cam.close)
                return
            except Exception as exc:
                log.warning("closing the camera failed%s: %s", "" if attempt == 1 else " again", exc)

    def _setup(self, cam: Any, controls: Any) -> dict[str, Any]:
        cfg = self.cfg
        props = dict(cam.camera_properties)
        self._model = str(props.get("Model", "unknown"))
        # raw=None: picamera2 adds a raw stream by default, a second full-size buffer that we
        # never read and a 512 MB Pi cannot spare.
        config = cam.create_still_configuration(
            main={"size": (int(cfg.resolution[0]), int(cfg.resolution[1])), "format": "YUV420"},
            raw=None, buffer_count=1)
        self._call("configure", cam.configure, config)
        available = dict(cam.camera_controls)  # as the configured sensor mode has them
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
        # The mode's own field of view: a cropped mode sees less than the whole pixel array.
        field = available["ScalerCrop"][1] if "ScalerCrop" in available else props.get("PixelArraySize")
        crop = scaler_crop(field, cfg.crop)
        if crop is not None:
            if "ScalerCrop" in available:
                cam.set_controls({"ScalerCrop": crop})
            else:
                log.warning("camera.crop is %s but this camera has no ScalerCrop: ignored", cfg.crop)
                crop = None
        fixed = self._configured_exposure()
        has_exposure = any(k in available for k in EXPOSURE_CONTROLS)
        if not has_exposure:
            ignored = [key for control, key in (("ExposureTime", "camera.exposure_us"),
                                                ("AnalogueGain", "camera.analogue_gain"))
                       if fixed.pop(control, None) is not None]
            if self._locked is None:  # said at the first open, not at each reopen after a stall
                log.warning("camera has no exposure controls (%s): its exposure cannot be locked, "
                            "so photos may differ in brightness%s", ", ".join(EXPOSURE_CONTROLS),
                            f"; {' and '.join(ignored)} ignored" if ignored else "")
        settle = ((has_exposure and ("ExposureTime" not in fixed or "AnalogueGain" not in fixed))
                  or ("ColourGains" not in fixed and "ColourGains" in available))
        if self._locked is None and not settle:
            self._remember(fixed, source="configured" if has_exposure else NO_EXPOSURE)
        if self._locked is not None:
            # Known already (configured, or locked before the camera was opened again): set
            # before start, so they hold from the first frame (controls set on a running camera
            # take effect frames later, after the first photo of a fixed-focus camera).
            _set(cam, available, {"AeEnable": False, "AwbEnable": False, **self._locked})
            self._call("start", cam.start)
            locked = self._locked_info
        else:
            self._call("start", cam.start)
            locked = self._lock_exposure(cam, available, fixed)
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
                "jpeg_encoder": self._encoder[1] if self._encoder else jpeg_encoder_name(), **locked}

    def _configured_exposure(self) -> dict[str, Any]:
        """The exposure, gain and colour gains the configuration fixes."""
        cfg = self.cfg
        fixed: dict[str, Any] = {}
        if cfg.exposure_us is not None:
            fixed["ExposureTime"] = int(cfg.exposure_us)
        if cfg.analogue_gain is not None:
            fixed["AnalogueGain"] = float(cfg.analogue_gain)
        if cfg.colour_gains is not None:
            fixed["ColourGains"] = (float(cfg.colour_gains[0]), float(cfg.colour_gains[1]))
        return fixed

    def _lock_exposure(self, cam: Any, available: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
        """Settle once with the auto algorithms (``fixed`` values stay fixed while the rest
        settles around them), then fix exposure, gain and colour gains."""
        has_exposure = any(k in available for k in EXPOSURE_CONTROLS)
        auto_ae = has_exposure and ("ExposureTime" not in fixed or "AnalogueGain" not in fixed)
        auto_awb = "ColourGains" not in fixed and "ColourGains" in available
        _set(cam, available, {"AeEnable": auto_ae, "AwbEnable": auto_awb, **fixed})
        self._sleep(self.cfg.settle_s)
        metadata = self._call("capture_metadata", cam.capture_metadata, wait=True)
        measured = {key: metadata[key] for key in ("ExposureTime", "AnalogueGain", "ColourGains")
                    if key not in fixed and metadata.get(key) is not None}
        source = (f"settled for {self.cfg.settle_s} s" if measured
                  else "configured" if has_exposure else NO_EXPOSURE)
        self._remember({**measured, **fixed}, source=source)
        assert self._locked is not None
        _set(cam, available, {"AeEnable": False, "AwbEnable": False, **self._locked})
        return self._locked_info

    def _remember(self, locked: dict[str, Any], *, source: str) -> None:
        """Keep ``locked`` (normalised) for this scan's photos, and what start() says of it."""
        if "ExposureTime" in locked:
            locked["ExposureTime"] = int(locked["ExposureTime"])
        if "AnalogueGain" in locked:
            locked["AnalogueGain"] = float(locked["AnalogueGain"])
        if "ColourGains" in locked:
            locked["ColourGains"] = tuple(float(g) for g in locked["ColourGains"])
        gains = locked.get("ColourGains")
        self._locked = locked
        self._locked_info = {
            "exposure_us": locked.get("ExposureTime"), "analogue_gain": locked.get("AnalogueGain"),
            "colour_gains": list(gains) if gains else None,
            "exposure_source": source}

    def _focus(self, cam: Any, lens_position: float | None) -> None:
        if not self._has_af:
            return
        if lens_position is None:
            self._lens = None
            if not self._call("autofocus_cycle", cam.autofocus_cycle, wait=True):
                log.warning("autofocus did not lock; capturing anyway")
            return
        target = float(lens_position)
        if self._lens == target:
            return
        cam.set_controls({"AfMode": self._controls.AfModeEnum.Manual, "LensPosition": target})
        self._lens = target
        for frame in range(LENS_MAX_FRAMES):
            reported = self._call("capture_metadata", cam.capture_metadata, wait=True).get("LensPosition")
            if reported is None:
                if frame + 1 >= LENS_BLIND_FRAMES:
                    return
            elif abs(float(reported) - target) <= LENS_TOLERANCE:
                return
        log.warning("the lens did not reach %.3f dioptres within %d frames; capturing anyway",
                    target, LENS_MAX_FRAMES)


def scaler_crop(field: Any, fraction: float) -> tuple[int, int, int, int] | None:
    """The ScalerCrop ``(x, y, width, height)`` keeping ``fraction`` of each side of ``field``,
    centred in it; None when the whole field is kept or it is unknown.

    ``field`` is the configured sensor mode's field of view, ``(x, y, width, height)``
    (``camera_controls["ScalerCrop"][1]`` after ``configure``), or a ``(width, height)`` at (0, 0).
    """
    if fraction >= 1 or not field:
        return None
    left, top, full_w, full_h = (0, 0, *field) if len(field) == 2 else field
    left, top, full_w, full_h = int(left), int(top), int(full_w), int(full_h)
    width = max(2, round(full_w * fraction) // 2 * 2)
    height = max(2, round(full_h * fraction) // 2 * 2)
    return (left + (full_w - width) // 2, top + (full_h - height) // 2, width, height)


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


def yuv_planes_encoder() -> tuple[Callable[..., bytes] | None, str]:
    """simplejpeg's ``encode_jpeg_yuv_planes`` and ``"simplejpeg"``; or None and ``"Pillow"``,
    with the reason when a simplejpeg is installed that lacks it (before 1.8.0 it imports fine and
    has no such function)."""
    try:
        import simplejpeg
    except ImportError:
        return None, "Pillow"
    encode = getattr(simplejpeg, "encode_jpeg_yuv_planes", None)
    if encode is None:
        version = getattr(simplejpeg, "__version__", "unknown")
        return None, (f"Pillow (simplejpeg {version} has no encode_jpeg_yuv_planes, 1.8.0 and later "
                      "have it: pip install 'simplejpeg>=1.8' for faster captures)")
    return encode, "simplejpeg"


def jpeg_encoder_name() -> str:
    """Which library encodes the JPEGs: simplejpeg where it can encode YUV planes, else Pillow."""
    return yuv_planes_encoder()[1]


def encode_jpeg_yuv420(y: Any, u: Any, v: Any, *, quality: int, exif: bytes,
                       planes_encoder: Callable[..., bytes] | None = None) -> bytes:
    """A JPEG of the YUV420 planes (full-range BT.601, picamera2's default colour space for
    stills, which is JPEG's own), with the EXIF block ``exif`` in an APP1 segment.

    ``planes_encoder`` (simplejpeg's ``encode_jpeg_yuv_planes``, looked up when not given, see
    :func:`yuv_planes_encoder`) encodes the planes as they are; Pillow, without one, needs the
    chroma planes scaled up to full size first, which costs time and memory on a small board.
    """
    encode = planes_encoder if planes_encoder is not None else yuv_planes_encoder()[0]
    if encode is not None:
        return insert_exif(encode(y, u, v, quality=quality), exif)
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
