#!/usr/bin/env python3
"""Benchmark the scan planner: time and peak memory of ``make_plan`` at N = 100 ... 10 000.

Each N is planned twice in this process, for the rig of the config (the shipped defaults, or
``--config``): once timed (wall clock, best of ``--repeat``), once under ``tracemalloc`` for the
peak of the memory the planner allocates (tracemalloc slows Python down, so the two are separate).
Both are also given as ratios against N = 100 in the same run, so that figures from different
machines compare. The motion time of the planned order and of the lattice order show what the
order saves.

Usage:  python3 tools/bench_plan.py [--sizes 100,1000,5000,10000] [--repeat 3] [--config FILE]
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openscan_pi.config import Config, load_config  # noqa: E402
from openscan_pi.plan import DENSE_MAX, MAX_POSITIONS, Plan, make_plan  # noqa: E402
from openscan_pi.rig.estimate import rig_time_fn  # noqa: E402

#: The pose the planner starts from: where homing leaves a classic rig.
START = (-35.0, 0.0)


@dataclass
class Result:
    """One N."""

    n: int
    seconds: float
    peak_bytes: int
    plan: Plan


def plan_once(cfg: Config, n: int) -> Plan:
    """One plan of ``n`` positions (a fresh time function: no answers kept from an earlier N)."""
    return make_plan(n, cfg.plan, rig_time_fn(cfg.rig), START)


def bench(cfg: Config, n: int, repeat: int) -> Result:
    """Best wall time of ``repeat`` plans of ``n``, and the peak memory of one more."""
    best = float("inf")
    plan: Plan | None = None
    for _ in range(repeat):
        gc.collect()
        began = time.perf_counter()
        plan = plan_once(cfg, n)
        best = min(best, time.perf_counter() - began)
    assert plan is not None
    gc.collect()
    tracemalloc.start()
    plan_once(cfg, n)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return Result(n, best, peak, plan)


def table(results: list[Result]) -> str:
    """The Markdown table, ratios against the first row."""
    base = results[0]
    lines = [f"| N | time (s) | × N={base.n} | peak memory (MiB) | × N={base.n} | motion, planned (s) "
             "| motion, lattice order (s) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.n} | {r.seconds:.2f} | {r.seconds / base.seconds:.0f} | "
                     f"{r.peak_bytes / 2**20:.1f} | {r.peak_bytes / base.peak_bytes:.1f} | "
                     f"{r.plan.motion_time_s:.0f} | {r.plan.index_order_time_s:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000,10000",
                        help="the numbers of positions, comma-separated (the first is the base)")
    parser.add_argument("--repeat", type=int, default=3, help="timed plans per N (the best counts)")
    parser.add_argument("--config", type=Path, help="a config file (default: the shipped defaults)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not sizes or not all(1 <= n <= MAX_POSITIONS for n in sizes):
        parser.error(f"--sizes: each from 1 to {MAX_POSITIONS}")
    cfg = load_config(args.config, env={})
    results = []
    for n in sizes:
        results.append(bench(cfg, n, max(1, args.repeat)))
        print(f"N={n}: {results[-1].seconds:.2f} s", file=sys.stderr)
    print(f"Planner (`make_plan`, rig {cfg.rig.model}, Python {sys.version.split()[0]}; every pair "
          f"judged up to N={DENSE_MAX}, near ones only above):\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
