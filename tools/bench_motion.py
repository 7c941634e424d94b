#!/usr/bin/env python3
"""Benchmark STEP pulse timing of the Python step backend, idle and under disk + CPU load.

A long move (default 20,000 steps at 5000 steps/s, 20,000 steps/s²: 4.25 s) runs on gpiozero
MockFactory pins with :class:`~openscan_pi.rig.backends.PythonStepBackend` at time_scale 1.0. The
STEP pin's history (``MockPin.states``, deltas accumulated) gives the time of every rising edge,
compared with the ideal deadlines of :func:`~openscan_pi.rig.motion.step_deadlines`:

- time ratio: actual time of the last step / ideal move time (target under load: <= 1.02);
- p99 / max |interval error|: |actual - ideal| time between consecutive steps, µs (target p99 <= 100);
- p99 / max lateness: how late each step is against its own absolute deadline, µs.

"load" = a thread of this process writing to disk (1 MB writes, fsync every 16 MB, up to 500 MB per
file, in a temp dir deleted after) while another process hashes random data with sha256.

Usage:  python3 tools/bench_motion.py [--steps 20000] [--rounds 1] [--dir /var/tmp] [--write-mb 500]
Prints Markdown tables for docs/benchmarks.md. :func:`bench_moves` is the reusable part.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gpiozero.pins.mock import MockFactory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openscan_pi.rig.backends import PythonStepBackend  # noqa: E402
from openscan_pi.rig.motion import move_time, step_deadlines  # noqa: E402

STEP_PIN = 27


@dataclass
class MoveResult:
    """One timed move."""

    scenario: str
    steps: int
    ideal_s: float
    actual_s: float
    p99_interval_us: float
    max_interval_us: float
    p99_late_us: float
    max_late_us: float
    written_mb: float = 0.0

    @property
    def ratio(self) -> float:
        """Actual / ideal move time."""
        return self.actual_s / self.ideal_s


def _hash_forever(stop: mp.synchronize.Event) -> None:
    import hashlib

    data = os.urandom(1 << 20)
    h = hashlib.sha256()
    while not stop.is_set():
        h.update(data)


class _DiskWriter(threading.Thread):
    """Writes 1 MB blocks with an fsync every 16 MB, files of up to ``file_mb`` MB, until stopped."""

    def __init__(self, folder: Path, file_mb: int) -> None:
        super().__init__(name="disk-writer", daemon=True)
        self.folder, self.file_mb = folder, file_mb
        self.stop = threading.Event()
        self.written = 0

    def run(self) -> None:
        block = os.urandom(1 << 20)
        n = 0
        while not self.stop.is_set():
            path = self.folder / f"load-{n}.bin"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for i in range(self.file_mb):
                    if self.stop.is_set():
                        break
                    os.write(fd, block)
                    self.written += len(block)
                    if i % 16 == 15:
                        os.fsync(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
                path.unlink()
            n += 1


@contextmanager
def load(write_dir: str | None, file_mb: int) -> Iterator[_DiskWriter]:
    """Disk writes in a thread of this process + sha256 in another process, for the with-block."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    hasher = ctx.Process(target=_hash_forever, args=(stop,), daemon=True)
    hasher.start()
    folder = Path(tempfile.mkdtemp(prefix="bench-motion-", dir=write_dir))
    writer = _DiskWriter(folder, file_mb)
    writer.start()
    try:
        time.sleep(0.5)  # let both get going
        yield writer
    finally:
        writer.stop.set()
        stop.set()
        writer.join()
        hasher.join(timeout=5)
        if hasher.is_alive():
            hasher.terminate()
        shutil.rmtree(folder, ignore_errors=True)


def time_move(scenario: str, steps: int, max_speed: float, acceleration: float) -> MoveResult:
    """Run one move on MockFactory pins and measure its rising edges against the deadlines."""
    factory = MockFactory()
    backend = PythonStepBackend(STEP_PIN, pin_factory=factory)
    try:
        deadlines = step_deadlines(steps, max_speed, acceleration)
        pin = factory.pin(STEP_PIN)
        pin.clear_states()  # t = 0 of the history, within a microsecond of the backend's start
        backend.run(deadlines, cancel=threading.Event())
        deltas = np.array([s.timestamp for s in pin.states])
        levels = np.array([s.state for s in pin.states])
        rising = np.cumsum(deltas)[levels][: len(deadlines)]
    finally:
        backend.close()
        factory.reset()
    interval_err = np.abs(np.diff(rising) - np.diff(deadlines)) * 1e6
    late = (rising - deadlines) * 1e6
    return MoveResult(scenario, steps, move_time(steps, max_speed, acceleration), float(rising[-1]),
                      float(np.percentile(interval_err, 99)), float(interval_err.max()),
                      float(np.percentile(late, 99)), float(late.max()))


def bench_moves(*, steps: int = 20_000, max_speed: float = 5000, acceleration: float = 20_000,
                rounds: int = 1, scenarios: tuple[str, ...] = ("idle", "load"), write_dir: str | None = None,
                write_mb: int = 500) -> list[MoveResult]:
    """Time ``rounds`` moves per scenario (``idle``, ``load``); returns one result per move."""
    results = []
    for _ in range(rounds):
        for scenario in scenarios:
            if scenario == "load":
                with load(write_dir, write_mb) as writer:
                    before = writer.written
                    result = time_move(scenario, steps, max_speed, acceleration)
                    result.written_mb = (writer.written - before) / 1e6
            else:
                result = time_move(scenario, steps, max_speed, acceleration)
            results.append(result)
    return results


def table(results: list[MoveResult]) -> str:
    """Markdown table of the results."""
    lines = ["| scenario | steps | ideal s | actual s | ratio | p99 interval err µs | max interval err µs "
             "| p99 late µs | max late µs | written during move MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| python, {r.scenario} | {r.steps} | {r.ideal_s:.3f} | {r.actual_s:.4f} "
                     f"| {r.ratio:.4f} | {r.p99_interval_us:.1f} | {r.max_interval_us:.0f} "
                     f"| {r.p99_late_us:.1f} | {r.max_late_us:.0f} | {r.written_mb:.0f} |")
    return "\n".join(lines)


LGPIO_NOTE = """\
lgpio design (on paper; there is no Raspberry Pi here):
- resolution: each tx_wave pulse is (levels, mask, delay in whole microseconds); the backend rounds
  every absolute deadline once to 1 µs and sends the differences, so edge n is due at deadline n
  +-0.5 µs and rounding never accumulates (checked against tests/fake_lgpio.py).
- timing does not depend on Python: lgpio's transmit thread is a C pthread (lgPthTx.c) that holds
  no GIL; it sleeps with clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) to the absolute time of the
  next edge, so a late wake-up delays that edge only, never the ones after it. Python only keeps
  the wave queue (LG_TX_BUF = 10 entries per GPIO) topped up: chunks of 50 ms, up to 0.25 s queued,
  so Python may stall ~0.2 s (GIL, disk I/O, GC) without moving an edge.
- what remains: the kernel's wake-up latency of that one thread (not measured: no Pi here), and
  up to 20 ms before a new train starts (the idle thread wakes at least every 20 ms).
"""


def planner_table(counts: tuple[int, ...] = (50, 100, 200)) -> str:
    """Motion time of the planner's order against index order, per rig profile, from the start."""
    from openscan_pi.config import load_config
    from openscan_pi.plan import make_plan
    from openscan_pi.rig.estimate import rig_time_fn

    rows = ["| profile | N | index order s | planned order s | planned / index | planning s |",
            "| --- | --- | --- | --- | --- | --- |"]
    for model in ("classic", "mini", "mini-v2", "midi"):
        cfg = load_config(env={}, overrides={"rig": {"model": model}})
        start = (cfg.rig.rotor.start_angle, cfg.rig.turntable.start_angle)
        for n in counts:
            began = time.perf_counter()
            plan = make_plan(n, cfg.plan, rig_time_fn(cfg.rig), start)
            took = time.perf_counter() - began
            rows.append(f"| {model} | {n} | {plan.index_order_time_s:.1f} | {plan.motion_time_s:.1f} | "
                        f"{plan.motion_time_s / plan.index_order_time_s:.3f} | {took:.2f} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--max-speed", type=float, default=5000)
    parser.add_argument("--acceleration", type=float, default=20_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dir", default=None, help="where the load writes (default: the temp dir)")
    parser.add_argument("--write-mb", type=int, default=500)
    args = parser.parse_args()
    started = time.monotonic()
    results = bench_moves(steps=args.steps, max_speed=args.max_speed, acceleration=args.acceleration,
                          rounds=args.rounds, write_dir=args.dir, write_mb=args.write_mb)
    print(f"Python step backend on MockFactory pins; {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}, switch interval {sys.getswitchinterval() * 1e3:g} ms\n")
    print(table(results))
    loaded = [r for r in results if r.scenario == "load"]
    if loaded:
        worst = max(loaded, key=lambda r: r.p99_interval_us)
        ok = worst.ratio <= 1.02 and worst.p99_interval_us <= 100
        print(f"\nunder load: ratio {statistics.fmean(r.ratio for r in loaded):.4f} (target <= 1.02), "
              f"worst p99 interval error {worst.p99_interval_us:.1f} µs (target <= 100): "
              f"{'met' if ok else 'MISSED'}")
    print("\n" + LGPIO_NOTE)
    print("\nPlanner: estimated motion time of the planned order against lattice (index) order\n")
    print(planner_table())
    print(f"benchmark took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
