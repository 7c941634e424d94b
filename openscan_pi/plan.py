"""Where to take the photos of a scan, and in which order.

:func:`lattice` spreads N positions evenly over a band of rotor elevations (a Fibonacci lattice:
equal area per point), :func:`ring` puts them round one rotor angle (turntable-only scans), and
:func:`order` chooses the capture order that keeps the motors moving least, judged by a time
function (seconds to move between two ``(rotor, turntable)`` poses, both axes at once). Visiting
the lattice by index makes the turntable jump by the golden angle at every step (it looks as if
it turns at random); the ordered route sweeps it round in one direction within bands of
elevation instead. :func:`make_plan` puts the two together for a :class:`PlanConfig`.

Up to :data:`DENSE_MAX` positions the order judges every pair; past it only near ones
(:mod:`openscan_pi.plan_large`), so that time and memory grow with N, not N², up to the 10 000 a
scan may ask for. Both can be stopped from another thread (``stop``: :class:`PlanCancelled`).

Standard library only, so that importing the planner stays fast.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openscan_pi.schema import PlanConfig

__all__ = [
    "DENSE_MAX",
    "MAX_POSITIONS",
    "Plan",
    "PlanCancelled",
    "Position",
    "TimeFn",
    "lattice",
    "make_plan",
    "order",
    "ring",
    "route_time",
    "simple_time_fn",
    "turntable_distance",
]

#: Seconds to move from one ``(rotor, turntable)`` pose to another, both axes moving at once.
TimeFn = Callable[[tuple[float, float], tuple[float, float]], float]

GOLDEN_RATIO = (1 + math.sqrt(5)) / 2
#: The golden angle, 360° / φ² ≈ 137.508°.
GOLDEN_ANGLE = 360.0 / GOLDEN_RATIO**2

# How hard order() works: candidate neighbours per position, longest segment Or-opt moves, and a cap
# on improvement rounds (each round is one 2-opt and one Or-opt sweep; they end sooner when a round
# finds nothing to improve).
_NEIGHBOURS = 10
_OR_OPT_MAX = 3
_MAX_ROUNDS = 50
#: Most positions a plan may have (10 000 photos keep a rig busy for many hours).
MAX_POSITIONS = 10_000
#: Most positions :func:`order` judges pair by pair ((N+1)² time function calls); more go to
#: :func:`openscan_pi.plan_large.order_large`.
DENSE_MAX = 400

#: Asked now and then while planning; True stops it (:class:`PlanCancelled`).
Stop = Callable[[], bool]


class PlanCancelled(Exception):
    """Planning was stopped before it finished (its ``stop`` said so)."""


def _checker(stop: Stop | None) -> Callable[[], None]:
    def check() -> None:
        if stop is not None and stop():
            raise PlanCancelled("planning stopped")

    return check


@dataclass(frozen=True)
class Position:
    """One place to take a photo from."""

    #: Index on the lattice (0..n-1), before ordering.
    index: int
    #: Rotor elevation, degrees (0 = camera level with the object, +90 = above).
    rotor: float
    #: Turntable azimuth, degrees in [0, 360).
    turntable: float

    @property
    def pose(self) -> tuple[float, float]:
        """``(rotor, turntable)``, as a :data:`TimeFn` takes it."""
        return (self.rotor, self.turntable)


@dataclass(frozen=True)
class Plan:
    """The positions of a scan in capture order, with the estimated motion time."""

    #: In capture order.
    positions: list[Position]
    #: Estimated seconds of motion, from the start pose along :attr:`positions`.
    motion_time_s: float
    #: The same positions visited by index, for comparison.
    index_order_time_s: float


# -- where --------------------------------------------------------------------------------------


def _check_count(n: int) -> int:
    try:
        count = operator.index(n)
    except TypeError:
        count = None
    if count is None or isinstance(n, bool):
        raise ValueError(f"the number of positions must be a whole number, got {n!r}")
    if count < 1:
        raise ValueError(f"the number of positions must be at least 1, got {count}")
    return count


def _check_span(span: float) -> None:
    if not math.isfinite(span) or not 0 < span <= 360:
        raise ValueError(f"turntable_span must be greater than 0 and at most 360 degrees, got {span}")


def _check_elevation(name: str, value: float) -> None:
    if not math.isfinite(value) or not -90 <= value <= 90:
        raise ValueError(f"{name} must be an elevation between -90 and 90 degrees, got {value}")


def _azimuth(value: float) -> float:
    """``value`` reduced to [0, 360)."""
    value %= 360.0
    return 0.0 if value >= 360.0 else value  # -1e-17 % 360 rounds to 360.0


def lattice(
    n: int, *, rotor_min: float, rotor_max: float, turntable_span: float = 360.0
) -> list[Position]:
    """``n`` positions spread evenly over the band of elevations ``rotor_min``..``rotor_max``.

    A Fibonacci lattice cut to the band: the sine of the elevation steps evenly over
    [sin(min), sin(max)] with a half-step offset (each point stands for the same area of the
    sphere), and the azimuth advances by the golden angle. For ``turntable_span`` < 360 the azimuth
    is the golden-ratio sequence scaled into [0, span). Indexes run from the lowest elevation up.

    Raises:
        ValueError: ``n`` < 1, elevations outside -90..90 or ``rotor_min`` >= ``rotor_max``, or a
            span outside (0, 360].
    """
    n = _check_count(n)
    _check_elevation("rotor_min", rotor_min)
    _check_elevation("rotor_max", rotor_max)
    if rotor_min >= rotor_max:
        raise ValueError(f"rotor_min ({rotor_min}) must be less than rotor_max ({rotor_max})")
    _check_span(turntable_span)
    low = math.sin(math.radians(rotor_min))
    high = math.sin(math.radians(rotor_max))
    full = turntable_span >= 360.0
    positions = []
    for i in range(n):
        s = low + (i + 0.5) / n * (high - low)
        rotor = math.degrees(math.asin(max(-1.0, min(1.0, s))))
        rotor = min(rotor_max, max(rotor_min, rotor))
        turntable = _azimuth(i * GOLDEN_ANGLE) if full else math.fmod(i / GOLDEN_RATIO, 1.0) * turntable_span
        positions.append(Position(index=i, rotor=rotor, turntable=turntable))
    return positions


def ring(n: int, *, rotor: float, turntable_span: float = 360.0) -> list[Position]:
    """``n`` positions at one rotor elevation, for turntable-only scans.

    All round (span 360) they are 360/n apart; for a smaller span they run from 0 to the span
    inclusive, span/(n-1) apart (a single position sits in the middle of the span).

    Raises:
        ValueError: ``n`` < 1, ``rotor`` outside -90..90, or a span outside (0, 360].
    """
    n = _check_count(n)
    _check_elevation("rotor", rotor)
    _check_span(turntable_span)
    if turntable_span >= 360.0:
        angles = [i * 360.0 / n for i in range(n)]
    elif n == 1:
        angles = [turntable_span / 2]
    else:
        angles = [i * turntable_span / (n - 1) for i in range(n)]
    return [Position(index=i, rotor=float(rotor), turntable=_azimuth(a)) for i, a in enumerate(angles)]


# -- how long -----------------------------------------------------------------------------------


def turntable_distance(a: float, b: float) -> float:
    """Degrees the turntable turns from ``a`` to ``b`` the shortest way round (0..180)."""
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def simple_time_fn(rotor_speed_dps: float = 60.0, turntable_speed_dps: float = 90.0) -> TimeFn:
    """A constant-speed estimate: each axis at its speed, both at once, the turntable the shorter
    way round. For tests and tools; the daemon uses the real motion profiles."""
    if not (rotor_speed_dps > 0 and turntable_speed_dps > 0):
        raise ValueError(
            f"speeds must be greater than 0, got rotor {rotor_speed_dps}, turntable {turntable_speed_dps}"
        )

    def time_fn(a: tuple[float, float], b: tuple[float, float]) -> float:
        return max(
            abs(a[0] - b[0]) / rotor_speed_dps,
            turntable_distance(a[1], b[1]) / turntable_speed_dps,
        )

    return time_fn


def route_time(route: Sequence[Position], time_fn: TimeFn, start: tuple[float, float]) -> float:
    """Seconds of motion from ``start`` through ``route`` in the order given."""
    total = 0.0
    here = start
    for p in route:
        there = (p.rotor, p.turntable)
        total += time_fn(here, there)
        here = there
    return total


# -- in which order -----------------------------------------------------------------------------


def order(positions: Sequence[Position], time_fn: TimeFn, start: tuple[float, float], *,
          stop: Stop | None = None) -> list[Position]:
    """The capture order that keeps motion time short, starting from the pose ``start``.

    Nearest neighbour from the start, then 2-opt and Or-opt moves (segments of up to three
    positions, either way round) on the open path until none helps, each move judged exactly by
    ``time_fn`` (it need not be symmetric). The search only tries moves that join a position to one
    of its nearest neighbours in time and stops after a bounded number of rounds, so it is quick
    (N = 200: about 0.1 s with a cheap time function; ``time_fn`` is called (N+1)·N times).
    Deterministic. If visiting by index is quicker after all, that order is returned.

    That is for up to :data:`DENSE_MAX` positions; more are ordered by
    :func:`openscan_pi.plan_large.order_large` (the time function asked about near positions only,
    a bounded number of moves). ``stop`` is asked now and then; when it says True,
    :class:`PlanCancelled` is raised.
    """
    n = len(positions)
    if n <= 1:
        return list(positions)
    check = _checker(stop)
    poses = [(p.rotor, p.turntable) for p in positions]
    if n > DENSE_MAX:
        from openscan_pi.plan_large import order_large

        ordered = [positions[u] for u in order_large(poses, time_fn, start, check)]
        if route_time(ordered, time_fn, start) <= route_time(positions, time_fn, start):
            return ordered
        return list(positions)
    # Nodes 0..n-1 are the positions, node n is the start pose; cost[u][v] = time from u to v.
    cost = []
    for a in poses + [start]:
        check()
        cost.append([time_fn(a, b) for b in poses] + [0.0])
    for u in range(n):
        cost[u][u] = 0.0
    route = _nearest_neighbour(cost, n)
    _improve(route, cost, _neighbour_lists(cost, n), check)
    if _path_cost(route, cost) <= _path_cost([n, *range(n)], cost):
        return [positions[u] for u in route[1:]]
    return list(positions)


def _path_cost(route: list[int], cost: list[list[float]]) -> float:
    return sum(cost[route[k]][route[k + 1]] for k in range(len(route) - 1))


def _nearest_neighbour(cost: list[list[float]], n: int) -> list[int]:
    """Node ``n`` (the start) first, then each time the nearest unvisited position (lowest
    index on ties)."""
    route = [n]
    left = set(range(n))
    here = n
    while left:
        row = cost[here]
        here = min(left, key=lambda v: (row[v], v))
        left.remove(here)
        route.append(here)
    return route


def _neighbour_lists(cost: list[list[float]], n: int) -> list[list[int]]:
    """For each node, the positions nearest to it (time either way), nearest first."""
    k = min(_NEIGHBOURS, n - 1)
    lists = []
    for u in range(n + 1):
        others = [v for v in range(n) if v != u]
        if u < n:
            others.sort(key=lambda v: (cost[u][v] + cost[v][u], v))
        else:
            others.sort(key=lambda v: (cost[u][v], v))
        lists.append(others[:k])
    return lists


def _improve(route: list[int], cost: list[list[float]], near: list[list[int]],
             check: Callable[[], None]) -> None:
    """2-opt and Or-opt on ``route`` in place until neither finds a gain (or the round cap)."""
    for _ in range(_MAX_ROUNDS):
        check()
        improved = _two_opt(route, cost, near)
        improved = _or_opt(route, cost, near) or improved
        if not improved:
            return


_EPS = 1e-9


def _prefix_sums(route: list[int], cost: list[list[float]]) -> tuple[list[float], list[float]]:
    """Cumulative time along ``route`` forwards and (edge by edge) backwards."""
    fwd = [0.0]
    bwd = [0.0]
    for k in range(len(route) - 1):
        a, b = route[k], route[k + 1]
        fwd.append(fwd[-1] + cost[a][b])
        bwd.append(bwd[-1] + cost[b][a])
    return fwd, bwd


def _two_opt(route: list[int], cost: list[list[float]], near: list[list[int]]) -> bool:
    """One sweep of 2-opt moves (reverse ``route[i..j]``) that make a position adjacent to one of
    its near neighbours. ``route[0]`` (the start) stays put; the path's end is free."""
    last = len(route) - 1
    pos = {u: k for k, u in enumerate(route)}
    fwd, bwd = _prefix_sums(route, cost)
    improved = False
    for u in list(route):
        for c in near[u]:
            p, q = pos[u], pos[c]
            # Put c straight after u, or u straight before c (and the mirror images).
            candidates = ((p + 1, q), (p, q - 1)) if p < q else ((q + 1, p), (q, p - 1))
            for i, j in candidates:
                if i < 1 or j <= i:
                    continue
                a, b, c_, d = route[i - 1], route[i], route[j], route[j + 1] if j < last else None
                delta = cost[a][c_] - cost[a][b] + (bwd[j] - bwd[i]) - (fwd[j] - fwd[i])
                if d is not None:
                    delta += cost[b][d] - cost[c_][d]
                if delta < -_EPS:
                    route[i : j + 1] = route[i : j + 1][::-1]
                    for k in range(i, j + 1):
                        pos[route[k]] = k
                    fwd, bwd = _prefix_sums(route, cost)
                    improved = True
                    break
    return improved


def _or_opt(route: list[int], cost: list[list[float]], near: list[list[int]]) -> bool:
    """One sweep of Or-opt moves: a run of 1.._OR_OPT_MAX positions moved next to a near
    neighbour of one of its ends, either way round."""
    improved = False
    pos = {u: k for k, u in enumerate(route)}
    for length in range(1, _OR_OPT_MAX + 1):
        for i in range(1, len(route) - length + 1):
            if _move_segment(route, cost, near, pos, i, length):
                pos = {u: k for k, u in enumerate(route)}
                improved = True
    return improved


def _move_segment(
    route: list[int], cost: list[list[float]], near: list[list[int]], pos: dict[int, int], i: int, length: int
) -> bool:
    """Try moving ``route[i : i + length]`` elsewhere (``pos``: where each node is on the route);
    apply the best gain found. True if moved."""
    from openscan_pi.plan_large import apply_segment_move, best_segment_move

    move = best_segment_move(route, lambda a, b: cost[a][b], near, pos, i, length)
    if move is None:
        return False
    apply_segment_move(route, i, length, *move)
    return True


# -- both ---------------------------------------------------------------------------------------


def make_plan(n: int, cfg: PlanConfig, time_fn: TimeFn, start: tuple[float, float], *,
              stop: Stop | None = None) -> Plan:
    """``n`` positions for ``cfg`` (a :func:`ring` at ``rotor_fixed`` when ``turntable_only``,
    else a :func:`lattice` over ``rotor_min``..``rotor_max``), put in :func:`order` from
    ``start`` (``stop``: as there).

    Raises:
        ValueError: ``n`` < 1 or more than :data:`MAX_POSITIONS`, or a bad ``cfg`` (as
            :func:`lattice` and :func:`ring` say).
    """
    if _check_count(n) > MAX_POSITIONS:
        raise ValueError(f"the number of positions must be at most {MAX_POSITIONS}, got {n}")
    if cfg.turntable_only:
        positions = ring(n, rotor=cfg.rotor_fixed, turntable_span=cfg.turntable_span)
    else:
        positions = lattice(
            n, rotor_min=cfg.rotor_min, rotor_max=cfg.rotor_max, turntable_span=cfg.turntable_span
        )
    ordered = order(positions, time_fn, start, stop=stop)
    return Plan(
        positions=ordered,
        motion_time_s=route_time(ordered, time_fn, start),
        index_order_time_s=route_time(positions, time_fn, start),
    )
