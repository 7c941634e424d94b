"""The trapezoid / triangle profile math."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openscan_pi.rig.motion import Profile, move_time, step_deadlines


def test_trapezoid_time_is_the_closed_form() -> None:
    # 20000 >= 5000²/20000 = 1250: full trapezoid
    assert move_time(20_000, 5000, 20_000) == pytest.approx(20_000 / 5000 + 5000 / 20_000, rel=1e-15)
    assert move_time(-20_000, 5000, 20_000) == move_time(20_000, 5000, 20_000)
    assert Profile(20_000, 5000, 20_000).is_trapezoid


def test_triangle_time_is_the_closed_form() -> None:
    # 1000 < 1250: the speed limit is never reached
    profile = Profile(1000, 5000, 20_000)
    assert not profile.is_trapezoid
    assert move_time(1000, 5000, 20_000) == pytest.approx(2 * math.sqrt(1000 / 20_000), rel=1e-15)
    assert profile.peak_speed == pytest.approx(math.sqrt(20_000 * 1000))


def test_trapezoid_and_triangle_meet_at_the_boundary() -> None:
    n = 5000**2 / 20_000  # 1250 steps: accelerates to v_max and at once decelerates
    assert move_time(int(n), 5000, 20_000) == pytest.approx(2 * math.sqrt(n / 20_000), rel=1e-12)
    assert move_time(int(n) - 1, 5000, 20_000) < move_time(int(n), 5000, 20_000)


@pytest.mark.parametrize("steps,speed,accel", [(20_000, 5000, 20_000), (1000, 5000, 20_000),
                                               (3200, 5000, 5000), (777, 2000, 5000), (2, 5000, 20_000)])
def test_deadlines_are_the_profile_positions(steps: int, speed: float, accel: float) -> None:
    d = step_deadlines(steps, speed, accel)
    assert len(d) == steps
    assert np.all(np.diff(d) > 0), "strictly increasing"
    assert d[-1] == move_time(steps, speed, accel), "last deadline is exactly the move time"
    # each deadline inverts the continuous position s(t)
    for i in (1, 2, steps // 3, steps // 2, steps - 1, steps):
        if i >= 1:
            assert position(Profile(steps, speed, accel), d[i - 1]) == pytest.approx(i, abs=1e-6)


def position(p: Profile, t: float) -> float:
    """The forward profile s(t): accelerate, cruise, decelerate."""
    a, vp, total = p.acceleration, p.peak_speed, p.duration
    ta = vp / a
    if t <= ta:
        return 0.5 * a * t**2
    if t <= total - ta:
        return p.ramp_steps + vp * (t - ta)
    return p.steps - 0.5 * a * (total - t) ** 2


def test_cruise_intervals_are_one_over_v() -> None:
    speed, accel = 5000, 20_000
    d = step_deadlines(20_000, speed, accel)
    ramp = speed**2 / (2 * accel)  # 625 steps accelerating, 625 decelerating
    cruise = np.diff(d[int(ramp) + 2: 20_000 - int(ramp) - 2])
    assert np.allclose(cruise, 1 / speed, rtol=0, atol=1e-12)
    # and during the ramp the intervals shrink
    assert np.all(np.diff(np.diff(d[:600])) < 0)


def test_first_steps_follow_the_acceleration() -> None:
    d = step_deadlines(20_000, 5000, 20_000)
    assert d[0] == pytest.approx(math.sqrt(2 / 20_000))
    assert d[3] == pytest.approx(math.sqrt(2 * 4 / 20_000))


def test_no_accumulated_error_on_a_long_move() -> None:
    d = step_deadlines(1_000_000, 5000, 20_000)
    assert d[-1] == move_time(1_000_000, 5000, 20_000)
    # a cruise step deep inside the move is exactly on the closed form
    i = 500_000
    assert d[i - 1] == pytest.approx(5000 / 20_000 + (i - 625) / 5000, abs=1e-9)


def test_zero_and_one_step() -> None:
    assert move_time(0, 5000, 20_000) == 0.0
    assert len(step_deadlines(0, 5000, 20_000)) == 0
    one = step_deadlines(1, 5000, 20_000)
    assert len(one) == 1
    assert one[0] == move_time(1, 5000, 20_000) == pytest.approx(2 * math.sqrt(1 / 20_000))


def test_constant_speed_without_ramp() -> None:
    d = step_deadlines(10, 1000, math.inf)
    assert np.allclose(d, np.arange(1, 11) / 1000, rtol=0, atol=1e-15)
    assert d[-1] == move_time(10, 1000, math.inf) == 0.01


def test_time_at_and_bad_arguments() -> None:
    profile = Profile(100, 50, 100)
    assert profile.time_at(0) == 0.0
    assert profile.time_at(100) == profile.duration
    with pytest.raises(ValueError):
        profile.time_at(101)
    with pytest.raises(ValueError):
        Profile(10, 0, 100)
    with pytest.raises(ValueError):
        Profile(10, 100, -1)
