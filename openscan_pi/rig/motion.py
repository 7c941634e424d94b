"""Pure motion math: trapezoid (or triangle) step profiles, no I/O.

A move of ``steps`` steps starts and ends at rest. Its position ``s(t)`` is continuous: constant
acceleration ``a`` up to ``v_max``, a cruise at ``v_max``, then the mirror-image deceleration. When the
move is too short to reach ``v_max`` (``steps < v_max² / a``) it is a triangle that peaks at
``sqrt(a * steps)``.

Step ``i`` (1..steps) is due when ``s(t) == i``. Every deadline is computed on its own from the
closed form, so the last one is exactly :func:`move_time` and no rounding error accumulates over a
long move. Example::

    >>> move_time(20_000, 5000, 20_000)   # 20000/5000 + 5000/20000
    4.25
    >>> step_deadlines(3, 5000, 20_000)[-1] == move_time(3, 5000, 20_000)
    True

An ``acceleration`` of ``math.inf`` gives a constant-speed move (no ramp), used for homing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Profile:
    """The continuous rest-to-rest profile of one move.

    ``steps`` is the distance (its sign is ignored), ``max_speed`` in steps/s, ``acceleration`` in
    steps/s² (``math.inf``: start and stop at ``max_speed`` without a ramp).
    """

    steps: int
    max_speed: float
    acceleration: float

    def __post_init__(self) -> None:
        if not self.max_speed > 0 or math.isinf(self.max_speed):
            raise ValueError(f"max_speed must be a positive number of steps/s, got {self.max_speed}")
        if not self.acceleration > 0:
            raise ValueError(f"acceleration must be positive (or inf), got {self.acceleration}")
        object.__setattr__(self, "steps", abs(int(self.steps)))

    @property
    def is_trapezoid(self) -> bool:
        """True when the move reaches ``max_speed`` (``steps >= v² / a``)."""
        return self.steps >= self.max_speed**2 / self.acceleration

    @property
    def ramp_steps(self) -> float:
        """Distance covered while accelerating (the same again while decelerating)."""
        if self.is_trapezoid:
            return self.max_speed**2 / (2 * self.acceleration)
        return self.steps / 2

    @property
    def peak_speed(self) -> float:
        """The highest speed reached, steps/s."""
        if self.is_trapezoid:
            return self.max_speed
        return math.sqrt(self.acceleration * self.steps)

    @property
    def duration(self) -> float:
        """Seconds from rest to rest: ``steps/v + v/a`` or ``2*sqrt(steps/a)``."""
        if self.steps == 0:
            return 0.0
        if self.is_trapezoid:
            return self.steps / self.max_speed + self.max_speed / self.acceleration
        return 2 * math.sqrt(self.steps / self.acceleration)

    def time_at(self, position: float) -> float:
        """When the profile reaches ``position`` (0..steps), in seconds from the start."""
        import numpy as np

        if not 0 <= position <= self.steps:
            raise ValueError(f"position {position} is outside 0..{self.steps}")
        return float(self.times_at(np.asarray([position], dtype=float))[0])

    def times_at(self, positions: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`time_at` for positions in 0..steps."""
        import numpy as np

        a, v, n = self.acceleration, self.max_speed, self.steps
        x = np.asarray(positions, dtype=float)
        t = np.empty_like(x)
        total = self.duration
        ramp = self.ramp_steps
        accel = x <= ramp
        decel = ~accel & (x > n - ramp)
        cruise = ~(accel | decel)
        t[accel] = np.sqrt(2 * x[accel] / a)
        # Measured back from the end, so that position n is exactly `total`.
        t[decel] = total - np.sqrt(2 * (n - x[decel]) / a)
        # Only a trapezoid has a cruise (a triangle's ramps meet at n/2).
        t[cruise] = v / a + (x[cruise] - ramp) / v
        return t

    def deadlines(self) -> np.ndarray:
        """Absolute due time of each step 1..steps (float64 seconds, strictly increasing)."""
        import numpy as np

        if self.steps == 0:
            return np.empty(0, dtype=float)
        return self.times_at(np.arange(1, self.steps + 1, dtype=float))


def move_time(steps: int, max_speed: float, acceleration: float) -> float:
    """Seconds a rest-to-rest move of ``|steps|`` steps takes (see :class:`Profile`)."""
    return Profile(steps, max_speed, acceleration).duration


def step_deadlines(steps: int, max_speed: float, acceleration: float) -> np.ndarray:
    """Due time of each of the ``|steps|`` steps, seconds from the start of the move.

    Element ``i - 1`` is when the continuous profile reaches position ``i``; the last element
    equals :func:`move_time` exactly. Returns a float64 numpy array (empty for 0 steps).
    """

    return Profile(steps, max_speed, acceleration).deadlines()
