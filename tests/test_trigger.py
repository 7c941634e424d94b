"""The shutter-release trigger and the external camera, on gpiozero's MockFactory."""

from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from openscan_pi.config import load_config
from openscan_pi.errors import DiskError
from openscan_pi.rig.camera import Shot
from openscan_pi.rig.errors import RigError
from openscan_pi.rig.trigger import LOG_HEADER, CameraTrigger, ExternalCamera

BASE = load_config(None, env={}).rig.trigger


def trigger_cfg(**changes: Any) -> Any:
    changes.setdefault("pin", 10)
    return dataclasses.replace(BASE, **changes)


class FakeSleep:
    """Records each wait together with the trigger pin's state at that moment."""

    def __init__(self, factory: MockFactory, pin: int) -> None:
        self.factory, self.pin = factory, pin
        self.waits: list[tuple[float, bool]] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append((seconds, self.factory.pin(self.pin).state))


def test_pulse_width_and_idle_active_idle() -> None:
    factory = MockFactory()
    trigger = CameraTrigger(trigger_cfg(pulse_s=0.02, delay_before_s=0, delay_after_s=0),
                            pin_factory=factory)
    before = time.time()
    fired_at = trigger.fire()
    assert before <= fired_at <= time.time()
    pin = factory.pin(10)
    assert [s.state for s in pin.states] == [False, True, False]
    assert pin.states[2].timestamp >= 0.02  # timestamps are deltas: the time spent active
    trigger.close()


def test_active_low_trigger() -> None:
    factory = MockFactory()
    trigger = CameraTrigger(trigger_cfg(active_high=False, pulse_s=0.001, delay_before_s=0,
                                        delay_after_s=0), pin_factory=factory)
    trigger.fire()
    trigger.fire()
    trigger.close()
    # idle high, pulled low for each release
    assert [s.state for s in factory.pin(10).states] == [False, True, False, True, False, True]


def test_delays_are_honoured_in_order() -> None:
    factory = MockFactory()
    sleep = FakeSleep(factory, 10)
    trigger = CameraTrigger(trigger_cfg(pulse_s=0.1, delay_before_s=0.2, delay_after_s=1.5),
                            pin_factory=factory, sleep=sleep)
    trigger.fire()
    # before: idle; the pulse: active; after: idle again
    assert sleep.waits == [(0.2, False), (0.1, True), (1.5, False)]
    assert [s.state for s in factory.pin(10).states] == [False, True, False]
    trigger.close()


def test_pin_goes_idle_if_the_pulse_is_interrupted() -> None:
    factory = MockFactory()

    def interrupted(seconds: float) -> None:
        if factory.pin(10).state:
            raise KeyboardInterrupt

    trigger = CameraTrigger(trigger_cfg(), pin_factory=factory, sleep=interrupted)
    with pytest.raises(KeyboardInterrupt):
        trigger.fire()
    assert [s.state for s in factory.pin(10).states] == [False, True, False]
    trigger.close()


def test_no_pin_configured() -> None:
    with pytest.raises(RigError, match="rig.trigger.pin is not set"):
        CameraTrigger(trigger_cfg(pin=None), pin_factory=MockFactory())


def test_closed_trigger_refuses() -> None:
    trigger = CameraTrigger(trigger_cfg(), pin_factory=MockFactory(), sleep=lambda s: None)
    trigger.close()
    trigger.close()
    with pytest.raises(RigError, match="closed"):
        trigger.fire()


def test_external_camera_returns_shots_in_order_and_logs_them(tmp_path: Path) -> None:
    factory = MockFactory()
    sleep = FakeSleep(factory, 10)
    trigger = CameraTrigger(trigger_cfg(), pin_factory=factory, sleep=sleep)
    camera = ExternalCamera(trigger)
    info = camera.start()
    assert info["has_autofocus"] is False and info["trigger_pin"] == 10
    positions = [(0.0, 0.0, None), (15.0, 45.5, 3.0), (30.0, 91.0, None)]
    shots = [camera.capture(tmp_path / "set" / f"IMG_{i:04d}.jpg", rotor=r, turntable=t, index=i,
                            lens_position=lens) for i, (r, t, lens) in enumerate(positions)]
    assert [(s.index, s.rotor, s.turntable, s.lens_position) for s in shots] == [
        (0, 0.0, 0.0, None), (1, 15.0, 45.5, 3.0), (2, 30.0, 91.0, None)]
    assert all(s.path is None and s.size == 0 and s.crc32 == 0 for s in shots)
    assert all(isinstance(s, Shot) for s in shots)
    times = [s.captured_at for s in shots]
    assert times == sorted(times)
    assert camera.shots == shots
    assert [s.state for s in factory.pin(10).states] == [False, True, False, True, False, True, False]
    assert len(sleep.waits) == 9
    # the log beside the photos-that-are-not-there: header once, one line per shot
    with open(tmp_path / "set" / "trigger-log.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(LOG_HEADER)
    assert [r[:4] + r[6:] for r in rows[1:]] == [
        ["0", "0.0", "0.0", "", "IMG_0000.jpg"], ["1", "15.0", "45.5", "3.0", "IMG_0001.jpg"],
        ["2", "30.0", "91.0", "", "IMG_0002.jpg"]]
    assert [float(r[4]) for r in rows[1:]] == pytest.approx(times, abs=0.001)
    assert not [p for p in (tmp_path / "set").iterdir() if p.suffix == ".jpg"]
    # a second camera (a resumed job) appends without a second header
    ExternalCamera(trigger).capture(tmp_path / "set" / "IMG_0003.jpg", rotor=45, turntable=0, index=3)
    with open(tmp_path / "set" / "trigger-log.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 5 and rows[4][0] == "3" and rows.count(list(LOG_HEADER)) == 1
    camera.close()
    trigger.close()


def test_external_camera_without_log(tmp_path: Path) -> None:
    trigger = CameraTrigger(trigger_cfg(), pin_factory=MockFactory(), sleep=lambda s: None)
    camera = ExternalCamera(trigger, log_name=None)
    camera.capture(tmp_path / "IMG_0000.jpg", rotor=0, turntable=0, index=0)
    assert list(tmp_path.iterdir()) == [] and len(camera.shots) == 1
    trigger.close()


def test_external_camera_log_write_failure_is_disk_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    trigger = CameraTrigger(trigger_cfg(), pin_factory=MockFactory(), sleep=lambda s: None)
    with pytest.raises(DiskError, match="cannot write"):
        ExternalCamera(trigger).capture(blocker / "IMG_0000.jpg", rotor=0, turntable=0, index=0)
    trigger.close()
