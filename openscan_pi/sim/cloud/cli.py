"""``python -m openscan_pi.sim.cloud``: serve a local cloud until SIGTERM/SIGINT (or, with
``--until-stdin-closes``, until its standard input reaches end of file: the parent that started
it has closed the pipe, or died, even by SIGKILL)."""

from __future__ import annotations

import argparse
import io
import signal
import sys
import threading
from typing import Any

from openscan_pi.sim.cloud.cloud import LocalCloud


def main(argv: list[str] | None = None) -> int:
    """Serve a local cloud until SIGTERM/SIGINT; print ``listening on URL`` once it is up."""
    parser = argparse.ArgumentParser(
        prog="python -m openscan_pi.sim.cloud",
        description="Serve a local OpenScan Cloud (API, upload and share links) on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--store", default=None, help="state folder (default: a temporary one)")
    parser.add_argument("--processing-s", type=float, default=6.0)
    parser.add_argument("--max-part-bytes", type=int, default=200_000_000)
    parser.add_argument("--until-stdin-closes", action="store_true",
                        help="also stop when standard input reaches end of file (the parent's pipe)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    if args.until_stdin_closes:
        threading.Thread(target=_wait_for_eof, args=(stop,), name="stdin-eof", daemon=True).start()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        cloud = LocalCloud(
            args.store,
            host=args.host,
            port=args.port,
            processing_s=args.processing_s,
            max_part_bytes=args.max_part_bytes,
        )
        with cloud:
            print(f"listening on {cloud.url}", flush=True)
            while not stop.wait(0.2):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _wait_for_eof(stop: threading.Event) -> None:
    """Read standard input to its end (what is written there is ignored), then set ``stop``."""
    try:
        stdin = sys.stdin.buffer
        # A buffered reader's read1 returns what one read of the pipe gives, not waiting for 4096.
        read = stdin.read1 if isinstance(stdin, io.BufferedIOBase) else stdin.read
        while read(4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()
