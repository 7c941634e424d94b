"""The picamera2 double fails the way the real picamera2 does (the facts it mirrors are in its
module docstring): if it stopped doing so, the adapter's tests would prove nothing."""

from __future__ import annotations

import threading
import time

import pytest

from tests import fake_picamera2 as fake
from tests.fake_picamera2 import AfStateEnum, BlockedForever, FakePicamera2Module


def started(module: FakePicamera2Module, **main: object) -> fake.FakePicamera2Legacy:
    cam = module.Picamera2()
    cam.configure(cam.create_still_configuration(main={"size": (200, 150), "format": "YUV420", **main},
                                                 raw=None))
    cam.start()
    return cam


def test_still_configuration_has_a_raw_stream_and_extra_controls_by_default() -> None:
    cam = FakePicamera2Module().Picamera2()
    config = cam.create_still_configuration(main={"size": (640, 480), "format": "YUV420"})
    assert config["raw"] == {"format": "SRGGB10_CSI2P", "size": (640, 480)}
    assert config["controls"] == {"NoiseReductionMode": fake.NoiseReductionModeEnum.HighQuality,
                                  "FrameDurationLimits": (100, 1_000_000_000)}
    cam.configure(config)
    assert cam.camera_configuration()["raw"]["framesize"] > 0  # a raw buffer is allocated
    with pytest.raises(ValueError, match="Bad key"):
        cam.create_still_configuration(main={"sise": (1, 1)})


def test_scaler_crop_limit_is_the_chosen_modes_crop() -> None:
    cam = FakePicamera2Module(fake.IMX477).Picamera2()
    assert cam.camera_controls["ScalerCrop"][1] == (0, 0, 4056, 3040)
    cam.configure(cam.create_still_configuration(main={"size": (640, 480)}, raw=None))
    assert cam.camera_controls["ScalerCrop"][1] == (696, 528, 2664, 1980)  # the cropped 1332x990 mode


def test_a_stall_times_out_after_wait_and_without_wait_fails_the_test(monkeypatch: pytest.MonkeyPatch
                                                                      ) -> None:
    module = FakePicamera2Module(stall_after=1)
    cam = started(module)
    cam.capture_request(wait=1).release()
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        cam.capture_request(wait=0.2)
    assert time.monotonic() - began >= 0.2  # it waited for the whole of its wait
    assert module.blocked.is_set()
    monkeypatch.setattr(fake, "FOREVER_S", 0.2)
    with pytest.raises(BlockedForever):
        cam.capture_metadata()
    assert module.forever == ["capture_metadata on a stalled camera without wait=SECONDS: a real "
                              "picamera2 blocks here for ever"]


def test_a_stall_ends_when_told_and_a_blocked_call_goes_on() -> None:
    module = FakePicamera2Module(stall_after=1, stall_reopens=None)
    cam = started(module)
    cam.capture_request(wait=1).release()
    threading.Thread(target=lambda: (module.blocked.wait(10), module.unstall())).start()
    assert cam.capture_metadata(wait=30)["ExposureTime"] == fake.AUTO_EXPOSURE


def test_a_reopened_camera_recovers_unless_the_stall_outlives_it() -> None:
    module = FakePicamera2Module(stall_after=1, stall_reopens=1)
    cam = started(module)
    cam.capture_request(wait=1).release()
    for recovers in (False, True):
        cam.close()
        cam = started(module)
        if recovers:
            cam.capture_request(wait=1).release()
        else:
            with pytest.raises(TimeoutError):
                cam.capture_request(wait=0.05)


def test_a_second_request_on_one_buffer_stalls() -> None:
    cam = started(FakePicamera2Module())
    held = cam.capture_request(wait=1)
    with pytest.raises(TimeoutError):
        cam.capture_request(wait=0.1)
    held.release()
    cam.cancel_all_and_flush()  # type: ignore[attr-defined]
    cam.capture_request(wait=1).release()


def test_controls_take_effect_frames_later() -> None:
    cam = started(FakePicamera2Module())
    cam.set_controls({"AeEnable": False, "ExposureTime": 1000})
    seen = [cam.capture_metadata(wait=1)["ExposureTime"] for _ in range(fake.CONTROL_DELAY + 1)]
    assert seen == [fake.AUTO_EXPOSURE] * (fake.CONTROL_DELAY - 1) + [1000, 1000]


def test_autofocus_cycle_goes_through_scanning_and_takes_frames() -> None:
    cam = started(FakePicamera2Module())
    before = cam.frame
    assert cam.autofocus_cycle(wait=5) is True
    assert cam.frame - before >= fake.CONTROL_DELAY + fake.AF_SCAN_FRAMES - 1
    assert cam.af_state == AfStateEnum.Focused and cam.lens == fake.AF_FOUND
    slow = started(FakePicamera2Module(frame_s=0.02))
    with pytest.raises(TimeoutError):  # a wait shorter than the scan
        slow.autofocus_cycle(wait=0.05)


def test_close_stops_by_itself_and_a_failed_stop_keeps_the_camera() -> None:
    module = FakePicamera2Module(stop_errors=1)
    cam = started(module)
    with pytest.raises(RuntimeError, match="Failed to stop camera"):
        cam.stop()
    assert cam.started
    with pytest.raises(RuntimeError, match="Device or resource busy"):
        module.Picamera2()  # still acquired
    cam.close()  # stops it itself, then releases it
    assert not cam.started and cam.closed
    module.Picamera2()


def test_stop_behind_a_hung_job_blocks_but_close_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake, "FOREVER_S", 0.2)
    module = FakePicamera2Module(stall_after=1)
    cam = started(module)
    cam.capture_request(wait=1).release()
    with pytest.raises(TimeoutError):
        cam.capture_request(wait=0.05)
    with pytest.raises(BlockedForever):
        cam.stop()
    cam.close()
    assert cam.closed and not cam.camera_properties


def test_no_camera_is_index_error_and_legacy_has_no_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(IndexError):
        FakePicamera2Module(present=False).Picamera2()
    monkeypatch.setattr(fake, "FOREVER_S", 0.2)
    module = FakePicamera2Module(legacy=True, stall_after=1)
    cam = started(module)
    assert not hasattr(cam, "cancel_all_and_flush")
    cam.capture_request(wait=1).release()
    with pytest.raises(BlockedForever):  # picamera2 < 0.3.20 takes wait=0.05 as "for ever"
        cam.capture_request(wait=0.05)
