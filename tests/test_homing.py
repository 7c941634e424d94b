"""Homing the rotor against a simulated endstop on gpiozero's MockFactory."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from gpiozero import Button
from gpiozero.pins.mock import MockFactory, MockPin

from openscan_pi.rig.backends import PythonStepBackend
from openscan_pi.rig.errors import MoveCancelled, RigError
from openscan_pi.rig.homing import SEARCH_MARGIN_DEG, home
from openscan_pi.rig.stepper import Axis
from openscan_pi.schema import EndstopConfig
from tests.test_stepper import ROTOR, EdgePin, make_axis, states, steps_train


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


ENDSTOP = EndstopConfig(pin=17, pull_up=True, angle=-40, direction=-1, speed=1000, backoff_deg=5,
                        timeout_s=30, bounce_s=0.005)


def press_after(factory: MockFactory, rising_edges: int, *, release_after_backoff: bool = True) -> EdgePin:
    """STEP pin that closes the endstop (GPIO 17 to ground) at its N-th rising edge."""
    step = factory.pin(27, pin_class=EdgePin)
    endstop = factory.pin(17)

    def press() -> None:
        endstop.drive_low()
        if release_after_backoff:  # the switch opens again during the back-off
            step.hooks[rising_edges + 1] = endstop.drive_high

    step.hooks[rising_edges] = press
    return step


def test_homing_stops_at_the_switch_and_backs_off(factory: MockFactory) -> None:
    step = press_after(factory, 123)
    axis = make_axis(factory)  # 3600 steps/rev: 10 steps per degree
    try:
        message = home(axis, ENDSTOP, pin_factory=factory, time_scale=0)
        # exactly 123 steps toward the switch (DIR low), then 50 steps (5°) back (DIR high)
        assert states(step) == steps_train(123 + 50)
        assert states(factory.pin(23)) == [False, True]
        assert axis.steps == -350 and axis.angle == -35.0
        assert "after 123 steps at -40°" in message and "backed off 50 steps" in message
        assert "warning" not in message
    finally:
        axis.close()
    Button(17, pin_factory=factory).close()  # GPIO 17 is free again: home() closed its Button


def test_homing_upward_with_an_inverted_driver(factory: MockFactory) -> None:
    step = press_after(factory, 40)
    axis = make_axis(factory, replace(ROTOR, invert=True))
    try:
        home(axis, replace(ENDSTOP, direction=1, angle=80, backoff_deg=2), pin_factory=factory, time_scale=0)
        assert states(step) == steps_train(40 + 20)
        assert states(factory.pin(23)) == [False, True]  # inverted: up is DIR low, back is DIR high
        assert axis.angle == 78.0
    finally:
        axis.close()


class ClosedSwitchPin(MockPin):
    """An input held low by a closed switch, whatever pull the Button sets."""

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        self.drive_low()


def test_homing_with_the_switch_already_closed(factory: MockFactory) -> None:
    factory.pin(17, pin_class=ClosedSwitchPin)
    axis = make_axis(factory)
    try:
        message = home(axis, ENDSTOP, pin_factory=factory, time_scale=0)
        assert "after 0 steps" in message and "still reads closed" in message
        assert states(factory.pin(27)) == steps_train(50) and axis.angle == -35.0
    finally:
        axis.close()


def test_homing_times_out_with_a_known_position(factory: MockFactory) -> None:
    axis = make_axis(factory)
    try:
        with pytest.raises(RigError) as err:
            home(axis, replace(ENDSTOP, timeout_s=0.5), pin_factory=factory, time_scale=0)
        assert str(err.value) == ("homing the rotor: the endstop on GPIO 17 did not trigger within 0.5 s: "
                                  "check its wiring, or rig.endstop.*")
        # speed 1000 steps/s for 0.5 s: 500 steps, all counted
        assert states(factory.pin(27)) == steps_train(500) and axis.steps == -500
    finally:
        axis.close()


def test_homing_times_out_in_real_time(factory: MockFactory) -> None:
    axis = make_axis(factory)
    try:
        with pytest.raises(RigError, match="did not trigger within 0.05 s"):
            home(axis, replace(ENDSTOP, timeout_s=0.05), pin_factory=factory, time_scale=1.0)
        assert axis.steps == -50 == -states(factory.pin(27)).count(True)
    finally:
        axis.close()


class SlowBackend(PythonStepBackend):
    """Emits every step, five times slower than asked (a stalling backend)."""

    def run(self, deadlines: Any, *, cancel: threading.Event, time_scale: float = 1.0) -> int:
        return super().run(deadlines, cancel=cancel, time_scale=5 * time_scale)


def test_homing_gives_up_on_the_wall_clock_when_the_backend_stalls(factory: MockFactory) -> None:
    axis = Axis("rotor", ROTOR, pin_factory=factory, backend=SlowBackend(27, pin_factory=factory),
                enable=None, wrap=False)
    try:
        with pytest.raises(RigError, match="did not trigger within 0.05 s"):
            home(axis, replace(ENDSTOP, timeout_s=0.05), pin_factory=factory, time_scale=1.0)
        # 2 × 0.05 s + 30 ms per burst of wall time at a fifth of the speed: under 50 steps
        assert 0 < -axis.steps < 50 and axis.steps == -states(factory.pin(27)).count(True)
    finally:
        axis.close()


def test_homing_can_be_cancelled(factory: MockFactory) -> None:
    step = factory.pin(27, pin_class=EdgePin)
    cancel = threading.Event()
    step.hooks[30] = cancel.set
    axis = make_axis(factory)
    try:
        with pytest.raises(MoveCancelled, match="homing the rotor was cancelled"):
            home(axis, ENDSTOP, pin_factory=factory, cancel=cancel, time_scale=0)
        assert axis.steps == -states(step).count(True)
    finally:
        axis.close()


def test_without_an_endstop_nothing_moves(factory: MockFactory) -> None:
    axis = make_axis(factory)
    try:
        message = home(axis, replace(ENDSTOP, pin=None), pin_factory=factory, time_scale=0)
        assert "no endstop" in message and "rig.rotor.start_angle" in message and "nothing moved" in message
        assert states(factory.pin(27)) == [False] and axis.steps == 0
    finally:
        axis.close()


def test_a_simulated_endstop_watching_the_position(factory: MockFactory) -> None:
    """The simulated rig's way: on_step closes the switch once the rotor is at -42.5°."""
    axis = make_axis(factory)
    endstop = factory.pin(17)
    calls = []

    def update() -> None:
        calls.append(axis.steps)
        if axis.angle <= -42.5:
            endstop.drive_low()
        else:
            endstop.drive_high()

    try:
        message = home(axis, ENDSTOP, pin_factory=factory, time_scale=0, on_step=update)
        # from 0 to -425 steps, one step at a time, then 50 steps back, the switch opening again
        assert states(factory.pin(27)) == steps_train(425 + 50)
        assert calls[0] == 0 and calls[1] == -1 and len(calls) == 1 + 425 + 1
        assert axis.angle == -35.0 and "after 425 steps" in message and "warning" not in message
    finally:
        axis.close()


def test_position_aliases_steps(factory: MockFactory) -> None:
    axis = make_axis(factory)
    try:
        axis.position = 123
        assert axis.steps == axis.position == 123 and axis.angle == 12.3
    finally:
        axis.close()


def test_tiny_time_scales_do_not_trip_the_wall_clock_guard(factory: MockFactory) -> None:
    """sim_time_scale 0.001: Python's per-step cost dwarfs the scaled motion time."""
    step = press_after(factory, 1200)
    axis = make_axis(factory)
    try:
        home(axis, ENDSTOP, pin_factory=factory, time_scale=0.001, on_step=lambda: None)
        assert states(step).count(True) == 1200 + 50
    finally:
        axis.close()


def test_the_search_never_goes_further_than_the_rotor_can(factory: MockFactory) -> None:
    """A switch that never closes: homing stops after the rotor's whole range (-40..80°) and a
    margin, long before its 30 s (30 000 steps here: 3000°, the camera arm against its stop)."""
    axis = make_axis(factory)
    try:
        with pytest.raises(RigError) as err:
            home(axis, ENDSTOP, pin_factory=factory, time_scale=0)
        limit = round((120 + SEARCH_MARGIN_DEG) * 10)
        assert states(factory.pin(27)) == steps_train(limit) and axis.steps == -limit
        assert str(err.value) == (
            f"homing the rotor: the endstop on GPIO 17 did not trigger within {120 + SEARCH_MARGIN_DEG:g}° "
            "(the rotor's range, rig.rotor.min_angle / rig.rotor.max_angle, and a margin): check its "
            "wiring, or rig.endstop.*")
    finally:
        axis.close()


def test_homing_backs_off_into_limits_narrower_than_the_switch(factory: MockFactory) -> None:
    """The switch at -40°, the limits narrowed to -20..80: homing still finds it and backs off
    (toward the range); the next moves must end inside the limits."""
    step = press_after(factory, 100)
    axis = make_axis(factory, replace(ROTOR, min_angle=-20))
    try:
        home(axis, ENDSTOP, pin_factory=factory, time_scale=0)
        assert axis.angle == -35.0 and states(step) == steps_train(100 + 50)
        with pytest.raises(RigError, match="rig.rotor.min_angle"):
            axis.move_to(-30, time_scale=0)
        axis.move_to(-20, time_scale=0)
    finally:
        axis.close()
