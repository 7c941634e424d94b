"""The web page's process, started and supervised by the daemon when ``web.enabled``.

``python -m openscan_pi.web`` is a client of this daemon's socket (it loads aiohttp and Pillow,
which the daemon never does: the daemon's memory is a measured target). It ends with the daemon,
however the daemon ends, since it serves only until its standard input, a pipe from the daemon,
reaches end of file. One that exits is started again, after a wait that grows to a minute while
it keeps failing (a port in use, aiohttp missing: said in the log, the daemon runs on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time

from openscan_pi.config import Config

log = logging.getLogger(__name__)

#: How long it may take to say where it listens.
START_TIMEOUT_S = 30.0
#: How long it may take to stop once its pipe is closed, before it is killed.
STOP_TIMEOUT_S = 5.0
#: The longest wait before starting it again.
MAX_BACKOFF_S = 60.0


class WebPage:
    """The web process of a daemon configured by ``cfg``."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.url: str | None = None  #: where it listens, once it says
        self.proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    def command(self) -> list[str]:
        """How it is started."""
        return [sys.executable, "-m", "openscan_pi.web", "--until-stdin-closes",
                "--socket", str(self.cfg.socket_path), "--data-dir", str(self.cfg.data_dir),
                "--listen", self.cfg.web.listen]

    async def run(self) -> None:
        """Start it, and again whenever it exits, until :meth:`stop`."""
        backoff = 1.0
        while not self._stopping:
            started = time.monotonic()
            await self._once()
            if self._stopping:
                break
            if time.monotonic() - started > MAX_BACKOFF_S:
                backoff = 1.0
            log.warning("the web page's process ended: starting it again in %.0f s", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _once(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.cfg.web.password is not None:
            env["OPENSCAN_PI_WEB_PASSWORD"] = self.cfg.web.password
        self.proc = proc = await asyncio.create_subprocess_exec(
            *self.command(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=env)
        assert proc.stdout is not None
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)).decode(
                "utf-8", "replace").strip()
        except TimeoutError:
            line = f"it did not say where it listens within {START_TIMEOUT_S:.0f} s"
        if self._stopping:  # the daemon stops: nothing to say
            await proc.wait()
            return
        if line.startswith("listening on "):
            self.url = line.removeprefix("listening on ")
            log.info("web page at %s (process %d)", self.url, proc.pid)
        else:
            log.error("the web page did not start: %s", line.removeprefix("error: ") or
                      f"its process ended with status {proc.returncode}")
        code = await proc.wait()
        self.url = None
        if not self._stopping and code:
            log.debug("the web page's process %d exited with status %s", proc.pid, code)

    async def stop(self) -> None:
        """Close its pipe and wait for it to end (killed if it does not, in time)."""
        self._stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
