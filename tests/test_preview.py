"""The camera's preview: the focus figure, the simulated camera's preview, the picamera2 adapter's
on its double (which stalls as the real one does), and ``preview`` without a daemon."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image, ImageFilter

from openscan_pi.config import load_config
from openscan_pi.rig.camera import CameraStalled
from openscan_pi.rig.preview import PREVIEW_WIDTH, focus_figure, preview_size
from openscan_pi.rig.rig import Rig
from openscan_pi.sim.camera import SimulatedCamera, render
from tests import fake_picamera2 as fake
from tests.fake_picamera2 import FakePicamera2Module
from tests.test_picam import camera_cfg, names, open_camera

from .conftest import cli_env, run_cli

BASE = load_config(None, env={}).camera


def grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def decode(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    assert image.format == "JPEG"
    return image


def test_the_focus_figure_falls_as_the_frame_blurs() -> None:
    sharp = render(640, 480, 20.0, 45.0)
    figures = [focus_figure(grey(sharp))]
    for radius in (0.7, 1.5, 3.0):
        blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(radius)))
        figures.append(focus_figure(grey(blurred)))
    assert figures == sorted(figures, reverse=True) and len(set(figures)) == 4
    assert figures[0] > 3 * figures[2]  # a blur of 1.5 px is plain in the figure


def test_the_focus_figure_looks_at_the_centre_third_only() -> None:
    frame = np.full((300, 300), 128, dtype=np.uint8)
    frame[:, :100] = np.random.default_rng(1).integers(0, 255, (300, 100))  # detail at the edge
    assert focus_figure(frame) == 0.0
    frame[100:200, 100:200] = np.random.default_rng(2).integers(0, 255, (100, 100))
    assert focus_figure(frame) > 1000
    assert focus_figure(np.zeros((5, 5), dtype=np.uint8)) == 0.0  # no centre third to speak of


def test_preview_size() -> None:
    assert preview_size(4056, 3040) == (640, 480)
    assert preview_size(1920, 1080) == (640, 360)
    assert preview_size(320, 240) == (320, 240)


def test_the_simulated_camera_previews_its_view_small_whatever_its_resolution() -> None:
    camera = SimulatedCamera(dataclasses.replace(BASE, resolution=(4056, 3040), exposure_us=None))
    shot = camera.preview(rotor=20.0, turntable=45.0)
    image = decode(shot.jpeg)
    assert image.size == (shot.width, shot.height) == (PREVIEW_WIDTH, 480)
    assert (shot.exposure_us, shot.gain, shot.lens_position) == (10000, 1.0, None)
    # what a photo at these angles shows, scaled down
    seen = np.asarray(image.convert("L"), dtype=np.float32)
    expected = grey(render(640, 480, 20.0, 45.0)).astype(np.float32)
    assert np.abs(seen - expected).mean() < 4
    other = camera.preview(rotor=20.0, turntable=135.0, lens_position=3.5)
    assert other.lens_position == 3.5 and other.jpeg != shot.jpeg


def test_the_simulated_preview_shows_the_depth_of_field_of_its_lens_position() -> None:
    # Turning the (simulated) focus ring: the figure peaks where the sphere is in focus.
    camera = SimulatedCamera(dataclasses.replace(BASE, resolution=(1280, 960)))
    figures = {lens: camera.preview(rotor=0.0, turntable=0.0, lens_position=lens).focus
               for lens in (0.5, 4.0, 6.0, 10.0)}
    assert max(figures, key=lambda lens: figures[lens]) == 6.0
    assert figures[6.0] > 10 * max(figures[0.5], figures[10.0])
    assert camera.preview(rotor=0.0, turntable=0.0).focus > figures[6.0]  # all in focus


# -- the Pi camera's preview, on the picamera2 double --------------------------------------------


def test_a_preview_is_one_frame_of_the_still_configuration_without_focusing() -> None:
    camera, module, _ = open_camera(camera_cfg(resolution=(1536, 864)))
    camera.start()
    cam = module.camera
    before = len(cam.calls)
    shot = camera.preview(rotor=0.0, turntable=0.0)
    calls = names(cam.calls[before:])
    assert calls == ["capture_request", "request.make_array", "request.release"]  # no focus, no
    # second stream, no configure: the scan's configuration stays as it is
    assert [n for n in names(cam.calls) if n == "configure"] == ["configure"]
    image = decode(shot.jpeg)
    assert image.size == (shot.width, shot.height) == (640, 360)
    # the exposure locked after the settle, the lens where it is
    assert (shot.exposure_us, shot.gain) == (fake.AUTO_EXPOSURE, fake.AUTO_GAIN)
    assert shot.lens_position == 1.0
    # the double's pattern: Y rises left to right, so the preview does too
    luma = np.asarray(image.convert("L"), dtype=np.float32)
    assert luma[:, :40].mean() + 80 < luma[:, -40:].mean()
    assert shot.focus == pytest.approx(0.0, abs=2.0)  # a smooth ramp has no detail
    camera.close()


def test_a_preview_at_a_lens_position_moves_the_lens_first() -> None:
    camera, module, _ = open_camera(camera_cfg())
    camera.start()
    shot = camera.preview(rotor=0.0, turntable=0.0, lens_position=4.0)
    assert shot.lens_position == 4.0 and module.camera.lens_at_capture[-1] == 4.0
    assert "autofocus_cycle" not in names(module.camera.calls)
    camera.close()


def test_a_camera_without_a_focus_motor_reports_no_lens_position() -> None:
    camera, module, _ = open_camera(camera_cfg(), FakePicamera2Module(fake.IMX477))
    camera.start()
    shot = camera.preview(rotor=0.0, turntable=0.0, lens_position=4.0)
    assert shot.lens_position is None and decode(shot.jpeg).size == (200, 150)
    camera.close()


@pytest.fixture
def forever(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that would block for ever fails the test after 3 s instead of 20 s."""
    monkeypatch.setattr(fake, "FOREVER_S", 3.0)


def test_a_preview_on_a_stalled_camera_is_bounded_and_tried_again_as_a_capture(forever: None
                                                                              ) -> None:
    module = FakePicamera2Module(fake.IMX477, stall_after=1)  # a reopened camera works again
    camera, _, _ = open_camera(camera_cfg(timeout_s=0.3, retries=1), module)
    camera.start()
    camera.preview(rotor=0.0, turntable=0.0)  # the camera stalls after this one
    shot = camera.preview(rotor=0.0, turntable=0.0)
    assert decode(shot.jpeg).size == (200, 150)
    first, second = module.instances
    assert names(first.calls)[-3:] == ["capture_request", "cancel_all_and_flush", "close"]
    assert not second.closed and module.forever == []
    camera.close()


def test_a_preview_on_a_camera_that_stays_stalled_says_so(forever: None) -> None:
    module = FakePicamera2Module(fake.IMX477, stall_after=1, stall_reopens=None)
    camera, _, _ = open_camera(camera_cfg(timeout_s=0.2, retries=1), module)
    camera.start()
    camera.preview(rotor=0.0, turntable=0.0)
    with pytest.raises(CameraStalled, match=r"^no frame within 0\.2 s, 2 tries"):
        camera.preview(rotor=0.0, turntable=0.0)
    assert module.forever == []
    camera.close()


# -- `preview` without a daemon: the rig opened in the command's process ------------------------


@pytest.fixture
def sim_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "daemon": {"data_dir": str(tmp_path / "data"), "socket": str(tmp_path / "no.sock")},
        "rig": {"model": "simulated", "sim_time_scale": 0.001},
        "camera": {"resolution": [1280, 960]},
    }))
    return path


def test_preview_without_a_daemon_opens_the_rig_itself(sim_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "view.jpg"
    proc = run_cli("--config", str(sim_config), "preview", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    said: dict[str, Any] = json.loads(proc.stdout)
    assert said["path"] == str(out) and (said["width"], said["height"]) == (640, 480)
    assert decode(out.read_bytes()).size == (640, 480)
    assert said["focus"] > 0 and said["exposure_us"] == 10000 and "jpeg" not in said
    plain = run_cli("--config", str(sim_config), "preview", "--out", str(out))
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith("focus ") and plain.stdout.count("\n") == 1
    assert f"exposure 10.00 ms  gain 1.00  (640x480 in {out})" in plain.stdout


def test_preview_refuses_an_out_it_cannot_write(sim_config: Path, tmp_path: Path) -> None:
    proc = run_cli("--config", str(sim_config), "preview", "--out", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr == (f"openscan-pi: {tmp_path} is a folder: give a file name, e.g. --out "
                           f"{tmp_path / 'preview.jpg'}\n")
    proc = run_cli("--config", str(sim_config), "preview", "--out", str(tmp_path / "no" / "p.jpg"))
    assert proc.returncode == 1 and "does not exist: create it" in proc.stderr


def test_watch_on_a_terminal_rewrites_one_line_until_ctrl_c(sim_config: Path, tmp_path: Path
                                                            ) -> None:
    """Without a daemon (the rig opened by the command) and on a terminal: each refresh rewrites
    the line; Ctrl-C ends it with exit status 0, a newline, no traceback."""
    out = tmp_path / "view.jpg"
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "openscan_pi", "--config", str(sim_config),
                             "preview", "--watch", "--out", str(out)], stdout=secondary,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=cli_env())
    os.close(secondary)
    seen = b""
    try:
        while seen.count(b"\r\x1b[K") < 2:  # two refreshes drawn
            chunk = os.read(primary, 4096)
            assert chunk, proc.stderr.read() if proc.stderr else ""
            seen += chunk
        proc.send_signal(signal.SIGINT)
        _, errors = proc.communicate(timeout=60)
        with contextlib.suppress(OSError):  # the terminal's end: EIO once the writer has gone
            while chunk := os.read(primary, 4096):
                seen += chunk
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and errors == b""
    assert seen.endswith(b"\r\n") and b"\n" not in seen[:-2]  # one line, rewritten
    assert seen.split(b"\r\x1b[K")[1].startswith(b"focus ")
    assert decode(out.read_bytes()).size == (640, 480)


@pytest.mark.parametrize(("focus", "asked", "used"), [
    ({"mode": "manual", "lens_position": 3.0}, None, 3.0),  # where the scan's photos are taken
    ({"mode": "manual", "lens_position": 3.0}, 5.5, 5.5),  # asked: tried there
    ({"mode": "auto"}, None, None),  # autofocus per position: the lens stays
    ({"mode": "manual", "stack": 3, "stack_range": [1.0, 5.0]}, None, None),  # a stack: stays
])
def test_the_rig_previews_where_a_scan_focuses_unless_asked(
        tmp_path: Path, focus: dict[str, Any], asked: float | None, used: float | None) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"daemon": {"data_dir": str(tmp_path / "data")},
                                    "rig": {"model": "simulated"},
                                    "camera": {"resolution": [320, 240], "focus": focus}}))
    with Rig(load_config(path, env={})) as rig:
        shot = rig.preview(lens_position=asked)
        assert rig.light.is_on  # as for a photo
    assert shot.lens_position == used and decode(shot.jpeg).size == (320, 240)
