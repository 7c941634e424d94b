"""The stall rule while an answer is awaited, on real loopback sockets and the kernel's own
TCP_INFO: a peer that has every byte and thinks is waited for (also right after connecting),
an answer that then trickles is cut."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from openscan_pi.cloud.callscope import STALLED, CallScope

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="Linux TCP_INFO only")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield client, server
    client.close()
    server.close()


def watch_for(scope: CallScope, seconds: float) -> None:
    """Let the watcher look at ``scope`` as its thread does, for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and scope.reason is None:
        scope._watch(time.monotonic())
        time.sleep(0.01)


def test_a_thinking_peer_is_waited_for_and_a_trickle_after_it_is_cut(
        pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    scope = CallScope(stall=(1024, 0.3))
    scope.add(client)
    body = b"x" * 4096
    client.sendall(body)
    scope.moved(len(body))
    assert server.recv(len(body), socket.MSG_WAITALL) == body  # every byte is in
    scope.awaiting(True)  # at once after connecting and sending: the race the margin is for
    watch_for(scope, 1.0)  # three windows of silence while the peer thinks
    assert scope.reason is None
    server.sendall(b"H")  # the answer begins, then trickles: judged again, and cut
    client.recv(1)
    watch_for(scope, 2.0)
    assert scope.reason == STALLED
