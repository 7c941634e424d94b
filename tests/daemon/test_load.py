"""The daemon under load: a client that never reads cannot make it hold more than
``daemon.max_queued_bytes`` for it (while one answer larger than that still reaches a client that
reads), and a flood of connections past the descriptor limit neither fails the running scan nor
fills the log."""

from __future__ import annotations

import base64
import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from openscan_pi.daemon.client import DaemonError
from openscan_pi.plan import MAX_POSITIONS
from tests.conftest import cli_env
from tests.daemon.conftest import DaemonProcess
from tests.daemon.test_socket import Raw, expect_status, rpc

#: The simulated camera at this size writes JPEGs of about 170 kB (about 220 kB in base64).
BIG = [1600, 1200]
#: Smaller than one capture's answer.
QUEUED_BYTES = 128 * 1024


def wait_closed_by_daemon(c: Raw, timeout: float) -> bool:
    """True once the daemon has closed ``c`` (hang-up; unread data may still wait), False when it
    has not within ``timeout`` seconds."""
    poller = select.poll()
    poller.register(c.sock, select.POLLHUP | select.POLLRDHUP)
    return bool(poller.poll(timeout * 1000))


def test_client_that_never_reads_big_answers_is_dropped_by_bytes(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    d = make_daemon(camera={"resolution": BIG}, daemon={"max_queued_bytes": QUEUED_BYTES}).start()
    requests = 40  # far fewer lines than the queue's line limit: only the bytes can tell
    with Raw(d.socket, rcvbuf=4096) as stuck:
        stuck.send(rpc(0, "subscribe") + b"".join(rpc(i, "rig.capture") for i in range(1, requests)))
        assert wait_closed_by_daemon(stuck, 60), "a client that never reads was kept"
        data, _ = stuck.rest()
    assert data.count(b'"jpeg_base64"') < 5, data.count(b'"jpeg_base64"')
    assert f"client uid {os.getuid()} (pid {os.getpid()}) stopped reading: dropped" in d.log_text()
    # An answer larger than the bound still reaches a client that reads, notifications and all.
    with Raw(d.socket, timeout=60) as reader:
        status = expect_status(reader.call(rpc("sub", "subscribe")), "sub")
        while status["rig"]["task"] is not None:  # the dropped client's last capture may still run
            status = reader.line()["params"]
        reader.send(rpc("cap", "rig.capture"))
        while (message := reader.line()).get("id") != "cap":
            assert message.get("method") == "status", message
        shot = message["result"]
        jpeg = base64.b64decode(shot["jpeg_base64"])
        assert len(message["result"]["jpeg_base64"]) > QUEUED_BYTES
        assert len(jpeg) == shot["size"] and zlib.crc32(jpeg) == shot["crc32"]
        reader.send(rpc("after", "status"))
        while (message := reader.line()).get("id") != "after":
            assert message.get("method") == "status", message
        expect_status(message, "after")


# -- a flood of connections ---------------------------------------------------------------------

#: The daemon's descriptor limit in the flood test (soft and hard).
NOFILE = 256


def connect_nowait(path: Path) -> socket.socket | None:
    """A connection, or None when the daemon's backlog is full (as a flooding client sees it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(str(path))
    except BlockingIOError:
        sock.close()
        return None
    return sock


def test_flood_of_connections_past_the_descriptor_limit(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    d = make_daemon().start(nofile=NOFILE)
    with d.client() as before:  # a client from before the flood: it is served all along
        before.sock.settimeout(60)
        job = before.call("scan", {"positions": 30})
        flood = [s for s in (connect_nowait(d.socket) for _ in range(2 * NOFILE)) if s]
        stop = threading.Event()
        hammered = [0]

        def hammer() -> None:  # and more, over and over, while the scan runs
            while not stop.is_set():
                sock = connect_nowait(d.socket)
                if sock is not None:
                    hammered[0] += 1
                    with contextlib.suppress(OSError):
                        sock.send(rpc(1, "status"))
                    sock.close()

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            assert before.call("status")["state"] == "busy"
            assert before.call("subscribe")["state"] == "busy"
            for note in before.notifications():
                state = (note["params"]["job"] or {}).get("state")
                if note["params"]["job"]["id"] == job["id"] and state in ("done", "failed"):
                    break
        finally:
            stop.set()
            thread.join(60)
            for sock in flood:
                sock.close()
        assert before.call("job", {"job": job["id"]})["state"] == "done", d.log_text()[-3000:]
    assert len(flood) > NOFILE and hammered[0] > 0, (len(flood), hammered)
    with d.client() as after:  # the flood is gone: a new client is served
        assert after.call("status")["state"] == "idle"
    log = d.log.read_bytes()
    assert b"Traceback" not in log, log[-3000:].decode(errors="replace")
    assert len(log) < 32 * 1024, (len(log), log[-3000:].decode(errors="replace"))



def test_one_client_past_max_clients_is_told_and_closed(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    d = make_daemon(daemon={"max_clients": 5}).start()
    served = []
    try:
        for _ in range(5):
            served.append(d.client())
            assert served[-1].call("status")["state"] == "idle"
        with d.client() as extra, pytest.raises(DaemonError, match="too many clients"):
            extra.call("status")
        served.pop().close()
        assert served[0].call("status")["state"] == "idle"  # the daemon has seen the close by now
        with d.client() as next_one:
            assert next_one.call("status")["state"] == "idle"
    finally:
        for c in served:
            c.close()
    log = d.log_text()
    assert log.count("too many clients (5 at once, daemon.max_clients)") == 1, log


def test_soft_descriptor_limit_is_raised_to_the_hard_one(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    d = make_daemon().start(nofile=(256, 2048))
    assert d.proc is not None
    limits = Path(f"/proc/{d.proc.pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    assert line.split()[3:5] == ["2048", "2048"], line
    assert "leaves room for" not in d.log_text()  # 2048 holds daemon.max_clients (256) and more


#: A server process whose descriptor table the test fills ("fill") and empties ("free") on stdin.
FILL_SERVER = """
import asyncio, os, resource, socket, sys
from openscan_pi.daemon.server import RpcServer
from openscan_pi.logs import setup_logging

setup_logging(service=True)
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

async def status(params, conn):
    return {"state": "idle"}

async def main():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(sys.argv[1])
    sock.listen(256)
    server = RpcServer({"status": status}, max_clients=10)
    await server.start(sock)
    loop = asyncio.get_running_loop()
    held = []
    print("ready", flush=True)
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if line == "fill":
            try:
                while True:
                    held.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                pass
            print("filled", flush=True)
        elif line == "free":
            for fd in held:
                os.close(fd)
            held.clear()
            print("freed", flush=True)
    await server.close()

asyncio.run(main())
"""


def test_out_of_descriptors_accept_waits_and_logs_once(short_dir: Path) -> None:
    path = short_dir / "s.sock"
    proc = subprocess.Popen([sys.executable, "-c", FILL_SERVER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        proc.stdin.write("fill\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "filled"
        clients = [Raw(path, timeout=60) for _ in range(8)]  # wait in the backlog
        for i, c in enumerate(clients):
            c.send(rpc(i, "status"))
        warning = proc.stderr.readline()  # the server tried, and said so
        assert "cannot take new connections: Too many open files" in warning, warning
        proc.stdin.write("free\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "freed"
        for i, c in enumerate(clients):  # every one is served once descriptors are free
            assert c.line() == {"jsonrpc": "2.0", "id": i, "result": {"state": "idle"}}
            c.close()
        proc.stdin.close()
        assert proc.wait(30) == 0
        rest = proc.stderr.read()
        assert "Traceback" not in rest and "cannot take" not in rest, rest  # logged once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


# -- the largest scan ---------------------------------------------------------------------------


def test_cancel_during_the_plan_of_the_largest_scan(make_daemon: Callable[..., DaemonProcess]) -> None:
    """Planning 10 000 positions takes seconds; a cancel then ends it at once (the job is cancelled
    when cancel answers, and no plan was written)."""
    d = make_daemon(cloud_keys={"url": "http://127.0.0.1:9"}).start()  # refused: the scan goes ahead
    with d.client() as watcher:
        watcher.sock.settimeout(120)
        watcher.call("subscribe")
        job_id = d.call("scan", {"positions": MAX_POSITIONS})["id"]
        for note in watcher.notifications():
            job = note["params"]["job"] or {}
            if job.get("id") == job_id and job.get("step") == "planning":
                break
        cancelled = d.call("cancel", {"job": job_id})
    assert cancelled["state"] == "cancelled", (cancelled, d.log_text()[-3000:])
    assert not (d.data / "jobs" / job_id / "plan.json").exists()
    assert "Traceback" not in d.log_text()
