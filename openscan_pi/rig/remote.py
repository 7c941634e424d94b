"""The daemon's side of the rig worker: a rig whose every operation runs in another process.

:class:`RemoteRig` offers what the capture step uses (``home()``, ``angles()``,
``start_camera()``, ``move()``, ``capture()``, ``light.off()``, ``cancel``, ``time_scale``), so
the step runs unchanged against it. It starts the worker (:mod:`openscan_pi.rig.worker`) on the
first call, and again after the worker has left (``rig.idle_exit_s``). Each call has a bound (a
move's from its estimated time, a capture's from ``camera.timeout_s`` and ``camera.retries``); a
worker past that bound, silent for :data:`BEAT_TIMEOUT_S`, or dead (a segfault, ``os.abort``,
SIGKILL) is killed and the call raises :class:`WorkerLost`: the caller decides whether to go on.

Nothing here imports numpy, Pillow, picamera2, lgpio or gpiozero.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from openscan_pi.rig import messages as m

if TYPE_CHECKING:
    from openscan_pi.config import Config
    from openscan_pi.rig.camera import Shot

log = logging.getLogger(__name__)

#: A worker silent this long is killed.
BEAT_TIMEOUT_S = 5.0
#: Added to every call's bound (process scheduling, a busy machine).
MARGIN_S = 5.0
#: A move's bound is its estimated time times this, plus :data:`MARGIN_S`.
MOVE_FACTOR = 2.0
#: Bound of opening the rig (a real camera may take seconds to settle).
OPEN_BOUND_S = 60.0
#: How often a waiting call looks at its cancel event and the worker's beats.
POLL_S = 0.05


class ScanRig(Protocol):
    """What the capture step uses of a rig: :class:`~openscan_pi.rig.rig.Rig` in the foreground
    scan, :class:`RemoteRig` in the daemon."""

    cancel: threading.Event
    time_scale: float

    @property
    def light(self) -> Any:
        """The ring light (``off()`` is used)."""

    def home(self) -> str:
        """Home the rotor; what happened."""

    def angles(self) -> tuple[float, float]:
        """(rotor, turntable) in degrees."""

    def start_camera(self) -> dict[str, Any]:
        """What the camera says about itself."""

    def move(self, *, rotor: float | None = None, turntable: float | None = None) -> None:
        """Move both axes at once."""

    def capture(self, path: Path, *, index: int = 0, lens_position: float | None = None) -> Shot:
        """One photo written to ``path``."""


class WorkerLost(Exception):
    """The rig worker died or was killed (``why`` says which); the rig's state is on disk."""


class RemoteLight:
    """The ring light through the worker."""

    def __init__(self, rig: RemoteRig) -> None:
        self._rig = rig

    @property
    def is_on(self) -> bool:
        """The light's state as last reported."""
        return bool(self._rig.state.get("light"))

    @property
    def brightness(self) -> float | None:
        """The brightness as last reported."""
        return self._rig.state.get("brightness")

    def on(self, brightness: float | None = None) -> None:
        """Switch on (at ``brightness``)."""
        self._rig.call("light_on", brightness=brightness)

    def off(self) -> None:
        """Switch off."""
        self._rig.call("light_off")


class _Process:
    """One running worker: its process, channel, reader thread and pending calls."""

    def __init__(self, cfg: Config) -> None:
        ours, theirs = socket.socketpair()
        self.sock = ours
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openscan_pi.rig.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self.beat_at = time.monotonic()
        self.lost: str | None = None
        self.ended = threading.Event()
        self.hello: m.Hello | None = None
        self.replies: dict[int, m.Reply] = {}
        self.cond = threading.Condition()
        self._send_lock = threading.Lock()
        self.sock.sendall(base64.b64encode(pickle.dumps(cfg)) + b"\n")
        self.on_state: Any = None
        self.on_end: Any = None
        threading.Thread(target=self._read, name=f"rig-worker-{self.pid}", daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.sock.makefile("rb"):
                message = m.decode(line)
                with self.cond:
                    self.beat_at = time.monotonic()
                    if isinstance(message, m.Hello):
                        self.hello = message
                    elif isinstance(message, m.Reply):
                        self.replies[message.id] = message
                    self.cond.notify_all()
                state = getattr(message, "rig", None)
                if state and self.on_state is not None:
                    self.on_state(state)
        except (OSError, m.ProtocolError) as exc:
            log.error("rig worker %d: %s", self.pid, exc)
        with self.cond:
            self.ended.set()
            self.cond.notify_all()
        if self.on_end is not None:
            self.on_end()

    def send(self, message: m.Message) -> None:
        try:
            with self._send_lock:
                self.sock.sendall(m.encode(message))
        except OSError:
            pass  # the reader sees the end

    @property
    def running(self) -> bool:
        """Neither ended by itself nor killed (a killed worker is gone at once, before the
        reader thread sees the end of its channel)."""
        return self.lost is None and not self.ended.is_set()

    def why_dead(self) -> str:
        """How the process ended (after it has)."""
        code = self.proc.wait()
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"killed by {name}"
        return f"exited with status {code}"

    def kill(self, why: str) -> None:
        """SIGKILL: a worker past its bound cannot be trusted to stop by itself."""
        self.lost = why
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.sock.close()

    def close(self, timeout: float) -> None:
        """Ask it to leave (end of file: the rig closes), SIGKILL after ``timeout``."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("rig worker %d did not leave in %g s: killed", self.pid, timeout)
            self.proc.kill()
            self.proc.wait()
        self.sock.close()


class RemoteRig:
    """The rig in its worker process, with the interface of :class:`~openscan_pi.rig.rig.Rig`
    that the capture step and the hand-driven rig methods use. Calls are one at a time."""

    def __init__(self, cfg: Config, *, on_change: Any = None) -> None:
        self.cfg = cfg
        self.simulated = cfg.rig.model == "simulated"
        self.time_scale = cfg.rig.sim_time_scale if self.simulated else 1.0
        self.cancel = threading.Event()
        self.light = RemoteLight(self)
        self.state: dict[str, Any] = {}
        self.camera_info: dict[str, Any] = {}
        self.restarts = 0  #: workers killed since this rig was made
        self.phase = "stopped"  #: stopped, starting, running, restarting
        self.last_loss: str | None = None
        self._on_change = on_change or (lambda: None)
        self._proc: _Process | None = None
        self._lock = threading.RLock()  # one call at a time
        self._next_id = 0
        self._current: tuple[str, float, float] | None = None  # (op, began, bound)
        self._closed = False

    # -- the worker -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The worker's process id while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.running else None

    def _set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            self._on_change()

    def _take_state(self, state: dict[str, Any]) -> None:
        self.state = state

    def open(self) -> dict[str, Any]:
        """Start the worker unless it runs; returns what its camera said about itself.

        Call it from a thread that lives as long as the rig (the daemon's rig thread): the
        worker's parent-death signal follows the thread that started it, not the process."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.running:
                return self.camera_info
            if proc is not None and proc.lost is None:
                proc.close(1.0)  # gone by itself (idle): reap it
            if self._closed:
                raise WorkerLost("the rig is closed")
            self._set_phase("restarting" if self.phase == "restarting" else "starting")
            proc = _Process(self.cfg)
            proc.on_state = self._take_state
            proc.on_end = lambda: self._ended(proc)
            self._proc = proc
            began = time.monotonic()
            with proc.cond:
                while proc.hello is None and 0 not in proc.replies and not proc.ended.is_set():
                    if time.monotonic() - began > OPEN_BOUND_S:
                        break
                    proc.cond.wait(POLL_S)
            if proc.hello is None:
                failure = proc.replies.get(0)
                if failure is None:
                    why = (proc.why_dead() if proc.ended.is_set()
                           else f"did not open the rig in {OPEN_BOUND_S:g} s")
                    proc.kill(why)
                    self._set_phase("stopped")
                    raise WorkerLost(f"the rig worker {why}")
                proc.close(5.0)
                self._set_phase("stopped")
                assert failure.error is not None
                m.raise_error(failure.error)
            assert proc.hello is not None
            log.info("rig worker %d: the rig is open", proc.pid)
            self.state, self.camera_info = proc.hello.rig, proc.hello.info
            self._set_phase("running")
            return self.camera_info

    def _ended(self, proc: _Process) -> None:
        """The reader saw the worker's end: said when it left by itself (idle, or killed by
        something else while nobody waited on it)."""
        if self._proc is not proc or proc.lost is not None or self.phase != "running":
            return
        log.info("rig worker %d %s; the next rig call starts another", proc.pid,
                 "left" if proc.proc.wait() == 0 else proc.why_dead())
        self._set_phase("stopped")

    def call(self, op: str, *, bound: float | None = None, **args: Any) -> Any:
        """Run ``op`` in the worker (started when it is not running) and return its result.
        Raises what the worker raised, or :class:`WorkerLost`."""
        with self._lock:
            self.open()
            proc = self._proc
            assert proc is not None
            self._next_id += 1
            call_id = self._next_id
            limit = (bound if bound is not None else 10.0) + MARGIN_S
            began = time.monotonic()
            self._current = (op, began, limit)
            cancel = self.cancel
            try:
                proc.send(m.Call(id=call_id, op=op, args=args, cancelled=cancel.is_set()))
                told = cancel.is_set()
                with proc.cond:
                    while call_id not in proc.replies:
                        now = time.monotonic()
                        why = None
                        if proc.ended.is_set():
                            why = proc.why_dead()
                        elif now - began > limit:
                            why = f"{op} did not return within its bound of {limit:.1f} s"
                        elif now - proc.beat_at > BEAT_TIMEOUT_S:
                            why = f"missed its heartbeat for {now - proc.beat_at:.1f} s"
                        if why is not None:
                            self._lose(proc, why)
                        if cancel.is_set() and not told:
                            proc.send(m.Cancel())
                            told = True
                        proc.cond.wait(POLL_S)
                    reply = proc.replies.pop(call_id)
            finally:
                self._current = None
            if reply.rig:
                self.state = reply.rig
            if reply.error is not None:
                m.raise_error(reply.error)
            return reply.result

    def _lose(self, proc: _Process, why: str) -> None:
        """Kill the worker; the next call starts another. What its last beat said the camera
        was stuck in (its call watch) is part of the reason."""
        stuck = self.state.get("stuck")
        if stuck:
            why = f"{why} ({stuck})"
        log.error("rig worker %d %s: killed, the next rig call starts another", proc.pid, why)
        proc.kill(why)
        self.restarts += 1
        self.last_loss = why
        self._set_phase("restarting")
        raise WorkerLost(f"the rig worker {why}")

    def check(self) -> str | None:
        """From any thread: kill a worker that is silent or past its call's bound (it may be
        waited on by nobody: an idle worker that stops beating). Returns why, or None."""
        proc, current = self._proc, self._current
        if proc is None or not proc.running or proc.hello is None:
            return None
        now = time.monotonic()
        if current is not None and now - current[1] > current[2]:
            return f"{current[0]} past its bound"
        if now - proc.beat_at > BEAT_TIMEOUT_S:
            if current is None and self._lock.acquire(blocking=False):  # nobody waits on it
                try:
                    if self._proc is proc and proc.running:
                        self._lose(proc, "missed its heartbeat")
                except WorkerLost:
                    pass
                finally:
                    self._lock.release()
            return "missed its heartbeat"
        return None

    def restart(self) -> None:
        """Stop the worker (it closes the rig) and start another, with :attr:`cfg`."""
        with self._lock:
            if self._proc is not None and self._proc.running:
                self._proc.close(5.0)
            self._proc = None
            self.open()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker: it closes the rig (drivers disabled, light off)."""
        self._closed = True
        self.cancel.set()
        proc = self._proc
        if proc is not None and proc.running:
            proc.send(m.Cancel())
            proc.close(timeout)
        self._set_phase("stopped")

    # -- the rig's interface ----------------------------------------------------------------------

    def angles(self) -> tuple[float, float]:
        """(rotor, turntable) in degrees, as the worker last reported them."""
        return float(self.state.get("rotor", 0.0)), float(self.state.get("turntable", 0.0))

    def _move_bound(self, rotor: float | None, turntable: float | None) -> float:
        from openscan_pi.rig.estimate import rig_time_fn

        here = self.angles()
        there = (here[0] if rotor is None else rotor, here[1] if turntable is None else turntable)
        return rig_time_fn(self.cfg.rig)(here, there) * self.time_scale * MOVE_FACTOR

    def home(self) -> str:
        """Home the rotor (or say why not)."""
        rig = self.cfg.rig
        bound = rig.endstop.timeout_s + self._move_bound(rig.rotor.max_angle or 90.0, None)
        return str(self.call("home", bound=bound))

    def move(self, *, rotor: float | None = None, turntable: float | None = None) -> None:
        """Move both axes at once."""
        self.call("move", bound=self._move_bound(rotor, turntable), rotor=rotor,
                  turntable=turntable)

    def turn_by(self, axis: str, degrees: float) -> None:
        """Turn one axis by ``degrees``."""
        cfg = getattr(self.cfg.rig, axis, None)
        bound = 10.0
        if cfg is not None:
            from openscan_pi.rig.motion import move_time

            steps = abs(round(degrees * cfg.steps_per_rev / 360.0))
            bound = move_time(steps, cfg.max_speed, cfg.acceleration) * self.time_scale * MOVE_FACTOR
        self.call("turn_by", bound=bound, axis=axis, degrees=degrees)

    def start_camera(self) -> dict[str, Any]:
        """The camera is started with the worker; returns what it says about itself."""
        return self.open()

    def capture_bound(self) -> float:
        """How long one capture may take before the worker is killed."""
        cam = self.cfg.camera
        return cam.timeout_s * (cam.retries + 1) + cam.settle_s

    def capture(self, path: Path | None, *, index: int = 0,
                lens_position: float | None = None) -> Shot:
        """One photo, written by the worker to ``path`` (atomically)."""
        from openscan_pi.rig.camera import Shot

        result = self.call("capture", bound=self.capture_bound(),
                           path=None if path is None else str(path), index=index,
                           lens_position=lens_position)
        return Shot(path=None if result["path"] is None else Path(result["path"]),
                    size=int(result["size"]), crc32=int(result["crc32"]),
                    lens_position=result["lens_position"], captured_at=result["captured_at"],
                    rotor=result["rotor"], turntable=result["turntable"], index=result["index"])

    def preview(self, *, lens_position: float | None = None) -> dict[str, Any]:
        """What the camera sees now, as the socket's ``preview`` answers it (the JPEG
        base64-encoded); bounded as a capture is."""
        return dict(self.call("preview", bound=self.capture_bound(), lens_position=lens_position))

    def __enter__(self) -> RemoteRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_rss_kib(pid: int | None) -> int | None:
    """The worker's resident memory (KiB), from /proc, or None."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None

