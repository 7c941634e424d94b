"""A cloud that accepts connections and never answers must not starve the daemon's socket: many
``scan`` requests at once share one token check with a bounded wait, and ``status``, ``jobs``,
``retry`` and ``cancel`` are answered meanwhile; once the cloud answers again, the jobs end ``done``."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from openscan_pi.daemon.client import DaemonError
from openscan_pi.sim.cloud import LocalCloud
from tests.daemon.conftest import DaemonProcess
from tests.daemon.test_socket import Raw, expect_error, expect_status, rpc

#: Scan requests sent at once: more than the event loop's default thread pool holds (2 cores: 6).
SCANS = 10
#: How long an answer may take before the test calls the daemon starved (the cloud's read timeout
#: is 120 s: a daemon that waits on it shows here).
PROMPT_S = 20.0


class Gate:
    """A TCP server in front of a cloud: while hung it accepts and never answers; once recovered it
    drops what it held (as a restarted server does) and passes every new connection through."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").rstrip("/").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.hung = True
        self.accepted_while_hung = 0
        self.held: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self.hung:
                    self.accepted_while_hung += 1
                    self.held.append(conn)
                    continue
            threading.Thread(target=self._pass, args=(conn,), daemon=True).start()

    def _pass(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=30)
        except OSError:
            conn.close()
            return

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        back.start()
        pump(conn, upstream)
        back.join(60)
        conn.close()
        upstream.close()

    def recover(self) -> None:
        with self._lock:
            self.hung = False
            held, self.held = self.held, []
        for conn in held:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self.recover()
        self.listener.close()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    with LocalCloud(tmp_path / "cloud", processing_s=0.2) as server:
        yield server


@pytest.fixture
def gate(cloud: LocalCloud) -> Iterator[Gate]:
    g = Gate(cloud.url)
    yield g
    g.close()


def answer(c: Raw, request_id: Any) -> dict[str, Any]:
    """The answer to ``request_id`` on ``c`` (skipping notifications)."""
    while True:
        message = c.line()
        if message.get("id") == request_id:
            return message


def test_scans_against_a_hanging_cloud_starve_nothing(
        make_daemon: Callable[..., DaemonProcess], gate: Gate) -> None:
    d = make_daemon(cloud=gate, cloud_keys={"read_timeout_s": 120, "connect_timeout_s": 10,
                                            "max_offline_s": 600}).start()
    scans = [Raw(d.socket, timeout=PROMPT_S) for _ in range(SCANS)]
    try:
        for i, c in enumerate(scans):
            c.send(rpc(i, "scan", '{"positions": 2}'))
        # Meanwhile, every other method answers at once.
        with Raw(d.socket, timeout=PROMPT_S) as other:
            expect_status(other.call(rpc("s", "status")), "s")
            assert isinstance(other.call(rpc("j", "jobs"))["result"], list)
            message = expect_error(other.call(rpc("r", "retry", '{"job": "nope"}')), -32000, "r")
            assert "no job" in message
        jobs = [answer(c, i)["result"] for i, c in enumerate(scans)]
    finally:
        for c in scans:
            c.close()
    assert all(job["state"] in ("queued", "scanning", "uploading") for job in jobs), jobs
    # One token check in flight, shared by every scan that asked meanwhile.
    assert gate.accepted_while_hung <= SCANS // 2, gate.accepted_while_hung
    assert d.log_text().count("could not check the token") == SCANS, d.log_text()
    # A queued job is cancelled at once, and retry answers for a job that exists too.
    last = jobs[-1]["id"]
    with d.client() as c:
        c.sock.settimeout(PROMPT_S)
        assert c.call("cancel", {"job": last})["state"] == "cancelled"
        with pytest.raises(DaemonError, match="cancelled"):
            c.call("retry", {"job": last})
        assert c.call("status")["state"] == "busy"
    # The cloud answers again: every other job ends done, and a new scan works as usual.
    gate.recover()
    for job in jobs[:-1]:
        done = d.wait_job(job["id"], {"done", "failed"})
        if done["state"] == "failed":  # the connection the gate dropped was a step's only try
            d.call("retry", {"job": job["id"]})
            done = d.wait_job(job["id"], {"done", "failed"})
        assert done["state"] == "done", (done, d.log_text())
    job = d.call("scan", {"positions": 2})
    assert d.wait_job(job["id"], {"done", "failed"})["state"] == "done", d.log_text()
    assert "Traceback" not in d.log_text()

