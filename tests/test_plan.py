"""Scan planning: the lattice covers the band evenly, rings are even, the order saves motion time."""

from __future__ import annotations

import json
import math
import os
import random
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from openscan_pi import plan as plan_module
from openscan_pi.plan import (
    DENSE_MAX,
    GOLDEN_ANGLE,
    MAX_POSITIONS,
    Plan,
    PlanCancelled,
    Position,
    TimeFn,
    lattice,
    make_plan,
    order,
    ring,
    route_time,
    simple_time_fn,
    turntable_distance,
)
from openscan_pi.schema import PlanConfig

BANDS = [(-90.0, 90.0), (-30.0, 70.0), (0.0, 45.0), (-10.0, 10.0), (60.0, 90.0)]
SIMPLE = simple_time_fn()
SLOW_TURNTABLE = simple_time_fn(rotor_speed_dps=90.0, turntable_speed_dps=15.0)


def unit_vector(p: Position) -> tuple[float, float, float]:
    e, a = math.radians(p.rotor), math.radians(p.turntable)
    return (math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e))


def nearest_neighbour_angles(positions: Sequence[Position]) -> list[float]:
    """For each position, the angle (radians) to the nearest other one on the unit sphere."""
    vectors = [unit_vector(p) for p in positions]
    result = []
    for i, a in enumerate(vectors):
        best = math.pi
        for j, b in enumerate(vectors):
            if i != j:
                dot = max(-1.0, min(1.0, a[0] * b[0] + a[1] * b[1] + a[2] * b[2]))
                best = min(best, math.acos(dot))
        result.append(best)
    return result


def band_fraction(p: Position, low: float, high: float) -> float:
    """Where ``p`` sits in the band by area: 0 at ``low``, 1 at ``high``."""
    s_low, s_high = math.sin(math.radians(low)), math.sin(math.radians(high))
    return (math.sin(math.radians(p.rotor)) - s_low) / (s_high - s_low)


def forward_only_time(speed_dps: float = 90.0) -> TimeFn:
    """An asymmetric time function: a turntable that can only turn forwards (increasing angle)."""

    def time_fn(a: tuple[float, float], b: tuple[float, float]) -> float:
        return max(abs(a[0] - b[0]) / 60.0, ((b[1] - a[1]) % 360.0) / speed_dps)

    return time_fn


def plan_config(**changes: object) -> PlanConfig:
    values: dict[str, object] = {
        "rotor_min": -30.0,
        "rotor_max": 70.0,
        "turntable_span": 360.0,
        "turntable_only": False,
        "rotor_fixed": 15.0,
    }
    values.update(changes)
    return PlanConfig(**values)  # type: ignore[arg-type]


# -- lattice ------------------------------------------------------------------------------------


@pytest.mark.parametrize("low, high", BANDS)
@pytest.mark.parametrize("n", [1, 2, 7, 50, 200])
@pytest.mark.parametrize("span", [360.0, 270.0, 90.0])
def test_lattice_count_bounds_and_span(low: float, high: float, n: int, span: float) -> None:
    positions = lattice(n, rotor_min=low, rotor_max=high, turntable_span=span)
    assert len(positions) == n
    assert [p.index for p in positions] == list(range(n))
    for p in positions:
        assert low <= p.rotor <= high
        assert 0.0 <= p.turntable < 360.0
        assert p.turntable < span
    # Indexes run from the lowest elevation up.
    assert [p.rotor for p in positions] == sorted(p.rotor for p in positions)


def test_lattice_is_the_golden_angle_spiral_with_half_step_offset() -> None:
    positions = lattice(4, rotor_min=-90, rotor_max=90)
    # sin(elevation) at -0.75, -0.25, 0.25, 0.75.
    for p, s in zip(positions, (-0.75, -0.25, 0.25, 0.75), strict=True):
        assert math.sin(math.radians(p.rotor)) == pytest.approx(s)
    for a, b in zip(positions, positions[1:], strict=False):
        assert (b.turntable - a.turntable) % 360 == pytest.approx(GOLDEN_ANGLE)
    assert pytest.approx(137.5077640, abs=1e-6) == GOLDEN_ANGLE


@pytest.mark.parametrize("low, high", [(-90.0, 90.0), (-30.0, 70.0)])
@pytest.mark.parametrize("n", [10, 30, 50, 100, 200, 400])
def test_lattice_points_are_evenly_spaced_on_the_sphere(low: float, high: float, n: int) -> None:
    nn = nearest_neighbour_angles(lattice(n, rotor_min=low, rotor_max=high))
    ratio = min(nn) / (sum(nn) / len(nn))
    assert ratio >= 0.5, f"min/mean nearest-neighbour distance {ratio:.2f}"


@pytest.mark.parametrize("span", [90.0, 180.0, 300.0])
def test_part_of_the_turntable_is_covered_evenly_too(span: float) -> None:
    positions = lattice(100, rotor_min=-30, rotor_max=70, turntable_span=span)
    nn = nearest_neighbour_angles(positions)
    assert min(nn) / (sum(nn) / len(nn)) >= 0.5
    sectors = [0] * 5
    for p in positions:
        sectors[int(p.turntable / span * 5)] += 1
    assert max(sectors) - min(sectors) <= 3, sectors


@pytest.mark.parametrize("low, high", [(-90.0, 90.0), (-30.0, 70.0), (20.0, 80.0)])
@pytest.mark.parametrize("n", [60, 200, 401])
def test_equal_area_slices_get_equal_shares(low: float, high: float, n: int) -> None:
    positions = lattice(n, rotor_min=low, rotor_max=high)
    # Slices of elevation with equal area: the counts differ by at most one.
    slices = [0] * 6
    for p in positions:
        slices[min(5, int(band_fraction(p, low, high) * 6))] += 1
    assert max(slices) - min(slices) <= 1, slices
    # Equal-area cells (3 slices of elevation x 4 quarters of azimuth): close to n / 12 each.
    cells = [0] * 12
    for p in positions:
        row = min(2, int(band_fraction(p, low, high) * 3))
        cells[row * 4 + int(p.turntable // 90)] += 1
    expected = n / 12
    assert all(abs(c - expected) <= max(3.0, 0.15 * expected) for c in cells), cells


# -- ring ---------------------------------------------------------------------------------------


def test_ring_all_round_is_evenly_spaced() -> None:
    positions = ring(24, rotor=15)
    assert len(positions) == 24
    assert all(p.rotor == 15 for p in positions)
    assert [p.turntable for p in positions] == pytest.approx([i * 15.0 for i in range(24)])
    assert [p.index for p in positions] == list(range(24))


def test_ring_part_way_round_includes_both_ends() -> None:
    positions = ring(5, rotor=-10, turntable_span=180)
    assert [p.turntable for p in positions] == pytest.approx([0, 45, 90, 135, 180])
    assert ring(1, rotor=0, turntable_span=90)[0].turntable == 45
    assert [p.turntable for p in ring(2, rotor=0, turntable_span=300)] == [0, 300]
    assert [p.turntable for p in ring(1, rotor=0)] == [0]


# -- time ---------------------------------------------------------------------------------------


def test_simple_time_fn_moves_both_axes_at_once_the_short_way_round() -> None:
    f = simple_time_fn(rotor_speed_dps=60, turntable_speed_dps=90)
    assert f((0, 0), (0, 0)) == 0
    assert f((0, 0), (60, 0)) == pytest.approx(1.0)
    assert f((0, 0), (0, 90)) == pytest.approx(1.0)
    assert f((0, 0), (30, 90)) == pytest.approx(1.0)  # at the same time, not one after the other
    assert f((0, 350), (0, 10)) == pytest.approx(20 / 90)  # across 0, not back round
    assert f((0, 10), (0, 350)) == pytest.approx(20 / 90)
    assert turntable_distance(-90, 450) == pytest.approx(180)
    with pytest.raises(ValueError, match="speeds must be greater than 0"):
        simple_time_fn(0, 90)


def test_route_time_adds_up_the_moves_from_the_start() -> None:
    route = [Position(0, 0, 90), Position(1, 60, 90), Position(2, 60, 270)]
    assert route_time(route, SIMPLE, (0, 0)) == pytest.approx(1 + 1 + 2)
    assert route_time([], SIMPLE, (0, 0)) == 0


# -- order --------------------------------------------------------------------------------------


@pytest.mark.parametrize("time_fn", [SIMPLE, SLOW_TURNTABLE], ids=["simple", "slow-turntable"])
@pytest.mark.parametrize("n", [50, 100, 200])
def test_order_beats_index_order(time_fn: TimeFn, n: int) -> None:
    positions = lattice(n, rotor_min=-30, rotor_max=70)
    ordered = order(positions, time_fn, (0.0, 0.0))
    assert sorted(ordered, key=lambda p: p.index) == positions  # a permutation
    by_index = route_time(positions, time_fn, (0.0, 0.0))
    assert route_time(ordered, time_fn, (0.0, 0.0)) < 0.5 * by_index


def test_order_sweeps_the_turntable_instead_of_jumping() -> None:
    positions = lattice(100, rotor_min=-30, rotor_max=70)
    ordered = order(positions, SIMPLE, (0.0, 0.0))
    steps = [turntable_distance(a.turntable, b.turntable) for a, b in zip(ordered, ordered[1:], strict=False)]
    assert sum(steps) / len(steps) < 40  # by index every step turns by the golden angle, 137.5 degrees
    assert sum(1 for s in steps if s > 90) <= 5


def test_order_is_a_permutation_and_deterministic() -> None:
    positions = lattice(120, rotor_min=-40, rotor_max=80)
    first = order(positions, SIMPLE, (10.0, 200.0))
    assert sorted(p.index for p in first) == list(range(120))
    assert len(set(first)) == 120
    assert order(positions, SIMPLE, (10.0, 200.0)) == first
    assert order(list(positions), simple_time_fn(), (10.0, 200.0)) == first


@pytest.mark.parametrize("start", [(0.0, 0.0), (70.0, 180.0), (-30.0, 90.0), (20.0, 300.0), (45.0, -45.0)])
def test_order_starts_near_the_start(start: tuple[float, float]) -> None:
    positions = lattice(100, rotor_min=-30, rotor_max=70)
    first = order(positions, SIMPLE, start)[0]
    nearest = sorted(positions, key=lambda p: SIMPLE(start, (p.rotor, p.turntable)))
    assert first in nearest[:3]


def test_order_handles_a_one_way_time_function() -> None:
    positions = ring(12, rotor=0)
    shuffled = positions[:]
    random.Random(3).shuffle(shuffled)
    f = forward_only_time()
    ordered = order(shuffled, f, (0.0, 0.0))
    assert [p.turntable for p in ordered] == pytest.approx([i * 30.0 for i in range(12)])
    assert route_time(ordered, f, (0.0, 0.0)) == pytest.approx(330 / 90)


def test_order_is_never_worse_than_index_order() -> None:
    rng = random.Random(7)
    for _ in range(20):
        n = rng.randrange(2, 30)
        positions = [Position(i, rng.uniform(-30, 70), rng.uniform(0, 360)) for i in range(n)]
        start = (rng.uniform(-30, 70), rng.uniform(0, 360))
        for f in (SIMPLE, SLOW_TURNTABLE, forward_only_time()):
            ordered = order(positions, f, start)
            assert route_time(ordered, f, start) <= route_time(positions, f, start) + 1e-9
    # Already the best order: kept as it is.
    positions = ring(12, rotor=0)
    assert order(positions, SIMPLE, (0.0, 0.0)) == positions


def test_order_of_none_one_and_two() -> None:
    assert order([], SIMPLE, (0.0, 0.0)) == []
    one = lattice(1, rotor_min=-30, rotor_max=70)
    assert order(one, SIMPLE, (0.0, 0.0)) == one
    two = [Position(0, 60, 180), Position(1, 0, 10)]
    assert order(two, SIMPLE, (0.0, 0.0)) == [two[1], two[0]]


# -- make_plan ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 80])
def test_make_plan_covers_the_band(n: int) -> None:
    cfg = plan_config()
    plan = make_plan(n, cfg, SIMPLE, (0.0, 0.0))
    assert isinstance(plan, Plan)
    assert len(plan.positions) == n
    assert sorted(p.index for p in plan.positions) == list(range(n))
    assert all(cfg.rotor_min <= p.rotor <= cfg.rotor_max for p in plan.positions)
    assert plan.motion_time_s == pytest.approx(route_time(plan.positions, SIMPLE, (0.0, 0.0)))
    by_index = lattice(n, rotor_min=cfg.rotor_min, rotor_max=cfg.rotor_max)
    assert plan.index_order_time_s == pytest.approx(route_time(by_index, SIMPLE, (0.0, 0.0)))
    assert plan.motion_time_s <= plan.index_order_time_s


def test_make_plan_turntable_only_is_a_ring_at_rotor_fixed() -> None:
    cfg = plan_config(turntable_only=True, rotor_fixed=20.0, turntable_span=180.0)
    plan = make_plan(7, cfg, SLOW_TURNTABLE, (20.0, 0.0))
    assert all(p.rotor == 20.0 for p in plan.positions)
    assert sorted(p.turntable for p in plan.positions) == pytest.approx([i * 30.0 for i in range(7)])
    assert [p.turntable for p in plan.positions] == pytest.approx([i * 30.0 for i in range(7)])
    assert plan.motion_time_s == pytest.approx(180 / 15)


def test_make_plan_with_part_of_the_turntable() -> None:
    plan = make_plan(60, plan_config(turntable_span=120.0), SIMPLE, (0.0, 0.0))
    assert all(0 <= p.turntable < 120 for p in plan.positions)


# -- bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: lattice(0, rotor_min=-30, rotor_max=70), "at least 1, got 0"),
        (lambda: lattice(-5, rotor_min=-30, rotor_max=70), "at least 1, got -5"),
        (lambda: lattice(2.5, rotor_min=-30, rotor_max=70), "whole number"),  # type: ignore[arg-type]
        (lambda: lattice(True, rotor_min=-30, rotor_max=70), "whole number"),
        (lambda: lattice(10, rotor_min=70, rotor_max=-30), r"rotor_min \(70\) must be less than rotor_max"),
        (lambda: lattice(10, rotor_min=20, rotor_max=20), r"rotor_min \(20\) must be less than rotor_max"),
        (lambda: lattice(10, rotor_min=-100, rotor_max=20), "rotor_min must be an elevation between -90 and"),
        (lambda: lattice(10, rotor_min=0, rotor_max=math.nan), "rotor_max must be an elevation"),
        (lambda: lattice(9, rotor_min=0, rotor_max=5, turntable_span=0), "span must be greater than 0"),
        (lambda: lattice(9, rotor_min=0, rotor_max=5, turntable_span=-90), "turntable_span must be greater"),
        (lambda: lattice(9, rotor_min=0, rotor_max=5, turntable_span=400), "at most 360"),
        (lambda: ring(0, rotor=0), "at least 1"),
        (lambda: ring(5, rotor=0, turntable_span=0), "span must be greater than 0"),
        (lambda: ring(5, rotor=95), "rotor must be an elevation"),
        (lambda: make_plan(0, plan_config(), SIMPLE, (0.0, 0.0)), "at least 1"),
        (lambda: make_plan(5, plan_config(rotor_min=50.0, rotor_max=10.0), SIMPLE, (0.0, 0.0)), "rotor_min"),
    ],
)
def test_bad_arguments_are_refused_clearly(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


# -- many positions -----------------------------------------------------------------------------


@pytest.mark.parametrize("time_fn", [SIMPLE, SLOW_TURNTABLE], ids=["simple", "slow-turntable"])
@pytest.mark.parametrize("n", [DENSE_MAX + 1, 2000])
def test_many_positions_are_ordered_near_by_near(time_fn: TimeFn, n: int) -> None:
    positions = lattice(n, rotor_min=-30, rotor_max=70)
    ordered = order(positions, time_fn, (0.0, 0.0))
    assert sorted(p.index for p in ordered) == list(range(n))  # a permutation
    assert route_time(ordered, time_fn, (0.0, 0.0)) < 0.1 * route_time(positions, time_fn, (0.0, 0.0))
    steps = [turntable_distance(a.turntable, b.turntable) for a, b in zip(ordered, ordered[1:], strict=False)]
    assert sum(steps) / len(steps) < 20  # a sweep, not jumps of the golden angle
    assert order(positions, time_fn, (0.0, 0.0)) == ordered  # deterministic


def test_many_positions_almost_as_good_as_judging_every_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    positions = lattice(DENSE_MAX + 200, rotor_min=-30, rotor_max=70)
    near = route_time(order(positions, SLOW_TURNTABLE, (0.0, 0.0)), SLOW_TURNTABLE, (0.0, 0.0))
    monkeypatch.setattr(plan_module, "DENSE_MAX", len(positions))
    every = route_time(order(positions, SLOW_TURNTABLE, (0.0, 0.0)), SLOW_TURNTABLE, (0.0, 0.0))
    assert near <= 1.05 * every, (near, every)


def test_many_positions_with_a_one_way_time_function() -> None:
    positions = ring(DENSE_MAX * 2, rotor=0)
    shuffled = positions[:]
    random.Random(5).shuffle(shuffled)
    f = forward_only_time()
    ordered = order(shuffled, f, (0.0, 0.0))
    assert route_time(ordered, f, (0.0, 0.0)) <= 1.05 * 360 / 90


@pytest.mark.parametrize("n", [50, DENSE_MAX + 1, 3000])
@pytest.mark.parametrize("asked", [1, 3])
def test_planning_stops_when_asked(n: int, asked: int) -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= asked

    with pytest.raises(PlanCancelled):
        make_plan(n, plan_config(), SIMPLE, (0.0, 0.0), stop=stop)
    assert len(calls) == asked
    assert len(make_plan(n, plan_config(), SIMPLE, (0.0, 0.0), stop=lambda: False).positions) == n


def test_the_most_positions_plan_in_bounded_memory(tmp_path: Path) -> None:
    """The allowed maximum through the command line, in a process of its own: its peak memory
    (ru_maxrss of that child alone) stays far below what a Pi Zero 2 W has. The address space is
    capped so that a planner that grows with N² fails at once instead of swapping."""
    from tests.conftest import cli_env

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    config = tmp_path / "config.yaml"
    config.write_text(f"rig:\n  model: simulated\ndaemon:\n  data_dir: {tmp_path / 'data'}\n")
    out = tmp_path / "plan.json"
    with open(out, "wb") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "openscan_pi", "--config", str(config), "plan",
                                 "--positions", str(MAX_POSITIONS), "--json"], stdout=stdout,
                                stderr=subprocess.PIPE, env=cli_env(), preexec_fn=cap)
        _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read() if proc.stderr else ""
    proc.returncode = 0
    plan = json.loads(out.read_text())
    assert len(plan) == MAX_POSITIONS
    assert len({(p["rotor"], p["turntable"]) for p in plan}) == MAX_POSITIONS
    assert usage.ru_maxrss * 1024 < 256 * 2**20, f"peak {usage.ru_maxrss / 1024:.0f} MB"


def test_more_than_the_most_positions_is_refused() -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_POSITIONS}"):
        make_plan(MAX_POSITIONS + 1, plan_config(), SIMPLE, (0.0, 0.0))
