"""``python -m openscan_pi.web --socket S --data-dir D --listen HOST:PORT``: the web page.

Started by the daemon (``web.enabled``); the password comes in ``$OPENSCAN_PI_WEB_PASSWORD``
(never on the command line, where ``ps`` shows it). The first line on standard output says
``listening on http://HOST:PORT/`` once it listens, or ``error: ...`` and the fix; it serves
until its standard input (a pipe from the daemon) reaches end of file, or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from openscan_pi.schema import parse_listen

log = logging.getLogger("openscan_pi.web")

#: How long open pages (event streams) get to finish when it stops.
SHUTDOWN_S = 1.0


def say(line: str) -> None:
    """The one line the daemon reads."""
    print(line, flush=True)


async def serve(socket_path: Path, data_dir: Path, listen: str, password: str | None, *,
                until_stdin_closes: bool) -> int:
    """Serve until told to stop; the exit status."""
    from aiohttp import web

    from openscan_pi.web.app import make_app

    host, port = parse_listen(listen)
    app, link = make_app(socket_path, data_dir, password)
    follow = asyncio.create_task(link.follow())
    # aiohttp 3.9 moved the shutdown timeout from the site to the runner (Debian 12 has 3.8.4).
    modern = "shutdown_timeout" in inspect.signature(web.BaseRunner.__init__).parameters
    timeout: dict[str, Any] = {"shutdown_timeout": SHUTDOWN_S}
    runner = web.AppRunner(app, access_log=None, **(timeout if modern else {}))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, **({} if modern else timeout)).start()
    except OSError as exc:
        say(f"error: cannot listen on {listen}: {exc.strerror or exc}: choose another web.listen "
            "(is another program on that port?)")
        follow.cancel()
        await runner.cleanup()
        return 1
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    say(f"listening on http://{shown}:{bound[1]}/")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if until_stdin_closes:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def eof() -> None:
            while await reader.read(4096):
                pass
            stop.set()

        watcher = asyncio.create_task(eof())
    await stop.wait()
    follow.cancel()
    if until_stdin_closes:
        watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follow
    await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    """The web process."""
    parser = argparse.ArgumentParser(prog="python -m openscan_pi.web", description=__doc__)
    parser.add_argument("--socket", required=True, type=Path, help="the daemon's socket")
    parser.add_argument("--data-dir", required=True, type=Path, help="daemon.data_dir")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT")
    parser.add_argument("--until-stdin-closes", action="store_true",
                        help="serve until standard input reaches end of file")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="openscan-pi web: %(message)s")
    password = os.environ.pop("OPENSCAN_PI_WEB_PASSWORD", None) or None
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        say("error: the web page needs aiohttp: `sudo apt install python3-aiohttp` (or `pip "
            "install 'openscan-pi[web]'`), or set web.enabled: false")
        return 1
    try:
        return asyncio.run(serve(args.socket, args.data_dir, args.listen, password,
                                 until_stdin_closes=args.until_stdin_closes))
    except ValueError as exc:
        say(f"error: web.listen: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
