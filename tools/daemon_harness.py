"""The simulated daemon that ``tools/bench_daemon.py`` measures: started in a subprocess with its
own config, socket and data in a short temp folder, and followed through its notifications."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openscan_pi.daemon.client import DaemonClient, NotRunning  # noqa: E402

TOKEN = "bench-token-1234567890"
FINISHED = ("done", "failed", "cancelled")


def log(text: str) -> None:
    """Progress on stderr (stdout holds only the result)."""
    print(text, file=sys.stderr, flush=True)


def cli_env() -> dict[str, str]:
    """The environment of the daemon and of the CLI runs: ours, without OPENSCAN_PI_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSCAN_PI_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tree_state() -> str:
    """The commit measured, and whether the working tree differs from it."""
    def git(*cmd: str) -> str:
        proc = subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=ROOT)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    used = subprocess.run([sys.executable, "-c", "import openscan_pi; print(openscan_pi.__file__)"],
                          capture_output=True, text=True, env=cli_env(),
                          cwd=tempfile.gettempdir()).stdout.strip()
    if used and not Path(used).resolve().is_relative_to(ROOT):
        return f"openscan_pi from {Path(used).parent}"  # e.g. PYTHONPATH=<a git archive of a commit>
    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "not a git checkout"
    changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    return f"commit {head}" + (f" + uncommitted changes in {len(changed)} files" if changed else "")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- the daemon ---------------------------------------------------------------------------------


class Daemon:
    """``openscan-pi daemon`` in a subprocess on a simulated rig, with its config and log."""

    def __init__(self, root: Path, *, resolution: tuple[int, int], time_scale: float,
                 processing_s: float, rig: dict[str, Any] | None = None,
                 camera: dict[str, Any] | None = None) -> None:
        self.root = root
        self.time_scale = time_scale
        self.socket = root / "run" / "d.sock"
        self.data = root / "data"
        self.log = root / "daemon.log"
        self.config = root / "config.yaml"
        self.config.write_text(yaml.safe_dump({
            "cloud": {"url": "local", "token": TOKEN, "poll_interval_s": 0.05,
                      "poll_max_interval_s": 0.2, "backoff_s": 0.01, "retries": 2,
                      "max_offline_s": 30, "local": {"processing_s": processing_s}},
            "daemon": {"socket": str(self.socket), "data_dir": str(self.data)},
            "rig": {"model": "simulated", "sim_time_scale": time_scale, **(rig or {})},
            "camera": {"resolution": list(resolution), **(camera or {})},
            "web": {"enabled": False},  # tools/bench_web.py starts it, on a free port
        }))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> float:
        """Start it; returns the seconds until its socket answered."""
        began = time.perf_counter()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openscan_pi", "--config", str(self.config), "daemon"],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=cli_env())
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the daemon exited ({self.proc.returncode}):\n{self.log_text()}")
            try:
                DaemonClient.connect(self.socket, 5).close()
                return time.perf_counter() - began
            except NotRunning:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the daemon did not answer:\n{self.log_text()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 30 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)

    def worker_pid(self) -> int | None:
        """The rig worker's process id, while it runs (as ``status`` says)."""
        worker = self.call("status")["rig"].get("worker") or {}
        return worker.get("pid")

    def client(self, timeout: float = 120.0) -> DaemonClient:
        """A new connection."""
        return DaemonClient.connect(self.socket, timeout)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """One request on its own connection."""
        with self.client() as c:
            return c.call(method, params)

    def job_record(self, job_id: str) -> dict[str, Any]:
        """The job's job.json."""
        return dict(json.loads((self.data / "jobs" / job_id / "job.json").read_text()))

    def log_text(self) -> str:
        """What the daemon logged."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class JobWatch:
    """The job's (time, state, step) as the subscriber saw them change."""

    job_id: str
    events: list[tuple[float, str, str]] = field(default_factory=list)

    def first(self, state: str | None = None, step_prefix: str | None = None) -> float | None:
        """When the subscriber first saw the state (and/or a step starting with the prefix)."""
        for at, st, step in self.events:
            if (state is None or st == state) and (step_prefix is None or step.startswith(step_prefix)):
                return at
        return None


def watch_job(daemon: Daemon, job_id: str, until: Callable[[dict[str, Any]], bool],
              watch: JobWatch | None = None, timeout: float = 900.0) -> dict[str, Any]:
    """Follow the ``status`` notifications until ``until(job)``; returns that job object."""
    with daemon.client(timeout) as c:
        status = c.call("subscribe")
        deadline = time.monotonic() + timeout
        while True:
            now = time.perf_counter()
            job = status.get("job")
            if not job or job["id"] != job_id:
                job = c.call("job", {"job": job_id})
            if watch is not None:
                key = (job["state"], str(job.get("step") or ""))
                if not watch.events or watch.events[-1][1:] != key:
                    watch.events.append((now, *key))
            if until(job):
                return dict(job)
            if job["state"] in FINISHED:
                raise SystemExit(f"job {job_id} ended {job['state']}: {job.get('error')}")
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for job {job_id}: {job}")
            status = next(c.notifications())["params"]


def start_scan(daemon: Daemon, positions: int) -> tuple[str, float]:
    """Queue a scan; returns its id and the perf_counter time the request was sent."""
    sent = time.perf_counter()
    job = daemon.call("scan", {"positions": positions})
    return str(job["id"]), sent
