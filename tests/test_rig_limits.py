"""The rotor's limits on every path of the assembled rig that moves it, on gpiozero MockFactory pins:
a refused move emits no STEP pulse at all; the turntable turns freely."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from openscan_pi.config import load_config
from openscan_pi.rig.errors import RigError
from openscan_pi.rig.rig import Rig
from openscan_pi.rig.state import load_position
from tests.test_stepper import EdgePin

#: STEP pins (rotor, turntable) of the profiles used here.
STEP_PINS = {"classic": (6, 11), "simulated": (27, 16)}


class PWMEdgePin(EdgePin, MockPWMPin):
    """Counts rising edges, on a factory whose pins are PWM-capable (the simulated light)."""


@pytest.fixture(params=["classic", "simulated"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    """A Classic (-40..80°) or the simulated rig on mock pins, moves instant, no camera."""
    model = request.param
    path = tmp_path / "c.yaml"
    path.write_text(f"daemon: {{data_dir: {tmp_path / 'data'}}}\n"
                    f"rig: {{model: {model}, sim_time_scale: 0}}\n")
    cfg = load_config(path, env={})
    factory = MockFactory(pin_class=MockPWMPin)
    for pin in STEP_PINS[model]:
        factory.pin(pin, pin_class=PWMEdgePin)  # counts every rising edge, whatever clears histories
    with Rig(cfg, pin_factory=factory, camera=False) as opened:
        opened.time_scale = 0.0
        yield opened
    factory.reset()


def pulses(rig: Rig) -> tuple[int, int]:
    """Rising edges so far on the rotor's and the turntable's STEP pins."""
    rotor, turntable = STEP_PINS[rig.cfg.rig.model]
    return rig.pin_factory.pin(rotor).rising, rig.pin_factory.pin(turntable).rising


@pytest.mark.parametrize("how", [
    lambda rig: rig.move(rotor=85),
    lambda rig: rig.move(rotor=-40.5, turntable=90),
    lambda rig: rig.turn_by("rotor", 600),
    lambda rig: rig.turn_by("rotor", -41),
    lambda rig: rig.motion.move(100, None),
    lambda rig: rig.rotor.move_by_steps(100_000),
    lambda rig: rig.rotor.move_to(-90),
], ids=["move", "move-both", "turn_by", "turn_by-down", "motion", "move_by_steps", "move_to"])
def test_no_path_takes_the_rotor_past_its_limits(rig: Rig, how) -> None:
    with pytest.raises(RigError) as err:
        how(rig)
    message = str(err.value)
    assert "-40° to 80°" in message and "rig.rotor.min_angle / rig.rotor.max_angle" in message
    assert pulses(rig) == (0, 0), "a refused move emits no STEP pulse at all"
    assert rig.angles() == (0.0, 0.0)


def test_calibrating_the_rotor_beyond_its_range_says_how_to(rig: Rig) -> None:
    with pytest.raises(RigError) as err:
        rig.turn_by("rotor", 600)
    assert str(err.value) == (
        "the rotor cannot turn by 600° from 0°: it would end at 600°, and its limits are -40° to 80° "
        "(rig.rotor.min_angle / rig.rotor.max_angle); calibrate the rotor within its range: "
        "`openscan-pi move --rotor -40`, then `openscan-pi calibrate rotor --degrees 90`, and "
        "measure how far it turned")
    assert load_position(rig.cfg.data_dir, rig.cfg.rig) in (None, (0, 0))


def test_within_the_limits_the_rotor_moves_and_the_turntable_turns_freely(rig: Rig) -> None:
    rig.turn_by("rotor", -40)
    rig.move(rotor=80)
    rotor_spr = rig.cfg.rig.rotor.steps_per_rev
    down, up = round(40 * rotor_spr / 360), round(80 * rotor_spr / 360)
    assert pulses(rig)[0] == down + (down + up)
    rig.turn_by("turntable", 3600)  # ten turns: the turntable has no limits
    turntable_spr = rig.cfg.rig.turntable.steps_per_rev
    assert pulses(rig)[1] == 10 * turntable_spr
    rig.move(turntable=-1000)
    assert rig.angles()[1] == pytest.approx(80.0, abs=0.2)


def test_a_turntable_with_limits_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"daemon: {{data_dir: {tmp_path / 'data'}}}\n"
                    "rig: {model: classic, turntable: {min_angle: -90, max_angle: 90}}\n")
    factory = MockFactory()
    factory.pin(11, pin_class=EdgePin)
    with Rig(load_config(path, env={}), pin_factory=factory, camera=False) as rig:
        rig.time_scale = 0.0
        with pytest.raises(RigError, match="rig.turntable.min_angle / rig.turntable.max_angle"):
            rig.turn_by("turntable", 360)
        with pytest.raises(RigError, match="rig.turntable.max_angle"):
            rig.move(turntable=180)
        assert factory.pin(11).rising == 0
        rig.move(turntable=-90)
        assert rig.turntable.angle == -90.0 and factory.pin(11).rising == 800


def test_homing_the_simulated_rig_still_finds_its_switch(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"daemon: {{data_dir: {tmp_path / 'data'}}}\nrig: {{model: simulated}}\n")
    with Rig(load_config(path, env={}), pin_factory=MockFactory(pin_class=MockPWMPin),
             camera=False) as rig:
        rig.time_scale = 0.0
        rig.move(rotor=80)  # as far from the switch (-40°) as the rotor goes
        message = rig.home()
        assert "homed the rotor" in message and rig.rotor.angle == pytest.approx(-35.0, abs=0.01)
