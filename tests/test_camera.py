"""The camera interface's shared helpers: lens positions, EXIF, durable photo writes, the factory."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import zlib
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from PIL import Image

from openscan_pi.config import load_config
from openscan_pi.errors import DiskError
from openscan_pi.rig.camera import Camera, exif_bytes, lens_positions, write_photo
from openscan_pi.rig.cameras import make_camera
from openscan_pi.rig.errors import CameraError
from openscan_pi.rig.picam import Picamera2Camera
from openscan_pi.rig.trigger import CameraTrigger, ExternalCamera
from openscan_pi.sim.camera import SimulatedCamera

DEFAULTS = load_config(None, env={})
FOCUS = DEFAULTS.camera.focus


def focus(**changes: Any) -> Any:
    return dataclasses.replace(FOCUS, **changes)


@pytest.mark.parametrize(("changes", "has_af", "expected"), [
    ({"mode": "auto"}, True, [None]),
    ({"mode": "manual", "lens_position": 2.5}, True, [2.5]),
    ({"mode": "auto", "stack": 4, "stack_range": (3.0, 6.0)}, True, [3.0, 4.0, 5.0, 6.0]),
    ({"mode": "manual", "stack": 3, "stack_range": (8.0, 2.0)}, True, [8.0, 5.0, 2.0]),
    ({"mode": "auto", "stack": 5, "stack_range": (0.0, 1.0)}, True, [0.0, 0.25, 0.5, 0.75, 1.0]),
    ({"mode": "manual", "lens_position": 2.5}, False, [None]),
    ({"mode": "auto", "stack": 4}, False, [None]),
])
def test_lens_positions(changes: dict[str, Any], has_af: bool, expected: list[float | None]) -> None:
    assert lens_positions(focus(**changes), has_af) == expected


def test_exif_bytes_round_trip() -> None:
    data = exif_bytes(orientation=8, rotor=-12.345678, turntable=359.5, index=41, lens_position=None,
                      make="OpenScan", model="simulated")
    assert data.startswith(b"Exif\0\0")
    exif = Image.Exif()
    exif.load(data)
    assert exif[0x0112] == 8 and exif[0x010F] == "OpenScan" and exif[0x0110] == "simulated"
    expected = {"rotor": -12.3457, "turntable": 359.5, "index": 41, "lens_position": None}
    assert exif[0x010E] == json.dumps(expected, separators=(",", ":"))  # compact
    comment = exif.get_ifd(0x8769)[0x9286]
    assert comment.startswith(b"ASCII\0\0\0") and json.loads(comment[8:]) == expected
    # and in a real JPEG
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG", exif=data)
    assert json.loads(Image.open(buffer).getexif()[0x010E]) == expected


def test_write_photo_is_atomic_and_returns_size_and_crc(tmp_path: Path) -> None:
    path = tmp_path / "new" / "IMG_0001.jpg"
    data = os.urandom(5000)
    assert write_photo(path, data) == (5000, zlib.crc32(data))
    assert path.read_bytes() == data
    assert os.listdir(path.parent) == ["IMG_0001.jpg"]
    write_photo(path, b"second")  # replaces
    assert path.read_bytes() == b"second" and os.listdir(path.parent) == ["IMG_0001.jpg"]


def test_write_photo_disk_full_is_disk_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(b"old photo")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskError, match="disk full"):
        write_photo(path, b"new photo")
    assert path.read_bytes() == b"old photo"
    assert os.listdir(tmp_path) == ["IMG_0001.jpg"]


def test_write_photo_unwritable_folder_is_disk_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(DiskError, match="cannot write"):
        write_photo(blocker / "sub" / "IMG.jpg", b"x")


def test_make_camera_chooses_the_backend() -> None:
    cam = DEFAULTS.camera
    assert isinstance(make_camera(cam, rig_model="simulated"), SimulatedCamera)
    assert isinstance(make_camera(cam, rig_model="classic"), Picamera2Camera)  # nothing opened yet
    sim = make_camera(dataclasses.replace(cam, backend="simulated"), rig_model="mini")
    assert isinstance(sim, SimulatedCamera) and isinstance(sim, Camera)
    assert isinstance(make_camera(dataclasses.replace(cam, backend="picamera2"), rig_model="simulated"),
                      Picamera2Camera)
    trigger = CameraTrigger(DEFAULTS.rig.trigger, pin_factory=MockFactory(), sleep=lambda s: None)
    external = make_camera(dataclasses.replace(cam, backend="external"), rig_model="classic", trigger=trigger)
    assert isinstance(external, ExternalCamera) and external.trigger is trigger
    trigger.close()


def test_make_camera_external_without_trigger() -> None:
    with pytest.raises(CameraError, match="rig.trigger.pin"):
        make_camera(dataclasses.replace(DEFAULTS.camera, backend="external"), rig_model="classic")


def test_exif_user_comment_survives_pillow_before_11_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before Pillow 11.1 (Raspberry Pi OS bookworm has 9.4), ``Exif.get_ifd`` hands out a fresh
    dict that the Exif does not keep: what is put into it is silently dropped. The suite runs on
    that Pillow itself in the Pi-versions lane; here the same semantics stand in for it."""
    original = Image.Exif.get_ifd
    monkeypatch.setattr(Image.Exif, "get_ifd", lambda self, tag: dict(original(self, tag)))
    data = exif_bytes(orientation=1, rotor=5, turntable=90, index=3, lens_position=2.5, make="m", model="x")
    monkeypatch.undo()  # read back with the Pillow installed
    exif = Image.Exif()
    exif.load(data)
    comment = exif.get_ifd(0x8769).get(0x9286)
    assert comment is not None, "the UserComment was dropped"
    assert json.loads(comment[8:]) == {"rotor": 5.0, "turntable": 90.0, "index": 3, "lens_position": 2.5}
