"""The simulated camera: deterministic, different at every position, real JPEGs with EXIF."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from openscan_pi.config import load_config
from openscan_pi.rig.camera import Shot
from openscan_pi.sim.camera import SimulatedCamera, render

BASE = load_config(None, env={}).camera


def camera(width: int = 320, height: int = 240, **changes: object) -> SimulatedCamera:
    cam = SimulatedCamera(dataclasses.replace(BASE, resolution=(width, height), **changes))
    cam.start()
    return cam


def test_same_angles_same_bytes(tmp_path: Path) -> None:
    cam = camera()
    a = cam.capture(tmp_path / "a.jpg", rotor=20, turntable=45, index=3, lens_position=4.0)
    b = camera().capture(tmp_path / "b.jpg", rotor=20, turntable=45, index=3, lens_position=4.0)
    assert (tmp_path / "a.jpg").read_bytes() == (tmp_path / "b.jpg").read_bytes()
    assert (a.size, a.crc32) == (b.size, b.crc32)


def test_different_angles_different_images() -> None:
    views = [(0, 0), (0, 10), (0, 180), (30, 0), (-30, 0), (60, 300)]
    frames = [render(320, 240, r, t).astype(np.int16) for r, t in views]
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            changed = np.mean(np.abs(frames[i] - frames[j]).sum(axis=2) > 30)
            assert changed > 0.1, (views[i], views[j], changed)  # a tenth of the frame at least


def test_turntable_turns_the_texture_not_the_outline() -> None:
    views = [render(320, 240, 10, t) for t in (0, 90, 200)]
    still = np.all([np.all(v == views[0], axis=2) for v in views[1:]], axis=0)
    # what changes is the sphere: a disc in the middle, 0.8 of the height across
    ys, xs = np.nonzero(~still)
    assert abs(xs.mean() - 160) < 3 and abs(ys.mean() - 120) < 3
    assert 0.75 * 240 < xs.max() - xs.min() < 0.85 * 240 and 0.75 * 240 < ys.max() - ys.min() < 0.85 * 240
    assert 0.3 < (~still).mean() < 0.45  # pi * 0.4^2 * 240 / 320 = 0.377
    assert np.all(still[:, :60]) and np.all(still[:, -60:])  # the background stays put


def test_turntable_full_turn_is_the_same_view() -> None:
    a, b = render(160, 120, 25, 30), render(160, 120, 25, 390)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # float rounding only


def test_resolution_quality_and_shot(tmp_path: Path) -> None:
    cam = camera(333, 222, jpeg_quality=70, orientation=6)
    info = cam.start()
    assert info["resolution"] == [333, 222] and info["has_autofocus"] is True
    shot = cam.capture(tmp_path / "IMG_0009.jpg", rotor=-15.5, turntable=200.0, index=9, lens_position=5.5)
    data = (tmp_path / "IMG_0009.jpg").read_bytes()
    assert shot == Shot(path=tmp_path / "IMG_0009.jpg", size=len(data), crc32=zlib.crc32(data),
                        lens_position=5.5, captured_at=shot.captured_at, rotor=-15.5, turntable=200.0,
                        index=9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IMG_0009.jpg"]
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (333, 222)
    exif = image.getexif()
    assert exif[0x0112] == 6 and exif[0x010F] == "OpenScan" and exif[0x0110] == "simulated"
    record = {"rotor": -15.5, "turntable": 200.0, "index": 9, "lens_position": 5.5}
    assert json.loads(exif[0x010E]) == record
    assert json.loads(exif.get_ifd(0x8769)[0x9286][8:]) == record
    # the quality setting is used: a lower quality gives a smaller file of the same view
    low = camera(333, 222, jpeg_quality=30).render_jpeg(rotor=-15.5, turntable=200.0, index=9,
                                                        lens_position=5.5)
    assert len(low) < len(data) * 0.8


def test_the_object_is_textured_and_lit() -> None:
    frame = render(640, 480, 20, 30).astype(np.int16)
    sphere = frame[180:300, 260:380]
    assert sphere.std() > 20  # texture, not a flat disc
    assert len(np.unique(sphere.reshape(-1, 3), axis=0)) > 2000
    # the ring light at the lens: averaged over a turn of the turntable (which averages the
    # texture out), the middle of the sphere is much brighter than its rim
    turn = np.mean([render(640, 480, 0, t).astype(float) for t in range(0, 360, 30)], axis=0)
    assert turn[230:250, 310:330].mean() > 1.6 * turn[235:245, 131:136].mean()


def test_importing_the_module_does_not_import_numpy() -> None:
    code = ("import sys, openscan_pi.sim.camera;"
            "bad = [m for m in ('numpy', 'PIL') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strips_make_the_same_frame_whatever_their_height() -> None:
    from openscan_pi.sim.camera import render_strips

    whole = render(333, 250, 15, 70)
    for rows in (1, 7, 250, 400):
        out = np.zeros_like(whole)
        tops = []
        for top, strip in render_strips(333, 250, 15, 70, rows=rows):
            assert strip.shape[1:] == (333, 3) and strip.dtype == np.uint8
            out[top:top + strip.shape[0]] = strip
            tops.append(top)
        assert tops == list(range(0, 250, rows))
        assert np.array_equal(out, whole), rows


def test_texture_made_in_bands_is_the_texture_made_whole() -> None:
    from openscan_pi.sim.camera import make_texture

    whole, tex_w, tex_h = make_texture(1024, band=512)
    for band in (64, 100):
        pixels, w, h = make_texture(1024, band=band)
        assert (w, h) == (tex_w, tex_h) and pixels.shape == (tex_w * tex_h, 3)
        # Pillow's scaling of a band rounds a few pixels the other way (its filter starts at
        # the band's first row); nothing else may differ
        diff = np.abs(pixels.astype(np.int16) - whole)
        assert diff.max() <= 1 and np.count_nonzero(diff) < 1e-3 * diff.size, band


def test_a_closed_camera_holds_no_texture(tmp_path: Path) -> None:
    from openscan_pi.sim.camera import _texture

    cam = camera()
    cam.capture(tmp_path / "a.jpg", rotor=0, turntable=0, index=0)
    assert _texture.cache_info().currsize == 1
    cam.close()
    assert _texture.cache_info().currsize == 0
    again = camera()
    again.capture(tmp_path / "b.jpg", rotor=0, turntable=0, index=0)
    assert (tmp_path / "a.jpg").read_bytes() == (tmp_path / "b.jpg").read_bytes()
