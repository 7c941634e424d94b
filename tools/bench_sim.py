#!/usr/bin/env python3
"""Benchmark the simulators: peak RSS and wall time of one simulated 12 MP capture and of the
README's whole ``openscan-pi scan --positions 100 --simulate``, against the baseline of the same
run's ``python -c "import numpy, PIL.Image"``.

Every measure is a fresh child process; its peak RSS is the kernel's ``ru_maxrss`` of that process
(from ``wait4``), so nothing is sampled. The whole scan runs in a temporary data folder with its
own socket path (so no running daemon takes the job) and starts the bundled local cloud as its own
child process; that child's peak (``VmHWM``, read from ``/proc`` while it runs) is shown on a line
of its own, it is not part of the scan's. Rounds alternate baseline and measures.

Usage:  python3 tools/bench_sim.py [--rounds 3] [--positions 100] [--no-scan]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

CAPTURE = r"""
import sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from openscan_pi.config import load_config
from openscan_pi.sim.camera import SimulatedCamera
cam = SimulatedCamera(load_config(None, env={}).camera)  # 4056x3040, as on an HQ camera
cam.start()
with tempfile.TemporaryDirectory() as folder:
    cam.capture(Path(folder) / "IMG_0000.jpg", rotor=20.0, turntable=45.0, index=0)
"""


def run(cmd: list[str], *, env: dict[str, str] | None = None,
        watch_children: bool = False) -> tuple[float, float, float]:
    """(wall s, peak RSS MB of the process, peak VmHWM MB of its children seen while it ran)."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    children_peak = [0.0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):  # sampling the child's children: they are not ours to wait4
            try:
                kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                for kid in kids:
                    for line in Path(f"/proc/{kid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            children_peak[0] = max(children_peak[0], int(line.split()[1]) / 1024)
            except OSError:
                pass

    watcher = threading.Thread(target=watch, daemon=True)
    if watch_children:
        watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024, children_peak[0]


def scan_cmd(folder: Path, positions: int) -> tuple[list[str], dict[str, str]]:
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"daemon": {"data_dir": str(folder / "data"),
                                                 "socket": str(folder / "daemon.sock")}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [sys.executable, "-m", "openscan_pi", "--config", str(config), "scan", "--positions",
            str(positions), "--simulate"], env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--positions", type=int, default=100)
    parser.add_argument("--no-scan", action="store_true", help="only the baseline and one capture")
    args = parser.parse_args()
    rows: dict[str, list[tuple[float, float, float]]] = {"baseline": [], "capture": [], "scan": []}
    for _ in range(args.rounds):
        rows["baseline"].append(run([sys.executable, "-c", "import numpy, PIL.Image"]))
        rows["capture"].append(run([sys.executable, "-c", CAPTURE, str(ROOT)]))
        if not args.no_scan:
            with tempfile.TemporaryDirectory(prefix="bench-sim-") as folder:
                cmd, env = scan_cmd(Path(folder), args.positions)
                rows["scan"].append(run(cmd, env=env, watch_children=True))
    base_wall = statistics.median(r[0] for r in rows["baseline"])
    base_rss = statistics.median(r[1] for r in rows["baseline"])
    print(f"{args.rounds} rounds, medians; baseline = python -c 'import numpy, PIL.Image'\n")
    print("| measure | wall | peak RSS | RSS ratio to baseline |")
    print("| --- | --- | --- | --- |")
    names = {"baseline": "baseline: import numpy, PIL.Image",
             "capture": "one simulated 12 MP capture (4056x3040)",
             "scan": f"scan --positions {args.positions} --simulate (the scan's process)"}
    for key, label in names.items():
        if not rows[key]:
            continue
        wall = statistics.median(r[0] for r in rows[key])
        rss = statistics.median(r[1] for r in rows[key])
        print(f"| {label} | {wall:.2f} s ({wall / base_wall:.1f} x) | {rss:.1f} MB | "
              f"{rss / base_rss:.2f} x |")
    if rows["scan"]:
        cloud = statistics.median(r[2] for r in rows["scan"])
        print(f"| the bundled local cloud (its own process, during that scan) | | {cloud:.1f} MB | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
