"""The rig's half of the scheduler: one thread that owns the rig worker, runs the scans the
scheduler queues for it and the hand-driven rig commands between them, keeps the worker alive,
and swaps it for a new config (SIGHUP).

:class:`RigSide` is a base of :class:`~openscan_pi.daemon.scheduler.Scheduler`, which creates
the fields it declares and runs the scans (``_scan_job``); this module holds what touches the
worker from the daemon's side (:class:`~openscan_pi.rig.remote.RemoteRig`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from openscan_pi.config import Config
from openscan_pi.daemon.preflight import TokenCheck
from openscan_pi.errors import UserError
from openscan_pi.jobs.lifecycle import Resource, needs
from openscan_pi.jobs.store import Job

if TYPE_CHECKING:
    from openscan_pi.rig.remote import RemoteRig

log = logging.getLogger(__name__)

#: A hand-driven rig command: calls the rig's named operations (each one crosses to the worker).
RigCall = Callable[["RemoteRig"], Any]
#: What the rig's thread takes: a job id to scan, a command with the future of its answer, or
#: None (stop).
RigTask = str | tuple[RigCall, concurrent.futures.Future] | None


class RigSide:
    """The rig's thread and worker, for the scheduler (see the module's docstring)."""

    # made by the scheduler
    cfg: Config
    loaded_at: float
    rig: RemoteRig | None
    stopping: threading.Event
    token_check: TokenCheck
    _lock: threading.RLock
    _active: dict[str, Job]
    _rig_queue: queue.Queue[RigTask]
    _rig_task: str | None
    _rig_stop: threading.Event
    _rig_thread: threading.Thread | None
    _transfer_threads: list[threading.Thread]
    _on_slow_start: Callable[[float], None]

    @property
    def _rig_job(self) -> str | None:
        raise NotImplementedError

    def _scan_job(self, job_id: str) -> None:
        raise NotImplementedError

    def _notify(self) -> None:
        raise NotImplementedError

    def rig_call(self, name: str, call: RigCall) -> concurrent.futures.Future:
        """Run ``call(rig)`` on the rig's thread, unless a scan has the rig."""
        with self._lock:
            waiting = [j.id for j in self._active.values() if needs(j.data) == Resource.RIG]
            if self._rig_job or waiting:
                raise UserError(f"the rig is busy scanning job {self._rig_job or waiting[0]}: wait "
                                "for it, or `openscan-pi cancel`")
            if self._rig_task is not None:
                raise UserError(f"the rig is busy ({self._rig_task}): try again when it is done")
            if self.stopping.is_set():
                raise UserError("the daemon is stopping")
            self._rig_task = name
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._rig_queue.put((call, future))
        return future


    def _rig_main(self, ready: concurrent.futures.Future) -> None:
        try:
            self.rig = self._open_rig(self.cfg)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        rig = self.rig
        try:
            while (task := self._rig_queue.get()) is not None:
                if isinstance(task, str):
                    self._scan_job(task)
                    continue
                call, future = task
                rig = self.rig
                rig.cancel = self._rig_stop
                result: Any = None
                failure: BaseException | None = None
                running = future.set_running_or_notify_cancel()
                try:
                    if running:
                        result = call(rig)
                except BaseException as exc:
                    failure = exc
                    from openscan_pi.rig.remote import WorkerLost

                    if isinstance(exc, WorkerLost):  # said as a user error, and a new worker
                        failure = UserError(f"{exc}: try again")
                        self._reopen(rig)
                with self._lock:
                    self._rig_task = None  # free before the caller hears: its next call is taken
                self._notify()
                if failure is not None:
                    future.set_exception(failure)
                elif running:
                    future.set_result(result)
        finally:
            self.rig.close()

    def _reopen(self, rig: RemoteRig) -> None:
        """A new worker after one was lost (not left "restarting" until the next command)."""
        try:
            rig.open()
        except Exception as exc:  # said; the next command tries again
            log.error("the rig worker cannot be started again: %s", exc)

    def _open_rig(self, cfg: Config) -> RemoteRig:
        """The rig of ``cfg`` in its worker, opened once now (a config that cannot open it stops
        the start); the worker leaves when idle and the next call starts it again."""
        from openscan_pi.rig.remote import RemoteRig

        rig = RemoteRig(cfg, on_change=self._notify)
        if cfg.camera.backend != "external":
            self._on_slow_start(60.0)  # a real camera may take seconds to settle
        try:
            rig.open()
        except BaseException:
            rig.close()
            raise
        return rig

    def healthy(self) -> bool:
        """False when a worker thread has died or the rig is wedged past its bound (then the
        watchdog should stop being fed: systemd restarts the daemon, and the jobs go on)."""
        return self.unhealthy() is None

    def unhealthy(self) -> str | None:
        """Why the watchdog should stop being fed, or None."""
        if self.stopping.is_set():
            return None
        threads = [self._rig_thread, *self._transfer_threads]
        if not all(t is not None and t.is_alive() for t in threads):
            return "a worker thread has died"
        self.wedged()  # a silent idle worker is killed here (a busy one by its caller)
        return None

    def wedged(self) -> str | None:
        """What the rig worker is stuck in past its bound, or None. It never starves the
        watchdog: the rig's thread kills such a worker and starts another (the daemon stays
        healthy, and ``STATUS=`` says it restarts the camera)."""
        rig = self.rig
        return rig.check() if rig is not None else None

    def reload(self, cfg: Config) -> concurrent.futures.Future:
        """Take ``cfg`` when idle: reopen the rig with it on the rig's thread. Raises
        :class:`UserError` when a job is running or a setting needs a restart; the future fails
        (and the old config stays) when the rig cannot be opened with the new one."""
        with self._lock:
            if self._active:
                raise UserError(f"job {next(iter(self._active))} is running: send SIGHUP again "
                                "when the daemon is idle")
        for key in ("socket", "data_dir", "socket_group", "max_transfers"):
            if getattr(cfg.daemon, key) != getattr(self.cfg.daemon, key):
                raise UserError(f"daemon.{key} changed: that needs a restart "
                                "(`sudo systemctl restart openscan-pi`)")

        def swap(rig: RemoteRig) -> str:
            rig.close()
            try:
                new = self._open_rig(cfg)
            except BaseException:
                self.rig = self._open_rig(self.cfg)  # the old config's worker, as it was
                raise
            self.rig, self.cfg, self.loaded_at = new, cfg, time.time()
            self.token_check.forget()
            return "reloaded"

        return self.rig_call("reload", swap)
