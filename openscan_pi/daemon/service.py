"""``openscan-pi daemon``: bind the socket, start the :class:`Scheduler`, serve until SIGTERM/SIGINT.

On a stop signal every job stops at its next safe point (a move within one step) and stays in
its state; the rig's drivers are disabled; the next start continues every job. SIGHUP reloads the
config when the daemon is idle (an invalid config, or a running job, is refused with a log line
and the old config kept). Under systemd: READY, STATUS, WATCHDOG (fed from this event loop, so a
hung loop starves it), STOPPING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import sys
import threading
from collections.abc import Callable

from openscan_pi.config import Config
from openscan_pi.daemon import protocol
from openscan_pi.daemon.memory import limit_arenas
from openscan_pi.daemon.methods import make_methods
from openscan_pi.daemon.scheduler import Scheduler
from openscan_pi.daemon.server import RpcServer, bind_socket, systemd_socket
from openscan_pi.daemon.systemd import Notifier, status_line
from openscan_pi.daemon.webpage import WebPage
from openscan_pi.errors import UserError
from openscan_pi.jobs.events import StatusChanged

log = logging.getLogger(__name__)

#: How long another thread may hold the GIL before the event loop gets it (Python's default: 5 ms).
SWITCH_INTERVAL_S = 0.0005
#: How long a stop may take before the remaining threads are left behind (systemd allows more).
STOP_TIMEOUT_S = 4.0
#: The soft descriptor limit is raised to the hard one, but not past this.
MAX_NOFILE = 65536


def raise_fd_limit(most: int = MAX_NOFILE) -> None:
    """Raise the soft descriptor limit to the hard one (at most ``most``): the default soft limit
    (1024) is the one a flood of connections would hit first. Where it cannot be raised (a
    seccomp filter, a container), the daemon lives with it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = most if hard == resource.RLIM_INFINITY else min(hard, most)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.debug("cannot raise the descriptor limit from %d: %s", soft, exc)


class Service:
    """The daemon process: socket, :class:`Scheduler`, signals, systemd notifications.

    ``load`` re-reads the configuration (SIGHUP). ``signals=False`` lets a test run the service
    in a thread (signal handlers belong to the main thread).
    """

    def __init__(self, cfg: Config, load: Callable[[], Config] | None = None, *,
                 signals: bool = True, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.load = load
        self.signals = signals
        self.notifier = notifier or Notifier()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: RpcServer | None = None
        self.scheduler: Scheduler | None = None
        self.web: WebPage | None = None  #: the web page's process, with web.enabled
        self._web_task: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None
        self.ready = threading.Event()  #: set once the socket answers

    def request_stop(self) -> None:
        """Stop as SIGTERM does (thread-safe)."""
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)

    def _tell(self, event: StatusChanged) -> None:
        """On the loop: a new status to the socket's subscribers, and a STATUS= line to systemd."""
        self.notifier.status(status_line(event.status))
        if self.server is not None:
            self.server.broadcast(protocol.notification("status", event.status))

    async def run(self) -> int:
        """Serve until stopped; returns the exit status."""
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # The rig and transfer threads hold the GIL for up to the switch interval (5 ms by
        # default) before the event loop may answer a client; a shorter one keeps answers prompt.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        raise_fd_limit()
        handed = systemd_socket()
        path = self.cfg.socket_path
        sock: socket.socket = handed or bind_socket(path, self.cfg.daemon.socket_group)
        scheduler = self.scheduler = Scheduler(self.cfg,
                                               on_slow_start=self.notifier.extend_timeout)
        scheduler.events.subscribe(StatusChanged, self._tell, loop=self.loop)
        watchdog: asyncio.Task | None = None
        try:
            await self.loop.run_in_executor(None, scheduler.start)
            self.server = RpcServer(make_methods(scheduler), max_clients=self.cfg.daemon.max_clients,
                                    max_queued_bytes=self.cfg.daemon.max_queued_bytes)
            await self.server.start(sock)
            if self.signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    self.loop.add_signal_handler(signum, self._stop.set)
                self.loop.add_signal_handler(signal.SIGHUP, self._reload)
            where = sock.getsockname() if handed else path
            log.info("openscan-pi daemon listening on %s (rig %s, cloud %s, data %s)", where,
                     self.cfg.rig.model, self.cfg.cloud.url, self.cfg.data_dir)
            self.notifier.ready(status_line(scheduler.status()))
            self._start_web()  # a client of the socket: started once it answers
            interval = self.notifier.watchdog_interval()
            if interval:
                watchdog = asyncio.create_task(self._feed_watchdog(interval))
            self.ready.set()
            await self._stop.wait()
            log.info("stopping: every job continues at the next start")
            self.notifier.stopping()
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await self._stop_web()
            if self.server is not None:
                await self.server.close()
            await self.loop.run_in_executor(None, scheduler.stop, STOP_TIMEOUT_S)
            sock.close()
            if handed is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return 0

    async def _feed_watchdog(self, interval: float) -> None:
        """WATCHDOG=1 every ``interval`` from this loop; a dead worker thread, or a rig wedged
        past its bound (a camera call that does not return), starves it too (said once)."""
        assert self.scheduler is not None
        starving = False
        while True:
            why = self.scheduler.unhealthy()
            if why is None:
                self.notifier.watchdog()
            elif not starving:
                log.error("%s: no more watchdog pings, systemd restarts us", why)
            starving = why is not None
            await asyncio.sleep(interval)

    def _start_web(self) -> None:
        """The web page's process, when ``web.enabled``."""
        if self.cfg.web.enabled:
            self.web = WebPage(self.cfg)
            self._web_task = asyncio.create_task(self.web.run())

    async def _stop_web(self) -> None:
        if self.web is not None:
            await self.web.stop()
        if self._web_task is not None:
            self._web_task.cancel()
        self.web = self._web_task = None

    def _reload(self) -> None:
        """SIGHUP: read the config again and take it when idle."""
        assert self.loop is not None
        self.loop.create_task(self._reload_now())

    async def _reload_now(self) -> None:
        assert self.scheduler is not None and self.loop is not None
        source = self.cfg.source or "the built-in defaults"
        try:
            if self.load is None:
                raise UserError("this daemon was started without a way to reload")
            cfg = await self.loop.run_in_executor(None, self.load)
            await asyncio.wrap_future(self.scheduler.reload(cfg))
        except UserError as exc:
            log.error("config reload refused, keeping the old config: %s", exc)
        except Exception as exc:
            log.error("config reload failed, keeping the old config: %s", exc)
        else:
            web_changed = cfg.web != self.cfg.web
            self.cfg = cfg
            if self.server is not None:
                self.server.max_clients = cfg.daemon.max_clients
                self.server.max_queued_bytes = cfg.daemon.max_queued_bytes
            web_said = ""
            if web_changed:  # where it listens, its password, on or off: a new process
                await self._stop_web()
                self._start_web()
                web_said = ("; the web page starts again with its new keys" if cfg.web.enabled
                            else "; the web page is off")
            log.info("config reloaded from %s%s", cfg.source or source, web_said)
        self._tell(StatusChanged(self.scheduler.status()))


def run(cfg: Config, load: Callable[[], Config] | None = None) -> int:
    """The ``daemon`` command."""
    limit_arenas()  # before the first thread starts
    return asyncio.run(Service(cfg, load).run())
