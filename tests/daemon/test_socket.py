"""The daemon's socket under abuse: bad JSON-RPC, junk bytes, half lines, over-long lines, stuck,
slow and many clients, the socket file's modes and takeover rules, SO_PEERCRED in the log, and a
socket handed over by systemd. Everything goes over the real socket of a real daemon process; every
answer must be strict JSON (no NaN/Infinity), and the daemon must carry on afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openscan_pi.daemon.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_LINE,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    REFUSED,
)
from openscan_pi.daemon.server import QUEUE_LIMIT
from tests.conftest import cli_env
from tests.daemon.conftest import DaemonProcess, daemon_config


def strict_json(line: bytes) -> dict[str, Any]:
    """One line the daemon sent, read as strict JSON: what any client's parser accepts."""
    def refuse(name: str) -> None:
        raise AssertionError(f"the daemon sent {name}, which is not JSON: {line[:200]!r}")

    obj = json.loads(line, parse_constant=refuse)
    assert isinstance(obj, dict) and obj.get("jsonrpc") == "2.0", line[:200]
    return obj


def rpc(request_id: Any, method: str, params: str | None = None) -> bytes:
    """A request line; ``params`` is JSON text, so that it may hold what a client should not send."""
    text = f'{{"jsonrpc": "2.0", "id": {json.dumps(request_id)}, "method": {json.dumps(method)}'
    if params is not None:
        text += f', "params": {params}'
    return (text + "}\n").encode()


class Raw:
    """A client on a plain AF_UNIX socket: bytes out, answer lines in."""

    def __init__(self, path: Path, timeout: float = 30.0, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)  # non-blocking connect, as DaemonClient does
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> dict[str, Any]:
        """The next answer line; fails on end of input."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"the daemon closed the connection; unread: {self.buf[:200]!r}"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return strict_json(line)

    def call(self, request: bytes) -> dict[str, Any]:
        self.send(request)
        return self.line()

    def rest(self) -> tuple[bytes, bool]:
        """Everything until the daemon closes, and whether it ended in a reset instead of EOF."""
        data, self.buf = self.buf, b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            return data, True
        return data, False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def expect_error(answer: dict[str, Any], code: int, request_id: Any, what: object = "") -> str:
    assert "result" not in answer and answer.get("error", {}).get("code") == code, (what, answer)
    assert answer["id"] == request_id, (what, answer)
    return str(answer["error"]["message"])


def expect_status(answer: dict[str, Any], request_id: Any) -> dict[str, Any]:
    assert "error" not in answer and answer["id"] == request_id, answer
    status = answer["result"]
    assert status["state"] in ("idle", "busy") and isinstance(status["version"], str), status
    assert isinstance(status["rig"], dict) and "job" in status, status
    return status


def assert_alive(d: DaemonProcess) -> None:
    """The daemon still runs and answers a new connection."""
    assert d.proc is not None and d.proc.poll() is None, d.log_text()
    with Raw(d.socket) as c:
        expect_status(c.call(rpc("alive", "status")), "alive")


# -- 1. bad requests ----------------------------------------------------------------------------

#: (line, the error code, the id the answer must carry)
BAD: list[tuple[bytes, int, Any]] = [
    (b'{"jsonrpc": "2.0", "id": 1, "method": \n', PARSE_ERROR, None),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "status"\n', PARSE_ERROR, None),
    (b"[" * 40_000 + b"\n", PARSE_ERROR, None),  # too deep for the decoder: still bad input
    (b'[{"jsonrpc": "2.0", "id": 1, "method": "status"}]\n', INVALID_REQUEST, None),
    (b"42\n", INVALID_REQUEST, None),
    (b'"status"\n', INVALID_REQUEST, None),
    (b"null\n", INVALID_REQUEST, None),
    (b'{"id": 2, "method": "status"}\n', INVALID_REQUEST, 2),
    (b'{"jsonrpc": "1.0", "id": "two", "method": "status"}\n', INVALID_REQUEST, "two"),
    (b'{"jsonrpc": 2.0, "id": 2.5, "method": "status"}\n', INVALID_REQUEST, 2.5),
    (b'{"method": "status"}\n', INVALID_REQUEST, None),  # no jsonrpc and no id: still answered
    (rpc({"a": 1}, "status"), INVALID_REQUEST, None),
    (rpc([3], "status"), INVALID_REQUEST, None),
    (rpc(True, "status"), INVALID_REQUEST, None),
    (rpc(float("nan"), "status"), INVALID_REQUEST, None),  # NaN: it could not be echoed as JSON
    (b'{"jsonrpc": "2.0", "id": 1e400, "method": "status"}\n', INVALID_REQUEST, None),
    (b'{"jsonrpc": "2.0", "id": 4}\n', INVALID_REQUEST, 4),
    (b'{"jsonrpc": "2.0", "id": 4, "method": 5}\n', INVALID_REQUEST, 4),
    (rpc(5, "no.such.method"), METHOD_NOT_FOUND, 5),
    (rpc(6, "status", "[]"), INVALID_PARAMS, 6),
    (rpc(6, "scan", "[10]"), INVALID_PARAMS, 6),
    (rpc(6, "status", '"x"'), INVALID_PARAMS, 6),
    (rpc(6, "status", '{"pad": 1}'), INVALID_PARAMS, 6),
    *[(rpc(7, "scan", f'{{"positions": {p}}}'), INVALID_PARAMS, 7)
      for p in ('"ten"', "0", "-1", str(10**9), "true", "2.5", "null", "NaN")],
    (rpc(7, "scan", "{}"), INVALID_PARAMS, 7),
    (rpc(7, "scan", '{"positions": 3, "project": 5}'), INVALID_PARAMS, 7),
    (rpc(7, "scan", '{"positions": 3, "project": ""}'), INVALID_PARAMS, 7),
    (rpc(8, "cancel", '{"job": 7}'), INVALID_PARAMS, 8),
    (rpc(8, "retry", "{}"), INVALID_PARAMS, 8),
    (rpc(8, "retry", '{"job": 7}'), INVALID_PARAMS, 8),
    (rpc(8, "job", "{}"), INVALID_PARAMS, 8),
    (rpc(9, "rig.light", '{"on": "yes"}'), INVALID_PARAMS, 9),
    (rpc(9, "rig.light", '{"on": 1}'), INVALID_PARAMS, 9),
    (rpc(9, "rig.light", '{"on": true, "brightness": 2}'), INVALID_PARAMS, 9),
    (rpc(9, "rig.move", '{"rotor": NaN}'), INVALID_PARAMS, 9),  # Python's json reads NaN
    (rpc(9, "rig.move", '{"turntable": -Infinity}'), INVALID_PARAMS, 9),
    (rpc(9, "rig.move", '{"rotor": "10"}'), INVALID_PARAMS, 9),
    (rpc(9, "rig.move", "{}"), INVALID_PARAMS, 9),
    (rpc(9, "rig.turn", '{"axis": "z", "degrees": 5}'), INVALID_PARAMS, 9),
    (rpc(10, "retry", '{"job": "nope"}'), REFUSED, 10),
    (rpc(10, "cancel", '{"job": "nope"}'), REFUSED, 10),
    (rpc(10, "job", '{"job": "nope"}'), REFUSED, 10),
]


def test_bad_requests_get_their_error_on_a_connection_that_goes_on(daemon: DaemonProcess) -> None:
    with Raw(daemon.socket) as c:
        for line, code, request_id in BAD:
            message = expect_error(c.call(line), code, request_id, line[:100])
            if code == METHOD_NOT_FOUND:
                assert "no.such.method" in message
            if code == REFUSED:
                assert "openscan-pi jobs" in message, message
            if b'"pad"' in line:
                assert "'pad'" in message, message
        message = expect_error(c.call(rpc(11, "cancel")), REFUSED, 11)  # nothing runs
        assert "nothing to cancel" in message
        expect_status(c.call(rpc(12, "status")), 12)  # the same connection still answers
    assert_alive(daemon)
    log = daemon.log_text()
    assert "Traceback" not in log and "internal error" not in log, log


# -- 2. junk, NUL bytes, blank lines, notifications -----------------------------------------------


def test_junk_bytes_are_parse_errors_and_blank_lines_are_ignored(daemon: DaemonProcess) -> None:
    junk = bytes(b for b in random.Random(7).randbytes(4000) if b != 0x0A)
    with Raw(daemon.socket) as c:
        for line in (b"\xff\xfe\xc3(" + junk + b"\n", b"\x00\x00\x00\n",
                     b'{"jsonrpc": "2.0", "id": 1, "method": "sta\x00tus"}\n'):
            expect_error(c.call(line), PARSE_ERROR, None, line[:40])
        # Nothing answers these: blank lines, and notifications (no id), even failing ones.
        c.send(b"\n" + b"   \n" + b"\t \r\n" + b"\r\n"
               + b'{"jsonrpc": "2.0", "method": "no.such.method"}\n'
               + b'{"jsonrpc": "2.0", "method": "scan", "params": {"positions": "ten"}}\n'
               + b'{"jsonrpc": "2.0", "method": "status"}\n')
        expect_status(c.call(rpc("next", "status")), "next")  # the first answer is this one
        expect_status(c.call(rpc(2, "status").replace(b"\n", b"\r\n")), 2)
    assert_alive(daemon)
    assert "Traceback" not in daemon.log_text()


# -- 3. half lines at the end of input ------------------------------------------------------------


@pytest.mark.parametrize(("sent", "answers"), [
    (b'{"jsonrpc": "2.0", "id": 5, "method": "status"}', [("result", 5)]),
    (b'{"jsonrpc": "2.0", "id": 6, "meth', [(PARSE_ERROR, None)]),
    (rpc(7, "status") + b'{"jsonrpc": "2.0", "id": 8, "method": "status"}', [("result", 7),
                                                                            ("result", 8)]),
    (rpc(9, "no.such") + b'{"jsonrpc":', [(METHOD_NOT_FOUND, 9), (PARSE_ERROR, None)]),
    (b"   ", []),
], ids=["whole-object", "half-object", "line-then-whole", "line-then-half", "blank"])
def test_half_line_then_shutdown_is_answered_then_closed(
        daemon: DaemonProcess, sent: bytes, answers: list[tuple[Any, Any]]) -> None:
    with Raw(daemon.socket) as c:
        c.send(sent)
        c.sock.shutdown(socket.SHUT_WR)
        for kind, request_id in answers:
            if kind == "result":
                expect_status(c.line(), request_id)
            else:
                expect_error(c.line(), kind, request_id)
        assert c.rest() == (b"", False)
    assert_alive(daemon)


# -- 4. line length -------------------------------------------------------------------------------


def padded(line: bytes, total: int, *, in_whitespace: bool) -> bytes:
    """``line`` grown to ``total`` bytes with its newline: spaces, or a long "pad" parameter."""
    if in_whitespace:
        return line[:-1] + b" " * (total - len(line)) + b"\n"
    head = line[:-2] + b', "params": {"pad": "'
    return head + b"x" * (total - len(head) - 4) + b'"}}\n'


def test_four_mib_line_gets_one_error_then_eof_and_others_are_served(daemon: DaemonProcess) -> None:
    with Raw(daemon.socket) as big:
        big.send(padded(rpc(1, "status"), 4 * 1024 * 1024, in_whitespace=False))
        assert_alive(daemon)  # while that connection is still being read away
        message = expect_error(big.line(), INVALID_REQUEST, None)
        assert "64 KiB" in message or "longer" in message, message
        assert big.rest() == (b"", False)  # then EOF: no second answer, no reset
    with Raw(daemon.socket) as over:  # one byte over the limit (without the newline) is too long
        over.send(padded(rpc(2, "status"), MAX_LINE + 2, in_whitespace=True))
        over.sock.shutdown(socket.SHUT_WR)
        expect_error(over.line(), INVALID_REQUEST, None)
        assert over.rest() == (b"", False)
    assert_alive(daemon)


def test_line_just_under_64_kib_is_answered(daemon: DaemonProcess) -> None:
    with Raw(daemon.socket) as c:
        line = padded(rpc(1, "status"), MAX_LINE, in_whitespace=False)
        assert len(line) == MAX_LINE
        message = expect_error(c.call(line), INVALID_PARAMS, 1)
        assert "'pad'" in message
        line = padded(rpc(2, "status"), MAX_LINE, in_whitespace=True)
        assert len(line) == MAX_LINE
        expect_status(c.call(line), 2)
        expect_status(c.call(rpc(3, "status")), 3)


# -- 5./6. stuck and slow clients -----------------------------------------------------------------


def answered_during_scan(d: DaemonProcess) -> None:
    """A 20-position scan runs to done while other clients' status calls are answered."""
    job = d.call("scan", {"positions": 20})
    for _ in range(5):
        with d.client() as c:
            status = c.call("status")
        assert status["state"] in ("idle", "busy") and "version" in status
    done = d.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", (done, d.log_text())


def flood_size() -> int:
    """Requests whose answers (250 bytes and more each) are 4 times what the kernel's socket buffer,
    asyncio's write buffer (64 KiB) and the connection's queue hold together."""
    try:
        kernel = int(Path("/proc/sys/net/core/wmem_default").read_text())
    except (OSError, ValueError):
        kernel = 4 * 1024 * 1024
    return max(5000, 4 * (kernel + 65536) // 250 + 4 * QUEUE_LIMIT)


def test_stuck_client_is_dropped_and_stalls_nobody(daemon: DaemonProcess) -> None:
    requests = flood_size()
    with Raw(daemon.socket, rcvbuf=1024) as stuck:
        expect_status(stuck.call(rpc(0, "subscribe")), 0)
        # Then it asks and asks and never reads again (it may be dropped before it has sent all).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stuck.send(b"".join(rpc(i, "status") for i in range(1, requests)))
        answered_during_scan(daemon)
        stuck.sock.settimeout(15)  # if it was never dropped, the answers would end in a timeout
        data, _ = stuck.rest()
        assert data.count(b'"result"') < requests - 1, "the stuck client was never dropped"
    log = daemon.log_text()
    assert f"client uid {os.getuid()} (pid {os.getpid()}) stopped reading: dropped" in log, log
    assert_alive(daemon)


def test_slow_reader_does_not_stall_others(daemon: DaemonProcess) -> None:
    with Raw(daemon.socket) as slow:
        slow.send(rpc(1, "subscribe"))
        stop = threading.Event()
        got = bytearray()

        def trickle() -> None:  # one byte at a time, now and then
            while not stop.is_set():
                try:
                    byte = slow.sock.recv(1)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not byte:
                    return
                got.extend(byte)
                stop.wait(0.005)  # the slowness under test, not a synchronisation

        slow.sock.settimeout(0.2)  # so that the reader sees ``stop`` even when nothing comes
        reader = threading.Thread(target=trickle)
        reader.start()
        try:
            answered_during_scan(daemon)
        finally:
            stop.set()
            reader.join(30)
        slow.sock.settimeout(30)
        slow.buf = bytes(got)
        expect_status(slow.line(), 1)  # what it read, byte by byte, is the subscribe answer
    assert_alive(daemon)


# -- 7. many clients ------------------------------------------------------------------------------


def many_status(path: Path, count: int = 200) -> list[dict[str, Any]]:
    """``count`` connections opened at once (in a tight loop), each asks status, each answered."""
    clients = [Raw(path) for _ in range(count)]
    try:
        for i, c in enumerate(clients):
            c.send(rpc(i, "status"))
        return [expect_status(c.line(), i) for i, c in enumerate(clients)]
    finally:
        for c in clients:
            c.close()


def test_200_clients_at_once_idle_and_during_a_scan(daemon: DaemonProcess) -> None:
    assert {s["state"] for s in many_status(daemon.socket)} == {"idle"}
    job = daemon.call("scan", {"positions": 20})
    assert "busy" in {s["state"] for s in many_status(daemon.socket)}
    assert daemon.wait_job(job["id"], {"done", "failed"})["state"] == "done"
    assert_alive(daemon)


# -- 8. the socket file ---------------------------------------------------------------------------


def run_daemon(d: DaemonProcess) -> subprocess.CompletedProcess[str]:
    """``openscan-pi daemon`` with ``d``'s config, to its end (expected to refuse at once)."""
    env = {k: v for k, v in cli_env().items() if not k.startswith("LISTEN_")}
    return subprocess.run([sys.executable, "-m", "openscan_pi", "--config", str(d.config), "daemon"],
                          capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_socket_is_0660_in_a_0750_folder(daemon: DaemonProcess) -> None:
    mode = daemon.socket.lstat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660, oct(mode)
    assert stat.S_IMODE(daemon.socket.parent.stat().st_mode) == 0o750


def test_stale_socket_is_replaced(make_daemon: Callable[..., DaemonProcess]) -> None:
    d = make_daemon()
    d.socket.parent.mkdir(mode=0o700)
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(d.socket))  # a daemon that crashed: its socket file, nothing behind it
    left.close()
    assert stat.S_ISSOCK(d.socket.lstat().st_mode)
    d.start()
    assert_alive(d)
    assert "removing the stale socket" in d.log_text()
    assert stat.S_IMODE(d.socket.stat().st_mode) == 0o660
    assert stat.S_IMODE(d.socket.parent.stat().st_mode) == 0o750
    assert d.stop() == 0
    assert not d.socket.exists()


def test_second_daemon_on_the_same_socket_refuses(daemon: DaemonProcess) -> None:
    done = run_daemon(daemon)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "already listening" in lines[0], done.stderr
    assert stat.S_ISSOCK(daemon.socket.lstat().st_mode)  # the first one's socket is left alone
    assert_alive(daemon)
    assert daemon.stop() == 0


def test_regular_file_at_the_socket_path_is_refused_and_kept(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    d = make_daemon()
    d.socket.parent.mkdir()
    d.socket.write_bytes(b"not mine to delete\n")
    done = run_daemon(d)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a socket" in lines[0], done.stderr
    assert d.socket.read_bytes() == b"not mine to delete\n"


# -- 9. who asked -------------------------------------------------------------------------------


def test_the_callers_uid_is_logged(daemon: DaemonProcess) -> None:
    job = daemon.call("scan", {"positions": 3})
    line = f"scan of 3 positions asked by uid {os.getuid()} (pid {os.getpid()})"
    assert line in daemon.log_text()  # logged before the answer was sent
    assert daemon.wait_job(job["id"], {"done", "failed"})["state"] == "done"


# -- 10. socket activation ------------------------------------------------------------------------

#: Runs in the child: the handed socket becomes fd 3, LISTEN_PID our own pid (kept over exec).
WRAPPER = ("import os, sys\n"
           "fd = int(sys.argv[1])\n"
           "if fd != 3:\n"
           "    os.dup2(fd, 3)\n"
           "    os.close(fd)\n"
           "os.environ['LISTEN_PID'] = str(os.getpid())\n"
           "os.execv(sys.executable, [sys.executable, '-m', 'openscan_pi', '--config', sys.argv[2],"
           " 'daemon'])\n")


def test_socket_handed_over_by_systemd_is_used(short_dir: Path) -> None:
    pytest.importorskip("systemd.daemon", reason="systemd-python is not installed")
    config = daemon_config(short_dir)  # daemon.socket is run/d.sock: it must stay unused
    configured = short_dir / "run" / "d.sock"
    handed = short_dir / "handed.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(handed))
    listener.listen(16)
    env = {**cli_env(), "LISTEN_FDS": "1"}
    with open(short_dir / "daemon.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", WRAPPER, str(listener.fileno()), str(config)],
                                pass_fds=(listener.fileno(),), env=env, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
    listener.close()  # only the daemon holds it now
    try:
        with Raw(handed) as c:  # connects at once (the socket listens), answered once serving
            expect_status(c.call(rpc(1, "status")), 1)
        text = (short_dir / "daemon.log").read_text()
        assert "listening on the socket handed over by systemd" in text, text
        assert not configured.exists()
        proc.terminate()
        assert proc.wait(30) == 0
        assert stat.S_ISSOCK(handed.lstat().st_mode)  # systemd's file: not removed on the way out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
