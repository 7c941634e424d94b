#!/usr/bin/env python3
"""Benchmark `openscan-pi upload` against curl sending the same parts to the same local cloud.

A generated set of COUNT × SIZE JPEG-like files (default 200 × 5 MB = 1 GB) is uploaded to the
bundled local cloud (run as its own process) in alternating rounds:

- openscan-pi: ``openscan-pi upload SET`` (CRC pass, token pre-flight, createProject, every part
  streamed from the image files with its content hash checked, startProject), measured in the
  child process itself: wall time, peak RSS (VmHWM) and bytes written to storage (/proc/self/io);
- curl: a zip of the same images prepared beforehand (ZIP_STORED) and cut into part files, then
  one ``curl -T part -X POST LINK`` per part (the parts only: the baseline's preparation, its
  createProject and its startProject are not timed).

The server keeps what it receives in memory (``--store-dir``, default /dev/shm), so that its
own disk writes do not set the pace of both clients; the rounds alternate who goes first.

Usage:  python3 tools/bench_upload.py [--count 200] [--size 5000000] [--rounds 5] [--dir /tmp/x]
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import requests

AUTH = ("openscan", "free")
TOKEN = "bench"


def make_set(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    block = rng.randbytes(1 << 20)
    for i in range(count):
        path = folder / f"IMG_{i:04d}.jpg"
        if path.exists() and path.stat().st_size == size:
            continue
        with open(path, "wb") as fh:
            fh.write(b"\xff\xd8\xff\xe0" + i.to_bytes(4, "big"))
            left = size - 10
            while left > 0:
                n = min(left, len(block))
                fh.write(block[:n])
                left -= n
            fh.write(b"\xff\xd9")


def start_server(store: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "openscan_pi.sim.cloud", "--store", str(store),
                             "--processing-s", "3600"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"local cloud did not start: {line!r}")
    return proc, line.split()[-1]


CHILD = """
import json, sys
from openscan_pi.cli import main
code = main(sys.argv[2:])
io = dict(l.split(": ") for l in open("/proc/self/io").read().splitlines())
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
with open(sys.argv[1], "w") as fh:
    json.dump({"code": code, "write_bytes": int(io["write_bytes"]),
               "wchar": int(io["wchar"]), "vmhwm_kb": int(status["VmHWM"].split()[0])}, fh)
"""


def run_ours(set_dir: Path, url: str, work: Path, round_no: int) -> dict[str, float]:
    data = work / f"data-{round_no}"
    shutil.rmtree(data, ignore_errors=True)  # a fresh journal: a real upload every round
    cfg = work / f"config-{round_no}.yaml"
    cfg.write_text(f"cloud:\n  url: {url}\n  token: {TOKEN}\ndaemon:\n  data_dir: {data}\n")
    report = work / f"report-{round_no}.json"
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(report), "--config", str(cfg),
                           "upload", str(set_dir), "--project", f"ours-{round_no}.zip", "--json"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"openscan-pi upload failed: {proc.stderr.strip()}")
    rep = json.loads(report.read_text())
    journal_bytes = sum(p.stat().st_size for p in (data / "transfers").glob("*.json"))
    return {"wall": wall, "rss_mb": rep["vmhwm_kb"] / 1024, "write_bytes": rep["write_bytes"],
            "journal_bytes": journal_bytes}


def prepare_curl(set_dir: Path, work: Path, part_size: int) -> list[Path]:
    archive = work / "prepared.zip"
    if not archive.exists():
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            for p in sorted(set_dir.iterdir()):
                zf.write(p, p.name)
    parts = []
    with open(archive, "rb") as src:
        index = 0
        while chunk := src.read(part_size):
            path = work / f"part-{index:03d}"
            path.write_bytes(chunk)
            parts.append(path)
            index += 1
    return parts


def run_curl(parts: list[Path], url: str, round_no: int, photos: int) -> dict[str, float]:
    total = sum(p.stat().st_size for p in parts)
    r = requests.get(f"{url}/createProject", auth=AUTH, timeout=30, params={
        "token": TOKEN, "project": f"curl-{round_no}.zip", "photos": photos, "parts": len(parts),
        "filesize": total})
    r.raise_for_status()
    links = r.json()["ulink"]
    began = time.perf_counter()
    for part, link in zip(parts, links, strict=True):
        subprocess.run(["curl", "-sS", "--fail", "-X", "POST", "-T", str(part), "-H",
                        "Content-Type: application/octet-stream", "-o", os.devnull, link],
                       check=True)
    return {"wall": time.perf_counter() - began}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="work folder (kept; default: a temp folder)")
    parser.add_argument("--store-dir", type=Path, default=Path("/dev/shm"),
                        help="where the local cloud keeps the parts it receives (default: "
                             "/dev/shm, so that the server's disk writes do not set the pace)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-upload-"))
    work.mkdir(parents=True, exist_ok=True)
    set_dir = work / "set"
    make_set(set_dir, args.count, args.size)
    parts = prepare_curl(set_dir, work, 200_000_000)
    ours: list[dict[str, float]] = []
    curls: list[dict[str, float]] = []
    for round_no in range(args.rounds):
        store = args.store_dir / f"bench-upload-store-{os.getpid()}-{round_no}"
        server, url = start_server(store)
        try:
            # alternate who goes first, so that the server's leftover write-back hits both alike
            if round_no % 2:
                ours.append(run_ours(set_dir, url, work, round_no))
                curls.append(run_curl(parts, url, round_no, args.count))
            else:
                curls.append(run_curl(parts, url, round_no, args.count))
                ours.append(run_ours(set_dir, url, work, round_no))
        finally:
            server.terminate()
            server.wait(timeout=30)
            shutil.rmtree(store, ignore_errors=True)
        print(f"round {round_no + 1}: openscan-pi {ours[-1]['wall']:.2f} s, "
              f"curl {curls[-1]['wall']:.2f} s", file=sys.stderr)
    ratios = [o["wall"] / c["wall"] for o, c in zip(ours, curls, strict=True)]
    size_gb = args.count * args.size / 1e9
    print(f"\nSet: {args.count} × {args.size / 1e6:.1f} MB = {size_gb:.2f} GB, "
          f"{len(parts)} parts of 200 MB, {args.rounds} alternating rounds.\n")
    print("| measure | openscan-pi upload | curl, prepared parts | target |")
    print("| --- | --- | --- | --- |")
    print(f"| wall time (median) | {statistics.median(o['wall'] for o in ours):.2f} s | "
          f"{statistics.median(c['wall'] for c in curls):.2f} s | |")
    print(f"| wall ratio (median of rounds) | {statistics.median(ratios):.3f} × curl | 1 | "
          "≤ 1.10 |")
    print(f"| peak RSS (max) | {max(o['rss_mb'] for o in ours):.1f} MB | | ≤ 60 MB |")
    print(f"| bytes written to storage (max) | {max(o['write_bytes'] for o in ours):,.0f} | | "
          "journal only |")
    print(f"| journal size | {max(o['journal_bytes'] for o in ours):,.0f} bytes | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
