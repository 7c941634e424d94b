"""Axes, the shared EN line and both-axes motion on gpiozero's MockFactory, Python step backend."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from openscan_pi.rig.backends import PythonStepBackend
from openscan_pi.rig.errors import MoveCancelled, RigError
from openscan_pi.rig.motion import move_time
from openscan_pi.rig.stepper import DIR_SETUP_S, Axis, Motion, SharedEnable, shared_enables
from openscan_pi.schema import AxisConfig

ROTOR = AxisConfig(step_pin=27, dir_pin=23, enable_pin=22, steps_per_rev=3600, max_speed=5000,
                   acceleration=20000, min_angle=-40, max_angle=80, start_angle=0, invert=False)
TURNTABLE = AxisConfig(step_pin=16, dir_pin=6, enable_pin=22, steps_per_rev=3600, max_speed=5000,
                       acceleration=5000, min_angle=None, max_angle=None, start_angle=0, invert=False)


class EdgePin(MockPin):
    """A MockPin that counts rising edges and runs a hook at a given count (in the stepping thread)."""

    def __init__(self, factory: Any, info: Any) -> None:
        super().__init__(factory, info)
        self.rising = 0
        self.hooks: dict[int, Callable[[], None]] = {}

    def _change_state(self, value: bool) -> bool:
        changed = super()._change_state(value)
        if changed and value:
            self.rising += 1
            hook = self.hooks.pop(self.rising, None)
            if hook is not None:
                hook()
        return changed


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


def states(pin: Any) -> list[bool]:
    return [s.state for s in pin.states]


def times(pin: Any) -> list[tuple[float, bool]]:
    """(seconds since the pin's clear_states(), state) for each change (deltas accumulated)."""
    t, out = 0.0, []
    for s in pin.states:
        t += s.timestamp
        out.append((t, s.state))
    return out


def rising_times(pin: Any) -> list[float]:
    return [t for t, state in times(pin)[1:] if state]


def steps_train(n: int) -> list[bool]:
    return [False] + [True, False] * n


def make_axis(factory: MockFactory, cfg: AxisConfig = ROTOR, *, name: str = "rotor", wrap: bool = False,
              enable: SharedEnable | None = None) -> Axis:
    backend = PythonStepBackend(cfg.step_pin, pin_factory=factory)
    return Axis(name, cfg, pin_factory=factory, backend=backend, enable=enable, wrap=wrap)


def test_exact_steps_and_direction(factory: MockFactory) -> None:
    axis = make_axis(factory)
    step, dirp = factory.pin(27), factory.pin(23)
    try:
        axis.move_to(2.0, time_scale=0)  # 20 steps forward
        assert states(step) == steps_train(20) and len(step.states) == 41
        assert states(dirp) == [False, True]
        assert axis.steps == 20 and axis.angle == 2.0 and axis.last_move_steps == 20
        axis.clear_pin_history()
        axis.move_to(-1.0, time_scale=0)  # 30 steps back
        assert states(step) == steps_train(30) and len(step.states) == 61
        assert states(dirp) == [True, False]
        assert axis.steps == -10 and axis.angle == -1.0 and axis.last_move_steps == -30
        axis.clear_pin_history()
        axis.move_to(-1.0, time_scale=0)  # nowhere to go
        assert states(step) == [False] and states(dirp) == [False]
    finally:
        axis.close()


def test_invert_flips_dir(factory: MockFactory) -> None:
    axis = make_axis(factory, replace(ROTOR, invert=True))
    try:
        axis.move_by_steps(5, time_scale=0)
        assert states(factory.pin(23)) == [False]
        axis.move_by_steps(-5, time_scale=0)
        assert states(factory.pin(23)) == [False, True]
        assert states(factory.pin(27)) == steps_train(10)
    finally:
        axis.close()


def test_fractional_steps_per_rev_and_start_angle(factory: MockFactory) -> None:
    cfg = replace(ROTOR, steps_per_rev=1000 / 3, start_angle=10)
    axis = make_axis(factory, cfg)
    try:
        assert axis.steps == round(10 * (1000 / 3) / 360) == 9
        assert axis.planned_steps(20) == round(20 * 1000 / 3 / 360) - 9
        axis.move_to(20, time_scale=0)
        axis.move_to(0, time_scale=0)
        assert axis.steps == 0 and axis.angle == 0.0
        assert axis.move_time_to(20) == move_time(axis.planned_steps(20), 5000, 20000)
        axis.set_angle(30)
        assert axis.steps == round(30 * 1000 / 3 / 360)
    finally:
        axis.close()


def test_rotor_limits_are_refused_with_the_config_keys(factory: MockFactory) -> None:
    axis = make_axis(factory)
    try:
        for bad in (80.5, -41, float("nan")):
            with pytest.raises(RigError) as err:
                axis.move_to(bad, time_scale=0)
            if bad == bad:
                assert "-40° to 80°" in str(err.value)
                assert "rig.rotor.min_angle / rig.rotor.max_angle" in str(err.value)
        axis.move_to(80, time_scale=0)
        axis.move_to(-40, time_scale=0)
        assert axis.steps == -400
        assert states(factory.pin(27)) == steps_train(800 + 1200)
    finally:
        axis.close()


def test_turntable_takes_the_shortest_way(factory: MockFactory) -> None:
    axis = make_axis(factory, TURNTABLE, name="turntable", wrap=True)
    step, dirp = factory.pin(16), factory.pin(6)
    try:
        axis.set_angle(350)
        assert axis.planned_steps(10) == 200  # +20°, not -340°
        axis.move_to(10, time_scale=0)
        assert states(step) == steps_train(200) and states(dirp) == [False, True]
        assert axis.angle == 10.0 and axis.steps == 100
        axis.clear_pin_history()
        axis.move_to(350, time_scale=0)  # -20° back across 0
        assert states(step) == steps_train(200) and states(dirp) == [True, False]
        assert axis.angle == 350.0 and axis.steps == 3500
        assert axis.planned_steps(170) == -1800 or axis.planned_steps(170) == 1800
        assert axis.planned_steps(-10) == 0 and axis.planned_steps(710) == 0
    finally:
        axis.close()


def test_no_drift_after_10000_random_moves(factory: MockFactory) -> None:
    rng = random.Random(42)
    rotor = make_axis(factory, replace(ROTOR, steps_per_rev=200.3))
    turntable = make_axis(factory, replace(TURNTABLE, steps_per_rev=100), name="turntable", wrap=True)
    try:
        cases = ((rotor, factory.pin(27), factory.pin(23), lambda: rng.uniform(-40, 80)),
                 (turntable, factory.pin(16), factory.pin(6), lambda: rng.uniform(-720, 720)))
        for axis, step, dirp, pick in cases:
            on_pin = 0
            for _ in range(10_000):
                axis.move_to(pick(), time_scale=0)
                edges = sum(1 for a, b in zip(states(step), states(step)[1:], strict=False) if b and not a)
                on_pin += edges if dirp.state else -edges
                axis.clear_pin_history()
            axis.move_to(0, time_scale=0)
            edges = states(step).count(True)
            on_pin += edges if dirp.state else -edges
            assert axis.steps == 0 and axis.angle == 0.0
            # the pins agree: the net steps sent equal the position change
            if axis is rotor:
                assert on_pin == 0
            else:
                assert on_pin % 100 == 0
    finally:
        rotor.close()
        turntable.close()


def test_dir_settles_before_the_first_step(factory: MockFactory) -> None:
    axis = make_axis(factory)
    step, dirp = factory.pin(27), factory.pin(23)
    try:
        for n in (7, -7, 3, -1):
            dirp.clear_states()  # DIR first: any skew between the two clears shortens the gap
            step.clear_states()
            axis.move_by_steps(n, time_scale=0)
            (t_dir, level), = times(dirp)[1:]
            assert level == (n > 0)
            first_step = rising_times(step)[0]
            assert first_step - t_dir >= DIR_SETUP_S
    finally:
        axis.close()


def test_enable_sequence_and_idle_disable(factory: MockFactory) -> None:
    enable = SharedEnable(22, pin_factory=factory, idle_disable_s=0.02)
    axis = make_axis(factory, enable=enable)
    en, step = factory.pin(22), factory.pin(27)
    try:
        assert states(en) == [False, True] and not enable.is_enabled  # high = drivers off
        en.clear_states()
        step.clear_states()
        enable.acquire()  # hold it, so that the idle timer cannot start during the checks
        axis.move_by_steps(10, time_scale=0)
        assert enable.is_enabled and states(en) == [True, False]
        enable.release()
        assert enable.wait_disabled(timeout=5)
        assert states(en) == [True, False, True]
        (t_low, _), (t_high, _) = times(en)[1:]
        rising = rising_times(step)
        assert t_low < rising[0] and times(step)[-1][0] < t_high
    finally:
        axis.close()
        enable.close()


def test_enable_never_idles_when_none_and_at_once_when_zero(factory: MockFactory) -> None:
    hold = SharedEnable(22, pin_factory=factory, idle_disable_s=None)
    hold.acquire()
    hold.release()
    assert hold.is_enabled
    hold.close()
    assert states(factory.pin(22)) == [False, True, False, True]
    now = SharedEnable(22, pin_factory=factory, idle_disable_s=0)
    now.acquire()
    now.release()
    assert not now.is_enabled
    with pytest.raises(RuntimeError):
        now.release()
    now.close()
    with pytest.raises(RigError):
        now.acquire()


def test_a_new_move_cancels_the_idle_timer(factory: MockFactory) -> None:
    enable = SharedEnable(22, pin_factory=factory, idle_disable_s=30)
    enable.acquire()
    enable.release()
    enable.acquire()  # within the idle time: stays enabled, no second edge
    assert not enable.wait_disabled(timeout=0)
    enable.release()
    enable.close()
    assert states(factory.pin(22)) == [False, True, False, True]


def test_shared_enables_share_one_pin(factory: MockFactory) -> None:
    a, b = shared_enables(ROTOR, TURNTABLE, pin_factory=factory, idle_disable_s=None)
    assert a is b and a is not None
    a.close()
    c, d = shared_enables(replace(ROTOR, enable_pin=None), replace(TURNTABLE, enable_pin=None),
                          pin_factory=factory)
    assert c is None and d is None


def test_both_axes_move_at_the_same_time(factory: MockFactory) -> None:
    enable = SharedEnable(22, pin_factory=factory, idle_disable_s=0)
    rotor = make_axis(factory, enable=enable)
    turntable = make_axis(factory, TURNTABLE, name="turntable", wrap=True, enable=enable)
    motion = Motion(rotor, turntable)
    en = factory.pin(22)
    try:
        # rotor 100 steps, turntable 150 steps; the slower one lasts 50 ms
        scale = 0.05 / motion.time_to(10, 15)
        assert motion.time_to(10, 15) == max(rotor.move_time_to(10), turntable.move_time_to(15))
        for pin in (en, factory.pin(27), factory.pin(16)):
            pin.clear_states()
        motion.move(10, 15, time_scale=scale)
        r, t = rising_times(factory.pin(27)), rising_times(factory.pin(16))
        assert states(factory.pin(27)) == steps_train(100) and states(factory.pin(16)) == steps_train(150)
        assert r[0] < t[-1] and t[0] < r[-1], "the two step trains overlap in time"
        inside = [x for x in t if r[0] < x < r[-1]]
        assert len(inside) > 10, "turntable steps interleave with rotor steps"
        assert states(en) == [True, False, True], "one enable period for both axes"
        assert rotor.angle == 10.0 and turntable.angle == 15.0
        motion.move(None, None)
        motion.move(None, 20, time_scale=0)
        assert turntable.angle == 20.0 and motion.time_to(None, None) == 0.0
    finally:
        motion.rotor.close()
        motion.turntable.close()
        enable.close()


def test_motion_checks_both_targets_before_moving(factory: MockFactory) -> None:
    motion = Motion(make_axis(factory), make_axis(factory, TURNTABLE, name="turntable", wrap=True))
    try:
        with pytest.raises(RigError, match="rig.rotor.min_angle"):
            motion.move(100, 90, time_scale=0)
        assert states(factory.pin(16)) == [False] and motion.turntable.steps == 0
    finally:
        motion.rotor.close()
        motion.turntable.close()


def test_cancel_mid_move_from_another_thread(factory: MockFactory) -> None:
    step = factory.pin(27, pin_class=EdgePin)
    axis = make_axis(factory, replace(ROTOR, min_angle=-360, max_angle=360))  # room for 200°
    cancel, reached = threading.Event(), threading.Event()
    step.hooks[100] = reached.set
    canceller = threading.Thread(target=lambda: reached.wait(10) and cancel.set())
    canceller.start()
    try:
        with pytest.raises(MoveCancelled, match="after .* of 2000 steps"):
            axis.move_by_steps(2000, cancel=cancel, time_scale=1.0)  # 0.65 s if not cancelled
        canceller.join()
        counted = states(step).count(True)
        assert 100 <= counted < 2000
        assert axis.steps == counted == step.rising and axis.last_move_steps == counted
        assert states(step) == steps_train(counted)
    finally:
        axis.close()


def test_cancel_stops_both_axes(factory: MockFactory) -> None:
    step = factory.pin(27, pin_class=EdgePin)
    motion = Motion(make_axis(factory), make_axis(factory, TURNTABLE, name="turntable", wrap=True))
    cancel = threading.Event()
    step.hooks[50] = cancel.set
    try:
        with pytest.raises(MoveCancelled):
            motion.move(30, 40, cancel=cancel, time_scale=1.0)  # 0.45 s / 0.97 s uncancelled
        assert motion.rotor.steps == states(step).count(True) < 300
        assert motion.turntable.steps == states(factory.pin(16)).count(True) < 400
    finally:
        motion.rotor.close()
        motion.turntable.close()


class FailingBackend:
    """Raises once the other axis has started stepping."""

    def __init__(self, started: threading.Event) -> None:
        self.started = started

    def run(self, deadlines: Any, *, cancel: threading.Event, time_scale: float = 1.0) -> int:
        self.started.wait(10)
        raise RuntimeError("driver fault")

    def close(self) -> None:
        pass


def test_an_error_in_one_axis_stops_the_other(factory: MockFactory) -> None:
    step = factory.pin(16, pin_class=EdgePin)
    started = threading.Event()
    step.hooks[5] = started.set
    rotor = Axis("rotor", ROTOR, pin_factory=factory, backend=FailingBackend(started), enable=None,
                 wrap=False)
    turntable = make_axis(factory, TURNTABLE, name="turntable", wrap=True)
    try:
        with pytest.raises(RuntimeError, match="driver fault"):
            Motion(rotor, turntable).move(10, 90, time_scale=1.0)  # turntable: 1.2 s uncancelled
        assert rotor.steps == 0
        assert turntable.steps == states(step).count(True) < 900
    finally:
        rotor.close()
        turntable.close()


def test_clear_pin_history_bounds_the_mock_histories(factory: MockFactory) -> None:
    enable = SharedEnable(22, pin_factory=factory, idle_disable_s=None)
    axis = make_axis(factory, enable=enable)
    try:
        axis.move_by_steps(50, time_scale=0)
        assert len(factory.pin(27).states) == 101
        axis.clear_pin_history()
        enable.clear_pin_history()
        assert states(factory.pin(27)) == [False]
        assert states(factory.pin(23)) == [True]
        assert states(factory.pin(22)) == [False]
    finally:
        axis.close()
        enable.close()


@pytest.mark.parametrize(("start", "steps"), [(0, 801), (0, -401), (0, 6000), (79.9, 2), (-40, -1)])
def test_relative_moves_beyond_a_limit_are_refused_before_any_pulse(
        factory: MockFactory, start: float, steps: int) -> None:
    """move_by_steps (what every move ends in) checks where it would end: no EN, no DIR, no STEP."""
    enable = SharedEnable(22, pin_factory=factory, idle_disable_s=0)
    axis = make_axis(factory, enable=enable)
    step, dirp, en = factory.pin(27), factory.pin(23), factory.pin(22)
    try:
        axis.set_angle(start)
        for pin in (step, dirp, en):
            pin.clear_states()
        with pytest.raises(RigError) as err:
            axis.move_by_steps(steps, time_scale=0)
        message = str(err.value)
        assert "-40° to 80°" in message and "rig.rotor.min_angle / rig.rotor.max_angle" in message
        assert "\n" not in message
        assert states(step) == [False] and states(dirp) == [False] and states(en) == [True]
        assert axis.steps == axis.steps_for(start) and axis.last_move_steps == 0
    finally:
        axis.close()
        enable.close()


def test_the_limits_themselves_are_reachable_with_any_gearing(factory: MockFactory) -> None:
    axis = make_axis(factory, replace(ROTOR, steps_per_rev=17067))  # 80° is 3792.67 steps
    try:
        axis.move_to(80, time_scale=0)
        with pytest.raises(RigError):
            axis.move_by_steps(1, time_scale=0)
        axis.move_to(-40, time_scale=0)
        with pytest.raises(RigError):
            axis.move_by_steps(-1, time_scale=0)
        assert axis.steps == axis.steps_for(-40)
    finally:
        axis.close()


def test_an_axis_found_outside_its_limits_may_only_come_back(factory: MockFactory) -> None:
    """E.g. a rig-state.json from before the limits were narrowed: moves toward the range only."""
    axis = make_axis(factory)
    try:
        axis.set_angle(90)
        with pytest.raises(RigError):
            axis.move_by_steps(-5, time_scale=0)  # still outside: refused
        with pytest.raises(RigError):
            axis.move_to(85, time_scale=0)
        assert states(factory.pin(27)) == [False]
        axis.move_to(70, time_scale=0)
        assert axis.angle == 70.0
    finally:
        axis.close()


def test_the_turntable_turns_freely(factory: MockFactory) -> None:
    axis = make_axis(factory, TURNTABLE, name="turntable", wrap=True)
    try:
        axis.move_by_steps(36_000 + 900, time_scale=0)  # ten turns and a quarter
        assert states(factory.pin(16)).count(True) == 36_900 and axis.angle == 90.0
    finally:
        axis.close()


def test_seek_is_the_one_move_that_ignores_the_limits(factory: MockFactory) -> None:
    """Homing's move: the position is what homing finds out, so it may go past what the axis
    believes is a limit (homing bounds that travel itself)."""
    axis = make_axis(factory)
    try:
        axis.seek(-450, speed=1000, time_scale=0)
        assert axis.angle == -45.0 and states(factory.pin(27)) == steps_train(450)
    finally:
        axis.close()
