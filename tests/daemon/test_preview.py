"""``preview`` through the daemon: the socket method, the command, ``--watch`` until Ctrl-C, the
refusal during a scan, and a camera that stalls during a preview (the picamera2 double in the
rig worker's process)."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from openscan_pi.daemon.client import DaemonError
from tests.conftest import cli_env
from tests.daemon.conftest import WAIT_S, DaemonProcess, service_in_thread
from tests.daemon.test_camera_stall import call, camera_config, picamera2  # noqa: F401 - fixture


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openscan_pi", "--config", str(daemon.config),
                           *args], capture_output=True, text=True, env=cli_env(),
                          timeout=WAIT_S, stdin=subprocess.DEVNULL)


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        image.load()  # whole: a cut file fails here
        return image.size


def test_preview_answers_a_small_jpeg_with_its_figures(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(camera={"resolution": [1280, 960]}).start()
    shot = daemon.call("preview")
    assert set(shot) == {"jpeg", "width", "height", "focus", "exposure_us", "gain",
                         "lens_position"}
    assert jpeg_size(base64.b64decode(shot["jpeg"])) == (shot["width"], shot["height"]) == (640, 480)
    assert shot["focus"] > 0 and (shot["exposure_us"], shot["gain"]) == (10000, 1.0)
    assert shot["lens_position"] is None
    assert daemon.call("preview", {"lens_position": 2.5})["lens_position"] == 2.5
    with pytest.raises(DaemonError) as bad:
        daemon.call("preview", {"lens_position": "near"})
    assert bad.value.code == -32602
    assert daemon.call("status")["state"] == "idle"


def test_preview_is_refused_while_a_scan_has_the_rig(daemon: DaemonProcess) -> None:
    job = daemon.call("scan", {"positions": 30})
    daemon.wait(lambda s: s["rig"]["job"] == job["id"])
    with pytest.raises(DaemonError) as busy:
        daemon.call("preview")
    assert busy.value.code == -32000
    assert str(busy.value).startswith(f"the rig is busy scanning job {job['id']}")
    refused = cli(daemon, "preview", "--watch")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (f"openscan-pi: the rig is busy scanning job {job['id']}: wait for "
                              "it, or `openscan-pi cancel`\n")
    daemon.call("cancel")


def test_preview_writes_the_file_and_says_its_figures(daemon: DaemonProcess, tmp_path: Path
                                                      ) -> None:
    out = tmp_path / "p.jpg"
    done = cli(daemon, "preview", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert jpeg_size(out.read_bytes()) == (320, 240)  # the daemon's camera is 320x240
    assert done.stdout.startswith("focus ") and done.stdout.endswith(f"(320x240 in {out})\n")
    assert list(tmp_path.iterdir()) == [out]  # no temp file left beside it


def test_watch_refreshes_the_file_until_ctrl_c_then_exits_0(daemon: DaemonProcess,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "p.jpg"
    watch = subprocess.Popen([sys.executable, "-m", "openscan_pi", "--config", str(daemon.config),
                              "preview", "--watch", "--out", str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=cli_env(),
                             stdin=subprocess.DEVNULL)
    try:
        assert watch.stdout is not None
        lines = []
        while len(lines) < 3:  # piped: one line per refresh, said once its file is in place
            line = watch.stdout.readline()
            assert line, watch.stderr.read() if watch.stderr else ""
            lines.append(line)
            assert jpeg_size(out.read_bytes()) == (320, 240)
        watch.send_signal(signal.SIGINT)
        rest, errors = watch.communicate(timeout=WAIT_S)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0 and errors == ""
    assert all(line.startswith("focus ") for line in lines + rest.splitlines())
    assert list(tmp_path.iterdir()) == [out]
    assert jpeg_size(out.read_bytes()) == (320, 240)


def test_watch_json_is_one_object_per_refresh(daemon: DaemonProcess, tmp_path: Path) -> None:
    out = tmp_path / "p.jpg"
    watch = subprocess.Popen([sys.executable, "-m", "openscan_pi", "--config", str(daemon.config),
                              "preview", "--watch", "--json", "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=cli_env(), stdin=subprocess.DEVNULL)
    try:
        assert watch.stdout is not None
        first, second = (json.loads(watch.stdout.readline()) for _ in range(2))
        watch.send_signal(signal.SIGTERM)
        watch.communicate(timeout=WAIT_S)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0
    assert first["path"] == second["path"] == str(out) and "jpeg" not in first
    assert (first["width"], first["height"]) == (320, 240)


# -- a camera that stalls during a preview ------------------------------------------------------


def test_a_preview_on_a_camera_that_stays_stalled_is_one_clear_error(
        short_dir: Path, picamera2: Callable[..., Path]) -> None:  # noqa: F811
    picamera2(stall_after=1, stall_reopens=None)  # stalls after the first frame, for good
    with service_in_thread(camera_config(short_dir)) as service:
        assert call(service, "preview")["width"] == 320
        with pytest.raises(DaemonError) as stalled:
            call(service, "preview")
        assert str(stalled.value) == ("no frame within 0.3 s, 2 tries (the camera closed and "
                                      "opened again between them)")
        assert service.scheduler.rig is not None and service.scheduler.rig.restarts == 0


def test_a_preview_wedged_past_its_bound_restarts_the_worker(
        short_dir: Path, picamera2: Callable[..., Path]) -> None:  # noqa: F811
    """picamera2 before 0.3.20 ignores wait=SECONDS: the stalled preview never returns; past its
    bound the worker is killed, the caller told to try again, and the next preview works."""
    picamera2(legacy=True, stall_after=1, stall_reopens=None)  # each worker: one frame, then stuck
    with service_in_thread(camera_config(short_dir)) as service:
        rig = service.scheduler.rig
        assert rig is not None
        first = call(service, "preview")
        pid = rig.pid
        with pytest.raises(DaemonError) as lost:
            call(service, "preview")
        said = str(lost.value)
        assert said.startswith("the rig worker preview did not return within its bound of "
                               "5.6 s (the camera's capture_request has not returned for")
        assert said.endswith("): try again")
        assert rig.restarts == 1
        again: dict[str, Any] = call(service, "preview")  # a new worker, its camera fresh
        assert rig.pid != pid and again["width"] == first["width"] == 320


def test_the_call_after_a_worker_killed_past_its_bound_starts_another_at_once(
        short_dir: Path, picamera2: Callable[..., Path]) -> None:  # noqa: F811
    """The worker killed for its bound is gone for the rig at once, before its reader thread
    has seen the end of its channel (on a busy machine that comes later): the next call starts
    another worker rather than being failed by the old one's death."""
    from openscan_pi.rig.remote import RemoteRig, WorkerLost

    picamera2(legacy=True, stall_after=1, stall_reopens=None)  # each worker: one frame, then stuck
    with RemoteRig(camera_config(short_dir)) as rig:
        first = rig.preview()
        pid = rig.pid
        with pytest.raises(WorkerLost, match="preview did not return within its bound"):
            rig.preview()
        assert rig.pid is None and rig.phase == "restarting"
        again = rig.preview()
        assert rig.pid not in (None, pid) and again["width"] == first["width"] == 320
        assert rig.restarts == 1


def test_a_rig_command_asked_during_a_preview_waits_for_it_rather_than_being_refused(
        short_dir: Path, picamera2: Callable[..., Path]) -> None:  # noqa: F811
    """`move` typed in one terminal while `preview --watch` runs in another: the preview under
    way is short and bounded, so the move waits for its end instead of "the rig is busy"."""
    picamera2(frame_s=0.5)  # a frame every half second: a preview is under way for that long
    cfg = camera_config(short_dir)
    cfg = dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, timeout_s=5.0))
    with service_in_thread(cfg) as service, ThreadPoolExecutor(1) as pool:
        previewing = pool.submit(call, service, "preview")
        deadline = time.monotonic() + WAIT_S
        while call(service, "status")["rig"]["task"] != "preview":  # the preview has the rig
            assert time.monotonic() < deadline and not previewing.done(), "no preview under way"
        moved = call(service, "rig.move", {"turntable": 30})
        assert moved["turntable"] == pytest.approx(30.0, abs=0.2)
        assert previewing.result(WAIT_S)["width"] == 320


def test_previews_asked_at_once_share_one_frame(
        short_dir: Path, picamera2: Callable[..., Path]) -> None:  # noqa: F811
    """The web page and a `preview --watch` ask at the same time: one frame answers both (the
    second is not refused "the rig is busy (preview)")."""
    picamera2(frame_s=0.5)
    cfg = camera_config(short_dir)
    cfg = dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, timeout_s=5.0))
    with service_in_thread(cfg) as service, ThreadPoolExecutor(2) as pool:
        first = pool.submit(call, service, "preview")
        deadline = time.monotonic() + WAIT_S
        while call(service, "status")["rig"]["task"] != "preview":
            assert time.monotonic() < deadline and not first.done(), "no preview under way"
        second = pool.submit(call, service, "preview")
        assert first.result(WAIT_S) == second.result(WAIT_S)


def test_watch_goes_on_after_a_refresh_refused_for_another_command(
        make_daemon: Callable[..., DaemonProcess], tmp_path: Path) -> None:
    """A preview asked while a hand-driven command has the rig (a `calibrate` turn of seconds) is
    refused "the rig is busy (turn)"; `--watch` skips that refresh and shows the next one."""
    daemon = make_daemon(rig={"sim_time_scale": 1.0}).start()
    out = tmp_path / "p.jpg"
    with ThreadPoolExecutor(1) as pool:
        turning = pool.submit(daemon.call, "rig.turn", {"axis": "turntable", "degrees": 3600})
        deadline = time.monotonic() + WAIT_S
        while daemon.call("status")["rig"]["task"] != "turn":
            assert time.monotonic() < deadline and not turning.done(), "the turn never began"
        with pytest.raises(DaemonError, match=r"^the rig is busy \(turn\)"):
            daemon.call("preview")  # what the watch meets first
        watch = subprocess.Popen([sys.executable, "-m", "openscan_pi", "--config",
                                  str(daemon.config), "preview", "--watch", "--out", str(out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=cli_env(), stdin=subprocess.DEVNULL)
        try:
            assert watch.stdout is not None
            assert not turning.done()  # the watch starts while the turn (6.4 s) has the rig
            first = watch.stdout.readline()
            assert first.startswith("focus "), watch.stderr.read() if watch.stderr else ""
            turning.result(WAIT_S)
            watch.send_signal(signal.SIGINT)
            _, errors = watch.communicate(timeout=WAIT_S)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
    assert watch.returncode == 0 and errors == ""
