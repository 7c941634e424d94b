"""The bounds of one call to the cloud, enforced from outside: a deadline, a stop event and a
stall rule (:class:`CallScope`, entered with :func:`call_scope`).

A read timeout restarts at every byte, so a server that trickles its answer keeps a plain call
waiting for ever, and a thread blocked in ``recv`` never looks at a stop event. The sockets of a
call are registered with its scope (:mod:`openscan_pi.cloud.http` does that for its sessions),
and one watcher thread shuts them down when the deadline passes, the stop event is set, or the
transfer stalls (fewer than ``min_bytes`` moved in ``window_s``, counting only what the peer
acknowledged; while the whole request is delivered and the answer awaited, the peer's thinking
is not a stall until data comes in again). The blocked call then ends at once with
:class:`CallAborted`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import socket
import struct
import termios
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from openscan_pi.cloud.errors import Cancelled, Unreachable
from openscan_pi.errors import UserError

log = logging.getLogger(__name__)

#: How often the watcher looks at stop events, deadlines and progress.
TICK_S = 0.05
STOPPED, DEADLINE, STALLED = "stopped", "deadline", "stalled"
_OUTQ = getattr(termios, "TIOCOUTQ", None)  # Linux: bytes the peer has not acknowledged yet
_TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux: struct tcp_info
_TCP_INFO_SIZE = 104
#: Offset of ``tcpi_last_data_recv`` (ms since data was last received) in struct tcp_info.
_LAST_DATA_RECV = 52
#: How much more recent than the wait's start the last data received must be to count as heard.
_HEARD_MARGIN_MS = 50.0


class CallAborted(Exception):
    """A call ended from outside (``reason``: stopped, deadline, stalled). Not an OSError, so
    that urllib3 does not retry it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallScope:
    """One call's bounds and sockets. ``deadline_s``: the whole call; ``stop``: ends it at once
    when set; ``stall``: ``(min_bytes, window_s)``, progress told with :meth:`moved`."""

    def __init__(self, *, deadline_s: float | None = None, stop: threading.Event | None = None,
                 stall: tuple[int, float] | None = None) -> None:
        now = time.monotonic()
        self.limit_s = deadline_s
        self.deadline = now + deadline_s if deadline_s is not None else None
        self.stop = stop
        self.stall = stall
        self.reason: str | None = None
        self._sent = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._samples: deque[tuple[float, int]] = deque([(now, 0)])
        #: the request is sent and the answer not begun: the stall rule waits (the read timeout
        #: bounds the server's thinking) once the peer has every byte
        self._awaiting = False
        self._awaiting_since = now

    def moved(self, nbytes: int) -> None:
        """``nbytes`` more were handed to the socket or read from it (the stall rule's count)."""
        self._sent += nbytes

    def awaiting(self, waiting: bool) -> None:
        """The request is sent and its answer awaited (True), or the answer has begun (False).
        While the peer has every byte sent and says nothing, nothing is owed by this side: the
        stall rule does not count that time (``cloud.read_timeout_s`` and the call's deadline
        bound it); it counts again from when the answer begins."""
        with self._lock:
            self._awaiting = waiting
            self._awaiting_since = time.monotonic()
            self._samples.clear()
            self._samples.append((time.monotonic(), self._progress_locked()))

    def add(self, sock: socket.socket | None) -> None:
        """Watch ``sock`` for the rest of the call (shut down at once if already aborted)."""
        if sock is None:
            return
        with self._lock:
            if self._closed:
                return
            if sock not in self._socks:
                self._socks.append(sock)
            if self.reason:
                _shut(sock)

    def send_bound(self, data: Any) -> float | None:
        """How long one send of ``data`` may block: as long as the stall rule allows for that many
        bytes (``window * bytes / min_bytes``, at least the window); None without a stall rule.

        urllib3 (1.26 and 2.x) sends a request's body while the socket still has the *connect*
        timeout (the read timeout starts after the body), so a slow link would cut a part that is
        moving well within the stall rule after ``cloud.connect_timeout_s``."""
        if self.stall is None:
            return None
        least, window = self.stall
        size = getattr(data, "nbytes", None)
        if size is None:
            try:
                size = len(data)
            except TypeError:  # a file: http.client sends it a block at a time
                size = 8192
        return window * max(1.0, size / max(1, least))

    def check(self) -> None:
        """Raise :class:`CallAborted` when the call must end (checked before each step)."""
        if self.reason is None:
            if self.stop is not None and self.stop.is_set():
                self.abort(STOPPED)
            elif self.deadline is not None and time.monotonic() >= self.deadline:
                self.abort(DEADLINE)
        if self.reason:
            raise CallAborted(self.reason)

    def sleep(self, seconds: float) -> None:
        """Sleep, waking at once on the stop event; never past the deadline."""
        end = time.monotonic() + seconds
        while True:
            self.check()
            now = time.monotonic()
            if now >= end:
                return
            wait = end - now
            if self.deadline is not None:
                wait = min(wait, max(0.0, self.deadline - now))
            if self.stop is not None:
                self.stop.wait(wait)
            else:
                time.sleep(wait)

    def abort(self, reason: str) -> None:
        """End the call: shut its sockets down (a blocked read or write fails at once)."""
        with self._lock:
            if self._closed or self.reason:
                return
            self.reason = reason
            for sock in self._socks:
                _shut(sock)

    def close(self) -> None:
        """The call is over: its sockets (maybe back in a pool) are no longer touched."""
        with self._lock:
            self._closed = True
            self._socks.clear()

    def _progress(self) -> int:
        """Bytes moved so far: sent bytes the peer has not acknowledged yet do not count."""
        with self._lock:
            return self._progress_locked()

    def _queued_locked(self) -> int:
        """Bytes sent that the peer has not acknowledged yet (0 where that cannot be told)."""
        queued = 0
        if _OUTQ is not None:
            for sock in list(self._socks):
                with contextlib.suppress(OSError, ValueError):
                    fd = sock.fileno()
                    if fd >= 0:
                        queued += struct.unpack("i", fcntl.ioctl(fd, _OUTQ, b"\0" * 4))[0]
        return queued

    def _heard_since(self, since: float, now: float) -> bool:
        """True when a socket of the call received data after ``since`` (the kernel's time
        since the last data received, ``TCP_INFO``); also where that cannot be told (then the
        stall rule never waits for a thinking peer)."""
        if _TCP_INFO is None:
            return True
        told = False
        for sock in list(self._socks):
            try:  # a socket of the call closed meanwhile (a stale pooled one) tells nothing
                if sock.fileno() < 0:
                    continue
                info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
            except (OSError, ValueError):
                continue
            if len(info) < _LAST_DATA_RECV + 4:
                continue
            told = True
            (quiet_ms,) = struct.unpack_from("I", info, _LAST_DATA_RECV)
            # The kernel's clock ticks in jiffies, and a connection that has received nothing
            # yet counts from its opening, which may be just before ``since``: a margin.
            if quiet_ms + _HEARD_MARGIN_MS < (now - since) * 1000.0:
                return True
        return not told

    def _progress_locked(self) -> int:
        return self._sent - self._queued_locked()

    def _watch(self, now: float) -> None:
        if self.reason or self._closed:
            return
        if self.stop is not None and self.stop.is_set():
            self.abort(STOPPED)
        elif self.deadline is not None and now >= self.deadline:
            self.abort(DEADLINE)
        elif self.stall is not None:
            least, window = self.stall
            with self._lock:
                queued = self._queued_locked()
                moved = self._sent - queued
                if self._awaiting and queued == 0:  # all delivered: the peer's turn
                    if not self._heard_since(self._awaiting_since, now):
                        self._samples.clear()
                        self._samples.append((now, moved))
                        return
                    self._awaiting = False  # the answer began: judged from here on
                    self._samples.clear()
                    self._samples.append((now, moved))
            samples = self._samples
            if now - samples[-1][0] >= window / 20:
                samples.append((now, moved))
            while len(samples) > 1 and now - samples[1][0] >= window:
                samples.popleft()
            began, moved_then = samples[0]
            if now - began >= window and moved - moved_then < least:
                self.abort(STALLED)

    def why(self) -> str:
        """Why the call was ended, in a few words."""
        if self.reason == STALLED and self.stall is not None:
            least, window = self.stall
            return (f"stalled: less than {least} bytes moved in {window:g} s "
                    "(cloud.stall_min_bytes, cloud.stall_window_s)")
        if self.reason == STOPPED:
            return "stopped"
        return f"no complete answer within {self.limit_s or 0:g} s (cloud.call_timeout_s)"

    def error(self, where: str) -> UserError:
        """The error to raise for a call to ``where`` that this scope ended."""
        if self.reason == STOPPED:
            return Cancelled(f"stopped while talking to {where}")
        if self.reason == STALLED:
            return Unreachable(f"the transfer with {where} {self.why()}")
        return Unreachable(f"{where} gave {self.why()}: the network or the cloud is too slow")


def _shut(sock: socket.socket) -> None:
    # socket.socket's own shutdown, also on an SSLSocket (whose shutdown drops its SSL object
    # under a thread that may be reading); EBADF when the call closed it meanwhile.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watcher:
    """The one thread that ends calls whose deadline passed, whose stop event is set or whose
    transfer stalled; it sleeps without a timeout while no call runs."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._scopes: set[CallScope] = set()
        self._thread: threading.Thread | None = None

    def add(self, scope: CallScope) -> None:
        with self._cond:
            self._scopes.add(scope)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="call-watcher", daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, scope: CallScope) -> None:
        with self._cond:
            self._scopes.discard(scope)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._scopes:
                    self._cond.wait()
                scopes = list(self._scopes)
            now = time.monotonic()
            for scope in scopes:
                try:
                    scope._watch(now)
                except Exception:  # the watcher must outlive any one call
                    log.exception("watching a call failed")
            with self._cond:
                self._cond.wait(TICK_S)


_watcher = _Watcher()
_local = threading.local()


def current() -> CallScope | None:
    """The scope of the call this thread is making, if any."""
    return getattr(_local, "scope", None)


@contextlib.contextmanager
def call_scope(*, deadline_s: float | None = None, stop: threading.Event | None = None,
               stall: tuple[int, float] | None = None) -> Iterator[CallScope]:
    """Run the calls of the block (made with a :func:`make_session` session) within these bounds."""
    scope = CallScope(deadline_s=deadline_s, stop=stop, stall=stall)
    outer = current()
    _local.scope = scope
    _watcher.add(scope)
    try:
        yield scope
    finally:
        scope.close()
        _watcher.remove(scope)
        _local.scope = outer
