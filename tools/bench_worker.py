#!/usr/bin/env python3
"""Benchmark the rig worker: memory of both processes, idle exit, recovery after a fault.

Each part starts its own simulated daemon (``tools/daemon_harness.py``) and measures:

- memory: a POSITIONS-position scan, then the daemon's VmRSS/VmHWM and the worker's VmRSS (from
  /proc), and which heavy native libraries (numpy, Pillow, lgpio, picamera2/libcamera) are
  mapped in each process (/proc/PID/maps). Target: daemon <= 40 MB, none of them in the daemon.
- idle: ``rig.idle_exit_s`` = IDLE_EXIT; after one hand-driven call, the seconds until the
  worker process is gone (target: gone, within IDLE_EXIT + about a second).
- hang: the simulated camera's fault switch hangs the capture of position FAULT_AT forever (in a
  C call); ``camera.timeout_s`` 1, ``camera.retries`` 0, so the capture bound is 1 s + the
  margin. Recovery = the gap between the captures around the fault minus the median gap of the
  scan (the baseline, same run). The job must end ``done`` with each position once.
- kill: SIGKILL to the worker once FAULT_AT positions are captured (the scan is mostly moves at
  this time scale: the kill lands in one); recovery measured the same way.

Usage:  python3 tools/bench_worker.py [--parts memory,idle,hang,kill] [--positions 100]
        [--idle-exit 2] [--fault-at 10] [--resolution 640x480] [--time-scale 0.02]
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_harness import Daemon, log, tree_state  # tools/ is on sys.path as a script

from openscan_pi.sim.camera import FAULT_ENV

PARTS = ("memory", "idle", "hang", "kill")
#: Native libraries that must stay out of the daemon (a substring of a mapped file's path).
HEAVY = {"numpy": "numpy", "Pillow": "/PIL/", "lgpio": "lgpio", "libcamera": "libcamera"}


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def heavy_mapped(pid: int) -> list[str]:
    """Which of :data:`HEAVY` have a file mapped in ``pid``."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted(name for name, needle in HEAVY.items() if needle in maps)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def poll(check: Callable[[], Any], timeout: float = 120.0) -> Any:
    """``check()`` once truthy (a process's end has no other signal to wait on)."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.01)
    return found


def follow(daemon: Daemon, job_id: str, on_captured: Callable[[int], None] | None = None
           ) -> tuple[dict[str, Any], list[float]]:
    """Follow the job to its end; returns it and when each capture count was first seen."""
    seen: list[float] = []
    with daemon.client(900) as c:
        status = c.call("subscribe")
        while True:
            job = c.call("job", {"job": job_id}) if not status.get("job") or \
                status["job"]["id"] != job_id else status["job"]
            while len(seen) <= int(job["captured"] or 0):
                seen.append(time.perf_counter())
                if on_captured is not None:
                    on_captured(len(seen) - 1)
            if job["state"] in ("done", "failed", "cancelled"):
                return job, seen
            status = next(c.notifications())["params"]


def each_once(daemon: Daemon, job: dict[str, Any]) -> bool:
    manifest = json.loads((daemon.data / "jobs" / job["id"] / "images" / "manifest.json").read_text())
    return sorted(e["position"] for e in manifest) == list(range(job["positions"]))


def recovery(seen: list[float], at: int) -> tuple[float, float]:
    """(the gap around capture ``at`` minus the median gap, the median gap)."""
    gaps = [b - a for a, b in zip(seen[1:], seen[2:], strict=False)]
    median = statistics.median(gaps)
    return seen[at + 1] - seen[at] - median, median


def part_memory(make: Callable[..., Daemon], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    daemon = make()
    job, _ = follow(daemon, daemon.call("scan", {"positions": args.positions})["id"])
    worker = daemon.worker_pid()
    rss, hwm = rss_mb(daemon.pid)
    rows = [("daemon RSS after a scan (HWM)", f"{rss:.1f} MB ({hwm:.1f} MB)",
             "<= 40 MB" + (" met" if rss <= 40 else " NOT met")),
            ("heavy native libraries in the daemon", ", ".join(heavy_mapped(daemon.pid)) or "none",
             "none")]
    if worker is not None:
        wrss, whwm = rss_mb(worker)
        rows += [("worker RSS after a scan (HWM)", f"{wrss:.1f} MB ({whwm:.1f} MB)", "-"),
                 ("heavy native libraries in the worker", ", ".join(heavy_mapped(worker)), "-")]
    rows.append(("scan", f"{job['state']}, {job['captured']} positions", "done"))
    daemon.stop()
    return rows


def part_idle(make: Callable[..., Daemon], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    daemon = make(rig={"idle_exit_s": args.idle_exit})
    daemon.call("rig.light", {"on": False})
    began = time.perf_counter()
    pid = poll(daemon.worker_pid)
    poll(lambda: not alive(pid))
    gone = time.perf_counter() - began
    after = daemon.worker_pid()
    daemon.stop()
    return [(f"worker gone after the last call (idle_exit_s {args.idle_exit:g})",
             f"{gone:.2f} s" + (", still listed" if after else ""),
             f"gone, about {args.idle_exit:g} s")]


def part_fault(make: Callable[..., Daemon], args: argparse.Namespace, kind: str
               ) -> list[tuple[str, str, str]]:
    fault = args.dir / "fault"
    if kind == "hang":
        fault.write_text(f"hang {args.fault_at}")
        os.environ[FAULT_ENV] = str(fault)
        daemon = make(camera={"timeout_s": 1, "retries": 0, "settle_s": 0})
    else:
        daemon = make()
    job_id = daemon.call("scan", {"positions": args.positions})["id"]

    def kill(captured: int) -> None:
        if kind == "kill" and captured == args.fault_at:
            os.kill(poll(daemon.worker_pid), signal.SIGKILL)

    job, seen = follow(daemon, job_id, kill)
    os.environ.pop(FAULT_ENV, None)
    lost, median = recovery(seen, args.fault_at)
    record = daemon.job_record(job_id)
    daemon.stop()
    what = "a capture hung forever" if kind == "hang" else "SIGKILL of the worker mid-move"
    bound = "; capture bound 1 s + 5 s margin" if kind == "hang" else ""
    return [(f"recovery after {what}", f"{lost:.2f} s (median position {median:.3f} s{bound})",
             "-"),
            (f"scan with {what}", f"{job['state']}, restarts {record.get('rig_restarts')}, "
             f"each position once: {each_once(daemon, job)}", "done, each once")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--positions", type=int, default=100)
    parser.add_argument("--idle-exit", type=float, default=2.0)
    parser.add_argument("--fault-at", type=int, default=10)
    parser.add_argument("--resolution", default="640x480")
    parser.add_argument("--time-scale", type=float, default=0.02)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    width, height = (int(v) for v in args.resolution.split("x"))
    args.dir = args.dir or Path(tempfile.mkdtemp(prefix="obw", dir="/tmp"))
    made: list[Daemon] = []

    def make(**sections: Any) -> Daemon:
        root = args.dir / f"d{len(made)}"
        root.mkdir(parents=True)
        daemon = Daemon(root, resolution=(width, height), time_scale=args.time_scale,
                        processing_s=0.2, **sections)
        made.append(daemon)
        daemon.start()
        return daemon

    rows: list[tuple[str, str, str]] = []
    try:
        for part in args.parts.split(","):
            log(f"{part} ...")
            if part == "memory":
                rows += part_memory(make, args)
            elif part == "idle":
                rows += part_idle(make, args)
            else:
                rows += part_fault(make, args, part)
    finally:
        for daemon in made:
            daemon.stop()
        shutil.rmtree(args.dir, ignore_errors=True)
    print(f"rig worker, {args.positions} positions, {width}x{height}, sim_time_scale "
          f"{args.time_scale:g}; {tree_state()}\n")
    print("| measure | result | target |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
