"""Handler of ``preview``: what the camera sees now, in a file, with the focus figure and the
exposure on one line; ``--watch`` refreshes both about twice a second until Ctrl-C.

When a daemon listens it owns the camera and the preview comes through it (the socket's
``preview``); with none, the rig is opened in this process, as ``capture`` does. The file is
always replaced whole (temp file and rename), so a viewer never reads half a JPEG.
"""

from __future__ import annotations

import argparse
import base64
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from openscan_pi.commands.common import emit_json
from openscan_pi.commands.daemon import daemon_for
from openscan_pi.config import Config
from openscan_pi.daemon.client import DaemonError
from openscan_pi.errors import InputError
from openscan_pi.fsutil import atomic_write_bytes

#: How long the daemon may take to answer, beyond the camera's own bound (the rig worker's start,
#: its margin, a busy machine).
ANSWER_S = 30.0
#: Seconds between the starts of two previews with ``--watch``.
WATCH_INTERVAL_S = 0.5
#: The start of the refusal of a rig call while the rig does another short hand-driven task (a
#: `move` from another terminal): ``--watch`` skips that refresh rather than ending.
BUSY_WITH_A_TASK = "the rig is busy ("


def line(shot: dict[str, Any], path: Path) -> str:
    """The figures of one preview, on one line."""
    exposure = ("exposure unknown (the camera does not report it)" if shot["exposure_us"] is None
                else f"exposure {shot['exposure_us'] / 1000:.2f} ms")
    gain = "" if shot["gain"] is None else f"  gain {shot['gain']:.2f}"
    lens = ("" if shot["lens_position"] is None
            else f"  lens {shot['lens_position']:.2f} dioptres")
    return (f"focus {shot['focus']:10.1f}  {exposure}{gain}{lens}  "
            f"({shot['width']}x{shot['height']} in {path})")


def preview(args: argparse.Namespace, cfg: Config) -> int:
    """``preview [--out FILE] [--watch] [--json] [--lens-position D]``."""
    path = Path(args.out or "preview.jpg").expanduser().resolve()
    if path.is_dir():
        raise InputError(f"{path} is a folder: give a file name, e.g. --out {path / 'preview.jpg'}")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent} does not exist: create it, or give another --out")
    if args.lens_position is not None and not 0.0 <= args.lens_position <= 100.0:
        raise InputError("--lens-position must be a number of dioptres from 0 to 100")
    with _source(args, cfg) as take:
        if not args.watch:
            _show(args, path, take(), tty=False)
            return 0
        return _watch(args, path, take)


@contextmanager
def _source(args: argparse.Namespace, cfg: Config) -> Iterator[Callable[[], dict[str, Any]]]:
    """A function that takes one preview: through the daemon, or from the rig opened here."""
    params = {} if args.lens_position is None else {"lens_position": args.lens_position}
    client = daemon_for(args, cfg)
    if client is not None:
        with client:
            # A stalled camera is told after the preview's bound (its tries, each camera.timeout_s):
            # waited for, so the user reads why rather than "did not answer in time".
            cam = cfg.camera
            client.sock.settimeout(ANSWER_S + cam.timeout_s * (cam.retries + 1) + cam.settle_s)
            yield lambda: client.call("preview", params)
        return
    from openscan_pi.rig.rig import Rig

    with Rig(cfg) as rig:
        yield lambda: rig.preview(lens_position=args.lens_position).public()


def _show(args: argparse.Namespace, path: Path, shot: dict[str, Any], *, tty: bool) -> None:
    """Write the JPEG (whole, atomically), then say its figures."""
    atomic_write_bytes(path, base64.b64decode(shot.pop("jpeg")))
    if args.json:
        emit_json({"path": str(path), **shot})
    elif tty:
        sys.stdout.write(f"\r\x1b[K{line(shot, path)}")
        sys.stdout.flush()
    else:
        print(line(shot, path), flush=True)


def _watch(args: argparse.Namespace, path: Path, take: Callable[[], dict[str, Any]]) -> int:
    """Refresh about twice a second until Ctrl-C (or SIGTERM): exit 0. The first Ctrl-C lets the
    preview under way finish and its file be written whole; a second one stops at once."""
    stop = threading.Event()
    tty = sys.stdout.isatty() and not args.json
    with _stopped_by_signals(stop):
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    shot = take()
                except DaemonError as exc:
                    if not str(exc).startswith(BUSY_WITH_A_TASK):
                        raise
                    shot = None  # another command's short task: the next refresh comes after it
                if shot is not None:
                    _show(args, path, shot, tty=tty)
                stop.wait(max(0.0, WATCH_INTERVAL_S - (time.monotonic() - began)))
        except KeyboardInterrupt:  # the second Ctrl-C
            pass
        finally:
            if tty:
                print(flush=True)
    return 0


@contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop``; a second SIGINT raises KeyboardInterrupt as usual."""

    def first(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    old = {sig: signal.signal(sig, first) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
