"""The Unix-socket JSON-RPC server: asyncio, one reader and one bounded writer per connection.

Bad input never hurts: every request that cannot be read gets its error object and the connection
goes on; a line over 64 KiB gets an error and the connection is closed. A client that does not
read what it is sent (a stuck ``subscribe``) is dropped when its queue fills (``QUEUE_LIMIT``
lines, or ``daemon.max_queued_bytes`` bytes; a line of any size is still taken below that, so a
photo larger than it reaches a client that reads), so it never stalls anyone else and never holds
much more than that in memory. The socket is 0660 in a 0750 folder, with the configured group; a
socket file left by a crash is replaced only when nothing answers on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openscan_pi.daemon import protocol
from openscan_pi.daemon.protocol import MAX_LINE, RpcError
from openscan_pi.errors import UserError

log = logging.getLogger(__name__)

#: Lines waiting to be written to one client before it counts as stuck and is dropped.
QUEUE_LIMIT = 256
#: Bytes waiting for one client before it counts as stuck (``daemon.max_queued_bytes``).
QUEUE_BYTES = 4 * 1024 * 1024
#: After an over-long line: how long (and how much) to read away before closing, so that the
#: client sees the error instead of a reset.
DRAIN_S = 1.0
DRAIN_BYTES = 16 * 1024 * 1024
#: Connections waiting to be accepted; beyond it a client's non-blocking connect gets EAGAIN.
#: Given to asyncio too, which otherwise listens again with its default of 100 when serving starts.
BACKLOG = 256
#: sun_path is 108 bytes, with its terminating NUL.
MAX_SOCKET_PATH = 107


@dataclass
class Peer:
    """Who is on the other end (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"uid {self.uid} (pid {self.pid})"


@dataclass(eq=False)
class Connection:
    """One client: its identity, its outgoing queue, whether it subscribed.

    The queue holds at most ``QUEUE_LIMIT`` lines; a line is taken while less than ``max_bytes``
    wait (so a line of any size gets in, and at most one line more than ``max_bytes`` waits). The
    line being written is in the transport meanwhile.
    """

    peer: Peer
    writer: asyncio.StreamWriter
    max_bytes: int = QUEUE_BYTES
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    queued_bytes: int = 0
    subscribed: bool = False
    closed: bool = False

    def send(self, line: bytes) -> None:
        """Queue a line; a client that has stopped reading is dropped, never waited for."""
        if self.closed:
            return
        if self.queued_bytes >= self.max_bytes:
            self._drop()
            return
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            self._drop()
            return
        self.queued_bytes += len(line)

    def _drop(self) -> None:
        log.warning("client %s stopped reading: dropped", self.peer)
        self.closed = True
        self.writer.transport.abort()
        self.queue = asyncio.Queue(1)  # what it held is freed now, not when the pump notices
        self.queue.put_nowait(None)
        self.queued_bytes = 0

    def close(self) -> None:
        """Close after what is queued."""
        if self.closed:
            return
        self.closed = True
        if self.queue.full():
            self._drop()
        else:
            self.queue.put_nowait(None)

    async def pump(self) -> None:
        """Write queued lines until closed."""
        try:
            while (line := await self.queue.get()) is not None:
                self.queued_bytes -= len(line)
                self.writer.write(line)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self.writer.close()


#: A method: ``handler(params, connection)`` returns the result (or raises :class:`RpcError`).
Handler = Callable[[dict[str, Any], Connection], Awaitable[Any]]


def peer_of(sock: socket.socket | None) -> Peer:
    """The peer's pid, uid and gid (zeros where the platform cannot tell)."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return Peer(0, -1, -1)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return Peer(0, -1, -1)
    return Peer(*struct.unpack("3i", raw))


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True  # e.g. a timeout: something holds it, do not take it away
    finally:
        probe.close()
    return True


def bind_socket(path: Path, group: str | None) -> socket.socket:
    """A listening socket at ``path``: mode 0660 in a 0750 folder, group ``group`` (or ours).

    Raises :class:`UserError` when another daemon answers there, or the path is not a socket.
    """
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise UserError(f"daemon.socket: {path} is longer than {MAX_SOCKET_PATH} bytes, the limit of "
                        "a Unix socket path: choose a shorter one")
    gid = grp.getgrnam(group).gr_gid if group else -1
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    if folder.stat().st_uid == os.geteuid():
        os.chmod(folder, 0o750)
        if gid >= 0:
            os.chown(folder, -1, gid)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise UserError(f"{path} exists and is not a socket: move it away, or set "
                            "daemon.socket to another path")
        if _answers(path):
            raise UserError(f"a daemon is already listening on {path}: `openscan-pi status` "
                            "talks to it")
        log.info("removing the stale socket %s (nothing answers on it)", path)
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)  # born 0660: never a moment of wider access
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot create the socket {path}: {exc.strerror} (daemon.socket)") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    if gid >= 0:
        try:
            os.chown(path, -1, gid)
        except PermissionError:
            sock.close()
            path.unlink(missing_ok=True)
            raise UserError(f"daemon.socket_group: cannot give {path} to group {group}: the "
                            "daemon's user must be a member of it") from None
    sock.listen(BACKLOG)
    return sock


def systemd_socket() -> socket.socket | None:
    """The listening socket handed over by a systemd ``.socket`` unit, if there is one."""
    if "LISTEN_FDS" not in os.environ:
        return None
    try:
        from systemd.daemon import listen_fds
    except ImportError:
        log.warning("systemd handed over a socket but systemd-python is not installed: binding "
                    "daemon.socket instead (install python3-systemd)")
        return None
    fds = listen_fds()
    if not fds:
        return None
    sock = socket.socket(fileno=fds[0])
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise UserError("the socket systemd handed over is not a Unix stream socket: fix "
                        "ListenStream= in openscan-pi.socket")
    log.info("listening on the socket handed over by systemd (%s)", sock.getsockname())
    return sock


class RpcServer:
    """Serves ``methods`` on a listening Unix socket; :meth:`broadcast` reaches subscribers."""

    def __init__(self, methods: dict[str, Handler], *, max_queued_bytes: int = QUEUE_BYTES) -> None:
        self.methods = methods
        self.max_queued_bytes = max_queued_bytes
        self.connections: set[Connection] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (already listening)."""
        self._server = await asyncio.start_unix_server(
            self._serve, sock=sock, limit=MAX_LINE, backlog=BACKLOG)

    async def close(self) -> None:
        """Stop accepting, close every connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def broadcast(self, line: bytes) -> None:
        """Send a notification line to every subscriber (call in the loop's thread)."""
        for conn in list(self.connections):
            if conn.subscribed:
                conn.send(line)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(peer_of(writer.get_extra_info("socket")), writer, self.max_queued_bytes)
        self.connections.add(conn)
        pump = asyncio.create_task(conn.pump())
        log.debug("client %s connected", conn.peer)
        try:
            while not conn.closed:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():  # a half line, then end of input
                        await self._handle(conn, exc.partial)
                    break
                except asyncio.LimitOverrunError:
                    conn.send(protocol.error(None, protocol.INVALID_REQUEST,
                                             f"invalid request: line longer than {MAX_LINE} "
                                             "bytes; closing the connection"))
                    await self._drain(reader)
                    break
                except (ConnectionError, OSError):
                    break
                if line.strip():
                    await self._handle(conn, line)
        finally:
            conn.close()
            self.connections.discard(conn)
            with contextlib.suppress(Exception):
                await pump

    @staticmethod
    async def _drain(reader: asyncio.StreamReader) -> None:
        """Read away the rest of an over-long line (bounded), so closing does not reset it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_S
        dropped = 0
        with contextlib.suppress(Exception):
            while dropped < DRAIN_BYTES and (left := deadline - loop.time()) > 0:
                chunk = await asyncio.wait_for(reader.read(65536), left)
                if not chunk:
                    break
                dropped += len(chunk)

    async def _handle(self, conn: Connection, line: bytes) -> None:
        request_id: Any = None
        notify_only = False
        try:
            request_id, method, params, notify_only = protocol.parse_request(line)
            handler = self.methods.get(method)
            if handler is None:
                raise RpcError(protocol.METHOD_NOT_FOUND, f"unknown method {method!r}: known are "
                               f"{', '.join(sorted(self.methods))}", request_id)
            value = await handler(params, conn)
        except RpcError as exc:
            if not notify_only:
                conn.send(protocol.error(exc.request_id if exc.request_id is not None
                                         else request_id, exc.code, exc.message))
            return
        except UserError as exc:
            if not notify_only:
                conn.send(protocol.error(request_id, protocol.REFUSED, str(exc)))
            return
        except Exception as exc:  # a bug must not take the daemon down
            log.exception("internal error answering %r", line[:200])
            if not notify_only:
                conn.send(protocol.error(request_id, protocol.INTERNAL_ERROR,
                                         f"internal error: {exc} (see the daemon's log)"))
            return
        if not notify_only:
            conn.send(protocol.result(request_id, value))
