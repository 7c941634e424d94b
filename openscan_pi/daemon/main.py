"""``openscan-pi daemon``: bind the socket, start the :class:`Daemon`, serve until SIGTERM/SIGINT.

On a stop signal every job stops at its next safe point and stays in its state; the next start
continues it. The socket file is removed on the way out (unless systemd handed it over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

from openscan_pi.config import Config
from openscan_pi.daemon import protocol
from openscan_pi.daemon.methods import make_methods
from openscan_pi.daemon.server import RpcServer, bind_socket, systemd_socket
from openscan_pi.daemon.service import Daemon

log = logging.getLogger(__name__)


async def serve(cfg: Config) -> int:
    """Run the daemon until a stop signal; returns the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handed = systemd_socket()
    path = cfg.socket_path
    sock: socket.socket = handed or bind_socket(path, cfg.daemon.socket_group)
    server: RpcServer | None = None

    def tell(status: dict) -> None:
        if server is not None:
            line = protocol.notification("status", status)
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens
                loop.call_soon_threadsafe(server.broadcast, line)

    daemon = Daemon(cfg, on_status=tell)
    try:
        await loop.run_in_executor(None, daemon.start)
        server = RpcServer(make_methods(daemon))
        await server.start(sock)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        where = sock.getsockname() if handed else path
        log.info("openscan-pi daemon listening on %s (rig %s, cloud %s, data %s)", where,
                 cfg.rig.model, cfg.cloud.url, cfg.data_dir)
        await stop.wait()
        log.info("stopping: every job continues at the next start")
    finally:
        if server is not None:
            await server.close()
        await loop.run_in_executor(None, daemon.stop)
        sock.close()
        if handed is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return 0


def run(cfg: Config) -> int:
    """The ``daemon`` command."""
    return asyncio.run(serve(cfg))
