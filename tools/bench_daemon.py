#!/usr/bin/env python3
"""Benchmark the daemon: status latency under load, CLI start-up, idle footprint, scan overhead.

One simulated daemon (``rig.model: simulated``, the bundled local cloud, socket and data in a short
/tmp folder) is started and measured in four parts, each against a baseline taken in the same run
(the machine is shared and noisy, so only same-run ratios mean much):

- latency: CLIENTS persistent connections (spread over ``--client-procs`` processes, one epoll
  loop each) each send ``status`` ROUNDS times back to back and time every round trip
  (perf_counter): p50, p99, max, requests/s and the daemon's CPU, while a POSITIONS-position
  scan is capturing (a new scan, started once every connection is open); the baseline is the
  same load on the idle daemon. Target: p99 <= 5 ms during the scan. Then the same again with
  each client pausing ``--paced-ms`` between its calls (200 clients x 10 calls/s by default).
- cli: ``openscan-pi --config CFG status`` (the console script) against ``python -c pass``,
  alternately, RUNS times each, on the idle daemon: medians and their ratio (target <= 2.5x);
  plus ``python -X importtime -m openscan_pi --config CFG status`` (median of 3 runs): the 10
  largest cumulative imports that ``python -c pass`` does not do itself.
- idle: the daemon's VmRSS/VmHWM (/proc/PID/status) and CPU (utime + stime of /proc/PID/stat)
  over ``--idle-seconds`` with nobody talking to it, once after start and once after a scan
  has finished. Targets: <= 40 MB, <= 0.5 % of one core.
- scan: a POSITIONS-position scan alone (one subscriber): wall time from the job's ``created`` to
  its last ``updated`` (done) in job.json, against motion_s + capture_s + transfer_s recorded in
  the same job.json; overhead = wall / sum - 1 (target <= 5 %). The phases seen by the
  subscriber (homing, capture loop, transfer) show where the rest goes. One scan per
  ``--scan-scales`` entry: 0.02 (the shipped rig.sim_time_scale: moves and settling 50x faster
  than real) and 1 (real-time moves and settling; about 75 s), each on a daemon of that scale.

Usage:  python3 tools/bench_daemon.py [--parts latency,cli,idle,scan] [--skip PART] [--json]
        [--idle-seconds 60] [--clients 200] [--rounds 20] [--paced-ms 100] [--client-procs 4]
        [--positions 100] [--cli-runs 20] [--scan-scales 0.02,1] [--resolution 640x480]
Takes about 4 minutes with the defaults.
Prints Markdown tables for docs/benchmarks.md (``--json``: the numbers as one JSON object).
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import multiprocessing as mp
import os
import random
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon_harness import (  # tools/ is on sys.path when this runs as a script
    FINISHED,
    Daemon,
    JobWatch,
    cli_env,
    log,
    percentile,
    start_scan,
    tree_state,
    watch_job,
)

PARTS = ("latency", "cli", "idle", "scan")
#: Time to let the daemon settle before an idle window starts (start-up, the end of a job).
SETTLE_S = 1.0
TARGETS = {"latency_p99_ms": 5.0, "cli_ratio": 2.5, "idle_rss_mb": 40.0, "idle_cpu_pct": 0.5,
           "scan_overhead": 0.05}


# -- part 1: status latency ---------------------------------------------------------------------


def _client_rounds(path: str, rounds: int, think_s: float, conns: int,
                   barrier: Any) -> tuple[list[float], float, float, int]:
    """``conns`` connections, each sending ``status`` ``rounds`` times (a pause of ``think_s``
    between an answer and the next call): one epoll loop over non-blocking sockets, so that the
    clients themselves cost as little CPU as possible. Returns the round trips, the start, the
    end and the number of answers that were not a result for the request sent."""
    clock = time.perf_counter
    socks = []
    for _ in range(conns):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.setblocking(False)
        socks.append(sock)
    sel = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        sel.register(sock, selectors.EVENT_READ, index)
    sent_at = [0.0] * conns
    done = [0] * conns
    buffers = [b""] * conns
    times: list[float] = []
    bad = 0
    barrier.wait(120)  # connected
    barrier.wait(120)  # go
    began = clock()
    due: list[tuple[float, int]] = []  # (when, connection) of paced calls

    def send(index: int) -> None:
        sent_at[index] = clock()
        socks[index].send(b'{"jsonrpc":"2.0","id":%d,"method":"status"}\n' % (done[index] + 1))

    if think_s:
        due = sorted((began + random.uniform(0, think_s), i) for i in range(conns))
        heapq.heapify(due)
    else:
        for index in range(conns):
            send(index)
    running = conns
    while running:
        now = clock()
        while due and due[0][0] <= now:
            send(heapq.heappop(due)[1])
        timeout = max(0.0, due[0][0] - clock()) if due else None
        for key, _ in sel.select(timeout):
            index = key.data
            data = socks[index].recv(1 << 20)
            if not data:
                raise SystemExit("the daemon closed a connection")
            buffers[index] += data
            if not buffers[index].endswith(b"\n"):
                continue
            times.append(clock() - sent_at[index])
            done[index] += 1
            if not buffers[index].startswith(b'{"jsonrpc":"2.0","id":%d,"result":' % done[index]):
                bad += 1
            buffers[index] = b""
            if done[index] == rounds:
                running -= 1
            elif think_s:
                heapq.heappush(due, (clock() + think_s, index))
            else:
                send(index)
    ended = clock()
    for sock in socks:
        sock.close()
    return times, began, ended, bad


def _latency_worker(path: str, conns: int, rounds: int, think_s: float, barrier: Any,
                    results: Any) -> None:
    results.put(_client_rounds(path, rounds, think_s, conns, barrier))


@dataclass
class Latency:
    """Round trips of one load run."""

    scenario: str
    clients: int
    think_ms: float
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    per_s: float
    daemon_cpu_pct: float
    bad: int
    note: str = ""


def measure_latency(daemon: Daemon, scenario: str, *, clients: int, rounds: int, procs: int,
                    think_s: float, before_go: Callable[[], None] | None = None) -> Latency:
    """``clients`` connections x ``rounds`` status calls; ``before_go`` runs once all are open."""
    ctx = mp.get_context("spawn")
    procs = max(1, min(procs, clients))
    barrier = ctx.Barrier(procs + 1)
    results = ctx.Queue()
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [ctx.Process(target=_latency_worker, daemon=True,
                           args=(str(daemon.socket), n, rounds, think_s, barrier, results))
               for n in shares]
    for w in workers:
        w.start()
    try:
        barrier.wait(120)  # every connection is open
        if before_go is not None:
            before_go()
        cpu0 = proc_sample(daemon.pid)[2]
        barrier.wait(120)
        got = [results.get(timeout=600) for _ in workers]
        cpu1 = proc_sample(daemon.pid)[2]
    finally:
        for w in workers:
            w.join(30)
            if w.is_alive():
                w.kill()
    times = [t * 1e3 for g in got for t in g[0]]
    span = max(g[2] for g in got) - min(g[1] for g in got)
    return Latency(scenario, clients, think_s * 1e3, len(times), statistics.median(times),
                   percentile(times, 99), max(times), len(times) / span, (cpu1 - cpu0) / span * 100,
                   sum(g[3] for g in got))


def _scan_capturing(daemon: Daemon, positions: int, job: dict[str, str]) -> None:
    """Start a scan and return once it captures; its id and step go into ``job``."""
    job["id"], _ = start_scan(daemon, positions)
    seen = watch_job(daemon, job["id"], lambda j: str(j.get("step") or "").startswith("capturing"))
    job["step_at_go"] = str(seen.get("step"))


def run_latency(daemon: Daemon, args: argparse.Namespace) -> list[Latency]:
    """Back to back (and paced, with ``--paced-ms``): the idle baseline, then the same load while a
    scan captures (a new scan for each run, followed to its end)."""
    runs: list[Latency] = []
    for think_ms in (0.0, args.paced_ms) if args.paced_ms > 0 else (0.0,):
        kw = {"clients": args.clients, "rounds": args.rounds, "procs": args.client_procs,
              "think_s": think_ms / 1e3}
        how = f"{think_ms:g} ms between calls" if think_ms else "back to back"
        log(f"latency: {args.clients} clients x {args.rounds} status calls, {how}, idle daemon")
        runs.append(measure_latency(daemon, "idle daemon", **kw))
        job: dict[str, str] = {}
        log(f"latency: the same during a {args.positions}-position scan")
        busy = measure_latency(daemon, f"during a {args.positions}-position scan",
                               before_go=functools.partial(_scan_capturing, daemon, args.positions, job),
                               **kw)
        after = daemon.call("job", {"job": job["id"]})
        busy.note = f"scan at the start: {job['step_at_go']}; at the end: {after.get('step')}"
        if after["state"] != "scanning":
            log(f"warning: the scan was no longer capturing at the end of the run ({busy.note})")
        runs.append(busy)
        watch_job(daemon, job["id"], lambda j: j["state"] in FINISHED)
    return runs


# -- part 2: CLI wall time and imports ----------------------------------------------------------


def console_script() -> list[str]:
    """``openscan-pi`` as installed next to this interpreter (else on PATH, else ``-m``)."""
    beside = Path(sys.executable).with_name("openscan-pi")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("openscan-pi")
    return [found] if found else [sys.executable, "-m", "openscan_pi"]


def _timed(cmd: list[str]) -> float:
    began = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env(),
                          stdin=subprocess.DEVNULL)
    took = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()}")
    return took


IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_times(cmd: list[str]) -> dict[str, tuple[float, float, int]]:
    """``-X importtime``: module -> (self ms, cumulative ms, nesting depth)."""
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=cli_env(), stdin=subprocess.DEVNULL)
    out: dict[str, tuple[float, float, int]] = {}
    for line in proc.stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            out[m[4]] = (int(m[1]) / 1e3, int(m[2]) / 1e3, (len(m[3]) - 1) // 2)
    return out


@dataclass
class CliResult:
    """``openscan-pi status`` against ``python -c pass``."""

    command: str
    runs: int
    ours_ms: float
    base_ms: float
    ratio: float
    pair_ratio: float
    imports_ms: float
    top: list[tuple[str, float, float]]


def run_cli(daemon: Daemon, args: argparse.Namespace) -> CliResult:
    """Alternating runs, then the import profile."""
    ours = [*console_script(), "--config", str(daemon.config), "status"]
    base = [sys.executable, "-c", "pass"]
    log(f"cli: {' '.join(ours)} vs {' '.join(base)}, {args.cli_runs} alternating runs each")
    _timed(ours)  # warm the page cache
    _timed(base)
    ours_t, base_t = [], []
    for i in range(args.cli_runs):
        pair = [(ours, ours_t), (base, base_t)]
        for cmd, out in pair if i % 2 else reversed(pair):
            out.append(_timed(cmd))
    profile = [sys.executable, "-X", "importtime", "-m", "openscan_pi", "--config",
               str(daemon.config), "status"]
    ours_imp = [import_times(profile) for _ in range(3)]
    base_names = set().union(*(import_times([sys.executable, "-X", "importtime", "-c", "pass"])
                               for _ in range(3)))
    names = [n for n in ours_imp[0] if n not in base_names and all(n in r for r in ours_imp)]
    cum = {n: statistics.median(r[n][1] for r in ours_imp) for n in names}
    own = {n: statistics.median(r[n][0] for r in ours_imp) for n in names}
    top = sorted(cum, key=cum.__getitem__, reverse=True)[:10]
    added = sum(cum[n] for n in names if ours_imp[0][n][2] == 0)
    return CliResult(f"{Path(ours[0]).name} --config CFG status", args.cli_runs,
                     statistics.median(ours_t) * 1e3, statistics.median(base_t) * 1e3,
                     statistics.median(ours_t) / statistics.median(base_t),
                     statistics.median(o / b for o, b in zip(ours_t, base_t, strict=True)), added,
                     [(n, cum[n], own[n]) for n in top])


# -- part 3: idle footprint ---------------------------------------------------------------------


def proc_sample(pid: int) -> tuple[float, float, float, int]:
    """(VmRSS MB, VmHWM MB, CPU seconds (utime + stime), threads) of ``pid``."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2:].split()
    ticks = int(rest[11]) + int(rest[12])
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024,
            ticks / os.sysconf("SC_CLK_TCK"), int(fields["Threads"]))


@dataclass
class Idle:
    """One idle window."""

    scenario: str
    seconds: float
    rss_start_mb: float
    rss_mb: float
    hwm_mb: float
    cpu_pct: float
    threads: int


def measure_idle(daemon: Daemon, scenario: str, seconds: float) -> Idle:
    """Sample /proc at the start and the end of ``seconds`` with nobody talking to the daemon."""
    time.sleep(SETTLE_S)
    log(f"idle: {scenario}, {seconds:g} s")
    rss0, _, cpu0, _ = proc_sample(daemon.pid)
    began = time.perf_counter()
    time.sleep(seconds)
    rss1, hwm, cpu1, threads = proc_sample(daemon.pid)
    took = time.perf_counter() - began
    return Idle(scenario, took, rss0, rss1, hwm, (cpu1 - cpu0) / took * 100, threads)


# -- part 4: scan overhead ----------------------------------------------------------------------


LOOP = "capture loop (moves, settle, photos, bookkeeping)"
HOMING = "of which homing"


@dataclass
class ScanResult:
    """One scan's wall time against the time its job.json accounts for."""

    positions: int
    time_scale: float
    wall_s: float
    client_wall_s: float
    motion_s: float
    capture_s: float
    transfer_s: float
    phases: dict[str, float]

    @property
    def accounted_s(self) -> float:
        """motion_s + capture_s + transfer_s."""
        return self.motion_s + self.capture_s + self.transfer_s

    @property
    def overhead(self) -> float:
        """wall / accounted - 1."""
        return self.wall_s / self.accounted_s - 1

    @property
    def loop_extra_s(self) -> float | None:
        """Homing and capture loop time not in motion_s or capture_s (the job's bookkeeping,
        notifications); motion_s counts homing."""
        loop = self.phases.get(LOOP)
        return None if loop is None else loop + self.phases.get(HOMING, 0.0) - self.motion_s - self.capture_s


def run_scan(daemon: Daemon, positions: int) -> ScanResult:
    """A scan alone, followed by one subscriber to its end."""
    log(f"scan: {positions} positions, time scale {daemon.time_scale:g}")
    job_id, sent = start_scan(daemon, positions)
    watch = JobWatch(job_id)
    watch_job(daemon, job_id, lambda j: j["state"] in FINISHED, watch)
    ended = watch.events[-1][0]
    rec = daemon.job_record(job_id)
    if rec["state"] != "done":
        raise SystemExit(f"the scan ended {rec['state']}: {rec.get('error')}")
    marks = {"queued": watch.first("queued"), "scanning": watch.first("scanning"),
             "homing": watch.first("scanning", "homing"),
             "capturing": watch.first("scanning", "capturing"), "uploading": watch.first("uploading"),
             "done": watch.first("done")}
    phases: dict[str, float] = {}
    order = [("until the rig starts it", "queued", "scanning"),
             ("disk check, homing, plan, camera start", "scanning", "capturing"),
             (LOOP, "capturing", "uploading"),
             ("upload, processing, download", "uploading", "done")]
    for name, a, b in order:
        ta, tb = marks[a], marks[b]
        if ta is not None and tb is not None:
            phases[name] = tb - ta
    homing = marks["homing"]
    if homing is not None and marks["capturing"] is not None:
        phases[HOMING] = marks["capturing"] - homing
    return ScanResult(positions, daemon.time_scale, float(rec["updated"]) - float(rec["created"]),
                      ended - sent,
                      float(rec.get("motion_s") or 0), float(rec.get("capture_s") or 0),
                      float(rec.get("transfer_s") or 0), phases)


# -- the report ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    """MET / NOT MET."""
    return "MET" if ok else "**NOT MET**"


def _latency_rows(lat: list[Latency]) -> list[str]:
    rows = []
    for idle, busy in zip(lat[::2], lat[1::2], strict=True):
        how = f", each waiting {busy.think_ms:g} ms between calls" if busy.think_ms else ", back to back"
        target = "p99 ≤ 5 ms" if not busy.think_ms else "(p99 ≤ 5 ms)"
        rows.append(f"| `status` round trip, {busy.clients} clients{how}, during a scan: p50 / p99 / max | "
                    f"{busy.p50_ms:.2f} / {busy.p99_ms:.2f} / {busy.max_ms:.1f} ms | idle daemon: "
                    f"{idle.p50_ms:.2f} / {idle.p99_ms:.2f} / {idle.max_ms:.1f} ms | {target} | "
                    f"{verdict(busy.p99_ms <= TARGETS['latency_p99_ms'])} |")
        rows.append(f"| requests/s{how} | {busy.per_s:,.0f} | idle daemon: {idle.per_s:,.0f} | | |")
    return rows


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown tables."""
    lines = ["| measure | value | baseline (same run) | target | result |",
             "| --- | --- | --- | --- | --- |"]
    lat: list[Latency] = results.get("latency", [])
    lines += _latency_rows(lat)
    cli: CliResult | None = results.get("cli")
    if cli:
        lines.append(f"| `{cli.command}` wall (median of {cli.runs}) | {cli.ours_ms:.0f} ms | "
                     f"`python -c pass`: {cli.base_ms:.0f} ms | | |")
        lines.append(f"| its ratio: of the medians (median of pair ratios) | {cli.ratio:.2f} × "
                     f"({cli.pair_ratio:.2f} ×) | 1 | ≤ 2.5 × | "
                     f"{verdict(cli.ratio <= TARGETS['cli_ratio'])} |")
    for row in results.get("idle", []):
        lines.append(f"| idle RSS {row.scenario} (VmHWM) | {row.rss_mb:.1f} MB ({row.hwm_mb:.1f} MB) | | "
                     f"≤ 40 MB | {verdict(row.rss_mb <= TARGETS['idle_rss_mb'])} |")
        lines.append(f"| idle CPU {row.scenario}, {row.seconds:.0f} s | {row.cpu_pct:.2f} % of one core | | "
                     f"≤ 0.5 % | {verdict(row.cpu_pct <= TARGETS['idle_cpu_pct'])} |")
    for scan in results.get("scan", []):
        what = f"{scan.positions}-position scan, time scale {scan.time_scale:g}"
        lines.append(f"| {what}: wall (job.json created → done) | {scan.wall_s:.2f} s | motion + "
                     f"capture + transfer: {scan.accounted_s:.2f} s | | |")
        lines.append(f"| {what}: overhead (wall / sum − 1) | {scan.overhead * 100:.1f} % | | ≤ 5 % | "
                     f"{verdict(scan.overhead <= TARGETS['scan_overhead'])} |")
    out = ["\n".join(lines)]
    if lat:
        procs = min(args.client_procs, args.clients)
        out.append(f"Latency runs ({procs} client processes, one epoll loop each):\n\n"
                   "| scenario | clients × rounds | pause ms | p50 ms | p99 ms | max ms | requests/s | "
                   "daemon CPU % | bad answers |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
                   + "\n".join(f"| {r.scenario} | {r.clients} × {args.rounds} | {r.think_ms:g} | "
                               f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.1f} | {r.per_s:,.0f} | "
                               f"{r.daemon_cpu_pct:.0f} | {r.bad} |" for r in lat)
                   + "\n\n" + "\n".join(f"- {r.note}" for r in lat if r.note))
    if cli:
        out.append(f"Imports of `openscan-pi status` that `python -c pass` does not do: "
                   f"{cli.imports_ms:.0f} ms in all (median of 3 `-X importtime` runs); the 10 "
                   "largest cumulative:\n\n| module | cumulative ms | self ms |\n| --- | --- | --- |\n"
                   + "\n".join(f"| {n} | {c:.1f} | {s:.1f} |" for n, c, s in cli.top))
    if results.get("idle"):
        out.append("Idle windows:\n\n| scenario | window s | VmRSS at start MB | VmRSS at end MB | "
                   "VmHWM MB | CPU % | threads |\n| --- | --- | --- | --- | --- | --- | --- |\n"
                   + "\n".join(f"| {r.scenario} | {r.seconds:.0f} | {r.rss_start_mb:.1f} | "
                               f"{r.rss_mb:.1f} | {r.hwm_mb:.1f} | {r.cpu_pct:.2f} | {r.threads} |"
                               for r in results["idle"]))
    scans: list[ScanResult] = results.get("scan", [])
    if scans:
        names = ["motion_s (moves + settle)", "capture_s", "transfer_s", "sum",
                 "wall, job.json created → done", "wall, seen by the client (scan request → done)"]
        names += list(dict.fromkeys(f"phase: {k}" for s in scans for k in s.phases))
        names += ["homing + capture loop − motion_s − capture_s, per position"]

        def value(s: ScanResult, name: str) -> str:
            fixed = {"motion_s (moves + settle)": s.motion_s, "capture_s": s.capture_s,
                     "transfer_s": s.transfer_s, "sum": s.accounted_s,
                     "wall, job.json created → done": s.wall_s,
                     "wall, seen by the client (scan request → done)": s.client_wall_s}
            if name.startswith("homing + capture loop −"):
                return f"{s.loop_extra_s / s.positions * 1e3:.1f} ms" if s.loop_extra_s is not None else ""
            v = fixed.get(name, s.phases.get(name.removeprefix("phase: ")))
            return "" if v is None else f"{v:.3f}"

        out.append(f"Scans of {scans[0].positions} positions (simulated rig, {args.resolution} photos), "
                   "seconds:\n\n| | " + " | ".join(f"time scale {s.time_scale:g}" for s in scans)
                   + " |\n| --- |" + " --- |" * len(scans) + "\n"
                   + "\n".join(f"| {n} | " + " | ".join(value(s, n) for s in scans) + " |"
                               for n in names))
    return "\n\n".join(out)


def as_json(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers, for ``--json``."""
    out: dict[str, Any] = {"targets": TARGETS, "cpus": os.cpu_count(), "seconds": results["seconds"],
                           "tree": results["tree"]}
    for key in ("latency", "idle"):
        if key in results:
            out[key] = [r.__dict__ for r in results[key]]
    if "cli" in results:
        out["cli"] = results["cli"].__dict__
    if "scan" in results:
        out["scan"] = [{**s.__dict__, "accounted_s": s.accounted_s, "overhead": s.overhead,
                        "loop_extra_s": s.loop_extra_s} for s in results["scan"]]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run (default: {','.join(PARTS)})")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20, help="status calls per client")
    parser.add_argument("--client-procs", type=int, default=4,
                        help="processes the clients are spread over (one epoll loop in each)")
    parser.add_argument("--paced-ms", type=float, default=100.0,
                        help="also run the latency part with each client pausing this long between "
                             "calls (0: back to back only)")
    parser.add_argument("--positions", type=int, default=100)
    parser.add_argument("--cli-runs", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--resolution", default="640x480", help="simulated photos, WxH")
    parser.add_argument("--time-scale", type=float, default=0.02,
                        help="rig.sim_time_scale of the daemon (default 0.02, the shipped default: "
                             "moves and settling 50x faster than real)")
    parser.add_argument("--scan-scales", default="0.02,1",
                        help="time scales of the scan part, one scan each (a scale other than "
                             "--time-scale gets a daemon of its own)")
    parser.add_argument("--processing-s", type=float, default=1.0,
                        help="the local cloud's processing time per project")
    parser.add_argument("--dir", type=Path, help="work folder (kept; default: a temp folder in /tmp, "
                                                 "short enough for the socket path)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p and p not in args.skip.split(",")]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}: choose from {', '.join(PARTS)}")
    width, height = (int(v) for v in args.resolution.lower().split("x"))
    scales = [float(v) for v in args.scan_scales.split(",") if v]
    started = time.monotonic()
    root = (args.dir or Path(tempfile.mkdtemp(prefix="osbd", dir="/tmp"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(root)  # so that `-m openscan_pi` never picks a package up from where we were started
    tree = tree_state()

    def make(folder: Path, scale: float) -> Daemon:
        folder.mkdir(parents=True, exist_ok=True)
        return Daemon(folder, resolution=(width, height), time_scale=scale,
                      processing_s=args.processing_s)

    daemon = make(root, args.time_scale)
    results: dict[str, Any] = {}
    try:
        log(f"daemon answered after {daemon.start():.2f} s (pid {daemon.pid}, log {daemon.log})")
        scanned = False
        if "idle" in parts:
            results["idle"] = [measure_idle(daemon, "after start", args.idle_seconds)]
        if "cli" in parts:
            results["cli"] = run_cli(daemon, args)
        if "scan" in parts:
            results["scan"] = []
            for scale in scales:
                if scale == args.time_scale:
                    results["scan"].append(run_scan(daemon, args.positions))
                    scanned = True
                    continue
                other = make(root / f"s{len(results['scan'])}", scale)
                try:
                    other.start()
                    results["scan"].append(run_scan(other, args.positions))
                finally:
                    other.stop()
        if "latency" in parts:
            results["latency"] = run_latency(daemon, args)
            scanned = True
        if "idle" in parts:
            if not scanned:
                run_scan(daemon, args.positions)
            results["idle"].append(measure_idle(daemon, "after a scan", args.idle_seconds))
    finally:
        daemon.stop()
        os.chdir(cwd)
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    results["seconds"] = time.monotonic() - started
    results["tree"] = tree if tree_state() == tree else f"{tree} (changed during the run: {tree_state()})"
    if args.json:
        print(json.dumps(as_json(results), indent=2))
        return 0
    print(f"Simulated daemon (rig simulated, time scale {args.time_scale:g}, bundled local cloud); "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; {results['tree']}\n")
    print(report(results, args))
    print(f"\nbenchmark took {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
