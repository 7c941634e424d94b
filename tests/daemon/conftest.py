"""Fixtures of the daemon tests: the daemon as a subprocess on a short socket path, a client, and
waiting on its ``subscribe`` notifications (never on sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from openscan_pi.config import Config
from openscan_pi.daemon.client import DaemonClient, NotRunning
from openscan_pi.daemon.service import Service
from openscan_pi.sim.cloud import LocalCloud
from openscan_pi.sim.local_cloud import BundledCloud

from ..conftest import TOKEN, cli_env

#: How long a test waits for the daemon to reach a state before it fails.
WAIT_S = 120.0


class DaemonProcess:
    """``openscan-pi daemon`` in a subprocess, with its config, socket and log."""

    def __init__(self, root: Path, config: Path) -> None:
        self.root = root
        self.config = config
        self.socket = root / "run" / "d.sock"
        self.data = root / "data"
        self.log = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str, nofile: int | tuple[int, int] | None = None) -> DaemonProcess:
        """Start it (with RLIMIT_NOFILE ``nofile``: soft and hard, or ``(soft, hard)``, when given)
        and wait until the socket answers."""
        assert self.proc is None or self.proc.poll() is not None

        def limit() -> None:  # in the child, before exec
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE,
                                   nofile if isinstance(nofile, tuple) else (nofile, nofile))

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openscan_pi", "--config", str(self.config), "daemon",
                 *extra], stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=cli_env(),
                preexec_fn=limit if nofile is not None else None)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited ({self.proc.returncode}):\n"
                                     f"{self.log.read_text()}")
            try:
                # A call, not just a connect: the socket listens before the daemon has started
                # (its data folder, its jobs), and only then is it served.
                with DaemonClient.connect(self.socket, 5) as client:
                    client.call("status")
                return self
            except NotRunning:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the daemon did not answer:\n{self.log.read_text()}"
                                         ) from None
                time.sleep(0.02)  # polling the socket: nothing else tells when bind happened

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM, and its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def reload(self) -> dict[str, Any]:
        """Send SIGHUP and return the status once the daemon has dealt with it (it logs the
        outcome, then tells its subscribers). The status is asked afresh: notifications sent
        during the reload (the rig worker stopping and starting) may still be in flight when the
        line is logged."""
        assert self.proc is not None
        seen = self.log_text().count("config reload")
        with self.client() as c:
            c.call("subscribe")
            self.proc.send_signal(signal.SIGHUP)
            for _ in c.notifications():
                if self.log_text().count("config reload") > seen:
                    return dict(self.call("status"))
        raise AssertionError("no status after SIGHUP")

    def client(self) -> DaemonClient:
        """A new connection."""
        return DaemonClient.connect(self.socket, 60)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """One request on its own connection."""
        with self.client() as c:
            return c.call(method, params)

    def wait(self, check: Callable[[dict[str, Any]], Any], timeout: float = WAIT_S) -> Any:
        """Wait until ``check(status)`` is truthy, re-checked on every notification; returns it."""
        with self.client() as c:
            c.sock.settimeout(timeout)
            status = c.call("subscribe")
            deadline = time.monotonic() + timeout
            while True:
                found = check(status)
                if found:
                    return found
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out; last status: {status}")
                status = next(c.notifications())["params"]

    def wait_job(self, job_id: str, states: set[str], timeout: float = WAIT_S) -> dict[str, Any]:
        """Wait until job ``job_id`` is in one of ``states``; returns its object."""
        def check(status: dict[str, Any]) -> dict[str, Any] | None:
            job = status.get("job")
            if not job or job["id"] != job_id:
                job = self.call("job", {"job": job_id})
            return job if job["state"] in states else None

        return self.wait(check, timeout)

    def log_text(self) -> str:
        """What the daemon logged."""
        return self.log.read_text(errors="replace")


def daemon_config(root: Path, *, cloud: LocalCloud | None = None,
                  cloud_keys: dict[str, Any] | None = None, **sections: Any) -> Path:
    """A config for a simulated daemon under ``root`` (the bundled cloud, or ``cloud``: anything with
    a ``url``), ``cloud_keys`` changed in the ``cloud`` section."""
    cloud_section: dict[str, Any] = {"token": TOKEN, "poll_interval_s": 0.05,
                                     "poll_max_interval_s": 0.2, "backoff_s": 0.01,
                                     "retries": 2, "max_offline_s": 30, "max_part_bytes": 200_000,
                                     "url": cloud.url if cloud else "local",
                                     "local": {"processing_s": 0.3}, **(cloud_keys or {})}
    data: dict[str, Any] = {
        "cloud": cloud_section,
        "daemon": {"socket": str(root / "run" / "d.sock"), "data_dir": str(root / "data")},
        "rig": {"model": "simulated"},
        "camera": {"resolution": [320, 240]},
        "web": {"enabled": False},  # tests/web/ start it
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temp folder with a short path (a socket path must fit 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="osd", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_daemon(short_dir: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """``make_daemon(cloud=None, cloud_keys=None, **sections)``: a configured (not yet started)
    daemon."""
    made: list[DaemonProcess] = []

    def make(*, cloud: LocalCloud | None = None, cloud_keys: dict[str, Any] | None = None,
             **sections: Any) -> DaemonProcess:
        d = DaemonProcess(short_dir, daemon_config(short_dir, cloud=cloud, cloud_keys=cloud_keys,
                                                   **sections))
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(30)


@pytest.fixture
def daemon(make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A running simulated daemon with the bundled local cloud."""
    return make_daemon().start()


@contextlib.contextmanager
def service_in_thread(cfg: Config, load: Callable[[], Config] | None = None) -> Iterator[Service]:
    """The daemon's service in a thread of this process (for what only this process can watch:
    its notify socket, its log handlers), ready when yielded, stopped after. ``cloud.url: local``
    starts the bundled cloud as ``openscan-pi daemon`` does: a child process, for the service's
    life. Its web page stays off: it would listen on the default port, which the tests running
    beside these may hold."""
    cfg = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, enabled=False))
    with BundledCloud() as bundled:
        reload = (lambda: bundled.resolve(load())) if load is not None else None
        svc = Service(bundled.resolve(cfg), reload, signals=False)
        thread = threading.Thread(target=lambda: asyncio.run(svc.run()), daemon=True)
        thread.start()
        assert svc.ready.wait(60)
        try:
            yield svc
        finally:
            svc.request_stop()
            thread.join(30)
