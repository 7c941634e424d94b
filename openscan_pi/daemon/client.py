"""The client the command line uses to talk to a running daemon (light: sockets and json only)."""

from __future__ import annotations

import itertools
import json
import os
import socket
import time

from openscan_pi.daemon import protocol
from openscan_pi.errors import UserError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`status` starts quickly)
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any

    #: A socket's path: what :mod:`openscan_pi.locate` gives, or a ``pathlib.Path``.
    SocketPath = str | os.PathLike[str]

#: Exit status of ``status`` when no daemon answers (as ``systemctl status`` for a stopped unit).
EX_NOT_RUNNING = 3


class DaemonError(UserError):
    """The daemon answered with an error object."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class NotRunning(UserError):
    """No daemon answers on the socket."""

    exit_code = EX_NOT_RUNNING


def not_running(path: SocketPath) -> NotRunning:
    """The one-line error for no daemon on ``path``, with how to start one."""
    return NotRunning(f"the daemon is not running (nothing answers on {path}): start it with "
                      "`sudo systemctl start openscan-pi`, or `openscan-pi daemon`")


class DaemonClient:
    """One connection to the daemon; requests are answered in order."""

    def __init__(self, sock: socket.socket, path: SocketPath) -> None:
        self.sock = sock
        self.path = path
        self._reader = sock.makefile("rb")
        self._ids = itertools.count(1)

    @classmethod
    def connect(cls, path: SocketPath, timeout: float | None = 30.0) -> DaemonClient:
        """Connect to ``path``; :class:`NotRunning` when nothing answers there."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            sock.close()
            raise not_running(path) from None
        except BlockingIOError:  # its listen backlog is full: it is there, just busy
            if not cls._retry_connect(sock, path, timeout or 5.0):
                sock.close()
                raise NotRunning(f"the daemon on {path} is too busy to take a connection") from None
        except PermissionError:
            sock.close()
            raise UserError(f"no permission to talk to the daemon on {path}: add yourself to its "
                            "group (`sudo usermod -aG openscan $USER`, then log in again)") from None
        except OSError as exc:
            sock.close()
            raise NotRunning(f"the daemon does not answer on {path}: {exc.strerror or exc}") from None
        return cls(sock, path)

    @staticmethod
    def _retry_connect(sock: socket.socket, path: SocketPath, patience: float) -> bool:
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            time.sleep(0.01)  # the backlog drains as the daemon accepts; nothing to wait on
            try:
                sock.connect(os.fspath(path))
                return True
            except BlockingIOError:
                continue
        return False

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result; :class:`DaemonError` for an error answer."""
        request_id = next(self._ids)
        self._send(protocol.request(request_id, method, params))
        while True:
            message = self._receive()
            if message.get("id") == request_id or ("error" in message and message.get("id") is None):
                break  # notifications that arrive meanwhile are not ours to answer; an error
                # without an id is (e.g. "too many clients" before the connection is closed)
        if "error" in message:
            err = message["error"]
            raise DaemonError(str(err.get("message")), int(err.get("code", 0)))
        return message.get("result")

    def notifications(self) -> Iterator[dict[str, Any]]:
        """The notifications the daemon sends (after ``subscribe``), until it closes."""
        while True:
            message = self._receive()
            if "method" in message and "id" not in message:
                yield message

    def close(self) -> None:
        """Close the connection."""
        self._reader.close()
        self.sock.close()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, line: bytes) -> None:
        try:
            self.sock.sendall(line)
        except OSError as exc:
            raise self._farewell() or UserError(
                f"lost the daemon on {self.path}: {exc.strerror or exc}") from None

    def _farewell(self) -> DaemonError | None:
        """The error the daemon sent before it closed the connection (too many clients), if any."""
        try:
            data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            err = json.loads(data.split(b"\n", 1)[0])["error"]
            return DaemonError(str(err["message"]), int(err["code"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _receive(self) -> dict[str, Any]:
        try:
            line = self._reader.readline()
        except TimeoutError:
            raise UserError(f"the daemon on {self.path} did not answer in time") from None
        except OSError as exc:
            raise UserError(f"lost the daemon on {self.path}: {exc.strerror or exc}") from None
        if not line:
            raise UserError(f"the daemon on {self.path} closed the connection (stopped?)")
        try:
            message = json.loads(line)
        except ValueError:
            raise UserError(f"the daemon on {self.path} sent something that is not JSON") from None
        if not isinstance(message, dict):
            raise UserError(f"the daemon on {self.path} sent something unexpected")
        return message


def find_daemon(paths: Sequence[SocketPath], timeout: float | None = 30.0) -> DaemonClient | None:
    """A client connected to the first of ``paths`` a daemon answers on, or None."""
    for path in paths:
        try:
            return DaemonClient.connect(path, timeout)
        except NotRunning:
            continue
    return None
