"""The capture order for many positions (hundreds to tens of thousands) in bounded time and memory.

:func:`openscan_pi.plan.order` asks the time function about every pair of positions, which is right
for a few hundred; for 10 000 that would be 10⁸ calls and gigabytes. Here the time function is only
asked about positions near each other. A grid over both axes, each scaled by how long it takes per
degree (the turntable wraps round), gives every position its nearest candidates; the route is built
nearest-neighbour on that grid, then improved by 2-opt and Or-opt moves that make a position
adjacent to one of its near neighbours, for a number of steps proportional to N. The step count,
not the clock, bounds the work: the same positions give the same order on every machine.

Standard library only, as :mod:`openscan_pi.plan`. Nodes are indexes: ``0..n-1`` the positions,
``n`` the start pose (always first, never moved).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

Pose = tuple[float, float]
TimeFn = Callable[[Pose, Pose], float]

#: Candidate neighbours per position (the moves try only these), and how many nearest by the grid's
#: distance are judged by the time function to find them.
NEIGHBOURS = 10
CANDIDATES = 2 * NEIGHBOURS
#: Positions per grid cell, on average.
PER_CELL = 2.0
#: Improvement steps (move evaluations) per position; past them the route is taken as it is.
WORK_PER_POSITION = 100
#: Longest run Or-opt moves.
OR_OPT_MAX = 3
#: How often (in steps of a loop) the ``check`` callable is called.
CHECK_EVERY = 256

_EPS = 1e-9


class _Space:
    """The nodes in scaled coordinates (seconds of each axis, roughly) on a grid of cells."""

    def __init__(self, nodes: Sequence[Pose], n: int, time_fn: TimeFn) -> None:
        self.sx = _seconds_per_degree(time_fn, nodes[n], axis=0)
        self.sy = _seconds_per_degree(time_fn, nodes[n], axis=1)
        self.period = 360.0 * self.sy
        self.xs = [p[0] * self.sx for p in nodes]
        self.ys = [(p[1] % 360.0) * self.sy for p in nodes]
        low, high = min(self.xs[:n]), max(self.xs[:n])
        width = high - low
        size = math.sqrt(width * self.period * PER_CELL / n)
        if width <= size:  # a band thinner than a cell (a ring): cells along the turntable only
            size = self.period * PER_CELL / n
        self.x0 = low
        self.nx = max(1, min(n, int(width / size) + 1))
        self.ny = max(1, min(n, round(self.period / size)))
        self.hx = max(width / self.nx, 1e-12)
        self.hy = self.period / self.ny
        # A point r + 1 rings away is at least r cells away along an axis with more than one.
        self.hmin = min(self.hx if self.nx > 1 else math.inf, self.hy if self.ny > 1 else math.inf)
        self.cells: list[list[int]] = [[] for _ in range(self.nx * self.ny)]
        for u in range(n):
            self.cells[self.cell(u)].append(u)

    def cell(self, u: int) -> int:
        cx = min(self.nx - 1, max(0, int((self.xs[u] - self.x0) / self.hx)))
        cy = min(self.ny - 1, int(self.ys[u] / self.hy))
        return cx * self.ny + cy

    def distance(self, u: int, v: int) -> float:
        """Both axes at once, the turntable the short way round (in scaled units)."""
        dy = abs(self.ys[u] - self.ys[v])
        return max(abs(self.xs[u] - self.xs[v]), min(dy, self.period - dy))

    def ring(self, u: int, r: int) -> list[int]:
        """The cells exactly ``r`` steps from ``u``'s cell (the larger of the two axes' steps; the
        turntable's wraps round); an empty list once ``r`` is past the whole grid."""
        home = self.cell(u)
        cx, cy = divmod(home, self.ny)
        if r == 0:
            return [home]
        half = self.ny // 2  # the most steps apart two rows can be
        if r > max(cx, self.nx - 1 - cx) and r > half:
            return []
        if 2 * r + 1 >= self.ny:
            within = list(range(self.ny))  # every row is at most r steps away
        else:
            within = [(cy + d) % self.ny for d in range(-r, r + 1)]
        edge = [] if r > half else sorted({(cy - r) % self.ny, (cy + r) % self.ny})
        cells: list[int] = []
        for x in range(max(0, cx - r), min(self.nx, cx + r + 1)):
            rows = within if abs(x - cx) == r else edge
            cells.extend(x * self.ny + y for y in rows)
        return cells


def _seconds_per_degree(time_fn: TimeFn, at: Pose, axis: int, degrees: float = 10.0) -> float:
    """How long ``time_fn`` says ``degrees`` of one axis take, per degree (1 when it cannot say)."""
    there = (at[0] + degrees, at[1]) if axis == 0 else (at[0], at[1] + degrees)
    try:
        value = time_fn(at, there) / degrees
    except (ArithmeticError, ValueError):
        return 1.0
    return value if math.isfinite(value) and value > 0 else 1.0


def order_large(poses: Sequence[Pose], time_fn: TimeFn, start: Pose, check: Callable[[], None]
                ) -> list[int]:
    """The indexes of ``poses`` in a capture order that keeps motion time short from ``start``.
    ``check()`` is called now and then; it raises to stop the search."""
    n = len(poses)
    nodes: list[Pose] = [*poses, start]
    space = _Space(nodes, n, time_fn)
    near, costs = _neighbours(space, nodes, n, time_fn, check)
    symmetric = all(abs(costs[u][v] - costs[v][u]) <= _EPS * (1 + costs[u][v])
                    for u in range(n) for v in near[u] if u in costs[v])

    def cost(a: int, b: int) -> float:
        known = costs[a].get(b)
        return known if known is not None else time_fn(nodes[a], nodes[b])

    route = _nearest_neighbour(space, nodes, n, time_fn, check)
    _Improver(route, cost, near, symmetric, check).run(WORK_PER_POSITION * n)
    return route[1:]


def _neighbours(space: _Space, nodes: Sequence[Pose], n: int, time_fn: TimeFn,
                check: Callable[[], None]) -> tuple[list[list[int]], list[dict[int, float]]]:
    """For each node (the start too), its :data:`NEIGHBOURS` nearest positions in time either way
    (the start: from it), and the times between them, kept for the moves."""
    near: list[list[int]] = []
    costs: list[dict[int, float]] = [{} for _ in range(n + 1)]
    want = min(CANDIDATES, n - 1) if n > 1 else 0
    for u in range(n + 1):
        if u % CHECK_EVERY == 0:
            check()
        found: list[tuple[float, int]] = []
        r = 0
        while True:
            cells = space.ring(u, r)
            if not cells:
                break
            for c in cells:
                found.extend((space.distance(u, v), v) for v in space.cells[c] if v != u)
            if len(found) >= want and heapq.nsmallest(want, found)[-1][0] <= r * space.hmin:
                break
            r += 1
        candidates = [v for _, v in heapq.nsmallest(want, found)]
        row = costs[u]
        for v in candidates:
            row[v] = time_fn(nodes[u], nodes[v])
            if u < n:
                costs[v][u] = time_fn(nodes[v], nodes[u])
        if u < n:
            candidates.sort(key=lambda v: (row[v] + costs[v][u], v))
        else:
            candidates.sort(key=lambda v: (row[v], v))
        near.append(candidates[:NEIGHBOURS])
    return near, costs


def _nearest_neighbour(space: _Space, nodes: Sequence[Pose], n: int, time_fn: TimeFn,
                       check: Callable[[], None]) -> list[int]:
    """The start, then each time the nearest unvisited position in time, among the nearest few
    on the grid (lowest index on ties); far from any, all that are left are looked at."""
    left_in = [len(c) for c in space.cells]
    visited = bytearray(n + 1)
    visited[n] = 1
    left = n
    remaining: dict[int, None] = dict.fromkeys(range(n))
    route = [n]
    here = n
    while left:
        if left % CHECK_EVERY == 0:
            check()
        found: list[tuple[float, int]] = []
        r, extra, scanned = 0, -1, 0
        while extra != 0:
            cells = space.ring(here, r)
            scanned += len(cells)
            if scanned > 2 * left:  # few are left, far apart: look at all of them
                found = [(space.distance(here, v), v) for v in remaining]
                break
            if not cells:
                break
            for c in cells:
                if left_in[c]:
                    found.extend((space.distance(here, v), v) for v in space.cells[c]
                                 if not visited[v])
            if found and extra < 0:
                extra = 1  # one ring more: the grid's nearest need not be the nearest in time
            elif extra > 0:
                extra -= 1
            r += 1
        pose = nodes[here]
        best = min(heapq.nsmallest(8, found),
                   key=lambda dv: (time_fn(pose, nodes[dv[1]]), dv[1]))[1]
        visited[best] = 1
        left_in[space.cell(best)] -= 1
        del remaining[best]
        left -= 1
        route.append(best)
        here = best
    return route


class _Improver:
    """2-opt and Or-opt on a route (a list of nodes, the start first), moves judged exactly by the
    time function, at most ``budget`` evaluations."""

    def __init__(self, route: list[int], cost: Callable[[int, int], float], near: list[list[int]],
                 symmetric: bool, check: Callable[[], None]) -> None:
        self.route = route
        self.cost = cost
        self.near = near
        self.symmetric = symmetric
        self.check = check
        self.pos = [0] * len(route)
        self._place(0, len(route))
        self.work = 0
        self.budget = 0

    def _place(self, low: int, high: int) -> None:
        route, pos = self.route, self.pos
        for k in range(max(0, low), min(len(route), high)):
            pos[route[k]] = k

    def _spend(self, units: int) -> bool:
        """Count work; False when the budget is spent."""
        before = self.work
        self.work += units
        if self.work // CHECK_EVERY != before // CHECK_EVERY:
            self.check()
        return self.work < self.budget

    def run(self, budget: int) -> None:
        """Sweeps of both kinds of move until a sweep finds nothing or ``budget`` is spent."""
        self.budget = budget
        while self.work < self.budget:
            improved = self._two_opt()
            improved = self._or_opt() or improved
            if not improved:
                return

    def _reversal_gain(self, i: int, j: int) -> float:
        """What reversing ``route[i..j]`` saves inside it (0 for a symmetric time function)."""
        if self.symmetric:
            return 0.0
        route, cost = self.route, self.cost
        self._spend(j - i)
        return sum(cost(route[k + 1], route[k]) - cost(route[k], route[k + 1]) for k in range(i, j))

    def _two_opt(self) -> bool:
        """One sweep: for each node, at most one reversal that puts it next to a near neighbour."""
        improved = False
        for u in list(self.route):
            for c in self.near[u]:
                if not self._spend(1):
                    return improved
                if self._reverse_towards(u, c):
                    improved = True
                    break
        return improved

    def _reverse_towards(self, u: int, c: int) -> bool:
        """Reverse the part of the route that puts ``c`` straight after ``u`` or ``u`` straight
        before ``c`` (as the dense 2-opt does), if that saves time; True if reversed."""
        route, cost = self.route, self.cost
        last = len(route) - 1
        p, q = self.pos[u], self.pos[c]
        for i, j in ((p + 1, q), (p, q - 1)) if p < q else ((q + 1, p), (q, p - 1)):
            if i < 1 or j <= i:
                continue
            a, b, c_ = route[i - 1], route[i], route[j]
            delta = cost(a, c_) - cost(a, b)
            if j < last:
                d = route[j + 1]
                delta += cost(b, d) - cost(c_, d)
            if delta < -_EPS and delta + self._reversal_gain(i, j) < -_EPS:
                route[i:j + 1] = route[i:j + 1][::-1]
                self._place(i, j + 1)
                self._spend(j - i)
                return True
        return False

    def _or_opt(self) -> bool:
        improved = False
        for length in range(1, OR_OPT_MAX + 1):
            i = 1
            while i <= len(self.route) - length:
                if not self._spend(1):
                    return improved
                if self._move_segment(i, length):
                    improved = True
                i += 1
        return improved

    def _move_segment(self, i: int, length: int) -> bool:
        """Move ``route[i : i + length]`` next to a near neighbour of one of its ends, either way
        round, where that saves the most; True if moved."""
        move = best_segment_move(self.route, self.cost, self.near, self.pos, i, length,
                                 spend=self._spend)
        if move is None:
            return False
        low, high = apply_segment_move(self.route, i, length, *move)
        self._place(low, high)
        self._spend(high - low)
        return True


def best_segment_move(route: list[int], cost: Callable[[int, int], float], near: Sequence[list[int]],
                      pos: Sequence[int] | dict[int, int], i: int, length: int, *,
                      spend: Callable[[int], object] = lambda units: None
                      ) -> tuple[int, bool] | None:
    """The Or-opt move of ``route[i : i + length]`` (``pos``: where each node is on the route) that
    saves the most: ``(g, backwards)`` to insert it, reversed or not, after ``route[g]``, or None
    when no move next to a near neighbour of one of its ends saves time. ``spend(n)`` is told
    the gaps judged. Shared by the dense and the grid orderers."""
    last = len(route) - 1
    j = i + length - 1
    seg = route[i:j + 1]
    s, e = seg[0], seg[-1]
    prev, nxt = route[i - 1], route[j + 1] if j < last else None
    inner_fwd = sum(cost(seg[m], seg[m + 1]) for m in range(length - 1))
    inner_bwd = sum(cost(seg[m + 1], seg[m]) for m in range(length - 1))
    removed = cost(prev, s) + (cost(e, nxt) - cost(prev, nxt) if nxt is not None else 0.0) + inner_fwd
    gaps: set[int] = set()  # insert between route[g] and route[g + 1] (or after the end)
    for c in near[s] + near[e]:
        q = pos[c]
        if i <= q <= j:
            continue
        gaps.add(q)
        if q - 1 >= 0:
            gaps.add(q - 1)
    spend(len(gaps))
    best, best_move = -_EPS, None
    for g in sorted(gaps):
        if i - 1 <= g <= j:
            continue
        x = route[g]
        y = route[g + 1] if g < last else None
        for backwards in (False, True):
            first, end = (e, s) if backwards else (s, e)
            added = cost(x, first) + (inner_bwd if backwards else inner_fwd)
            if y is not None:
                added += cost(end, y) - cost(x, y)
            gain = added - removed
            if gain < best:
                best, best_move = gain, (g, backwards)
    return best_move


def apply_segment_move(route: list[int], i: int, length: int, g: int, backwards: bool
                       ) -> tuple[int, int]:
    """Apply a move from :func:`best_segment_move`; returns the range of ``route`` it changed."""
    j = i + length - 1
    seg = route[i:j + 1]
    moved = seg[::-1] if backwards else seg
    rest = route[:i] + route[j + 1:]
    at = g + 1 if g < i else g + 1 - length
    route[:] = rest[:at] + moved + rest[at:]
    return min(i, at), max(j, at + length - 1) + 1
