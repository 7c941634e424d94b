"""The rig worker: a process of its own that owns the pins, steppers, camera, light and trigger.

Started by the daemon (:class:`~openscan_pi.rig.remote.RemoteRig`) as
``python -m openscan_pi.rig.worker FD`` with one end of a socketpair as ``FD``; the first line on
it is the configuration. It opens the rig (camera started, light off), says :class:`Hello`, then
runs one :class:`Call` at a time on its main thread. A reader thread takes :class:`Cancel` (the
running move stops at its next step) and notices the daemon going away (end of file); a beat
thread says :class:`Beat` about every second whatever the rig does.

The worker ends, closing the rig (drivers disabled, light off) on the way out, when the daemon
dies (``PR_SET_PDEATHSIG`` gives it SIGTERM, and the channel reaches its end), on SIGTERM, and
after ``rig.idle_exit_s`` without a call. ``<data_dir>/rig-worker.json`` says whether the motors
were released at its last exit.
"""

from __future__ import annotations

import base64
import ctypes
import faulthandler
import logging
import os
import pickle
import queue
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openscan_pi.fsutil import atomic_write_json
from openscan_pi.rig import messages as m

if TYPE_CHECKING:
    from openscan_pi.config import Config
    from openscan_pi.rig.rig import Rig

log = logging.getLogger(__name__)

#: How often the worker says it lives.
BEAT_INTERVAL_S = 0.5
#: Once told to end, the worker is gone within this (a rig that does not close, a camera
#: driver that never returns: the threads are dumped to the log and the process exits).
EXIT_GRACE_S = 10.0
#: Where the worker says how it last ended (motors released or not).
STATE_FILE = "rig-worker.json"
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGTERM when the process that started this one dies (Linux; elsewhere the channel's end
    of file does it)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_leaving = threading.Lock()


def leave_within(seconds: float) -> None:
    """Exit the process in ``seconds`` (the threads dumped to stderr first) unless it has ended
    by then. Armed once: faulthandler's timer must not be re-armed from another thread."""
    if _leaving.acquire(blocking=False):  # never blocks: safe in a signal handler
        faulthandler.dump_traceback_later(seconds, exit=True)


def rig_state(rig: Rig) -> dict[str, Any]:
    """Where the axes are and whether the light is on (what the daemon's status shows), and,
    when the camera is in a library call past its bound, which (its call watch, read here so
    that the daemon can say it when it kills a worker wedged in that call)."""
    rotor, turntable = rig.angles()
    state = {"rotor": round(rotor, 3), "turntable": round(turntable, 3),
             "light": rig.light.is_on, "brightness": rig.light.brightness}
    watch = getattr(rig.camera, "watch", None)
    stuck = watch.overdue() if watch is not None else None
    if stuck:
        state["stuck"] = stuck
    return state


def open_rig(cfg: Config) -> tuple[Rig, dict[str, Any]]:
    """The rig of ``cfg`` with its camera started and the light off; nothing left open on failure."""
    from openscan_pi.rig.rig import Rig

    rig = Rig(cfg, cancel=threading.Event())
    try:
        info: dict[str, Any] = {}
        if rig.camera is not None:
            info = rig.start_camera()
            rig.light.off()
    except BaseException:
        rig.close()
        raise
    return rig, info


def capture(rig: Rig, path: str | None, index: int, lens_position: float | None) -> dict[str, Any]:
    """One photo written (atomically) to ``path``, or to a temporary file under the data folder
    when ``path`` is None (a hand-driven capture: the daemon reads and removes it)."""
    if path is None:
        folder = rig.cfg.data_dir / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=".jpg", dir=folder)
        os.close(fd)
        path = name
    shot = rig.capture(Path(path), index=index, lens_position=lens_position)
    return {"path": None if shot.path is None else str(shot.path), "size": shot.size,
            "crc32": shot.crc32, "lens_position": shot.lens_position,
            "captured_at": shot.captured_at, "rotor": shot.rotor, "turntable": shot.turntable,
            "index": shot.index}


def run_op(rig: Rig, op: str, args: dict[str, Any]) -> Any:
    """One named operation on the rig."""
    if op == "home":
        return rig.home()
    if op == "move":
        rig.move(rotor=args.get("rotor"), turntable=args.get("turntable"))
    elif op == "turn_by":
        rig.turn_by(str(args["axis"]), float(args["degrees"]))
    elif op == "start_camera":
        return rig.start_camera()
    elif op == "capture":
        return capture(rig, args.get("path"), int(args.get("index", 0)), args.get("lens_position"))
    elif op == "preview":
        return rig.preview(lens_position=args.get("lens_position")).public()
    elif op == "light_on":
        rig.light.on(args.get("brightness"))
    elif op == "light_off":
        rig.light.off()
    elif op not in ("angles", "state"):
        raise m.RemoteError(f"no rig operation {op!r}")
    return None


class Worker:
    """The worker's channel, threads and rig."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.calls: queue.Queue[m.Call | None] = queue.Queue()
        self.cancel = threading.Event()
        self.ended = threading.Event()
        self._send_lock = threading.Lock()
        self.rig: Rig | None = None
        self.op: str | None = None  # the operation running, said in the beats
        self.leaving = False  # the rig is being closed: a signal must not cut that short

    def send(self, message: m.Message) -> None:
        """One message to the daemon (from any thread); a daemon gone ends the worker."""
        try:
            with self._send_lock:
                self.sock.sendall(m.encode(message))
        except OSError:
            self.end()

    def end(self) -> None:
        """Stop at the next step and leave (within :data:`EXIT_GRACE_S` whatever happens)."""
        leave_within(EXIT_GRACE_S)
        self.ended.set()
        self.cancel.set()
        self.calls.put(None)

    def read(self) -> None:
        """The reader thread: calls to the main thread, cancels at once, end of file ends."""
        try:
            for line in self.file:
                message = m.decode(line)
                if isinstance(message, m.Cancel):
                    self.cancel.set()
                elif isinstance(message, m.Call):
                    self.calls.put(message)
        except (OSError, m.ProtocolError) as exc:
            log.error("%s", exc)
        self.end()

    def beat(self) -> None:
        """The beat thread: never waits on the rig (angles are read without its lock)."""
        while not self.ended.wait(BEAT_INTERVAL_S):
            rig = self.rig
            self.send(m.Beat(rig={**rig_state(rig), "op": self.op} if rig is not None else {}))

    def serve(self, cfg: Config) -> int:
        """Open the rig, answer calls until the end; returns the exit status."""
        threading.Thread(target=self.read, name="rig-reader", daemon=True).start()
        threading.Thread(target=self.beat, name="rig-beat", daemon=True).start()
        try:
            rig, info = open_rig(cfg)
        except BaseException as exc:
            self.send(m.Reply(id=0, error=m.error_of(exc)))
            return 1
        self.rig = rig
        rig.cancel = self.cancel
        write_state(cfg, pid=os.getpid(), motors="held")
        try:
            self.send(m.Hello(pid=os.getpid(), info=info, rig=rig_state(rig)))
            idle = cfg.rig.idle_exit_s
            while not self.ended.is_set():
                try:
                    call = self.calls.get(timeout=idle)
                except queue.Empty:
                    log.info("idle for %g s, leaving", idle)
                    break
                if call is None:
                    break
                if call.cancelled:
                    self.cancel.set()
                else:
                    self.cancel.clear()
                self.op = call.op
                try:
                    reply = m.Reply(id=call.id, result=run_op(rig, call.op, call.args),
                                    rig=rig_state(rig))
                except Exception as exc:
                    reply = m.Reply(id=call.id, error=m.error_of(exc), rig=rig_state(rig))
                finally:
                    self.op = None
                self.send(reply)
        finally:
            self.leaving = True
            leave_within(EXIT_GRACE_S)
            self.cancel.set()
            rig.close()
            write_state(cfg, pid=os.getpid(), motors="released")
        return 0


def write_state(cfg: Config, **fields: Any) -> None:
    """Say how the worker is in ``<data_dir>/rig-worker.json`` (best effort)."""
    try:
        atomic_write_json(cfg.data_dir / STATE_FILE, {**fields, "at": time.time()})
    except Exception as exc:  # the state file is a report: the rig goes on without it
        log.warning("cannot write %s: %s", cfg.data_dir / STATE_FILE, exc)


def main(argv: list[str]) -> int:
    """``python -m openscan_pi.rig.worker FD``."""
    die_with_parent()
    sock = socket.socket(fileno=int(argv[0]))
    worker = Worker(sock)

    def terminate(signum: int, frame: Any) -> None:
        # No lock taken here (the interrupted code may hold it): the exception unwinds the main
        # thread, whose ``finally`` closes the rig; the grace timer bounds it all. Once the
        # worker is on its way out (the channel's end came first), the signal changes nothing:
        # raised inside the closing, it would leave the motors unreleased.
        leave_within(EXIT_GRACE_S)
        if worker.leaving or worker.ended.is_set():
            return
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    if os.getppid() == 1:  # the daemon died before the signal was asked for
        return 0
    logging.basicConfig(level=logging.INFO, format="rig worker: %(message)s")
    first = worker.file.readline()
    if not first:
        return 0
    cfg: Config = pickle.loads(base64.b64decode(first))
    return worker.serve(cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
