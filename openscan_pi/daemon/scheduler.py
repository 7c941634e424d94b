"""The daemon's core: every job, the rig's thread, the transfer workers, and the status.

The rig runs in a worker process of its own (:class:`~openscan_pi.rig.remote.RemoteRig`), driven
from one thread (the rig's half, :mod:`.rig_side`): it scans one job at a time, and runs the
hand-driven rig commands between scans. A worker that dies or exceeds a bound is killed and
started again, and the scan continues at the first position missing from its manifest
(``rig.max_restarts`` times per scan).

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openscan_pi import __version__
from openscan_pi.config import Config
from openscan_pi.daemon.eta import Eta
from openscan_pi.daemon.events import EventBus, log_job_events
from openscan_pi.daemon.memory import give_back
from openscan_pi.daemon.preflight import TokenCheck
from openscan_pi.daemon.rig_side import RigSide, RigTask
from openscan_pi.errors import InputError, UserError
from openscan_pi.fsutil import try_lock
from openscan_pi.jobs import actions
from openscan_pi.jobs.check import BrokenJob
from openscan_pi.jobs.events import JobChanged, JobProgress, StatusChanged, from_runner
from openscan_pi.jobs.lifecycle import Resource, needs
from openscan_pi.jobs.state import ACTIVE, HELD, JobState
from openscan_pi.jobs.store import Job, JobBusy, JobStore
from openscan_pi.names import check_project
from openscan_pi.paths import prepare_data_dir

if TYPE_CHECKING:
    from openscan_pi.cloud.api import TokenInfo
    from openscan_pi.rig.remote import RemoteRig

log = logging.getLogger(__name__)

S = JobState
#: Upload progress is told to subscribers at most this often (durable steps always are).
PROGRESS_INTERVAL_S = 0.2



@dataclass
class _Run:
    """A job a worker has taken: the resource its steps use, the event that stops it, the
    future done when the worker lets go of it, and whether it was queued again meanwhile (a
    retry between its failure and the worker letting go): then it is queued when let go."""

    resource: Resource
    stop: threading.Event = field(default_factory=threading.Event)
    released: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)
    again: bool = False


class Scheduler(RigSide):
    """Jobs, the rig thread and the transfer workers; thread-safe. Publishes typed events
    (:mod:`openscan_pi.jobs.events`) on ``events``: :class:`StatusChanged` on every change and
    progress step (``on_status(status)``, when given, is subscribed to it)."""

    def __init__(self, cfg: Config, *, on_status: Callable[[dict[str, Any]], None] | None = None,
                 on_slow_start: Callable[[float], None] | None = None) -> None:
        self.cfg = cfg
        self.loaded_at = time.time()
        self.events = EventBus()
        self._subscribe_own()
        if on_status is not None:
            self.events.subscribe(StatusChanged, lambda e: on_status(e.status))
        self._on_slow_start = on_slow_start or (lambda seconds: None)
        self.store = JobStore(cfg.data_dir)
        self.jobs: dict[str, Job] = {}
        self.broken: dict[str, BrokenJob] = {}  # folder name -> why it cannot be run
        self.rig: RemoteRig | None = None
        self.stopping = threading.Event()
        self._lock = threading.RLock()
        self._create_lock = threading.Lock()
        self._runs: dict[str, _Run] = {}  # job id -> the worker's hold on it
        self._active: dict[str, Job] = {}  # the unfinished jobs (their state says so), by id
        self._last: Job | None = None
        self._seen: dict[str, str] = {}  # job id -> last state logged
        self._eta = Eta()
        self._rig_queue: queue.Queue[RigTask] = queue.Queue()
        self._rig_task: str | None = None
        self._rig_stop = threading.Event()
        self._rig_thread: threading.Thread | None = None
        #: the queues of the steps that do not need the rig, each served by its own threads
        self._queues: dict[Resource, queue.Queue[str | None]] = {
            Resource.NETWORK: queue.Queue(), Resource.FUSION: queue.Queue()}
        self._transfer_threads: list[threading.Thread] = []  # every thread of those queues
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
        workers = [(Resource.NETWORK, f"transfer-{n}") for n in range(self.cfg.daemon.max_transfers)]
        for resource, name in [*workers, (Resource.FUSION, "fusion")]:
            thread = threading.Thread(target=self._worker_main, args=(resource,), name=name,
                                      daemon=True)
            thread.start()
            self._transfer_threads.append(thread)
        jobs, broken = self.store.survey()
        for job in jobs:
            if job.migrated:  # a record of an older release, in this release's form
                self._write_migrated(job)
            self._adopt(job)
        for report in broken:  # told once; the folder is left as it is, the others run on
            log.warning("%s", report.line())
            self.broken[report.id] = report
        for job in sorted(self._active.values(), key=lambda j: float(j.data["created"])):
            if actions.end_cancelled(job) or actions.end_paused(job):  # asked before we went down
                continue
            if job.state == S.SCANNING and self.cfg.jobs.resume_scan == "fail":
                job.transition(S.FAILED, step=None, error=(
                    f"the scan was interrupted (the daemon restarted): `openscan-pi retry {job.id}` "
                    "continues it at the first missing position"))
                continue
            log.info("job %s: continuing (%s)", job.id, job.state.value)
            self._schedule(job)

    @staticmethod
    def _write_migrated(job: Job) -> None:
        """Write a record read in an older form (unless another process runs the job)."""
        try:
            with job.hold():
                job.save()
        except JobBusy:
            return
        log.info("job %s: record migrated to version %d", job.id, job.record.version)

    def stop(self, timeout: float = 4.0) -> None:
        """Stop every job at its next safe point (each continues at the next start), close the
        rig (drivers disabled), release the data folder. Waits at most ``timeout`` seconds for
        the threads; one still stuck in a network call is left to die with the process."""
        self.stopping.set()
        self.token_check.close()
        with self._lock:
            for run in self._runs.values():
                run.stop.set()
        self._rig_stop.set()
        self._rig_queue.put(None)
        for worker in self._transfer_threads:
            self._queues[Resource.FUSION if worker.name == "fusion" else Resource.NETWORK].put(None)
        deadline = time.monotonic() + timeout
        for thread in [self._rig_thread, *self._transfer_threads]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    log.warning("%s did not stop in time; its job continues at the next start",
                                thread.name)
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
                    "transfers": [i for i, r in self._runs.items()
                                  if r.resource == Resource.NETWORK]}

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

    def scan(self, positions: int, project: str | None, passes: int = 1,
             stack: int | None = None) -> dict[str, Any]:
        """Queue a new scan of ``positions`` per pass, ``stack`` photos a position
        (``camera.focus.stack`` when None), after the disk and token checks; returns the job."""
        if self.stopping.is_set():
            raise UserError("the daemon is stopping")
        name = check_project(project) if project else None
        warnings = actions.check_new(self.cfg, positions * passes, stack=stack,
                                     token_info=self.token_check)
        if self.stopping.is_set():
            raise UserError("the daemon is stopping")
        for warning in warnings:
            log.warning("%s", warning)
        with self._create_lock:  # two requests for one name: the second is refused
            job = actions.create(self.cfg, self.store, positions=positions, project=name,
                                 jobs=list(self.jobs.values()), passes=passes, stack=stack)
            self._adopt(job)
        log.info("job %s: queued, %d positions, project %s", job.id, positions, job.data["project"])
        self._schedule(job)
        return self._public(job)

    def upload(self, path: str, project: str | None) -> dict[str, Any]:
        """Queue the upload of the folder or zip ``path`` as a job (or go on with the unfinished
        one of the same set: see :func:`~openscan_pi.jobs.actions.create_upload`); returns the
        job, with ``continued`` true when it was begun before."""
        from pathlib import Path

        if self.stopping.is_set():
            raise UserError("the daemon is stopping")
        with self._create_lock:
            known = {j.id: j for j in self.jobs.values()}
            job, continued = actions.create_upload(self.cfg, self.store, Path(path), project,
                                                   jobs=known.values())
            if job.id not in known:
                self._adopt(job)
        log.info("job %s: %s %s as project %s", job.id, "continuing" if continued else "uploading",
                 job.record.source, job.record.project)
        self._schedule(job)
        return {**self._public(job), "continued": continued}

    def cancel(self, job_id: str | None) -> tuple[str, concurrent.futures.Future[None] | None]:
        """Cancel a job (the running one by default). Returns its id and a future done when it
        has stopped, when it was running (None when it was cancelled at once). A running job's
        cancel is on disk before its worker is stopped: it holds across a crash or restart."""
        with self._lock:
            if job_id is None:
                job_id = self._rig_job or next(iter(self._runs), None) or next(
                    iter(self._active), None)
                if job_id is None:
                    raise InputError("nothing to cancel: no job is running (`openscan-pi jobs` "
                                     "lists them; `openscan-pi cancel JOB` cancels a failed one)")
            job = self._job(job_id)
            run = self._runs.get(job.id)
            if actions.cancel(job, held=run is not None):
                assert run is not None
                run.stop.set()  # a call to the cloud in flight ends at once
                return job.id, run.released
            return job.id, None

    def pause(self, job_id: str | None) -> dict[str, Any]:
        """Pause a scan (the one on the rig by default) before its next position."""
        with self._lock:
            if job_id is None:
                job_id = self._rig_job or next(
                    (j.id for j in self._active.values() if needs(j.data) == Resource.RIG), None)
                if job_id is None:
                    raise InputError("nothing to pause: no scan is running or queued")
            job = self._job(job_id)
            actions.pause(job, held=job.id in self._runs)
        log.info("job %s: pause asked (%s)", job.id, job.state.value)
        return self._public(job)

    def go_on(self, job_id: str | None) -> dict[str, Any]:
        """``continue``: a paused scan, or one waiting between passes (the last one paused or
        waiting, by default), goes on."""
        with self._lock:
            if job_id is None:
                paused = [j for j in self.jobs.values() if j.state in HELD]
                if not paused:
                    raise InputError("nothing to continue: no job is paused or waiting")
                job_id = max(paused, key=lambda j: float(j.data["updated"])).id
            job = self._job(job_id)
            actions.go_on(job)
        log.info("job %s: continues", job.id)
        self._schedule(job)
        return self._public(job)

    def retry(self, job_id: str) -> dict[str, Any]:
        """Continue a failed job from its last durable step."""
        if job_id not in self.jobs:
            self._recheck(job_id)  # a folder fixed (or put back) since it was looked at
        with self._lock:
            job = self._job(job_id)
            actions.retry(job)
        log.info("job %s: retried (%s)", job.id, job.state.value)
        self._schedule(job)
        return self._public(job)

    def job_public(self, job_id: str) -> dict[str, Any]:
        """One job's object."""
        return self._public(self._job(job_id))

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

    @property
    def _rig_job(self) -> str | None:
        """The job whose steps have the rig now, or None."""
        return next((i for i, r in self._runs.items() if r.resource == Resource.RIG), None)

    def _schedule(self, job: Job) -> None:
        """Queue the job for the resource its next step needs (as the lifecycle says)."""
        with self._lock:
            run = self._runs.get(job.id)
            if run is not None:  # a worker still has it: queued when it lets go
                run.again = True
                return
        resource = needs(job.data)
        if resource == Resource.RIG:
            self._rig_queue.put(job.id)
        elif resource is not None:
            self._queues[resource].put(job.id)

    def _claim(self, job: Job, resource: Resource) -> _Run | None:
        """Take the job for a worker of ``resource``, unless its next step needs another one, or
        another worker has it."""
        with self._lock:
            if self.stopping.is_set() or needs(job.data) != resource or job.id in self._runs:
                return None
            run = self._runs[job.id] = _Run(resource)
            return run

    def _release(self, job: Job) -> None:
        with self._lock:
            run = self._runs.pop(job.id)
            if not actions.end_cancelled(job):  # a cancel recorded while the worker had it
                actions.end_paused(job)  # a pause: the scan stopped before a position
        run.released.set_result(None)
        give_back()  # what the job's steps allocated and freed, back to the kernel
        if run.again and not self.stopping.is_set():
            self._schedule(job)

    def _run(self, job: Job, run: _Run) -> str | None:
        """Run the job's steps that need ``run.resource``, then let go of it; returns why the
        rig worker was lost, when it was."""
        from openscan_pi.cloud.transfer import Cancelled
        from openscan_pi.jobs.runner import JobRunner
        from openscan_pi.rig.remote import WorkerLost

        try:
            with job.hold():
                runner = JobRunner(self.cfg, job, events=self._events(job), stop=run.stop,
                                   rig=self.rig)
                runner.run_steps(run.resource)
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
                    job.transition(S.FAILED, step=None,
                                   error=f"internal error: {exc} (see the daemon's log)")
                except Exception:  # the worker must live on: the job continues at the next start
                    log.exception("job %s: could not record the failure", job.id)
        finally:
            self._release(job)
        return None

    def _scan_job(self, job_id: str) -> None:
        job = self.jobs[job_id]
        restarts = 0
        while (run := self._claim(job, Resource.RIG)) is not None:
            try:
                lost = self._run(job, run)
            finally:
                self._notify()
            if lost is None or self.stopping.is_set():
                break
            restarts += 1
            job.update(rig_restarts=int(job.data.get("rig_restarts") or 0) + 1)
            if restarts > self.cfg.rig.max_restarts:
                job.transition(S.FAILED, step=None, error=(
                    f"{lost}; the rig worker was restarted {restarts - 1} times in this scan "
                    f"(rig.max_restarts): check the camera and the power supply, then "
                    f"`openscan-pi retry {job.id}` continues at the first missing position"))
                break
            log.warning("job %s: %s; continuing with a new rig worker (restart %d of %d)", job.id,
                        lost, restarts, self.cfg.rig.max_restarts)
        if needs(job.data) not in (None, Resource.RIG) and not self.stopping.is_set():
            self._schedule(job)  # its next step needs the fusion or the network

    def _worker_main(self, resource: Resource) -> None:
        """A thread of ``resource``'s queue (the network's: transfers; the fusion's)."""
        while (job_id := self._queues[resource].get()) is not None:
            if not self.stopping.is_set():
                self._worker_job(resource, job_id)

    def _worker_job(self, resource: Resource, job_id: str) -> None:
        job = self.jobs[job_id]
        run = self._claim(job, resource)
        if run is not None:
            self._run(job, run)
            if needs(job.data) not in (None, resource) and not self.stopping.is_set():
                self._schedule(job)  # the next step needs another resource

    def _fetch_token_info(self) -> TokenInfo:
        """The token's info from the cloud of the current config."""
        from openscan_pi.jobs.runner import fetch_token_info

        return fetch_token_info(self.cfg)

    # -- telling ----------------------------------------------------------------------------------

    def _changed(self, job: Job) -> None:
        """A job changed durably: keep the groups, tell it as :class:`JobChanged`, then the
        status."""
        with self._lock:
            if job.state in ACTIVE:
                self._active[job.id] = job
            else:
                self._active.pop(job.id, None)
            self._last = job
            before = self._seen.get(job.id)
            self._seen[job.id] = job.state.value
        record = job.record
        self.events.publish(JobChanged(job.id, record.state, before, record.project,
                                       record.error))
        self._notify()

    def _events(self, job: Job) -> Callable[..., None]:
        """The runner's events about ``job``, published as typed events."""
        def events(name: str, **fields: Any) -> None:
            event = from_runner(job.id, name, fields)
            if event is not None:
                self.events.publish(event)

        return events

    def _subscribe_own(self) -> None:
        """What the scheduler itself does with its events: the log, and the status told on
        upload progress (at most every PROGRESS_INTERVAL_S, and at the end)."""
        def progressed(e: JobProgress) -> None:
            now = time.monotonic()
            if e.what == "upload" and (now - self._progress_at >= PROGRESS_INTERVAL_S
                                       or e.done == e.total):
                self._progress_at = now
                self._notify()

        log_job_events(self.events)
        self.events.subscribe(JobProgress, progressed)

    def _notify(self) -> None:
        self.events.publish(StatusChanged(self.status()))

    def _current(self) -> Job | None:
        if self._rig_job:
            return self.jobs[self._rig_job]
        for job_id in self._runs:
            return self.jobs[job_id]
        for job in self._active.values():
            return job
        return self._last

    def _public(self, job: Job) -> dict[str, Any]:
        out = job.public()
        out["eta_s"] = self._eta.estimate(job.id, out)
        return out
