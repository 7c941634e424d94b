"""The simulated rig's pins (openscan_pi.sim.pins) on gpiozero's real MockFactory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from gpiozero import Button
from gpiozero.pins.mock import MockFactory, MockPWMPin

from openscan_pi.config import Config, load_config
from openscan_pi.rig.rig import Rig
from openscan_pi.sim.pins import SimulatedPins


def sim_config(tmp_path: Path, **rig: Any) -> Config:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"daemon": {"data_dir": str(tmp_path / "data")},
                                    "rig": {"model": "simulated", "sim_time_scale": 0, **rig}}))
    return load_config(path, env={})


def test_a_simulated_rig_runs_on_the_simulated_pins(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, sim_time_scale=0.25)
    with Rig(cfg, camera=False) as rig:
        assert rig.sim is not None and rig.pin_factory is rig.sim.factory
        assert isinstance(rig.pin_factory, MockFactory) and rig.pin_factory.pin_class is MockPWMPin
        assert rig.time_scale == 0.25


def test_the_endstop_follows_the_rotor(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, endstop={"angle": -20})
    endstop = cfg.rig.endstop
    assert endstop.pin is not None and endstop.direction == -1  # the simulated profile's switch
    with Rig(cfg, camera=False) as rig:
        button = Button(endstop.pin, pull_up=endstop.pull_up, pin_factory=rig.pin_factory)
        try:
            rig.move(rotor=-10)
            assert not button.is_pressed
            rig.move(rotor=-25)  # beyond the switch in its direction
            assert button.is_pressed
            rig.move(rotor=-19)
            assert not button.is_pressed
        finally:
            button.close()


def test_moves_do_not_grow_the_pin_histories(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path)
    with Rig(cfg, camera=False) as rig:
        step = rig.pin_factory.pin(cfg.rig.rotor.step_pin)
        rig.move(rotor=20, turntable=90)
        assert len(step.states) <= 2  # emptied after the move (it keeps the current state)
        sim = SimulatedPins(cfg, pin_factory=rig.pin_factory)
        rig.move(turntable=180)
        sim.after_move()  # not attached to a rig: nothing to follow, nothing fails
