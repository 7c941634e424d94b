"""Run a job from wherever it stands to ``done``, step by step as :mod:`.lifecycle` declares.

The runner takes the job's next step from its record, moves the job into the state that step
shows, runs it, and goes on with the step after, as long as the steps need the resource it was
asked to run (the daemon runs the rig's steps on the rig's thread and the network's on a transfer
worker; the foreground ``scan`` runs them all). Each step starts from what is durable (see
:mod:`.capture` and :mod:`.cloud_steps`). A failure leaves the job ``failed`` with its images,
``resume_state`` naming where ``retry`` goes back to; a stop leaves it in its state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from openscan_pi.config import Config
from openscan_pi.errors import UserError
from openscan_pi.jobs import capture, cloud_steps, fuse
from openscan_pi.jobs.lifecycle import END, Resource, Step, after, next_step, resume_state
from openscan_pi.jobs.recover import RetryFrom
from openscan_pi.jobs.space import DISK_MARGIN, check_free_space, estimated_bytes
from openscan_pi.jobs.state import JobState
from openscan_pi.jobs.store import Job

if TYPE_CHECKING:
    from openscan_pi.cloud.api import TokenInfo
    from openscan_pi.rig.remote import ScanRig

log = logging.getLogger(__name__)

__all__ = ["DISK_MARGIN", "JobRunner", "check_free_space", "estimated_bytes", "preflight"]

#: Bound of the token check before a scan, in seconds (the scan goes ahead without it).
PREFLIGHT_TIMEOUT_S = 5.0

Events = Callable[..., None]

#: What runs each step of :data:`~openscan_pi.jobs.lifecycle.STEPS`, by the step's name (each
#: resumable from the job record; a test keeps this and the table in step).
RUNS: dict[str, Callable[[JobRunner], None]] = {
    "capture": capture.capture,
    "fuse": fuse.fuse,
    "upload": cloud_steps.upload,
    "start": cloud_steps.start,
    "poll": cloud_steps.poll,
    "download": cloud_steps.download,
}


def _no_events(event: str, **fields: Any) -> None:
    del event, fields


def fetch_token_info(cfg: Config) -> TokenInfo:
    """The token's credit and limits, asked once (a scan must not wait on Wi-Fi)."""
    from openscan_pi.cloud.transfer import connect

    with connect(cfg) as api:
        # one quick try: a scan must not wait on Wi-Fi, nor on a cloud that answers slowly
        return api.token_info(once=True, timeout_s=PREFLIGHT_TIMEOUT_S)


def preflight(cfg: Config, positions: int, *, stack: int | None = None,
              token_info: Callable[[], TokenInfo] | None = None) -> list[str]:
    """Refuse a new scan the disk or the token cannot take (:class:`UserError`); returns warnings
    (e.g. the cloud could not be asked: the scan goes ahead, the upload waits for the network).
    ``stack``: photos a position (``camera.focus.stack`` when None). ``token_info`` asks the
    cloud instead of :func:`fetch_token_info` (the daemon shares one check between the scans
    asked at once)."""
    from openscan_pi.cloud.errors import CloudError
    from openscan_pi.cloud.transfer import token_problem

    stack = cfg.camera.focus.stack if stack is None else stack
    need = estimated_bytes(cfg, positions, stack)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    check_free_space(cfg.data_dir, need * DISK_MARGIN)
    photos = positions * stack
    if stack > 1 and cfg.camera.focus.upload == "fused":
        # one fused photo a position goes up (the frames stay on disk)
        need, photos = need // stack, positions
    if not cfg.cloud.token:
        raise UserError("no token: set cloud.token in the config or $OPENSCAN_PI_TOKEN (a private "
                        "token comes from cloud@openscan.eu), then scan")
    try:
        info = token_info() if token_info is not None else fetch_token_info(cfg)
    except CloudError as exc:
        return [f"could not check the token ({exc}); scanning anyway, the upload waits for the "
                "cloud"]
    problem = token_problem(info, need, photos, about="about ")
    if problem:
        raise UserError(f"{problem}: `openscan-pi token` shows its limits; scan fewer positions "
                        "or use another token")
    return []


class JobRunner:
    """Runs one job; ``stop`` (set from another thread) ends it at the next safe point, leaving
    it in its state to continue later (:class:`~openscan_pi.cloud.transfer.Cancelled` is raised).

    The daemon runs the rig's steps with its open ``rig`` and the network's on a transfer
    worker, each on its own thread.
    """

    def __init__(self, cfg: Config, job: Job, *, events: Events = _no_events,
                 stop: threading.Event | None = None, rig: ScanRig | None = None) -> None:
        self.cfg = cfg
        self.job = job
        self.emit = events
        self.stop = stop or threading.Event()
        self.rig = rig
        self._cloud: cloud_steps.CloudSession | None = None

    def run(self, *, before: str | None = None) -> Job:
        """Take the job to ``done`` (or up to the step named ``before``); on a failure the job is
        ``failed`` (with its images) and the error is raised again for the caller to show."""
        self.resume()
        self.run_steps(before=before)
        return self.job

    def resume(self) -> None:
        """A failed job goes back to the state of the step it failed in (``retry``)."""
        if self.job.state == JobState.FAILED:
            self.job.transition(resume_state(self.job.data), error=None)

    def run_steps(self, resource: Resource | None = None, *, before: str | None = None) -> None:
        """Run the job's steps from its next one, while they need ``resource`` (all: None) and
        until the step named ``before`` (which is not run). After each step the job moves into
        the state of the step after it (durably: a job handed to the network's queue is
        ``uploading`` on disk), after the last into ``done``."""
        step = next_step(self.job.data)
        if step is None or self.job.state == JobState.FAILED:
            return
        began, earlier = time.perf_counter(), float(self.job.data.get("transfer_s") or 0.0)
        timed = step.resource == Resource.NETWORK

        def spent() -> dict[str, float]:
            return {"transfer_s": earlier + time.perf_counter() - began} if timed else {}

        try:
            if self.job.state != step.state:
                self.job.transition(step.state, step=step.detail, at=step.name)
            elif self.job.record.at != step.name:
                self.job.update(at=step.name)
            while (step is not None and (resource is None or step.resource == resource)
                   and step.name != before):
                self._guard(step)
                step = after(step)
                if step is None:
                    self.job.transition(END, step=None, at=None, **spent())
                elif step.state != self.job.state:
                    self.job.transition(step.state, step=step.detail, at=step.name)
                else:  # the next step of the same state: where a restart goes on
                    self.job.update(at=step.name, **({"step": step.detail} if step.detail
                                                     else {}))
        finally:
            if self._cloud is not None:
                self._cloud.close()
                self._cloud = None
            if timed and self.job.state != END:
                self.job.update(**spent())

    def scan_phase(self) -> None:
        """The steps on the rig (the capture), when the job is at them."""
        self.run_steps(Resource.RIG)

    def transfer_phase(self) -> None:
        """The steps on the network (upload, start, poll, download), when the job is at them."""
        self.run_steps(Resource.NETWORK)

    def cloud(self) -> cloud_steps.CloudSession:
        """The journal, set and connection the network steps of this run share."""
        if self._cloud is None:
            self._cloud = cloud_steps.CloudSession(self)
        return self._cloud

    def check_stop(self) -> None:
        """:class:`~openscan_pi.cloud.transfer.Cancelled` once asked to stop."""
        if self.stop.is_set():
            from openscan_pi.cloud.transfer import Cancelled

            raise Cancelled(f"job {self.job.id} stopped; it continues where it stopped")

    def _guard(self, step: Step) -> None:
        from openscan_pi.cloud.transfer import Cancelled

        try:
            RUNS[step.name](self)
        except Cancelled:
            raise  # stopped: the job stays where it is, to continue later
        except (UserError, FileNotFoundError) as exc:
            if self.stop.is_set() and isinstance(exc, UserError):
                # e.g. a move or homing cut short by the stop: not a failure
                raise Cancelled(f"job {self.job.id} stopped ({exc}); it continues where it "
                                "stopped") from None
            error = self._explain(exc)
            again = {"resume_state": error.state.value} if isinstance(error, RetryFrom) else {}
            self.job.transition(JobState.FAILED, error=str(error), step=None, **again)
            if error is exc:
                raise
            raise error from None

    def _explain(self, exc: Exception) -> UserError:
        """The failure as the user should read it: a photo that went missing (or changed) while
        the set was uploaded, or a file that disappeared while the job ran, says so and what
        ``retry`` does about it."""
        job = self.job
        if (job.state == JobState.UPLOADING and not isinstance(exc, RetryFrom)
                and not job.record.source):
            try:
                cloud_steps.upload_captures(self)  # raises RetryFrom when a photo is not as captured
            except RetryFrom as missing:
                return missing
            except Exception:  # the original failure is the one to show
                pass
        if isinstance(exc, UserError):
            return exc
        gone = getattr(exc, "filename", None)
        return UserError(f"{gone} disappeared while job {job.id} ran: `openscan-pi retry "
                         f"{job.id}` goes on from what is on disk")

    # -- scanning ---------------------------------------------------------------------------
