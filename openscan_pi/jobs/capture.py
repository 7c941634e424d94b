"""The capture step: photograph every position the job's manifest lacks, on the rig.

It starts from what is durable: the plan saved with the job (a resumed scan visits the same
positions) and the manifest (a position already photographed is skipped). Photos found missing
or changed are captured again; photos on disk the manifest lacks are taken in (see
:mod:`.recover`). The rig is used only through ``home()``, ``angles()``, ``start_camera()``,
``move()``, ``capture()``, ``light.off()``, ``cancel`` and ``time_scale``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from openscan_pi.cloud.errors import Cancelled
from openscan_pi.errors import UserError
from openscan_pi.fsutil import atomic_write_json
from openscan_pi.jobs import recover
from openscan_pi.jobs.check import (
    MOVE_AWAY,
    BrokenJob,
    BrokenJobError,
    plan_problem,
    plan_sizes,
    read_json_file,
)
from openscan_pi.jobs.space import DISK_MARGIN, check_free_space, estimated_bytes
from openscan_pi.jobs.state import JobState
from openscan_pi.jobs.store import Capture

if TYPE_CHECKING:
    from openscan_pi.jobs.runner import JobRunner
    from openscan_pi.rig.rig import Rig

log = logging.getLogger(__name__)


def _check_disk(r: JobRunner) -> None:
    done = sum(c.size for c in r.job.captures())
    expected = estimated_bytes(r.cfg, int(r.job.data["positions"]), r.job.record.stack)
    need = expected * DISK_MARGIN - done
    check_free_space(r.job.folder, need)


def _plan(r: JobRunner, start: tuple[float, float]) -> list[dict[str, float]]:
    """The positions in capture order, fixed when each pass begins: all of them for a scan of
    one pass; for several, the passes so far, the current one planned from where the rig is
    when its capture begins (made again, keeping the positions already photographed, when
    ``plan.json`` was lost)."""
    job = r.job
    path = job.folder / "plan.json"
    planned: list[dict[str, float]] = []
    if path.exists():
        fix = (f"delete {path} (`openscan-pi retry {job.id}` makes a new one and keeps the "
               f"photos taken), or {MOVE_AWAY.format(root=job.folder.parent)}")
        plan = read_json_file(job.folder, "plan.json", fix)
        problem = plan_problem(plan, job.data)
        if problem:
            raise BrokenJobError(BrokenJob(job.folder, problem, fix))
        planned = list(plan)
        if len(planned) == plan_sizes(job.data)[0]:
            return planned
    from openscan_pi.plan import PlanCancelled, make_plan
    from openscan_pi.rig.estimate import rig_time_fn

    passes = job.record.passes
    each = job.record.positions // passes
    job.update(step="planning" if passes == 1 else f"planning pass {job.record.pass_no}/{passes}")
    try:
        plan = make_plan(each, r.cfg.plan, rig_time_fn(r.cfg.rig), start, stop=r.stop.is_set)
    except PlanCancelled:
        r.check_stop()  # raises Cancelled: planned again when the job goes on
        raise
    fresh = [{"rotor": p.rotor, "turntable": p.turntable} for p in plan.positions]
    taken = job.captures()
    if not path.exists():
        # lost: the passes before keep the angles their photos were taken at
        before = len(planned) or each * (job.record.pass_no - 1)
        planned = recover.replan(fresh * job.record.pass_no, taken)[:before]
        if taken:
            r.emit("warning", text=f"{path} is missing: made again, keeping the positions of "
                                   f"the {len(taken)} photos taken")
    this_pass = [c for c in taken if c.position >= len(planned)]
    if this_pass:
        shifted = [dataclasses.replace(c, position=c.position - len(planned)) for c in this_pass]
        fresh = recover.replan(fresh, shifted)
    positions = planned + fresh
    atomic_write_json(path, positions)
    if not taken:
        job.update(motion_estimate_s=plan.motion_time_s)
    return positions


def _check_photos(r: JobRunner) -> None:
    """Before capturing: a photo of the manifest that is missing (or not the size it was
    captured at) is left out, to be captured again; a photo on disk that the manifest lacks
    (a crash between the two, or a lost manifest) is taken in, when the plan says where it
    was taken."""
    job = r.job
    lost = not job.manifest.exists()
    captures = job.captures()
    bad = recover.bad_photos(job, captures)
    keep = [c for c in captures if c not in {b for b, _ in bad}]
    plan = recover.read_plan(job)
    found = recover.photos_on_disk(job, plan, {(c.position, c.shot) for c in captures}
                                   ) if plan else []
    for c, why in bad[:3]:
        r.emit("warning", text=f"{job.images / c.file} is {why}: captured again at "
                               f"position {c.position + 1}")
    if len(bad) > 3:
        r.emit("warning", text=f"{len(bad) - 3} more photos are missing or changed: "
                               "captured again at their positions")
    if lost and found:
        r.emit("warning", text=f"{job.manifest} is missing: rebuilt from the "
                               f"{len(found)} photos in {job.images}")
    elif lost and plan is None and any(recover.PHOTO_NAME.match(p.name)
                                       for p in job.images.iterdir()):
        r.emit("warning", text=f"{job.manifest} and {job.folder / 'plan.json'} are "
                               "missing: every position is captured again")
    if bad or found:
        job.set_captures(sorted(keep + found, key=lambda c: (c.position, c.shot))
                         if lost else keep + found)


def _check_scanned(r: JobRunner, total: int, shots: int) -> None:
    """After the capture loop: every position has its photos in the manifest (one that lost
    entries meanwhile is made whole from the photos on disk, or the job fails saying so)."""
    job = r.job
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


def _open_rig(r: JobRunner) -> Rig:
    """The rig in this process (the foreground scan; the daemon passes its worker's): imported
    only here, so that the daemon's process never loads gpiozero and the camera libraries."""
    from openscan_pi.rig.rig import Rig

    return Rig(r.cfg, cancel=r.stop)


class WaitingForUser(Cancelled):
    """A pass of a scan of several is done: the job is ``waiting`` for the user to turn the
    object over and ``continue``."""


class Paused(Cancelled):
    """The scan stopped before a position because a pause was asked (the job stays where it is
    until the worker, letting go, makes it ``paused``)."""


def capture(r: JobRunner) -> None:
    """The capture step: every position not yet in the manifest, on the rig."""
    from openscan_pi.jobs import fuse
    from openscan_pi.rig.camera import lens_positions

    job = r.job
    if r.cfg.camera.backend == "external":
        raise UserError("scan with camera.backend: external is not supported yet: the DSLR "
                        "keeps the photos; copy them off and use `openscan-pi upload`")
    job.update(step="checking disk space")
    job.images.mkdir(exist_ok=True)
    for leftover in job.images.glob(".*.tmp"):  # a photo cut short by a crash
        leftover.unlink()
    _check_photos(r)
    _check_disk(r)
    if r.rig is not None:
        r.rig.cancel = r.stop
    with contextlib.nullcontext(r.rig) if r.rig else _open_rig(r) as rig:
        job.update(step="homing")
        timings = {"motion_s": float(job.data.get("motion_s") or 0.0),
                   "capture_s": float(job.data.get("capture_s") or 0.0)}
        began = time.perf_counter()
        message = rig.home()
        timings["motion_s"] += time.perf_counter() - began  # homing is motion too
        log.info("%s", message)
        positions = _plan(r, rig.angles())
        info = rig.start_camera()
        lenses = lens_positions(r.cfg.camera.focus, bool(info.get("has_autofocus")),
                                job.record.stack)
        done = {(c.position, c.shot) for c in job.captures()}
        total = len(positions)
        if job.record.stack != len(lenses) and not job.captures():
            job.update(stack=len(lenses))  # what a position has with this camera
        fuse.capture_began(r)
        try:
            _capture_positions(r, rig, positions, lenses, done, timings)
        finally:
            fuse.capture_ended(r)
        rig.light.off()
    _check_scanned(r, total, len(lenses))
    if job.record.pass_no < job.record.passes:  # the next pass waits for the user
        done_pass, passes = job.record.pass_no, job.record.passes
        job.transition(JobState.WAITING, pass_no=done_pass + 1, step=(
            f"pass {done_pass} of {passes} done: turn the object over, then `openscan-pi "
            f"continue {job.id}`"))
        raise WaitingForUser(str(job.data["step"]))


def _capture_positions(r: JobRunner, rig: Any, positions: list[dict[str, float]],
                       lenses: list[float | None], done: set[tuple[int, int]],
                       timings: dict[str, float]) -> None:
    """Photograph every position of ``positions`` that ``done`` lacks, each at ``lenses``."""
    from openscan_pi.jobs import fuse
    from openscan_pi.rig.camera import CameraStalled

    job = r.job
    total = len(positions)
    for index, pos in enumerate(positions):
        if all((index, k) in done for k in range(len(lenses))):
            continue
        r.check_stop()
        if job.record.pause_requested:  # pause: stop before this position, light off
            rig.light.off()
            raise Paused(f"job {job.id} paused before position {index + 1}/{total}")
        job.progress(step=f"capturing {index + 1}/{total}")  # the capture is the step
        began = time.perf_counter()
        rig.move(rotor=pos["rotor"], turntable=pos["turntable"])
        r.stop.wait(r.cfg.rig.settle_s * rig.time_scale)
        timings["motion_s"] += time.perf_counter() - began
        for shot_no, lens in enumerate(lenses):
            if (index, shot_no) in done:
                continue
            began = time.perf_counter()
            name = f"pos{index:04d}_{shot_no}.jpg"
            try:
                shot = rig.capture(job.images / name, index=index, lens_position=lens)
            except CameraStalled as exc:
                raise UserError(_stalled(r, exc, index, total)) from None
            timings["capture_s"] += time.perf_counter() - began
            job.add_capture(Capture(position=index, shot=shot_no, file=name,
                                    size=shot.size, crc32=shot.crc32, rotor=shot.rotor,
                                    turntable=shot.turntable,
                                    lens_position=shot.lens_position), **timings)
        r.emit("scan", done=int(job.data["captured"]), total=total)
        fuse.position_captured(r, index)


def _stalled(r: JobRunner, exc: Exception, index: int, total: int) -> str:
    """The failure of a scan whose camera stalled at position ``index`` (after its retries)."""
    job = r.job
    return (f"camera stalled at position {index + 1}/{total} ({exc}): the "
            f"{int(job.data.get('captured') or 0)} photos taken are kept; check the camera's "
            f"ribbon cable and the power supply, then `openscan-pi retry {job.id}` continues at "
            f"position {index + 1}")
