"""The camera's preview for every open page: one stream of the daemon's ``preview``, shared.

While at least one page has asked for a frame in the last :data:`WANTED_S`, frames are taken a
few times a second (one call at a time; the daemon shares a preview among callers anyway); when
no page looks, none are taken. While the rig scans, the daemon refuses previews: none are asked
for, and the pages are told why.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any

from openscan_pi.web.link import DaemonCallError, DaemonLink

#: A page that asked within this long is still watching.
WANTED_S = 3.0
#: The least time between two previews (a few a second).
INTERVAL_S = 0.25
#: The longest a preview may take (the daemon bounds a stalled camera itself).
CALL_TIMEOUT_S = 60.0


@dataclass
class Frame:
    """One preview: the JPEG and what the daemon said about it."""

    seq: int
    jpeg: bytes
    meta: dict[str, Any] = field(default_factory=dict)


class PreviewHub:
    """Previews taken for as long as pages want them."""

    def __init__(self, link: DaemonLink) -> None:
        self.link = link
        self.frame: Frame | None = None
        self.seq = 0
        self.problem: str | None = None  #: why there is no new frame (the rig scans, ...)
        self._wanted_until = 0.0
        self._cond = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def next_frame(self, after: int, timeout: float = 10.0) -> Frame | str | None:
        """A frame newer than ``after``, or why there is none (a string), or None by
        ``timeout``."""
        self._wanted_until = time.monotonic() + WANTED_S
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        async with self._cond:
            def ready() -> bool:
                return self.seq > after or self.problem is not None

            try:
                await asyncio.wait_for(self._cond.wait_for(ready), timeout)
            except TimeoutError:
                return None
            if self.frame is not None and self.frame.seq > after:
                return self.frame
            return self.problem

    async def _tell(self, frame: Frame | None, problem: str | None) -> None:
        async with self._cond:
            if frame is not None:
                self.frame, self.seq = frame, frame.seq
            self.problem = problem
            self._cond.notify_all()

    def _rig_busy(self) -> str | None:
        status = self.link.status
        if status is None:
            return "the daemon is not running"
        job = (status.get("rig") or {}).get("job")
        return f"the rig is scanning job {job}" if job else None

    async def _run(self) -> None:
        seen = self.link.version
        while time.monotonic() < self._wanted_until:
            started = time.monotonic()
            busy = self._rig_busy()
            if busy:
                await self._tell(None, busy)
                seen = await self.link.changed(seen, timeout=WANTED_S)
                continue
            try:
                answer = await self.link.call("preview", timeout=CALL_TIMEOUT_S)
                frame = Frame(self.seq + 1, base64.b64decode(answer["jpeg"]),
                              {k: v for k, v in answer.items() if k != "jpeg"})
            except (DaemonCallError, KeyError, TypeError, ValueError) as exc:
                await self._tell(None, getattr(exc, "message", None) or f"no preview: {exc}")
                await asyncio.sleep(1.0)  # the daemon said no: ask again in a while, not at once
                continue
            await self._tell(frame, None)
            await asyncio.sleep(max(0.0, INTERVAL_S - (time.monotonic() - started)))
