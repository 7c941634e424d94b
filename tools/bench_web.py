#!/usr/bin/env python3
"""Benchmark the web page: what open pages cost, and whether 50 of them slow the daemon's socket.

One simulated daemon (as ``tools/bench_daemon.py`` starts it, with ``web.enabled`` on a free
loopback port) is measured in two parts, each against a baseline taken in the same run:

- cpu: the CPU (utime + stime of /proc/PID/stat) of the web process and of the daemon over
  windows of ``--seconds``, with 0, 1 and ``--pages`` open pages (in the order 0, 1, N, N, 1, 0,
  each count's two windows averaged, so that a share drifting through a scan's phases weighs
  the same on each), on the idle daemon and during a scan. The pages run in a process of their
  own at nice 19 (their readers are browsers on other machines). A
  page is what ``static/app.js`` does: the event stream (``/events``) read to its end, and the
  preview asked for frame after frame (``/preview.jpg?after=N``; after an answer without a frame,
  again once the events say the rig is free, or 10 s later). Per page: (CPU with N pages - CPU with none) / N.
- latency: ``status`` round trips on the daemon's socket (``--clients`` connections, one call per
  ``--paced-ms`` each, as bench_daemon's paced run) during a POSITIONS-position scan, without any
  page and with ``--pages`` open pages, in the order 0, N, N, 0 (a scan each); p50 / p99 / max
  (each count's mean of its two runs) and the ratio of the p99s.

Usage:  python3 tools/bench_web.py [--parts cpu,latency] [--seconds 10] [--pages 50]
        [--clients 200] [--rounds 20] [--paced-ms 100] [--positions 1000]
        [--time-scale 0.1]
Takes about 8 minutes with the defaults. Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemon import measure_latency, proc_sample  # noqa: E402
from daemon_harness import FINISHED, Daemon, log, start_scan, tree_state, watch_job  # noqa: E402

WEB_URL = re.compile(r"web page at (http://\S+/) \(process (\d+)\)")


class Pages:
    """``count`` simulated open pages, in a process of their own at the lowest priority (nice
    19): a page's reader is a browser on another machine, so here it takes only what the
    scanner's processes leave (this machine has 2 cores for everything)."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url.rstrip("/")
        self.count = count
        self.frames = 0  #: previews shown, once the pages have closed
        self.events = 0  #: status events read, once the pages have closed
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._ready = ctx.Event()
        self._results = ctx.Queue()
        self._proc = ctx.Process(target=_pages_process, daemon=True,
                                 args=(self.url, count, self._ready, self._stop, self._results))

    def __enter__(self) -> Pages:
        self._proc.start()
        if not self._ready.wait(60):
            raise SystemExit("the simulated pages did not open")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.frames, self.events = self._results.get(timeout=60)
        self._proc.join(30)


def _pages_process(url: str, count: int, ready: Any, stop: Any, results: Any) -> None:
    os.nice(19)
    counts = {"frames": 0, "events": 0}

    async def page() -> None:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
            await http.get(url + "/")  # the session cookie

            rig_free = asyncio.Event()

            async def stream() -> None:
                async with http.get(url + "/events") as r:
                    async for line in r.content:
                        if line.startswith(b"data: "):
                            counts["events"] += 1
                            status = json.loads(line[6:]) or {}
                            if not (status.get("rig") or {}).get("job"):
                                rig_free.set()

            async def preview() -> None:
                seq = 0
                while True:
                    async with http.get(f"{url}/preview.jpg?after={seq}") as r:
                        if r.content_type.startswith("image/"):
                            seq = int(r.headers["X-Preview-Seq"])
                            await r.read()
                            counts["frames"] += 1
                            continue
                        await r.read()
                    rig_free.clear()  # as the page does: again once the rig is free, or in 10 s
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(rig_free.wait(), 10.0)

            await asyncio.gather(stream(), preview())

    async def main() -> None:
        tasks = [asyncio.create_task(page()) for _ in range(count)]
        await asyncio.sleep(0.5)  # the pages open
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    results.put((counts["frames"], counts["events"]))


def web_daemon(root: Path, time_scale: float) -> tuple[Daemon, str, int]:
    """A started simulated daemon with its web page; (daemon, URL, web pid)."""
    daemon = Daemon(root, resolution=(640, 480), time_scale=time_scale, processing_s=0.3)
    config = yaml.safe_load(daemon.config.read_text())
    config["web"] = {"enabled": True, "listen": "127.0.0.1:0"}
    daemon.config.write_text(yaml.safe_dump(config))
    daemon.start()
    deadline = time.monotonic() + 60
    while not (found := WEB_URL.search(daemon.log_text())):
        if time.monotonic() > deadline:
            raise SystemExit(f"the web page did not start:\n{daemon.log_text()}")
        time.sleep(0.05)
    return daemon, found.group(1), int(found.group(2))


def cpu_window(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Percent of one core each process used over ``seconds``."""
    def cpu(pid: int) -> float:
        try:
            return proc_sample(pid)[2] if pid else 0.0
        except FileNotFoundError:  # the rig worker left (idle) or was restarted
            return 0.0

    before = {k: cpu(p) for k, p in pids.items()}
    began = time.monotonic()
    time.sleep(seconds)
    span = time.monotonic() - began
    return {k: max(0.0, cpu(p) - before[k]) / span * 100 for k, p in pids.items()}


def run_cpu(daemon: Daemon, url: str, web_pid: int, args: argparse.Namespace) -> list[str]:
    rows = []
    for during in ("idle daemon", f"during a {args.positions}-position scan"):
        seen: dict[int, dict[str, float]] = {}
        job = None
        if during != "idle daemon":
            job, _ = start_scan(daemon, args.positions)
            watch_job(daemon, job, lambda j: str(j.get("step") or "").startswith("capturing"))
        # The windows in the order 0, 1, N, N, 1, 0 pages: a share that drifts through the run
        # (a scan's phases) weighs the same on every count's mean.
        counts = (0, 1, args.pages)
        windows: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
        for n in counts + counts[::-1]:
            log(f"cpu: {n} open pages, {during}")
            with Pages(url, n) as pages:
                time.sleep(2)  # the pages open (not measured)
                pids = {"web": web_pid, "daemon": daemon.pid, "worker": daemon.worker_pid() or 0}
                window = cpu_window(pids, args.seconds)
            window["frames"] = pages.frames  # counted once the pages have closed
            windows[n].append(window)
        for n, both in windows.items():
            seen[n] = {k: sum(w[k] for w in both) / len(both) for k in both[0]}
        for n in (1, args.pages):
            per_web = (seen[n]["web"] - seen[0]["web"]) / n
            per_daemon = (seen[n]["daemon"] - seen[0]["daemon"]) / n
            per_worker = (seen[n]["worker"] - seen[0]["worker"]) / n
            rows.append(f"| {n} open page{'s' if n > 1 else ''}, {during} | "
                        f"web {seen[n]['web']:.1f} % / daemon {seen[n]['daemon']:.1f} % / rig "
                        f"worker {seen[n]['worker']:.1f} % | no page: web {seen[0]['web']:.1f} % / "
                        f"daemon {seen[0]['daemon']:.1f} % / rig worker {seen[0]['worker']:.1f} % | "
                        f"per page: web {per_web:+.2f} % / daemon {per_daemon:+.2f} % / rig worker "
                        f"{per_worker:+.2f} % ({int(seen[n]['frames'])} previews shown) |")
        if job is not None:
            state = daemon.call("job", {"job": job})["state"]
            if state != "scanning":
                log(f"warning: the scan was {state} before the last window ended: use more "
                    "--positions")
            else:
                daemon.call("cancel", {"job": job})
            watch_job(daemon, job, lambda j: j["state"] in FINISHED)
    return rows


def run_latency(daemon: Daemon, url: str, args: argparse.Namespace) -> list[str]:
    # In the order 0, N, N, 0 open pages, each a scan of its own: the machine's mood through the
    # run weighs the same on both counts; each count's p99 is the mean of its two runs.
    results: dict[int, list[Any]] = {0: [], args.pages: []}
    for n in (0, args.pages, args.pages, 0):
        log(f"latency: {args.clients} clients x {args.rounds} status calls, {n} open pages, "
            f"during a {args.positions}-position scan")
        job: dict[str, str] = {}

        def go(job: dict[str, str] = job) -> None:
            job["id"], _ = start_scan(daemon, args.positions)
            watch_job(daemon, job["id"], lambda j: str(j.get("step") or "").startswith("capturing"))

        with Pages(url, n):
            results[n].append(measure_latency(daemon, f"{n} pages", clients=args.clients,
                                              rounds=args.rounds, procs=2,
                                              think_s=args.paced_ms / 1e3, before_go=go))
        if daemon.call("job", {"job": job["id"]})["state"] == "scanning":
            daemon.call("cancel", {"job": job["id"]})
        watch_job(daemon, job["id"], lambda j: j["state"] in FINISHED)

    def mean(n: int, field: str) -> float:
        return sum(getattr(r, field) for r in results[n]) / len(results[n])

    def runs(n: int) -> str:
        return " and ".join(f"{r.p99_ms:.2f}" for r in results[n])

    base, loaded = 0, args.pages
    return [f"| `status`, {args.clients} clients × {1000 / args.paced_ms:g} calls/s, during a scan, "
            f"{args.pages} open pages: p50 / p99 / max (mean of 2 runs) | {mean(loaded, 'p50_ms'):.2f} / "
            f"{mean(loaded, 'p99_ms'):.2f} / {mean(loaded, 'max_ms'):.1f} ms (p99s {runs(loaded)}) | "
            f"no page: {mean(base, 'p50_ms'):.2f} / {mean(base, 'p99_ms'):.2f} / "
            f"{mean(base, 'max_ms'):.1f} ms (p99s {runs(base)}) | p99 ratio "
            f"{mean(loaded, 'p99_ms') / mean(base, 'p99_ms'):.2f}× |"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="cpu,latency")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="each CPU window (two of each page count, in the order 0, 1, N, "
                             "N, 1, 0)")
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--paced-ms", type=float, default=100.0)
    parser.add_argument("--positions", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=0.1,
                        help="rig.sim_time_scale: slow enough that the scan outlasts the windows")
    args = parser.parse_args()
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory(prefix="osw", dir="/tmp") as root:
        daemon, url, web_pid = web_daemon(Path(root), args.time_scale)
        try:
            rows = ["| scenario | measured | baseline (same run) | per page / ratio |",
                    "| --- | --- | --- | --- |"]
            if "cpu" in parts:
                rows += run_cpu(daemon, url, web_pid, args)
            if "latency" in parts:
                rows += run_latency(daemon, url, args)
        finally:
            daemon.stop()
    print(f"{tree_state()}, {time.strftime('%Y-%m-%d')}, CPU in % of one core over "
          f"{args.seconds:g} s windows:\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
