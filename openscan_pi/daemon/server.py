"""The Unix-socket JSON-RPC server: asyncio, one reader and one bounded writer per connection.

Bad input never hurts: every request that cannot be read gets its error object and the connection
goes on; a line over 64 KiB gets an error and the connection is closed. A client that does not
read what it is sent (a stuck ``subscribe``) is dropped when its queue fills (``QUEUE_LIMIT``
lines, or ``daemon.max_queued_bytes`` bytes; a line of any size is still taken below that, so a
photo larger than it reaches a client that reads), so it never stalls anyone else and never holds
much more than that in memory. The socket is 0660 in a 0750 folder, with the configured group; a
socket file left by a crash is replaced only when nothing answers on it.

A flood of connections cannot take the descriptors the jobs need: at most ``daemon.max_clients``
connections are served at once, fewer when the descriptor limit leaves less room after
``FD_RESERVE`` kept for the jobs; one more gets a "too many clients" error and is closed. When
accepting fails for want of descriptors or memory (EMFILE, ENFILE, ...) the server waits a moment
and tries again, and says so in the log at most once every ``LOG_EVERY_S`` seconds, with a count.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import resource
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openscan_pi.daemon import protocol
from openscan_pi.daemon.protocol import MAX_LINE, RpcError
from openscan_pi.errors import ConfigError, UserError
from openscan_pi.schema import MAX_SOCKET_PATH

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
BACKLOG = 256
#: Descriptors never given to clients: the jobs' files, transfers, the local cloud, the journal.
FD_RESERVE = 100
#: After accept failed for want of descriptors or memory: how long until the next try.
ACCEPT_PAUSE_S = 0.5
#: A condition that may repeat (a flood, a full descriptor table) is logged at most this often.
LOG_EVERY_S = 30.0
#: accept() errors that mean "out of descriptors or memory": wait, then try again.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors of one connection that went away before it was taken: next one.
_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN, errno.EPERM})


class Throttled:
    """A warning that may repeat, logged at most once every ``every`` seconds with how many times
    it happened since the last one said so."""

    def __init__(self, every: float = LOG_EVERY_S) -> None:
        self.every = every
        self.count = 0
        self._logged_at: float | None = None

    def warn(self, message: str, *args: object) -> None:
        """Count one occurrence; log it (with the count) unless one was logged recently."""
        self.count += 1
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < self.every:
            return
        times = "" if self.count == 1 else f" ({self.count} times since this was last logged)"
        log.warning(message + "%s", *args, times)
        self._logged_at, self.count = now, 0


def open_fds() -> int | None:
    """Descriptors this process has open (None where /proc cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir used
    except OSError:
        return None


def client_room() -> int | None:
    """How many clients the descriptor limit leaves room for, after what is open now and
    :data:`FD_RESERVE` (None: no limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft - (open_fds() or 64) - FD_RESERVE)


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
        raise ConfigError(f"daemon.socket: {path} is longer than {MAX_SOCKET_PATH} bytes, the limit of "
                          "a Unix socket path: choose a shorter one")
    gid = grp.getgrnam(group).gr_gid if group else -1
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise ConfigError(f"daemon.socket: cannot create the folder {folder}: {exc.strerror or exc} "
                          "(choose a folder this user may create)") from None
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
    """Serves ``methods`` on a listening Unix socket to at most ``max_clients`` clients at once;
    :meth:`broadcast` reaches subscribers."""

    def __init__(self, methods: dict[str, Handler], *, max_clients: int = 256,
                 max_queued_bytes: int = QUEUE_BYTES) -> None:
        self.methods = methods
        self.max_clients = max_clients
        self.max_queued_bytes = max_queued_bytes
        self.connections: set[Connection] = set()
        self._room: int | None = None
        self._accepting: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()  # one per client, from accept to the end
        self._taking = 0  # accepted, not yet among the connections
        self._exhausted = Throttled()
        self._refused = Throttled()

    @property
    def client_limit(self) -> int:
        """Clients served at once: :attr:`max_clients`, or fewer when descriptors are short."""
        return self.max_clients if self._room is None else min(self.max_clients, self._room)

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (already listening)."""
        self._room = client_room()
        if self.client_limit < self.max_clients:
            log.warning("the descriptor limit leaves room for %d clients at once, not "
                        "daemon.max_clients (%d): raise LimitNOFILE= (or ulimit -n)",
                        self.client_limit, self.max_clients)
        sock.setblocking(False)
        self._accepting = asyncio.create_task(self._accept(sock))

    async def close(self) -> None:
        """Stop accepting, close every connection."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        for conn in list(self.connections):
            conn.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)

    async def _accept(self, sock: socket.socket) -> None:
        """Take connections until cancelled; never more than :attr:`client_limit` served."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._exhausted.warn("cannot take new connections: %s; trying again every "
                                         "%g s (the jobs keep their descriptors)",
                                         exc.strerror or exc, ACCEPT_PAUSE_S)
                    await asyncio.sleep(ACCEPT_PAUSE_S)  # until clients or files are closed
                elif exc.errno not in _GONE:
                    self._exhausted.warn("cannot take new connections: %s", exc.strerror or exc)
                    await asyncio.sleep(ACCEPT_PAUSE_S)
                continue
            if self.clients >= self.client_limit:
                self._refuse(client)
            else:
                self._taking += 1
                task = asyncio.create_task(self._take(client))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(0)  # a flood of connections must not keep the loop from the rest

    def _refuse(self, client: socket.socket) -> None:
        """Tell one client too many are served, and close it (never waiting on it)."""
        peer = peer_of(client)
        self._refused.warn("too many clients (%d at once, daemon.max_clients): refused %s",
                           self.clients, peer)
        with contextlib.suppress(OSError):
            client.setblocking(False)
            client.send(protocol.error(None, protocol.REFUSED,
                                       f"too many clients: the daemon serves {self.clients} "
                                       "connections already; try again later"))
            client.shutdown(socket.SHUT_WR)
        client.close()

    @property
    def clients(self) -> int:
        """Connections served now (a closed one stops counting as soon as it is seen closed)."""
        return len(self.connections) + self._taking

    async def _take(self, client: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=client, limit=MAX_LINE)
        except OSError:
            client.close()
            return
        finally:
            self._taking -= 1
        await self._serve(reader, writer)  # among the connections from its first step

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
