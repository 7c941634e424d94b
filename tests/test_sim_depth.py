"""The simulated camera's depth of field: what is sharp follows the lens position over the
sphere's real depth, focusing magnifies about the optical axis, strips change nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from openscan_pi.config import load_config
from openscan_pi.sim import depth
from openscan_pi.sim.camera import SimulatedCamera
from openscan_pi.sim.depth import psnr, sharpness

W, H = 640, 480


def _patch(image: np.ndarray, row: int, col: int, half: int = 24) -> np.ndarray:
    return image[row - half:row + half, col - half:col + half]


def test_the_depth_of_the_sphere_spans_the_default_stack_range() -> None:
    dioptres = depth.depth_dioptres(W, H, 0, H, depth.lens_view(W, H, 4.5))
    sphere = dioptres[dioptres > 2]
    cfg = load_config(None, env={}).camera.focus
    near, far = min(cfg.stack_range), max(cfg.stack_range)
    assert near < sphere.min() < 4.2 and 5.4 < sphere.max() < far
    assert dioptres.min() == pytest.approx(1 / (depth.BACKDROP * depth.METRES_PER_UNIT))


def test_what_is_sharp_follows_the_focal_plane() -> None:
    """The sphere's front (about 5.6 dioptres, at the centre) is sharp with the lens at 6 and
    blurred at 4; a point near its outline (about 4.3 dioptres) the other way round."""
    width, height = 2 * W, 2 * H
    truth = depth.render_sharp(width, height, 20, 30, 5.0)
    near_focus = depth.render_focused(width, height, 20, 30, 6.0)
    far_focus = depth.render_focused(width, height, 20, 30, 4.0)
    dioptres = depth.depth_dioptres(width, height, 0, height, depth.lens_view(width, height, 5.0))
    row = height // 2
    rim = int(np.flatnonzero(dioptres[row] > 2)[0]) + 10  # just inside the outline
    assert dioptres[row, rim] < 4.5 and dioptres[row, width // 2] > 5.4
    for col, sharp_with, blurred_with in ((width // 2, near_focus, far_focus),
                                          (rim, far_focus, near_focus)):
        reference = sharpness(_patch(truth, row, col, 8), border=0)
        assert sharpness(_patch(sharp_with, row, col, 8), border=0) > 0.8 * reference, col
        assert sharpness(_patch(blurred_with, row, col, 8), border=0) < 0.4 * reference, col


def test_focusing_magnifies_about_the_optical_axis() -> None:
    cv2 = pytest.importorskip("cv2", reason="OpenCV (pip install opencv-python-headless) warps")

    near, far = depth.render_sharp(W, H, 20, 30, 6.0), depth.render_sharp(W, H, 20, 30, 3.0)
    m_near, sx_near, sy_near = depth.lens_view(W, H, 6.0)
    m_far, sx_far, sy_far = depth.lens_view(W, H, 3.0)
    assert m_near > m_far > 1
    # A point u (from the image centre) in the far view is at m_near/m_far (u - s_far) + s_near.
    scale = m_near / m_far
    matrix = np.array([[scale, 0, 0], [0, scale, 0]], dtype=np.float64)
    for axis, (size, s_far, s_near) in enumerate(((W, sx_far, sx_near), (H, sy_far, sy_near))):
        centre = size / 2 - 0.5
        matrix[axis, 2] = (scale * (-s_far - centre) + s_near + centre)
    predicted = cv2.warpAffine(far, matrix, (W, H), flags=cv2.INTER_CUBIC)  # far -> near
    assert psnr(predicted, near) > 35
    assert psnr(far, near) < 25  # unaligned, they differ


def test_strips_of_any_height_give_the_same_frame() -> None:
    whole = depth.render_focused(W, H, -10, 200, 3.75)
    pieces = np.empty_like(whole)
    for top, strip in depth.render_focused_strips(W, H, -10, 200, 3.75, rows=17):
        pieces[top:top + strip.shape[0]] = strip
    assert np.array_equal(whole, pieces)


def test_the_camera_renders_the_lens_position_and_records_it(tmp_path: Path) -> None:
    base = load_config(None, env={}).camera
    camera = SimulatedCamera(dataclasses.replace(base, resolution=(W, H)))
    assert "depth of field" in camera.start()["focus"]
    shot = camera.capture(tmp_path / "a.jpg", rotor=20, turntable=30, index=1, lens_position=3.5)
    auto = camera.capture(tmp_path / "b.jpg", rotor=20, turntable=30, index=1)
    assert shot.lens_position == 3.5 and auto.lens_position is None
    with Image.open(shot.path) as a, Image.open(auto.path) as b:
        focused, sharp = np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))
    assert sharpness(focused) < 0.5 * sharpness(sharp)  # the front of the sphere is blurred
