"""The web process's link to the daemon: the live status from ``subscribe``, and calls.

One subscription serves every open page (a page costs the daemon nothing more); each call is a
connection of its own, so a slow method (``cancel`` waits until the job has stopped) never holds
up the status. A lost daemon (restarted, stopped) is connected to again, and the pages are told
meanwhile (``status`` is None).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from pathlib import Path
from typing import Any

from openscan_pi.daemon.protocol import request

log = logging.getLogger(__name__)

#: The longest line read from the daemon (a preview's JPEG in base64 is tens of kB).
LINE_LIMIT = 32 * 1024 * 1024
#: Waits before connecting again after the daemon went away: growing up to this.
RECONNECT_MAX_S = 2.0


class DaemonCallError(Exception):
    """The daemon refused or failed a call; ``message`` is its one line."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class DaemonLink:
    """The daemon on ``socket_path``, seen from the web process.

    Example::

        link = DaemonLink(Path("/run/openscan-pi/openscan-pi.sock"))
        task = asyncio.create_task(link.follow())
        await link.changed(0)          # the first status
        job = await link.call("scan", {"positions": 60})
    """

    def __init__(self, socket_path: Path, *, call_timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.call_timeout = call_timeout
        self.status: dict[str, Any] | None = None
        self.version = 0  #: counts the statuses received (and losses of the daemon)
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._event = (-1, b"")  # (version, the status as a server-sent event)

    async def _publish(self, status: dict[str, Any] | None) -> None:
        async with self._changed:
            self.status = status
            self.version += 1
            self._changed.notify_all()

    def event(self) -> bytes:
        """The status now as one server-sent event (``data: JSON``), encoded once for every
        page that sends it."""
        if self._event[0] != self.version:
            data = json.dumps(self.status, separators=(",", ":"))
            self._event = (self.version, f"data: {data}\n\n".encode())
        return self._event[1]

    async def changed(self, seen: int, timeout: float | None = None) -> int:
        """Wait until the status is newer than version ``seen`` (or ``timeout``); the version."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.version > seen), timeout)
            return self.version

    async def follow(self) -> None:
        """Keep the status current, for ever (cancel the task to stop)."""
        wait = 0.1
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path),
                                                                    limit=LINE_LIMIT)
            except OSError as exc:
                if self.status is not None:
                    log.warning("lost the daemon on %s: %s", self.socket_path, exc)
                    await self._publish(None)
                await asyncio.sleep(wait)
                wait = min(wait * 2, RECONNECT_MAX_S)
                continue
            try:
                writer.write(request(0, "subscribe"))
                await writer.drain()
                while line := await reader.readline():
                    message = json.loads(line)
                    if message.get("id") == 0 and "result" in message:
                        await self._publish(message["result"])
                        wait = 0.1
                    elif message.get("method") == "status":
                        await self._publish(message.get("params"))
                    elif "error" in message:
                        log.warning("the daemon refused the subscription: %s",
                                    message["error"].get("message"))
                        break
            except (OSError, ValueError) as exc:
                log.warning("lost the daemon on %s: %s", self.socket_path, exc)
            finally:
                writer.close()
            await self._publish(None)
            await asyncio.sleep(wait)
            wait = min(wait * 2, RECONNECT_MAX_S)

    async def call(self, method: str, params: dict[str, Any] | None = None,
                   timeout: float | None = None) -> Any:
        """One request on a connection of its own; its result, or :class:`DaemonCallError`."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path),
                                                                limit=LINE_LIMIT)
        except OSError as exc:
            raise DaemonCallError(f"the daemon is not running ({exc.strerror or exc}): start it "
                                  "with `sudo systemctl start openscan-pi`", -1) from None
        request_id = next(self._ids)
        try:
            writer.write(request(request_id, method, params))
            await writer.drain()
            async with asyncio.timeout(timeout or self.call_timeout):
                while line := await reader.readline():
                    message = json.loads(line)
                    if message.get("id") == request_id or (
                            "error" in message and message.get("id") is None):
                        break
                else:
                    raise DaemonCallError("the daemon closed the connection (stopped?)", -1)
        except TimeoutError:
            raise DaemonCallError(f"the daemon did not answer {method} in time", -1) from None
        except (OSError, ValueError) as exc:
            raise DaemonCallError(f"lost the daemon: {exc}", -1) from None
        finally:
            writer.close()
        if "error" in message:
            err = message["error"]
            raise DaemonCallError(str(err.get("message")), int(err.get("code", 0)))
        return message.get("result")
