"""Run a job from wherever it stands to ``done``: scan, upload, process, download.

Each step starts from what is durable: scanning continues at the first position not in the
manifest (the plan is saved with the job, so a resumed scan visits the same positions), uploading
continues from the transfer journal (never a second cloud project), processing keeps polling,
downloading takes a model folder that was renamed into place before the records said so, or
starts the download again (the model folder is never half there). What is found missing on the
way (a photo, the manifest, the plan, the journal) is dealt with as :mod:`.recover` describes.
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
from openscan_pi.fsutil import atomic_write_json
from openscan_pi.jobs import recover
from openscan_pi.jobs.check import MOVE_AWAY, BrokenJob, BrokenJobError, plan_problem, read_json_file
from openscan_pi.jobs.recover import RetryFrom
from openscan_pi.jobs.state import JobState
from openscan_pi.jobs.store import Capture, Job

if TYPE_CHECKING:
    from openscan_pi.cloud.api import TokenInfo
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


def fetch_token_info(cfg: Config, local: LocalCloud | None = None) -> TokenInfo:
    """The token's credit and limits, asked once (a scan must not wait on Wi-Fi)."""
    from openscan_pi.cloud.transfer import connect

    with connect(cfg, local) as (api, _):
        # one quick try: a scan must not wait on Wi-Fi, nor on a cloud that answers slowly
        return api.token_info(once=True, timeout_s=PREFLIGHT_TIMEOUT_S)


def preflight(cfg: Config, positions: int, *, local: LocalCloud | None = None,
              token_info: Callable[[], TokenInfo] | None = None) -> list[str]:
    """Refuse a new scan the disk or the token cannot take (:class:`UserError`); returns warnings
    (e.g. the cloud could not be asked: the scan goes ahead, the upload waits for the network).
    ``token_info`` asks the cloud instead of :func:`fetch_token_info` (the daemon shares one
    check between the scans asked at once)."""
    from openscan_pi.cloud.errors import CloudError
    from openscan_pi.cloud.transfer import token_problem

    need = estimated_bytes(cfg, positions)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    check_free_space(cfg.data_dir, need * DISK_MARGIN)
    photos = positions * cfg.camera.focus.stack
    if not cfg.cloud.is_local and not cfg.cloud.token:
        raise UserError("no token: set cloud.token in the config or $OPENSCAN_PI_TOKEN (a private "
                        "token comes from cloud@openscan.eu), then scan")
    try:
        info = token_info() if token_info is not None else fetch_token_info(cfg, local)
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
            if target not in (JobState.UPLOADING, JobState.PROCESSING, JobState.DOWNLOADING):
                target = JobState.SCANNING  # it failed before (or while) its scan
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
        except (UserError, FileNotFoundError) as exc:
            if self.stop.is_set() and isinstance(exc, UserError):
                # e.g. a move or homing cut short by the stop: not a failure
                raise Cancelled(f"job {self.job.id} stopped ({exc}); it continues where it "
                                "stopped") from None
            error = self._explain(exc)
            again = {"resume_state": error.state.value} if isinstance(error, RetryFrom) else {}
            self.job.transition(JobState.FAILED, error=str(error), step="failed", **again)
            if error is exc:
                raise
            raise error from None

    def _explain(self, exc: Exception) -> UserError:
        """The failure as the user should read it: a photo that went missing (or changed) while
        the set was uploaded, or a file that disappeared while the job ran, says so and what
        ``retry`` does about it."""
        job = self.job
        if job.state == JobState.UPLOADING and not isinstance(exc, RetryFrom):
            try:
                self._upload_captures()  # raises RetryFrom when a photo is not as captured
            except RetryFrom as missing:
                return missing
            except Exception:  # the original failure is the one to show
                pass
        if isinstance(exc, UserError):
            return exc
        return UserError(f"{exc.filename} disappeared while job {job.id} ran: `openscan-pi retry "
                         f"{job.id}` goes on from what is on disk")

    # -- scanning ---------------------------------------------------------------------------

    def _check_disk(self) -> None:
        done = sum(c.size for c in self.job.captures())
        need = estimated_bytes(self.cfg, int(self.job.data["positions"])) * DISK_MARGIN - done
        check_free_space(self.job.folder, need)

    def _plan(self, start: tuple[float, float]) -> list[dict[str, float]]:
        """The positions in capture order, fixed at the first start of the scan (made again,
        keeping the positions already photographed, when ``plan.json`` was lost)."""
        job = self.job
        path = job.folder / "plan.json"
        if path.exists():
            fix = (f"delete {path} (`openscan-pi retry {job.id}` makes a new one and keeps the "
                   f"photos taken), or {MOVE_AWAY.format(root=job.folder.parent)}")
            plan = read_json_file(job.folder, "plan.json", fix)
            problem = plan_problem(plan, int(job.data["positions"]))
            if problem:
                raise BrokenJobError(BrokenJob(job.folder, problem, fix))
            return list(plan)
        from openscan_pi.plan import PlanCancelled, make_plan
        from openscan_pi.rig.estimate import rig_time_fn

        job.update(step="planning")
        try:
            plan = make_plan(int(job.data["positions"]), self.cfg.plan, rig_time_fn(self.cfg.rig),
                             start, stop=self.stop.is_set)
        except PlanCancelled:
            self._check_stop()  # raises Cancelled: planned again when the job goes on
            raise
        positions = [{"rotor": p.rotor, "turntable": p.turntable} for p in plan.positions]
        taken = job.captures()
        if taken:
            positions = recover.replan(positions, taken)
            self.emit("warning", text=f"{path} is missing: made again, keeping the positions of "
                                      f"the {len(taken)} photos taken")
        atomic_write_json(path, positions)
        if not taken:
            job.update(motion_estimate_s=plan.motion_time_s)
        return positions

    def _check_photos(self) -> None:
        """Before capturing: a photo of the manifest that is missing (or not the size it was
        captured at) is left out, to be captured again; a photo on disk that the manifest lacks
        (a crash between the two, or a lost manifest) is taken in, when the plan says where it
        was taken."""
        job = self.job
        lost = not job.manifest.exists()
        captures = job.captures()
        bad = recover.bad_photos(job, captures)
        keep = [c for c in captures if c not in {b for b, _ in bad}]
        plan = recover.read_plan(job)
        found = recover.photos_on_disk(job, plan, {(c.position, c.shot) for c in captures}
                                       ) if plan else []
        for c, why in bad[:3]:
            self.emit("warning", text=f"{job.images / c.file} is {why}: captured again at "
                                      f"position {c.position + 1}")
        if len(bad) > 3:
            self.emit("warning", text=f"{len(bad) - 3} more photos are missing or changed: "
                                      "captured again at their positions")
        if lost and found:
            self.emit("warning", text=f"{job.manifest} is missing: rebuilt from the "
                                      f"{len(found)} photos in {job.images}")
        elif lost and plan is None and any(recover.PHOTO_NAME.match(p.name)
                                           for p in job.images.iterdir()):
            self.emit("warning", text=f"{job.manifest} and {job.folder / 'plan.json'} are "
                                      "missing: every position is captured again")
        if bad or found:
            job.set_captures(sorted(keep + found, key=lambda c: (c.position, c.shot))
                             if lost else keep + found)

    def _check_scanned(self, total: int, shots: int) -> None:
        """After the capture loop: every position has its photos in the manifest (one that lost
        entries meanwhile is made whole from the photos on disk, or the job fails saying so)."""
        job = self.job
        have = {(c.position, c.shot) for c in job.captures()}
        if all((i, k) in have for i in range(total) for k in range(shots)):
            return
        found = recover.photos_on_disk(job, recover.read_plan(job), have)
        if found:
            job.set_captures(job.captures() + found)
            have |= {(c.position, c.shot) for c in found}
        lacking = sorted({i + 1 for i in range(total) for k in range(shots) if (i, k) not in have})
        if lacking:
            raise UserError(f"{job.manifest} lacks positions {recover.listing(list(map(str, lacking)))} "
                            f"after the scan (was it changed meanwhile?): `openscan-pi retry "
                            f"{job.id}` captures them")

    def scan(self) -> None:
        """Capture every position not yet in the manifest; then hand over to the transfer."""
        from openscan_pi.rig.camera import CameraStalled, lens_positions

        job = self.job
        if self.cfg.camera.backend == "external":
            raise UserError("scan with camera.backend: external is not supported yet: the DSLR "
                            "keeps the photos; copy them off and use `openscan-pi upload`")
        job.transition(JobState.SCANNING, step="checking disk space")
        job.images.mkdir(exist_ok=True)
        for leftover in job.images.glob(".*.tmp"):  # a photo cut short by a crash
            leftover.unlink()
        self._check_photos()
        self._check_disk()
        if self.rig is not None:
            self.rig.cancel = self.stop
        with contextlib.nullcontext(self.rig) if self.rig else self._open_rig() as rig:
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
                    try:
                        shot = rig.capture(job.images / name, index=index, lens_position=lens)
                    except CameraStalled as exc:
                        raise UserError(self._stalled(exc, index, total)) from None
                    timings["capture_s"] += time.perf_counter() - began
                    job.add_capture(Capture(position=index, shot=shot_no, file=name,
                                            size=shot.size, crc32=shot.crc32, rotor=shot.rotor,
                                            turntable=shot.turntable,
                                            lens_position=shot.lens_position), **timings)
                self.emit("scan", done=int(job.data["captured"]), total=total)
            rig.light.off()
        self._check_scanned(total, len(lenses))
        job.transition(JobState.UPLOADING, step="packaging")

    def _open_rig(self) -> Rig:
        """The rig in this process (the foreground scan; the daemon passes its worker's)."""
        from openscan_pi.rig.rig import Rig

        return Rig(self.cfg, cancel=self.stop)

    def _stalled(self, exc: Exception, index: int, total: int) -> str:
        """The failure of a scan whose camera stalled at position ``index`` (after its retries)."""
        job = self.job
        return (f"camera stalled at position {index + 1}/{total} ({exc}): the "
                f"{int(job.data.get('captured') or 0)} photos taken are kept; check the camera's "
                f"ribbon cable and the power supply, then `openscan-pi retry {job.id}` continues at "
                f"position {index + 1}")

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

        job, cfg = self.job, self.cfg
        project = str(job.data["project"])
        journal = Journal.find(cfg.data_dir, project)
        if journal is not None and journal.data.get("job") != job.id:
            raise UserError(f"project {project} belongs to another upload: give the scan "
                            "another --project")
        if job.state == JobState.DOWNLOADING and self._model_in_place(journal):
            return
        uploading = job.state == JobState.UPLOADING and not (journal and journal.reached("uploaded"))
        source = self._upload_source() if uploading else None
        if journal is None:
            journal = self._new_journal(source)
        elif source is not None and journal.data.get("digest") != source.digest:
            self._set_changed(journal, source)
        with connect(cfg, self.local) as (api, rebase):
            t = Transfer(api, cfg, journal, source, events=self._events, rebase=rebase,
                         stop=self.stop)
            if job.state == JobState.UPLOADING:
                size = int(journal.data["size"])
                job.update(step="uploading", bytes_total=size)
                if not journal.reached("uploaded"):
                    t.upload()
                if not journal.reached("started"):
                    t.start()
                job.transition(JobState.PROCESSING, step="waiting for the cloud",
                               bytes_uploaded=size, cloud_status=journal.data.get("status"))
            if job.state == JobState.PROCESSING:
                if not journal.reached("processed"):
                    t.poll()
                job.transition(JobState.DOWNLOADING, step="downloading the model")
            if job.state == JobState.DOWNLOADING:
                if not journal.reached("processed"):  # a journal made again: no link yet
                    t.poll()
                if not journal.reached("downloaded"):
                    t.download(job.model_dir)
                job.transition(JobState.DONE, step="done", model_dir=str(job.model_dir),
                               transfer_s=self._transfer_s())

    def _model_in_place(self, journal: Any) -> bool:
        """Clear what a cut download left; True (and the job done) when the model folder was
        renamed into place before the records said so."""
        job = self.job
        if journal is not None and journal.reached("downloaded"):
            return False
        files, said = recover.model_in_place(job.model_dir)
        for line in said:
            self.emit("warning", text=line)
        if files is None:
            return False
        journal = journal or self._new_journal(None, quiet=True)
        journal.update(phase="downloaded", model_dir=str(job.model_dir),
                       files=[str(f) for f in files])
        job.transition(JobState.DONE, step="done", model_dir=str(job.model_dir),
                       transfer_s=self._transfer_s())
        return True

    def _upload_source(self) -> Any:
        """The set to upload (see :meth:`_upload_captures`)."""
        from openscan_pi.cloud.virtualzip import VirtualZip

        return VirtualZip([c.member(self.job.images) for c in self._upload_captures()])

    def _upload_captures(self) -> list[Capture]:
        """The photos to upload, from the manifest (rebuilt from the photos when it was lost);
        :class:`RetryFrom` (back to scanning) when a photo is missing or not as captured, or a
        position has none."""
        job = self.job
        captures = job.captures()
        if not job.manifest.exists():
            captures = recover.photos_on_disk(job, recover.read_plan(job), set())
            if captures:
                job.set_captures(captures)
                self.emit("warning", text=f"{job.manifest} is missing: rebuilt from the "
                                          f"{len(captures)} photos in {job.images}")
        retry = f"`openscan-pi retry {job.id}`"
        bad = recover.bad_photos(job, captures)
        if bad:
            (first, why), more = bad[0], len(bad) - 1
            others = f" (and {more} more photo{'s' if more > 1 else ''})" if more else ""
            raise RetryFrom(f"{job.images / first.file} is {why}{others}: the upload needs it; "
                            f"{retry} captures {'them' if more else 'it'} again (position "
                            f"{first.position + 1}{', ...' if more else ''}) and uploads the set "
                            "(put the file back first to keep the original)", JobState.SCANNING)
        have = {c.position for c in captures}
        lacking = [str(i + 1) for i in range(int(job.data["positions"])) if i not in have]
        if lacking:
            raise RetryFrom(f"{job.manifest} has no photo of position"
                            f"{'s' if len(lacking) > 1 else ''} {recover.listing(lacking)}: "
                            f"{retry} captures {'them' if len(lacking) > 1 else 'it'} and uploads "
                            "the set", JobState.SCANNING)
        return captures

    def _new_journal(self, source: Any, *, quiet: bool = False) -> Any:
        """A transfer journal for the job's project. The first one before anything is sent;
        one that went missing later is made again from the job (its project name): a set being
        uploaded is asked for on the cloud and sent again, a started project polled again."""
        from openscan_pi.cloud.journal import Journal

        job, cfg = self.job, self.cfg
        project = str(job.data["project"])
        fields: dict[str, Any] = {"source": str(job.images), "part_size": cfg.cloud.max_part_bytes,
                                  "crc_cache": {}, "job": job.id}
        if source is not None:
            fields.update(digest=source.digest, size=source.size, photos=source.photos)
        else:
            fields.update(digest=None, size=int(job.data.get("bytes_total") or 0),
                          photos=int(job.data.get("captured") or 0))
        begun = bool(job.data.get("upload_begun") or job.data.get("bytes_uploaded"))
        if job.state == JobState.UPLOADING and not begun:
            job.update(upload_begun=True)
            return Journal.create(cfg.data_dir, project, **fields)
        path = Journal.path_for(cfg.data_dir, project)
        fields.update(create_sent=True, create_sent_at=time.time())
        if job.state == JobState.UPLOADING:
            self.emit("warning", text=f"transfer journal {path} is missing: project {project} "
                                      "(its name is in the job) is asked for on the cloud and "
                                      "its photos are sent again")
            return Journal.create(cfg.data_dir, project, **fields)
        if not quiet:
            self.emit("warning", text=f"transfer journal {path} is missing: polling project "
                                      f"{project} again (its name is in the job)")
        return Journal.create(cfg.data_dir, project, phase="started",
                              status=job.data.get("cloud_status"), **fields)

    def _set_changed(self, journal: Any, source: Any) -> None:
        """The set is not the one the journal began uploading (photos captured again): nothing
        sent yet takes the new set as it is; otherwise the project (same name) takes it anew."""
        fresh = {"digest": source.digest, "size": source.size, "photos": source.photos,
                 "crc_cache": {}, "done": {}, "links": []}
        if journal.phase == "creating" and not journal.data.get("create_sent"):
            journal.update(**fresh)
            return
        self.emit("warning", text=f"the photos of job {self.job.id} changed since their upload "
                                  f"began: sending them again to project {journal.project}")
        journal.update(phase="creating", create_sent=True, create_sent_at=time.time(),
                       links_created_at=None, **fresh)
