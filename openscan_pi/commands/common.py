"""What command handlers share."""

from __future__ import annotations

import json
import os
import select
import stat
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`status` starts quickly)
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from typing import Any


def emit_json(obj: Any) -> None:
    """Print ``obj`` as one line of JSON on stdout (``--json``)."""
    print(json.dumps(obj, sort_keys=True), flush=True)


def on_stdout_closed(callback: Callable[[], None]) -> threading.Event:
    """Call ``callback`` from a helper thread once stdout is a pipe whose reader has gone
    (``openscan-pi status --watch | head -1``), so that a command waiting for something to print
    can stop now rather than at its next write. Returns an event set at that moment; for a
    terminal or a file nothing ever happens."""
    import threading  # only for --watch

    gone = threading.Event()
    try:
        fd = sys.stdout.fileno()
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except (OSError, ValueError):
        return gone
    if not is_pipe:
        return gone

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, 0)  # no events asked: only POLLERR (reader gone), POLLHUP, POLLNVAL
        while not poller.poll():
            pass
        gone.set()
        callback()

    threading.Thread(target=watch, name="stdout-reader", daemon=True).start()
    return gone
