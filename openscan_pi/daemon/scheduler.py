"""The daemon's core: every job, the rig's thread, the transfer workers, and the status.

The rig runs in a worker process of its own (:class:`~openscan_pi.rig.remote.RemoteRig`), driven
from one thread here: it scans one job at a time, and runs the hand-driven rig commands between
scans. A worker that dies or exceeds a bound is killed and started again, and the scan continues
at the first position missing from its manifest (``rig.max_restarts`` times per scan).

As soon as a job's captures are on disk it goes to a transfer worker (at most
``daemon.max_transfers`` at once) and the rig takes the next queued job: a scan never waits on the
network. At start every unfinished job continues from its last durable step.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from openscan_pi import __version__
from openscan_pi.config import Config
from openscan_pi.daemon.preflight import TokenCheck
from openscan_pi.errors import InputError, UserError
from openscan_pi.fsutil import try_lock
from openscan_pi.jobs.check import BrokenJob
from openscan_pi.jobs.state import ACTIVE, NEEDS_RIG, JobState
from openscan_pi.jobs.store import Job, JobBusy, JobStore
from openscan_pi.names import check_project
from openscan_pi.paths import prepare_data_dir

if TYPE_CHECKING:
    from openscan_pi.cloud.api import TokenInfo
    from openscan_pi.cloud.local import LocalCloud
    from openscan_pi.rig.remote import RemoteRig

log = logging.getLogger(__name__)

S = JobState
TRANSFER_STATES = frozenset({S.UPLOADING, S.PROCESSING, S.DOWNLOADING})
#: Upload progress is told to subscribers at most this often (durable steps always are).
PROGRESS_INTERVAL_S = 0.2

#: A hand-driven rig command: calls the rig's named operations (each one crosses to the worker).
RigCall = Callable[["RemoteRig"], Any]


class Scheduler:
    """Jobs, the rig thread and the transfer workers; thread-safe. ``on_status(status)`` is
    called (from any thread) on every change and progress step."""

    def __init__(self, cfg: Config, *, on_status: Callable[[dict[str, Any]], None] | None = None,
                 on_slow_start: Callable[[float], None] | None = None) -> None:
        self.cfg = cfg
        self.loaded_at = time.time()
        self.on_status = on_status or (lambda status: None)
        self._on_slow_start = on_slow_start or (lambda seconds: None)
        self.store = JobStore(cfg.data_dir)
        self.jobs: dict[str, Job] = {}
        self.broken: dict[str, BrokenJob] = {}  # folder name -> why it cannot be run
        self.rig: RemoteRig | None = None
        self.stopping = threading.Event()
        self._lock = threading.RLock()
        self._create_lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}  # job id -> its stop event
        self._released: dict[str, concurrent.futures.Future[None]] = {}
        self._cancelling: set[str] = set()
        self._active: dict[str, Job] = {}
        self._last: Job | None = None
        self._seen: dict[str, str] = {}  # job id -> last state logged
        self._eta: dict[str, tuple[str, float, float]] = {}  # job id -> (state, t0, value at t0)
        self._rig_queue: queue.Queue[str | tuple[RigCall, concurrent.futures.Future] | None] = (
            queue.Queue())
        self._rig_job: str | None = None
        self._rig_task: str | None = None
        self._rig_stop = threading.Event()
        self._rig_thread: threading.Thread | None = None
        self._transfer_queue: queue.Queue[str | None] = queue.Queue()
        self._transfer_threads: list[threading.Thread] = []
        self._local: LocalCloud | None = None
        self._local_users = 0
        self._progress_at = 0.0
        self._lock_fd: int | None = None
        #: The token check before a scan, shared by the scans asked at once (bounded wait).
        self.token_check = TokenCheck(self._fetch_token_info)

    # -- life -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Lock the data folder, open the rig, and continue every unfinished job."""
        data_dir = prepare_data_dir(self.cfg.data_dir)
        fd = try_lock(data_dir / "daemon.lock")
        if fd is None:
            raise UserError(f"another daemon uses {data_dir}: stop it first, or set "
                            "daemon.data_dir to another folder")
        self._lock_fd = fd
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Daemon threads: a stop must never wait on a network call that hangs; every job is
        # durable at each step, so what such a thread was doing continues at the next start.
        self._rig_thread = threading.Thread(target=self._rig_main, args=(ready,), name="rig",
                                            daemon=True)
        self._rig_thread.start()
        ready.result()  # the rig's error, if it cannot be opened
        for number in range(self.cfg.daemon.max_transfers):
            thread = threading.Thread(target=self._transfer_main, name=f"transfer-{number}",
                                      daemon=True)
            thread.start()
            self._transfer_threads.append(thread)
        jobs, broken = self.store.survey()
        for job in jobs:
            self._adopt(job)
        for report in broken:  # told once; the folder is left as it is, the others run on
            log.warning("%s", report.line())
            self.broken[report.id] = report
        for job in sorted(self._active.values(), key=lambda j: float(j.data["created"])):
            if job.data.get("cancel_requested"):  # cancelled before the daemon went down
                job.transition(S.CANCELLED, step="cancelled")
                continue
            if job.state == S.SCANNING and self.cfg.jobs.resume_scan == "fail":
                job.transition(S.FAILED, step="failed", error=(
                    f"the scan was interrupted (the daemon restarted): `openscan-pi retry {job.id}` "
                    "continues it at the first missing position"))
                continue
            log.info("job %s: continuing (%s)", job.id, job.state.value)
            self._schedule(job)

    def stop(self, timeout: float = 4.0) -> None:
        """Stop every job at its next safe point (each continues at the next start), close the
        rig (drivers disabled), release the data folder. Waits at most ``timeout`` seconds for
        the threads; one still stuck in a network call is left to die with the process."""
        self.stopping.set()
        self.token_check.close()
        with self._lock:
            for event in self._running.values():
                event.set()
        self._rig_stop.set()
        self._rig_queue.put(None)
        for _ in self._transfer_threads:
            self._transfer_queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in [self._rig_thread, *self._transfer_threads]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    log.warning("%s did not stop in time; its job continues at the next start",
                                thread.name)
        if self._local is not None:
            self._local.stop()
            self._local = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- what callers ask -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The ``status`` result of the socket contract."""
        with self._lock:
            job = self._current()
            busy = bool(self._active) or self._rig_task is not None
            rig: dict[str, Any] = {"model": self.cfg.rig.model, "job": self._rig_job,
                                   "task": self._rig_task}
            if self.rig is not None:  # as the worker last said: never a call to it
                rotor, turntable = self.rig.angles()
                rig.update(rotor=round(rotor, 3), turntable=round(turntable, 3),
                           light=self.rig.light.is_on,
                           worker={"state": self.rig.phase, "pid": self.rig.pid,
                                   "restarts": self.rig.restarts,
                                   "op": self.rig.state.get("op")})
            return {"state": "busy" if busy else "idle", "version": __version__, "rig": rig,
                    "config": {"source": self.cfg.source, "loaded": self.loaded_at},
                    "job": self._public(job) if job else None,
                    "broken": [b.as_dict() for b in self.broken.values()],
                    "queued": [j.id for j in self._active.values() if j.state == S.QUEUED],
                    "transfers": [i for i in self._running if i != self._rig_job]}

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job, oldest first."""
        self._recheck()
        with self._lock:
            jobs = sorted(self.jobs.values(), key=lambda j: float(j.data["created"]))
            return [self._public(j) for j in jobs]

    def broken_jobs(self) -> list[dict[str, str]]:
        """The job folders that cannot be run (path, problem, fix), as they are on disk now."""
        self._recheck()
        with self._lock:
            return [b.as_dict() for b in self.broken.values()]

    def _recheck(self, only: str | None = None) -> None:
        """Look again at the folders that are not jobs of this daemon (or at ``only``): one
        moved away is forgotten, one fixed becomes a job (and runs, when unfinished). Called
        with no lock held (it takes the creation lock, then the state lock)."""
        with self._create_lock:
            try:
                names = {p.name for p in self.store.root.iterdir()}
            except OSError:
                names = set()
            with self._lock:
                names = (names - set(self.jobs)) | set(self.broken)
            if only is not None:
                names &= {only}
            for name in sorted(names):
                found = self.store.look(self.store.root / name)
                with self._lock:
                    if isinstance(found, BrokenJob):
                        self.broken[name] = found
                        continue
                    self.broken.pop(name, None)
                if isinstance(found, Job):
                    log.info("job %s: its folder can be read now (%s)", found.id,
                             found.state.value)
                    self._adopt(found)
                    if found.state in ACTIVE:
                        self._schedule(found)

    def scan(self, positions: int, project: str | None) -> dict[str, Any]:
        """Queue a new scan after the disk and token checks; returns the job."""
        from openscan_pi.cloud.journal import Journal
        from openscan_pi.jobs.runner import preflight

        if self.stopping.is_set():
            raise UserError("the daemon is stopping")
        name = check_project(project) if project else None
        warnings = preflight(self.cfg, positions, token_info=self.token_check)
        if self.stopping.is_set():
            raise UserError("the daemon is stopping")
        for warning in warnings:
            log.warning("%s", warning)
        with self._create_lock:  # two requests for one name: the second is refused
            if name and (Journal.find(self.cfg.data_dir, name)
                         or any(j.data.get("project") == name for j in list(self.jobs.values()))):
                raise InputError(f"project {name} exists already: choose another project name")
            job = self.store.create(positions=positions, project=name,
                                    stack=self.cfg.camera.focus.stack)
            self._adopt(job)
        log.info("job %s: queued, %d positions, project %s", job.id, positions, job.data["project"])
        self._schedule(job)
        return self._public(job)

    def cancel(self, job_id: str | None) -> tuple[str, concurrent.futures.Future[None] | None]:
        """Cancel a job (the running one by default). Returns its id and a future done when it
        has stopped, when it was running (None when it was cancelled at once). A running job's
        cancel is on disk before its worker is stopped: it holds across a crash or restart."""
        with self._lock:
            if job_id is None:
                job_id = self._rig_job or next(iter(self._running), None) or next(
                    iter(self._active), None)
                if job_id is None:
                    raise InputError("nothing to cancel: no job is running (`openscan-pi jobs` "
                                     "lists them; `openscan-pi cancel JOB` cancels a failed one)")
            job = self._job(job_id)
            if job.state in (S.DONE, S.CANCELLED):
                raise InputError(f"job {job.id} is {job.state.value}: nothing to cancel")
            if job.id in self._running:
                # Durable before the worker is told: a daemon that dies before the worker lets
                # go never resumes the job (start() ends it cancelled).
                job.update(cancel_requested=time.time())
                self._cancelling.add(job.id)
                self._running[job.id].set()  # a call to the cloud in flight ends at once
                return job.id, self._released[job.id]
            job.transition(S.CANCELLED, step="cancelled")
            return job.id, None

    def retry(self, job_id: str) -> dict[str, Any]:
        """Continue a failed job from its last durable step."""
        from openscan_pi.jobs.runner import JobRunner

        if job_id not in self.jobs:
            self._recheck(job_id)  # a folder fixed (or put back) since it was looked at
        with self._lock:
            job = self._job(job_id)
            if job.state in (S.DONE, S.CANCELLED):
                raise InputError(f"job {job.id} is {job.state.value}: nothing to retry")
            if job.state != S.FAILED:
                raise InputError(f"job {job.id} is {job.state.value} already: `openscan-pi status` "
                                 "follows it")
            JobRunner(self.cfg, job).resume()
        log.info("job %s: retried (%s)", job.id, job.state.value)
        self._schedule(job)
        return self._public(job)

    def job_public(self, job_id: str) -> dict[str, Any]:
        """One job's object."""
        return self._public(self._job(job_id))

    def rig_call(self, name: str, call: RigCall) -> concurrent.futures.Future:
        """Run ``call(rig)`` on the rig's thread, unless a scan has the rig."""
        with self._lock:
            waiting = [j.id for j in self._active.values() if j.state in NEEDS_RIG]
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

    # -- scheduling -------------------------------------------------------------------------------

    def _job(self, job_id: str) -> Job:
        if isinstance(job_id, str) and job_id in self.broken:
            raise InputError(self.broken[job_id].line())
        if not isinstance(job_id, str) or job_id not in self.jobs:
            raise InputError(f"no job {job_id}: `openscan-pi jobs` lists them")
        return self.jobs[job_id]

    def _adopt(self, job: Job) -> None:
        with self._lock:
            self.jobs[job.id] = job
            self._seen[job.id] = job.state.value
            if job.state in ACTIVE:
                self._active[job.id] = job
            if self._last is None or float(job.data["updated"]) >= float(self._last.data["updated"]):
                self._last = job
        job.on_change(self._changed)

    def _schedule(self, job: Job) -> None:
        if job.state in NEEDS_RIG:
            self._rig_queue.put(job.id)
        elif job.state in TRANSFER_STATES:
            self._transfer_queue.put(job.id)

    def _claim(self, job: Job, states: frozenset[JobState]) -> threading.Event | None:
        with self._lock:
            if self.stopping.is_set() or job.state not in states or job.id in self._running:
                return None
            self._running[job.id] = threading.Event()
            self._released[job.id] = concurrent.futures.Future()
            return self._running[job.id]

    def _release(self, job: Job) -> None:
        with self._lock:
            self._running.pop(job.id, None)
            if self._rig_job == job.id:  # off the rig before a waiting `cancel` answers
                self._rig_job = None
            released = self._released.pop(job.id)
            if job.id in self._cancelling:
                self._cancelling.discard(job.id)
                if job.state in ACTIVE or job.state == S.FAILED:
                    job.transition(S.CANCELLED, step="cancelled")
        released.set_result(None)

    def _run(self, job: Job, phase: str, stop: threading.Event) -> str | None:
        """Run one phase of ``job``; returns why the rig worker was lost, when it was."""
        from openscan_pi.cloud.transfer import Cancelled
        from openscan_pi.jobs.runner import JobRunner
        from openscan_pi.rig.remote import WorkerLost

        local = self._acquire_local() if phase == "transfer" else None
        try:
            with job.hold():
                runner = JobRunner(self.cfg, job, events=self._events(job), stop=stop,
                                   rig=self.rig, local=local)
                (runner.scan_phase if phase == "scan" else runner.transfer_phase)()
        except JobBusy as exc:
            log.warning("%s", exc)
        except Cancelled:
            log.info("job %s: stopped (%s)", job.id, job.state.value)
        except UserError as exc:
            log.warning("job %s failed: %s", job.id, exc)
        except WorkerLost as exc:  # the scan continues with a new worker (see _scan_job)
            return str(exc)
        except Exception as exc:  # a bug: the job fails with its images, the daemon carries on
            log.exception("job %s: internal error", job.id)
            if job.state in ACTIVE:
                try:
                    job.transition(S.FAILED, step="failed",
                                   error=f"internal error: {exc} (see the daemon's log)")
                except Exception:  # the worker must live on: the job continues at the next start
                    log.exception("job %s: could not record the failure", job.id)
        finally:
            if local is not None:
                self._release_local()
            self._release(job)
        return None

    def _scan_job(self, job_id: str) -> None:
        job = self.jobs[job_id]
        restarts = 0
        while (stop := self._claim(job, NEEDS_RIG)) is not None:
            with self._lock:
                self._rig_job = job.id
            try:
                lost = self._run(job, "scan", stop)
            finally:
                with self._lock:
                    self._rig_job = None
                self._notify()
            if lost is None or self.stopping.is_set():
                break
            restarts += 1
            job.update(rig_restarts=int(job.data.get("rig_restarts") or 0) + 1)
            if restarts > self.cfg.rig.max_restarts:
                job.transition(S.FAILED, step="failed", error=(
                    f"{lost}; the rig worker was restarted {restarts - 1} times in this scan "
                    f"(rig.max_restarts): check the camera and the power supply, then "
                    f"`openscan-pi retry {job.id}` continues at the first missing position"))
                break
            log.warning("job %s: %s; continuing with a new rig worker (restart %d of %d)", job.id,
                        lost, restarts, self.cfg.rig.max_restarts)
        if job.state in TRANSFER_STATES and not self.stopping.is_set():
            self._schedule(job)

    def _transfer_main(self) -> None:
        while (job_id := self._transfer_queue.get()) is not None:
            if not self.stopping.is_set():
                self._transfer_job(job_id)

    def _transfer_job(self, job_id: str) -> None:
        job = self.jobs[job_id]
        stop = self._claim(job, TRANSFER_STATES)
        if stop is not None:
            self._run(job, "transfer", stop)

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

    def _fetch_token_info(self) -> TokenInfo:
        """The token's info from the cloud of the current config (the bundled one when local)."""
        from openscan_pi.jobs.runner import fetch_token_info

        cfg, local = self.cfg, self._acquire_local()
        try:
            return fetch_token_info(cfg, local)
        finally:
            self._release_local()

    def _acquire_local(self) -> LocalCloud | None:
        if not self.cfg.cloud.is_local:
            return None
        from openscan_pi.cloud.transfer import start_local_cloud

        with self._lock:
            if self._local is None:
                self._local = start_local_cloud(self.cfg)
            self._local_users += 1
            return self._local

    def _release_local(self) -> None:
        if not self.cfg.cloud.is_local:
            return
        with self._lock:
            self._local_users -= 1
            if self._local_users == 0 and self._local is not None:
                self._local.stop()  # an idle daemon serves no local cloud
                self._local = None

    # -- telling ----------------------------------------------------------------------------------

    def _changed(self, job: Job) -> None:
        """A job changed durably: keep the groups, log transitions, tell the subscribers."""
        with self._lock:
            if job.state in ACTIVE:
                self._active[job.id] = job
            else:
                self._active.pop(job.id, None)
            self._last = job
            before = self._seen.get(job.id)
            self._seen[job.id] = job.state.value
        if before != job.state.value:
            extra = f": {job.data.get('error')}" if job.state == S.FAILED else ""
            log.info("job %s: %s -> %s%s", job.id, before, job.state.value, extra,
                     extra={"JOB_ID": job.id, "JOB_STATE": job.state.value,
                            "PROJECT": job.data.get("project")})
        self._notify()

    def _events(self, job: Job) -> Callable[..., None]:
        def events(event: str, **fields: Any) -> None:
            if event in ("stage", "warning"):
                (log.warning if event == "warning" else log.info)("job %s: %s", job.id,
                                                                   fields.get("text"))
            elif event == "upload":
                now = time.monotonic()
                if now - self._progress_at >= PROGRESS_INTERVAL_S or fields["done"] == fields["total"]:
                    self._progress_at = now
                    self._notify()

        return events

    def _notify(self) -> None:
        try:
            self.on_status(self.status())
        except Exception:  # a listener must never break a job
            log.exception("status listener failed")

    def _current(self) -> Job | None:
        if self._rig_job:
            return self.jobs[self._rig_job]
        for job_id in self._running:
            return self.jobs[job_id]
        for job in self._active.values():
            return job
        return self._last

    def _public(self, job: Job) -> dict[str, Any]:
        out = job.public()
        out["eta_s"] = self._estimate(job.id, out)
        return out

    def _estimate(self, job_id: str, job: dict[str, Any]) -> float | None:
        """Seconds left in the current state, from the rate since this daemon saw it begin."""
        state = job["state"]
        if state == "scanning":
            done, total = float(job["captured"] or 0), float(job["positions"] or 0)
        elif state == "uploading":
            done, total = float(job["bytes_uploaded"] or 0), float(job["bytes_total"] or 0)
        else:
            self._eta.pop(job_id, None)
            return None
        now = time.monotonic()
        seen = self._eta.get(job_id)
        if seen is None or seen[0] != state or done < seen[2]:
            self._eta[job_id] = (state, now, done)
            return None
        rate = (done - seen[2]) / (now - seen[1]) if now > seen[1] else 0.0
        return round((total - done) / rate, 1) if rate > 0 else None
