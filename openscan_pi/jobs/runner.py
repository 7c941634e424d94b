"""Run a job from wherever it stands to ``done``: scan, upload, process, download.

Each step starts from what is durable: scanning continues at the first position not in the
manifest (the plan is saved with the job, so a resumed scan visits the same positions), uploading
continues from the transfer journal (never a second cloud project), processing keeps polling,
downloading starts the download again (the model folder is never half there).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openscan_pi.config import Config
from openscan_pi.errors import DiskError, UserError
from openscan_pi.fsutil import atomic_write_json, read_json
from openscan_pi.jobs.state import JobState
from openscan_pi.jobs.store import Capture, Job

if TYPE_CHECKING:
    from openscan_pi.cloud.local import LocalCloud
    from openscan_pi.rig.rig import Rig

log = logging.getLogger(__name__)

#: Margin on the disk space a scan is estimated to need.
DISK_MARGIN = 1.5
#: JPEG bytes per pixel assumed for the estimate (quality 90 photos of real objects).
JPEG_BYTES_PER_PIXEL = 0.5
#: Bound of the token check before a scan, in seconds (the scan goes ahead without it).
PREFLIGHT_TIMEOUT_S = 5.0

Events = Callable[..., None]


def _no_events(event: str, **fields: Any) -> None:
    del event, fields


def estimated_bytes(cfg: Config, positions: int) -> int:
    """What a scan of ``positions`` is expected to write, for the disk and token checks."""
    width, height = cfg.camera.resolution
    return int(positions * cfg.camera.focus.stack * width * height * JPEG_BYTES_PER_PIXEL)


def check_free_space(folder: Path, need: float) -> None:
    """:class:`DiskError` naming the figures when ``folder``'s disk has less than ``need`` bytes."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DiskError(f"not enough disk space for this scan: about {need / 1e9:.1f} GB needed, "
                        f"{free / 1e9:.1f} GB free in {folder}: free some space, or scan fewer "
                        "positions")


def preflight(cfg: Config, positions: int, *, local: LocalCloud | None = None) -> list[str]:
    """Refuse a new scan the disk or the token cannot take (:class:`UserError`); returns warnings
    (e.g. the cloud could not be asked: the scan goes ahead, the upload waits for the network)."""
    from openscan_pi.cloud.errors import CloudError
    from openscan_pi.cloud.transfer import connect, token_problem

    need = estimated_bytes(cfg, positions)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    check_free_space(cfg.data_dir, need * DISK_MARGIN)
    photos = positions * cfg.camera.focus.stack
    if not cfg.cloud.is_local and not cfg.cloud.token:
        raise UserError("no token: set cloud.token in the config or $OPENSCAN_PI_TOKEN (a private "
                        "token comes from cloud@openscan.eu), then scan")
    try:
        with connect(cfg, local) as (api, _):
            # one quick try: a scan must not wait on Wi-Fi, nor on a cloud that answers slowly
            info = api.token_info(once=True, timeout_s=PREFLIGHT_TIMEOUT_S)
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

    The daemon runs the two halves on different threads: :meth:`scan_phase` on the rig's (with
    the daemon's open ``rig``), :meth:`transfer_phase` on a transfer worker (with the daemon's
    bundled ``local`` cloud, when ``cloud.url`` is ``local``).
    """

    def __init__(self, cfg: Config, job: Job, *, events: Events = _no_events,
                 stop: threading.Event | None = None, rig: Rig | None = None,
                 local: LocalCloud | None = None) -> None:
        self.cfg = cfg
        self.job = job
        self.emit = events
        self.stop = stop or threading.Event()
        self.rig = rig
        self.local = local

    def run(self) -> Job:
        """Take the job to ``done``; on a failure the job is ``failed`` (with its images) and the
        error is raised again for the caller to show."""
        self.resume()
        self.scan_phase()
        self.transfer_phase()
        return self.job

    def resume(self) -> None:
        """A failed job goes back to the state it failed in (``retry``)."""
        job = self.job
        if job.state == JobState.FAILED:
            target = JobState(job.data.get("resume_state") or "scanning")
            if target == JobState.QUEUED:  # it failed before its scan began
                target = JobState.SCANNING
            job.transition(target, error=None)

    def scan_phase(self) -> None:
        """Capture what is missing, if the job is queued or scanning."""
        if self.job.state in (JobState.QUEUED, JobState.SCANNING):
            self._guard(self.scan)

    def transfer_phase(self) -> None:
        """Upload, process, download, if the job is at one of those steps."""
        if self.job.state in (JobState.UPLOADING, JobState.PROCESSING, JobState.DOWNLOADING):
            self._guard(self.transfer)

    def _guard(self, step: Callable[[], None]) -> None:
        from openscan_pi.cloud.transfer import Cancelled

        try:
            step()
        except Cancelled:
            raise  # stopped: the job stays where it is, to continue later
        except UserError as exc:
            if self.stop.is_set():  # e.g. a move or homing cut short by the stop: not a failure
                raise Cancelled(f"job {self.job.id} stopped ({exc}); it continues where it "
                                "stopped") from None
            self.job.transition(JobState.FAILED, error=str(exc), step="failed")
            raise

    # -- scanning ---------------------------------------------------------------------------

    def _check_disk(self) -> None:
        done = sum(c.size for c in self.job.captures())
        need = estimated_bytes(self.cfg, int(self.job.data["positions"])) * DISK_MARGIN - done
        check_free_space(self.job.folder, need)

    def _plan(self, start: tuple[float, float]) -> list[dict[str, float]]:
        """The positions in capture order, fixed at the first start of the scan."""
        path = self.job.folder / "plan.json"
        if path.exists():
            return list(read_json(path))
        from openscan_pi.plan import make_plan
        from openscan_pi.rig.estimate import rig_time_fn

        plan = make_plan(int(self.job.data["positions"]), self.cfg.plan,
                         rig_time_fn(self.cfg.rig), start)
        positions = [{"rotor": p.rotor, "turntable": p.turntable} for p in plan.positions]
        atomic_write_json(path, positions)
        self.job.update(motion_estimate_s=plan.motion_time_s)
        return positions

    def scan(self) -> None:
        """Capture every position not yet in the manifest; then hand over to the transfer."""
        from openscan_pi.rig.camera import lens_positions
        from openscan_pi.rig.rig import Rig

        job = self.job
        if self.cfg.camera.backend == "external":
            raise UserError("scan with camera.backend: external is not supported yet: the DSLR "
                            "keeps the photos; copy them off and use `openscan-pi upload`")
        job.transition(JobState.SCANNING, step="checking disk space")
        for leftover in job.images.glob(".*.tmp"):  # a photo cut short by a crash
            leftover.unlink()
        self._check_disk()
        if self.rig is not None:
            self.rig.cancel = self.stop
        with contextlib.nullcontext(self.rig) if self.rig else Rig(self.cfg, cancel=self.stop) as rig:
            job.update(step="homing")
            timings = {"motion_s": float(job.data.get("motion_s") or 0.0),
                       "capture_s": float(job.data.get("capture_s") or 0.0)}
            began = time.perf_counter()
            message = rig.home()
            timings["motion_s"] += time.perf_counter() - began  # homing is motion too
            log.info("%s", message)
            positions = self._plan(rig.angles())
            info = rig.start_camera()
            lenses = lens_positions(self.cfg.camera.focus, bool(info.get("has_autofocus")))
            done = {(c.position, c.shot) for c in job.captures()}
            total = len(positions)
            for index, pos in enumerate(positions):
                if all((index, k) in done for k in range(len(lenses))):
                    continue
                self._check_stop()
                job.progress(step=f"capturing {index + 1}/{total}")  # the capture is the step
                began = time.perf_counter()
                rig.move(rotor=pos["rotor"], turntable=pos["turntable"])
                self.stop.wait(self.cfg.rig.settle_s * rig.time_scale)
                timings["motion_s"] += time.perf_counter() - began
                for shot_no, lens in enumerate(lenses):
                    if (index, shot_no) in done:
                        continue
                    began = time.perf_counter()
                    name = f"pos{index:04d}_{shot_no}.jpg"
                    shot = rig.capture(job.images / name, index=index, lens_position=lens)
                    timings["capture_s"] += time.perf_counter() - began
                    job.add_capture(Capture(position=index, shot=shot_no, file=name,
                                            size=shot.size, crc32=shot.crc32, rotor=shot.rotor,
                                            turntable=shot.turntable,
                                            lens_position=shot.lens_position), **timings)
                self.emit("scan", done=int(job.data["captured"]), total=total)
            rig.light.off()
        job.transition(JobState.UPLOADING, step="packaging")

    def _check_stop(self) -> None:
        if self.stop.is_set():
            from openscan_pi.cloud.transfer import Cancelled

            raise Cancelled(f"job {self.job.id} stopped; it continues where it stopped")

    # -- the cloud --------------------------------------------------------------------------

    def _events(self, event: str, **fields: Any) -> None:
        if event == "upload":
            self.job.progress(bytes_uploaded=fields["done"])  # not a durable step
        elif event == "part":
            self.job.update(step=f"uploading part {fields['part'] + 1}/{fields['parts']}")
        elif event == "status":
            self.job.update(cloud_status=fields["status"])
        self.emit(event, **fields)

    def transfer(self) -> None:
        """Upload (from the journal), start, poll, download the model into the job folder."""
        self._began = time.perf_counter()
        self._spent_before = float(self.job.data.get("transfer_s") or 0.0)
        try:
            self._transfer()
        finally:
            if self.job.state != JobState.DONE:
                self.job.update(transfer_s=self._transfer_s())

    def _transfer_s(self) -> float:
        """Seconds this job has spent uploading, processing and downloading, over all runs."""
        return self._spent_before + time.perf_counter() - self._began

    def _transfer(self) -> None:
        from openscan_pi.cloud.journal import Journal
        from openscan_pi.cloud.transfer import Transfer, connect
        from openscan_pi.cloud.virtualzip import VirtualZip

        job, cfg = self.job, self.cfg
        captures = job.captures()
        if not captures:
            raise UserError(f"job {job.id} has no images to upload")
        source = VirtualZip([c.member(job.images) for c in captures])
        project = str(job.data["project"])
        journal = Journal.find(cfg.data_dir, project)
        if journal is None:
            journal = Journal.create(cfg.data_dir, project, source=str(job.images),
                                     digest=source.digest, size=source.size, photos=source.photos,
                                     part_size=cfg.cloud.max_part_bytes, crc_cache={},
                                     job=job.id)
        elif journal.data.get("job") != job.id:
            raise UserError(f"project {project} belongs to another upload: give the scan "
                            "another --project")
        with connect(cfg, self.local) as (api, rebase):
            t = Transfer(api, cfg, journal, source, events=self._events, rebase=rebase,
                         stop=self.stop)
            if job.state == JobState.UPLOADING:
                job.update(step="uploading", bytes_total=source.size)
                if not journal.reached("uploaded"):
                    t.upload()
                if not journal.reached("started"):
                    t.start()
                job.transition(JobState.PROCESSING, step="waiting for the cloud",
                               bytes_uploaded=source.size,
                               cloud_status=journal.data.get("status"))
            if job.state == JobState.PROCESSING:
                if not journal.reached("processed"):
                    t.poll()
                job.transition(JobState.DOWNLOADING, step="downloading the model")
            if job.state == JobState.DOWNLOADING:
                if not journal.reached("downloaded"):
                    t.download(job.model_dir)
                job.transition(JobState.DONE, step="done", model_dir=str(job.model_dir),
                               transfer_s=self._transfer_s())
