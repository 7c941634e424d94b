"""The picamera2 adapter, driven against a test double of picamera2 (tests/fake_picamera2.py)."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from openscan_pi.config import load_config
from openscan_pi.rig import picam
from openscan_pi.rig.camera import CameraStalled, Shot, lens_positions
from openscan_pi.rig.errors import CameraError
from openscan_pi.rig.picam import Picamera2Camera, insert_exif, scaler_crop, yuv420_planes
from openscan_pi.schema import CameraConfig
from tests import fake_picamera2 as fake
from tests.fake_picamera2 import AfModeEnum, FakePicamera2, FakePicamera2Module

BASE = load_config(None, env={}).camera


def camera_cfg(**changes: Any) -> CameraConfig:
    changes.setdefault("resolution", (200, 150))
    changes.setdefault("settle_s", 0.5)
    if "focus" in changes and isinstance(changes["focus"], dict):
        changes["focus"] = dataclasses.replace(BASE.focus, **changes["focus"])
    return dataclasses.replace(BASE, **changes)


class Recorder:
    """A sleep that records into the camera's call list, so its place in the sequence shows."""

    def __init__(self) -> None:
        self.camera: FakePicamera2 | None = None
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.camera is not None:
            self.camera.calls.append(("sleep", seconds))


def open_camera(cfg: CameraConfig, module: FakePicamera2Module | None = None
                ) -> tuple[Picamera2Camera, FakePicamera2Module, Recorder]:
    module = module or FakePicamera2Module()
    sleep = Recorder()
    original = module.Picamera2

    def make(camera_num: int = 0, tuning: Any = None) -> FakePicamera2:
        cam = original(camera_num, tuning)
        sleep.camera = cam
        return cam

    module.Picamera2 = make  # type: ignore[method-assign]
    camera = Picamera2Camera(cfg, picamera2_module=module, controls_module=fake.controls, sleep=sleep)
    return camera, module, sleep


def names(calls: list[tuple[Any, ...]]) -> list[str]:
    return [c[0] for c in calls]


def set_controls(calls: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [c[1] for c in calls if c[0] == "set_controls"]


def capture(camera: Picamera2Camera, folder: Path, index: int, lens: float | None = None) -> Shot:
    return camera.capture(folder / f"IMG_{index:04d}.jpg", rotor=10.0 + index, turntable=30.0 * index,
                          index=index, lens_position=lens)


def test_one_yuv420_single_buffer_configuration_for_many_captures(tmp_path: Path) -> None:
    camera, module, _ = open_camera(camera_cfg(resolution=(202, 150)))
    info = camera.start()
    for i in range(5):
        capture(camera, tmp_path, i)
    cam = module.camera
    configs = [c for c in cam.calls if c[0] == "configure"]
    assert len(configs) == 1
    assert names(cam.calls).count("create_still_configuration") == 1
    assert names(cam.calls).count("start") == 1
    assert len(module.instances) == 1
    config = configs[0][1]
    assert config["main"]["format"] == "YUV420"
    assert config["main"]["size"] == (202, 150)
    assert config["buffer_count"] == 1
    assert config["raw"] is None  # no raw stream: its buffer is memory a 512 MB Pi does not have
    assert cam.options["quality"] == BASE.jpeg_quality
    assert info["resolution"] == [202, 150] and info["format"] == "YUV420"
    assert info["model"] == "imx708" and info["has_autofocus"] is True
    assert names(cam.calls).count("request.release") == 5
    camera.close()
    assert names(cam.calls)[-1] == "close" and "stop" not in names(cam.calls)  # close() stops by itself
    camera.close()  # again: nothing more happens
    assert names(cam.calls).count("close") == 1


def test_settles_then_locks_exposure_gain_and_colour_gains() -> None:
    camera, module, sleep = open_camera(camera_cfg(settle_s=0.75))
    info = camera.start()
    cam = module.camera
    seq = [c for c in cam.calls if c[0] in ("start", "set_controls", "sleep", "capture_metadata")]
    assert seq == [
        ("start",),
        ("set_controls", {"AeEnable": True, "AwbEnable": True}),
        ("sleep", 0.75),
        ("capture_metadata",),
        ("set_controls", {"AeEnable": False, "AwbEnable": False, "ExposureTime": fake.AUTO_EXPOSURE,
                          "AnalogueGain": fake.AUTO_GAIN, "ColourGains": fake.AUTO_COLOUR_GAINS}),
    ]
    assert sleep.slept == [0.75]
    for _ in range(fake.CONTROL_DELAY):  # the lock rides on the next requests, frames later
        cam.capture_metadata(wait=5)
    assert not cam.ae and not cam.awb
    assert info["exposure_us"] == fake.AUTO_EXPOSURE and info["analogue_gain"] == fake.AUTO_GAIN
    assert info["colour_gains"] == list(fake.AUTO_COLOUR_GAINS)


def test_configured_values_are_set_without_a_settle() -> None:
    camera, module, sleep = open_camera(camera_cfg(exposure_us=12000, analogue_gain=1.5,
                                                   colour_gains=(2.0, 1.25)))
    info = camera.start()
    assert set_controls(module.camera.calls) == [
        {"AeEnable": False, "AwbEnable": False, "ExposureTime": 12000, "AnalogueGain": 1.5,
         "ColourGains": (2.0, 1.25)}]
    assert sleep.slept == [] and "capture_metadata" not in names(module.camera.calls)
    assert info["exposure_us"] == 12000 and info["exposure_source"] == "configured"


def test_configured_values_are_in_the_very_first_photo(tmp_path: Path) -> None:
    """Controls take effect frames after they are set: values set once the camera runs would miss
    the first photo of a fixed-focus camera (no focus frames before it)."""
    camera, module, _ = open_camera(camera_cfg(exposure_us=12000, analogue_gain=1.5,
                                               colour_gains=(2.0, 1.25)), FakePicamera2Module(fake.IMX477))
    capture(camera, tmp_path, 0)
    first = module.camera.captured[0]
    assert (first["ExposureTime"], first["AnalogueGain"], first["ColourGains"]) == (12000, 1.5, (2.0, 1.25))


def test_partly_configured_settles_the_rest_around_the_fixed_value() -> None:
    camera, module, _ = open_camera(camera_cfg(exposure_us=8000))
    camera.start()
    first, lock = set_controls(module.camera.calls)
    assert first == {"AeEnable": True, "AwbEnable": True, "ExposureTime": 8000}
    assert lock == {"AeEnable": False, "AwbEnable": False, "ExposureTime": 8000,
                    "AnalogueGain": fake.AUTO_GAIN, "ColourGains": fake.AUTO_COLOUR_GAINS}


def test_autofocus_cycle_per_capture_and_lens_position_from_metadata(tmp_path: Path) -> None:
    camera, module, _ = open_camera(camera_cfg())
    camera.start()
    shots = [capture(camera, tmp_path, i) for i in range(3)]
    calls = names(module.camera.calls)
    assert calls.count("autofocus_cycle") == 3
    # every capture is preceded by its own cycle
    requests = [i for i, n in enumerate(calls) if n == "capture_request"]
    cycles = [i for i, n in enumerate(calls) if n == "autofocus_cycle"]
    assert all(c < r for c, r in zip(cycles, requests, strict=True))
    assert all(s.lens_position == fake.AF_FOUND for s in shots)


def test_autofocus_failure_still_captures(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    camera, _, _ = open_camera(camera_cfg(), FakePicamera2Module(af_succeeds=False))
    shot = capture(camera, tmp_path, 0)
    assert shot.path is not None and shot.path.exists()
    assert "autofocus did not lock" in caplog.text


def test_manual_lens_position_is_waited_for(tmp_path: Path) -> None:
    camera, module, _ = open_camera(camera_cfg())
    camera.start()
    shot = capture(camera, tmp_path, 0, lens=6.0)
    cam = module.camera
    assert {"AfMode": AfModeEnum.Manual, "LensPosition": 6.0} in set_controls(cam.calls)
    assert "autofocus_cycle" not in names(cam.calls)
    # the lens needs several frames to get from 1.0 to 6.0; the capture came after it arrived
    assert names(cam.calls).count("capture_metadata") >= 3
    assert cam.lens_at_capture == [6.0]
    assert shot.lens_position == 6.0
    # the same position again: no new move, no waiting
    before = names(cam.calls).count("capture_metadata")
    capture(camera, tmp_path, 1, lens=6.0)
    assert names(cam.calls).count("capture_metadata") == before


def test_focus_stack_moves_the_lens_for_each_photo(tmp_path: Path) -> None:
    cfg = camera_cfg(focus={"stack": 3, "stack_range": (3.0, 6.0)})
    camera, module, _ = open_camera(cfg)
    info = camera.start()
    stack = lens_positions(cfg.focus, info["has_autofocus"])
    assert stack == [3.0, 4.5, 6.0]
    shots = [capture(camera, tmp_path, i, lens=lens) for i, lens in enumerate(stack)]
    assert module.camera.lens_at_capture == [3.0, 4.5, 6.0]
    assert [s.lens_position for s in shots] == [3.0, 4.5, 6.0]


def test_camera_without_autofocus_makes_no_focus_calls(tmp_path: Path) -> None:
    camera, module, _ = open_camera(camera_cfg(focus={"mode": "manual"}), FakePicamera2Module(fake.IMX477))
    info = camera.start()
    assert info["has_autofocus"] is False and "ignored" in info["focus"]
    assert lens_positions(camera.cfg.focus, False) == [None]
    shots = [capture(camera, tmp_path, 0), capture(camera, tmp_path, 1, lens=5.0)]
    cam = module.camera
    assert "autofocus_cycle" not in names(cam.calls)
    assert not any("AfMode" in c or "LensPosition" in c for c in set_controls(cam.calls))
    assert [s.lens_position for s in shots] == [None, None]


def test_scaler_crop_is_centred_in_the_field_of_the_configured_mode() -> None:
    """The full field of view is ``camera_controls["ScalerCrop"][1]`` after configure: a small
    resolution gets a cropped sensor mode, so the pixel array at (0, 0) is the wrong field."""
    camera, module, _ = open_camera(camera_cfg(crop=0.5))
    info = camera.start()
    field = module.camera.camera_controls["ScalerCrop"][1]
    assert field == (768, 432, 3072, 1728)  # imx708 at 200 x 150: the cropped 1536 x 864 mode
    crops = [c["ScalerCrop"] for c in set_controls(module.camera.calls) if "ScalerCrop" in c]
    assert crops == [(1536, 864, 1536, 864)]
    x, y, w, h = crops[0]
    assert x + w / 2 == field[0] + field[2] / 2 and y + h / 2 == field[1] + field[3] / 2
    assert w == field[2] / 2 and h == field[3] / 2
    assert info["scaler_crop"] == [1536, 864, 1536, 864]
    # the crop is set before the camera starts, so the settle meters the cropped view
    calls = module.camera.calls
    assert calls.index(("set_controls", {"ScalerCrop": crops[0]})) < calls.index(("start",))


def test_scaler_crop_of_a_full_resolution_mode() -> None:
    camera, module, _ = open_camera(camera_cfg(crop=0.3, resolution=(4056, 3040)),
                                    FakePicamera2Module(fake.IMX477))
    assert camera.start()["scaler_crop"] == [1420, 1064, 1216, 912]


def test_scaler_crop_helper() -> None:
    assert scaler_crop((4056, 3040), 1.0) is None
    assert scaler_crop(None, 0.5) is None
    assert scaler_crop((4056, 3040), 0.3) == (1420, 1064, 1216, 912)
    assert scaler_crop((696, 528, 2664, 1980), 0.5) == (1362, 1023, 1332, 990)


def test_no_crop_requested_sets_none(tmp_path: Path) -> None:
    camera, module, _ = open_camera(camera_cfg(crop=1.0))
    assert camera.start()["scaler_crop"] is None
    assert not any("ScalerCrop" in c for c in set_controls(module.camera.calls))


def test_photo_pixels_exif_and_crc(tmp_path: Path) -> None:
    cfg = camera_cfg(resolution=(202, 150), orientation=3, jpeg_quality=95)  # stride 256 != 202
    camera, module, _ = open_camera(cfg)
    shot = camera.capture(tmp_path / "IMG_0007.jpg", rotor=22.5, turntable=135.0, index=7, lens_position=4.5)
    data = (tmp_path / "IMG_0007.jpg").read_bytes()
    assert shot == Shot(path=tmp_path / "IMG_0007.jpg", size=len(data), crc32=zlib.crc32(data),
                        lens_position=4.5, captured_at=shot.captured_at, rotor=22.5, turntable=135.0,
                        index=7)
    assert [p.name for p in tmp_path.iterdir()] == ["IMG_0007.jpg"]  # no temp file left
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (202, 150)
    exif = image.getexif()
    assert exif[0x0112] == 3
    assert exif[0x010F] == "Raspberry Pi" and exif[0x0110] == "imx708"
    record = {"rotor": 22.5, "turntable": 135.0, "index": 7, "lens_position": 4.5}
    assert json.loads(exif[0x010E]) == record
    comment = exif.get_ifd(0x8769)[0x9286]
    assert comment[:8] == b"ASCII\0\0\0" and json.loads(comment[8:]) == record
    # the pixels: the fake's known YUV pattern, read through the stride correctly
    image.draft("YCbCr", image.size)  # decode to YCbCr as stored, no trip through RGB
    ycbcr = np.asarray(image).astype(int)
    for (x, y), (cb, cr) in {(20, 20): (110, 150), (180, 20): (150, 150), (20, 130): (110, 110),
                             (180, 130): (150, 110)}.items():
        assert abs(ycbcr[y, x, 1] - cb) <= 4 and abs(ycbcr[y, x, 2] - cr) <= 4, (x, y, ycbcr[y, x])
    luma = ycbcr[75, :, 0]
    assert abs(luma[0] - 60) <= 4 and abs(luma[-1] - 190) <= 4 and np.all(np.diff(luma[5:-5]) >= -3)


def test_yuv420_planes_are_views_that_skip_the_padding() -> None:
    width, height, stride = 6, 4, 8
    frame = np.arange(stride * height * 3 // 2, dtype=np.uint8).reshape(height * 3 // 2, stride)
    y, u, v = yuv420_planes(frame, width, height)
    assert y.shape == (4, 6) and u.shape == (2, 3) and v.shape == (2, 3)
    assert y[1].tolist() == [8, 9, 10, 11, 12, 13]
    assert u.tolist() == [[32, 33, 34], [36, 37, 38]]
    assert v.tolist() == [[40, 41, 42], [44, 45, 46]]
    assert np.shares_memory(y, frame) and np.shares_memory(v, frame)


def test_simplejpeg_path_inserts_the_exif_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the Pi simplejpeg encodes the planes; the stand-in checks what it is given as simplejpeg
    does (row-contiguous planes, 4:2:0 shapes) and returns a JFIF JPEG without EXIF."""
    seen: list[tuple[tuple[int, int], ...]] = []

    class SimpleJpeg:
        @staticmethod
        def encode_jpeg_yuv_planes(Y: Any, U: Any, V: Any, quality: int = 85, fastdct: bool = False) -> bytes:
            for plane in (Y, U, V):
                assert plane.strides[1] == 1
            assert U.shape == V.shape and U.shape[0] * 2 == Y.shape[0] and U.shape[1] * 2 == Y.shape[1]
            seen.append((Y.shape, U.shape))
            big = [Image.fromarray(np.ascontiguousarray(Y))] + [
                Image.fromarray(np.ascontiguousarray(p)).resize((Y.shape[1], Y.shape[0])) for p in (U, V)]
            out = io.BytesIO()
            Image.merge("YCbCr", big).save(out, format="JPEG", quality=quality)
            return out.getvalue()

    monkeypatch.setitem(sys.modules, "simplejpeg", SimpleJpeg)
    camera, _, _ = open_camera(camera_cfg(resolution=(202, 150)))
    assert camera.start()["jpeg_encoder"] == "simplejpeg"
    capture(camera, tmp_path, 2)
    assert seen == [((150, 202), (75, 101))]
    data = (tmp_path / "IMG_0002.jpg").read_bytes()
    assert data[2:4] == b"\xff\xe0"  # JFIF APP0 first, then the EXIF APP1
    app0_end = 4 + int.from_bytes(data[4:6], "big")
    assert data[app0_end:app0_end + 2] == b"\xff\xe1" and data[app0_end + 4:app0_end + 10] == b"Exif\0\0"
    exif = Image.open(io.BytesIO(data)).getexif()
    assert json.loads(exif[0x010E])["index"] == 2


def test_insert_exif_refuses_non_jpeg() -> None:
    with pytest.raises(CameraError):
        insert_exif(b"GIF89a", b"Exif\0\0")


def test_missing_camera_is_one_line_camera_error() -> None:
    camera, _, _ = open_camera(camera_cfg(), FakePicamera2Module(present=False))
    with pytest.raises(CameraError) as err:
        camera.start()
    message = str(err.value)
    assert message.startswith("no camera found: check the ribbon cable and `rpicam-hello --list-cameras`")
    assert "\n" not in message


def test_capture_failure_is_camera_error(tmp_path: Path) -> None:
    camera, _, _ = open_camera(camera_cfg(), FakePicamera2Module(fail_capture=True))
    with pytest.raises(CameraError, match="capture failed: Failed to map the main stream"):
        capture(camera, tmp_path, 0)
    assert list(tmp_path.iterdir()) == []


def test_start_failure_releases_the_camera() -> None:
    module = FakePicamera2Module()
    camera = Picamera2Camera(camera_cfg(), picamera2_module=module, controls_module=fake.controls,
                             sleep=lambda s: None)

    def broken(camera_config: dict[str, Any]) -> None:
        raise RuntimeError("Failed to allocate buffers.")

    original = module.Picamera2

    def make(camera_num: int = 0, tuning: Any = None) -> FakePicamera2:
        cam = original(camera_num, tuning)
        cam.configure = broken  # type: ignore[method-assign]
        return cam

    module.Picamera2 = make  # type: ignore[method-assign]
    with pytest.raises(CameraError, match="did not start: Failed to allocate buffers"):
        camera.start()
    assert module.camera.closed


def test_missing_picamera2_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    with pytest.raises(CameraError, match="apt install python3-picamera2"):
        Picamera2Camera(camera_cfg()).start()


def test_importing_the_module_does_not_import_picamera2() -> None:
    code = ("import sys, openscan_pi.rig.picam, openscan_pi.rig.camera;"
            "bad = [m for m in ('picamera2', 'libcamera', 'numpy', 'simplejpeg') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert picam.Picamera2Camera.name == "picamera2"


def test_simplejpeg_without_yuv_planes_falls_back_to_pillow_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """simplejpeg before 1.8.0 imports fine and has no encode_jpeg_yuv_planes."""
    old = type("simplejpeg", (), {"__version__": "1.7.6", "encode_jpeg": staticmethod(lambda *a, **k: b"")})
    monkeypatch.setitem(sys.modules, "simplejpeg", old)
    caplog.set_level("DEBUG", logger="openscan_pi.rig.picam")
    camera, _, _ = open_camera(camera_cfg(resolution=(202, 150)))
    info = camera.start()
    assert info["jpeg_encoder"].startswith("Pillow") and "1.7.6" in info["jpeg_encoder"]
    shots = [capture(camera, tmp_path, i) for i in range(3)]
    for shot in shots:
        assert shot.path is not None
        image = Image.open(shot.path)
        assert image.format == "JPEG" and image.size == (202, 150)
        assert json.loads(image.getexif()[0x010E])["index"] == shot.index
    said = [r for r in caplog.records if r.getMessage().startswith("JPEGs are encoded with")]
    assert [r.levelname for r in said] == ["DEBUG"]  # once, not per photo
    assert "Pillow" in said[0].getMessage() and "1.8.0" in said[0].getMessage()


def test_close_releases_the_camera_even_when_its_stop_fails_once() -> None:
    """picamera2's close() stops the camera itself; a stop() of our own that raised would skip
    the close and leave the camera acquired, so the next open fails as busy."""
    camera, module, _ = open_camera(camera_cfg(), FakePicamera2Module(stop_errors=1))
    camera.start()
    camera.close()
    assert "stop" not in names(module.camera.calls) and module.camera.closed
    again, _, _ = open_camera(camera_cfg(), module)
    assert again.start()["model"] == "imx708"  # not "Device or resource busy"
    again.close()


# -- a camera that stalls --------------------------------------------------------------------------


@pytest.fixture
def forever(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that would block for ever fails the test after 3 s instead of 20 s."""
    monkeypatch.setattr(fake, "FOREVER_S", 3.0)


@pytest.mark.parametrize(("spec", "lens", "waiting"), [
    (fake.IMX708, None, "autofocus_cycle"),
    (fake.IMX708, 6.0, "capture_metadata"),
    (fake.IMX477, None, "capture_request"),
])
def test_a_stall_is_flushed_closed_reopened_and_the_position_taken_again(
        tmp_path: Path, forever: None, spec: dict[str, Any], lens: float | None, waiting: str) -> None:
    module = FakePicamera2Module(spec, stall_after=2)  # a reopened camera works again
    camera, _, sleep = open_camera(camera_cfg(timeout_s=0.3, retries=2), module)
    info = camera.start()
    shots = [capture(camera, tmp_path, i, lens=lens if i < 2 else lens and lens + i) for i in range(4)]
    assert module.forever == []
    assert [s.index for s in shots] == [0, 1, 2, 3] and len(list(tmp_path.iterdir())) == 4
    first, second = module.instances
    calls = [n for n in names(first.calls) if n != "set_controls"]
    assert calls[-3:] == [waiting, "cancel_all_and_flush", "close"] and "stop" not in calls
    assert first.closed and not second.closed
    # the same exposure, gain and colour gains on the reopened camera, without a new settle
    assert sleep.slept == [0.5]
    lock = {"AeEnable": False, "AwbEnable": False, "ExposureTime": info["exposure_us"],
            "AnalogueGain": info["analogue_gain"], "ColourGains": tuple(info["colour_gains"])}
    assert second.calls.index(("set_controls", lock)) < second.calls.index(("start",))  # from its first frame
    camera.close()


def test_a_camera_that_stays_stalled_fails_after_its_retries(tmp_path: Path, forever: None) -> None:
    module = FakePicamera2Module(fake.IMX477, stall_after=1, stall_reopens=None)
    camera, _, _ = open_camera(camera_cfg(timeout_s=0.2, retries=2), module)
    capture(camera, tmp_path, 0)
    with pytest.raises(CameraStalled) as err:
        capture(camera, tmp_path, 1)
    assert str(err.value) == ("no frame within 0.2 s, 3 tries (the camera closed and opened again "
                              "between them)")
    assert len(module.instances) == 3 and module.forever == []
    assert [p.name for p in tmp_path.iterdir()] == ["IMG_0000.jpg"]
    module.unstall()  # the cable pushed back in: the next capture opens the camera again
    capture(camera, tmp_path, 1)
    assert len(module.instances) == 4
    camera.close()


def test_a_camera_that_stalls_while_it_settles_does_not_start(forever: None) -> None:
    module = FakePicamera2Module(stall_after=0)
    camera, _, _ = open_camera(camera_cfg(timeout_s=0.2), module)
    with pytest.raises(CameraError, match=r"the camera did not start: no frame within 0\.2 s"):
        camera.start()
    assert module.camera.closed and module.forever == []


def test_the_watch_tells_a_camera_call_that_has_not_returned(tmp_path: Path, forever: None) -> None:
    """picamera2 before 0.3.20 ignores wait=SECONDS: a stalled call returns only when the stall
    ends. Meanwhile the watch says the camera is wedged."""
    module = FakePicamera2Module(stall_after=1, stall_reopens=None, legacy=True)
    camera, _, _ = open_camera(camera_cfg(timeout_s=0.2), module)
    capture(camera, tmp_path, 0)
    assert camera.watch.overdue() is None
    done = threading.Event()
    worker = threading.Thread(target=lambda: (capture(camera, tmp_path, 1), done.set()))
    worker.start()
    assert module.blocked.wait(10)
    assert camera.watch.overdue() is None  # within its bound
    later = camera.watch.overdue(now=time.monotonic() + 60)
    assert later is not None and later.startswith("the camera's autofocus_cycle has not returned for")
    module.unstall()
    worker.join(10)
    assert done.is_set() and camera.watch.overdue(now=time.monotonic() + 60) is None
    camera.close()


def test_an_old_picamera2_is_told(caplog: pytest.LogCaptureFixture) -> None:
    camera, _, _ = open_camera(camera_cfg(), FakePicamera2Module(legacy=True))
    camera.start()
    assert "picamera2 before 0.3.20" in caplog.text and "apt" in caplog.text


@pytest.mark.parametrize("fmt", ["YUV420", "YVU420", "NV12", "NV21"])
def test_planes_of_each_granted_yuv420_layout(fmt: str) -> None:
    # A camera may grant another 4:2:0 layout than the YUV420 asked (libcamera's virtual camera
    # gives NV12); rows padded to a stride wider than the image, as cameras do.
    width, height, stride = 6, 4, 8
    rng = np.random.default_rng(7)
    y = rng.integers(0, 256, (height, width), dtype=np.uint8)
    u = rng.integers(0, 256, (height // 2, width // 2), dtype=np.uint8)
    v = rng.integers(0, 256, (height // 2, width // 2), dtype=np.uint8)
    rows = np.zeros((height * 3 // 2, stride), dtype=np.uint8)
    rows[:height, :width] = y
    if fmt in ("NV12", "NV21"):
        first, second = (u, v) if fmt == "NV12" else (v, u)
        rows[height:, :width:2], rows[height:, 1:width:2] = first, second
    else:
        first, second = (u, v) if fmt == "YUV420" else (v, u)
        chroma = rows[height:].reshape(-1)  # planes of half the stride and half the rows
        half = height // 2 * stride // 2
        chroma[:half].reshape(height // 2, stride // 2)[:, :width // 2] = first
        chroma[half:].reshape(height // 2, stride // 2)[:, :width // 2] = second
    got = picam.yuv_planes(rows, width, height, fmt)
    for plane, want in zip(got, (y, u, v), strict=True):
        assert np.array_equal(plane, want)
    with pytest.raises(CameraError, match="cannot encode BGR888"):
        picam.yuv_planes(rows, width, height, "BGR888")
