"""The fuse step: each position's focus stack fused into one photo, behind the capture.

With ``camera.focus.stack`` > 1 (and a camera with a focus motor), the capture step starts the
job's fusion process (:mod:`openscan_pi.fusion.worker`, a process of its own: OpenCV and numpy
never enter the daemon) when it begins, tells it after each position, and lets it go at its
end: the rig never waits for a fusion. The fuse step then waits for that process (or starts
one, after a restart) until every position's stack is in the fused manifest
(``fused/manifest.json``), and fails with the process's own line when a stack cannot be fused
(``retry`` goes on: the stacks fused are kept). With one photo per position it does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

from openscan_pi.errors import UserError
from openscan_pi.fusion.worker import FOLDER, MANIFEST, intact, read_entries
from openscan_pi.jobs.store import Job

if TYPE_CHECKING:
    from openscan_pi.config import Config
    from openscan_pi.jobs.runner import JobRunner

log = logging.getLogger(__name__)

#: How often the fuse step looks at the fused manifest while it waits (progress, stop).
POLL_S = 0.25
#: The fusion process started by a capture, by job id (taken over by the job's fuse step).
_pipelines: dict[str, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()


def stacked(job: Job) -> bool:
    """True when each position of the job is a focus stack to fuse (the capture step records
    how many photos a position has: one with a camera that has no focus motor)."""
    return job.record.stack > 1 and not job.record.source


def _start(cfg: Config, job: Job, *, follow: bool) -> subprocess.Popen[bytes]:
    """The job's fusion process, its messages appended to ``fused/fusion.log``."""
    folder = job.folder / FOLDER
    folder.mkdir(exist_ok=True)
    with open(folder / "fusion.log", "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "openscan_pi.fusion.worker", str(job.folder),
             "--stack", str(job.record.stack), "--quality", str(cfg.camera.jpeg_quality),
             *(["--follow"] if follow else [])],
            stdin=subprocess.PIPE if follow else subprocess.DEVNULL, stdout=log_file,
            stderr=log_file, start_new_session=True)


def capture_began(r: JobRunner) -> None:
    """The capture step begins: start fusing behind it (unless a process of this job runs)."""
    if not stacked(r.job):
        return
    with _lock:
        for job_id, proc in list(_pipelines.items()):  # ended ones of jobs gone since: reaped
            if job_id != r.job.id and proc.poll() is not None:
                del _pipelines[job_id]
        running = _pipelines.get(r.job.id)
        if running is None or running.poll() is not None:
            _pipelines[r.job.id] = _start(r.cfg, r.job, follow=True)


def _tell(proc: subprocess.Popen[bytes] | None, line: bytes | None) -> None:
    stdin: IO[bytes] | None = proc.stdin if proc is not None else None
    if stdin is None:
        return
    with contextlib.suppress(OSError, ValueError):  # it ended: the fuse step starts another
        if line is None:
            stdin.close()
        else:
            stdin.write(line)
            stdin.flush()


def position_captured(r: JobRunner, index: int) -> None:
    """A position's stack is on disk: the fusion process may take it."""
    if stacked(r.job):
        with _lock:
            proc = _pipelines.get(r.job.id)
        _tell(proc, f"{index}\n".encode())


def capture_ended(r: JobRunner) -> None:
    """The capture step ends (done, stopped or failed): the process fuses what is there and
    exits; the fuse step waits for it."""
    if stacked(r.job):
        with _lock:
            proc = _pipelines.get(r.job.id)
        _tell(proc, None)


def fused_positions(job: Job) -> set[int]:
    """The positions whose fused photo is in the fused manifest, and on disk as written."""
    folder = job.folder / FOLDER
    try:
        return {int(e["position"]) for e in read_entries(folder / MANIFEST) if intact(folder, e)}
    except (UserError, ValueError, OSError, KeyError, TypeError):
        return set()


def fuse(r: JobRunner) -> None:
    """The fuse step: wait until every position's stack is fused (see the module's docstring)."""
    job, cfg = r.job, r.cfg
    if not stacked(job):
        return
    total = int(job.data["positions"])
    if len(fused_positions(job)) >= total:
        return
    with _lock:
        proc = _pipelines.pop(job.id, None)
    if proc is None or (proc.poll() == 0 and len(fused_positions(job)) < total):
        proc = _start(cfg, job, follow=False)  # after a restart, or stacks found broken since
    try:
        while proc.poll() is None:
            job.progress(step=f"fusing focus stacks {len(fused_positions(job))}/{total}")
            if r.stop.wait(POLL_S):
                break
    finally:
        if proc.poll() is None:  # stopped: the process goes; its stack is fused again later
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    r.check_stop()
    missing = total - len(fused_positions(job))
    if proc.returncode != 0 or missing:
        why = _last_error(job) or f"the fusion process ended with status {proc.returncode}"
        raise UserError(f"fusing the focus stacks of job {job.id}: {why} ({missing} of {total} "
                        f"positions not fused): `openscan-pi retry {job.id}` goes on (the stacks "
                        "fused are kept)")
    job.update(step="focus stacks fused")


def _last_error(job: Job) -> str | None:
    """The last error line the job's fusion process wrote."""
    try:
        lines = (job.folder / FOLDER / "fusion.log").read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else None


def fused_members(job: Job) -> list[Any]:
    """The fused photos as members of the upload archive, in position order."""
    import os

    from openscan_pi.cloud.virtualzip import Member

    folder = job.folder / FOLDER
    entries = sorted(read_entries(folder / MANIFEST), key=lambda e: int(e["position"]))
    return [Member(name=str(e["file"]), path=str(folder / str(e["file"])), size=int(e["size"]),
                   crc32=int(e["crc32"]), mtime_ns=os.stat(folder / str(e["file"])).st_mtime_ns)
            for e in entries]
