"""The daemon under load: a client that never reads cannot make it hold more than
``daemon.max_queued_bytes`` for it (while one answer larger than that still reaches a client that
reads), and a flood of connections past the descriptor limit neither fails the running scan nor
fills the log."""

from __future__ import annotations

import base64
import os
import select
import zlib
from collections.abc import Callable

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
        expect_status(reader.call(rpc("sub", "subscribe")), "sub")
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
