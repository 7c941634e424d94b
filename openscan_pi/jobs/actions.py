"""Creating, cancelling, retrying, pausing and continuing a job: written once, used by the
daemon's scheduler and by the CLI when no daemon runs.

Each action changes the job record durably before it returns. A job a worker holds (its steps
running) is not changed under the worker: its cancel is recorded (``cancel_requested``) and the
worker, once stopped, ends it (:func:`end_cancelled`); a daemon that dies first ends it
``cancelled`` at its next start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from openscan_pi.config import Config
from openscan_pi.errors import InputError
from openscan_pi.jobs.lifecycle import resume_state
from openscan_pi.jobs.state import ACTIVE, HELD, JobState
from openscan_pi.jobs.store import Job, JobStore

if TYPE_CHECKING:
    from openscan_pi.cloud.api import TokenInfo

S = JobState


def check_new(cfg: Config, positions: int, *, stack: int | None = None,
              token_info: Callable[[], TokenInfo] | None = None) -> list[str]:
    """Refuse a scan the disk or the token cannot take (:class:`UserError`); returns warnings.
    ``stack``: photos a position (``camera.focus.stack`` when None). Asks the cloud: call it
    before taking any lock."""
    from openscan_pi.jobs.runner import preflight

    return preflight(cfg, positions, stack=stack, token_info=token_info)


def create(cfg: Config, store: JobStore, *, positions: int, project: str | None,
           jobs: Iterable[Job] | None = None, passes: int = 1, stack: int | None = None) -> Job:
    """A new queued scan of ``positions`` per pass (``passes`` of them), each position a focus
    stack of ``stack`` photos (``camera.focus.stack`` when None), on disk when returned.
    :class:`InputError` when ``project`` names a project that exists already: an upload's, or a
    job's (of ``jobs``, the jobs known; all the jobs on disk when None). Callers creating jobs at
    once hold one lock around it."""
    from openscan_pi.names import check_project

    name = check_project(project) if project else None
    if name:
        create_problem(cfg, store, name, jobs)
    return store.create(positions=positions * passes, project=name,
                        stack=cfg.camera.focus.stack if stack is None else stack,
                        passes=passes)


def create_upload(cfg: Config, store: JobStore, path: Path, project: str | None, *,
                  jobs: Iterable[Job] | None = None) -> tuple[Job, bool]:
    """The job that uploads the folder or zip ``path`` (read where it is), and whether it is one
    that was begun before and goes on (True), so that running the same upload again never makes
    a second project: without ``project``, the newest unfinished job of the same set; with it,
    that project's job when it uploads the same set (another set, or a finished job, is refused
    with :class:`InputError`). An unfinished upload of release 1 (a transfer journal of its own)
    becomes a job that takes its journal over. A failed job goes back to the step it failed in.
    The set is checked (it exists, holds images) before anything is written."""
    from openscan_pi.cloud.archive import open_source
    from openscan_pi.cloud.journal import Journal
    from openscan_pi.names import check_project

    path = path.expanduser().resolve()
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    name = check_project(project) if project else None
    known = list(store.all() if jobs is None else jobs)
    mine = [j for j in known if j.record.source == str(path)]
    if name:
        owner = next((j for j in known if j.record.project == name), None)
        if owner is not None and owner.record.source != str(path):
            raise InputError(f"project {name} was begun with {owner.record.source or 'a scan'}: "
                             "choose another --project")
        if owner is not None and owner.state in (S.DONE, S.CANCELLED):
            raise InputError(f"project {name} is {owner.state.value}: choose another --project "
                             "to upload it again")
        found = owner
    else:
        open_jobs = [j for j in mine if j.state not in (S.DONE, S.CANCELLED)]
        found = max(open_jobs, key=lambda j: float(j.data["created"]), default=None)
    if found is not None:
        if found.state == S.FAILED:
            retry(found)
        return found, True
    legacy = (Journal.find(cfg.data_dir, name) if name
              else Journal.find_open_for_source(cfg.data_dir, path))
    if legacy is not None and (legacy.data.get("source") != str(path) or legacy.closed
                               or legacy.data.get("job")):
        raise InputError(f"project {legacy.project} exists already: choose another --project")
    source = open_source(path, lazy=True)  # InputError for a set with no images, or no zip
    source.close()
    if legacy is not None:
        job = store.create(positions=max(1, int(legacy.data.get("photos") or source.photos)),
                           project=legacy.project, stack=1, source=path,
                           transfer=dict(legacy.data))
        job.transition(S.UPLOADING, step="uploading")
        legacy.path.unlink(missing_ok=True)  # the job's record holds it now
        return job, True
    if name:
        create_problem(cfg, store, name, known)
    return store.create(positions=source.photos, project=name, stack=1, source=path), False


def create_problem(cfg: Config, store: JobStore, project: str,
                   jobs: Iterable[Job] | None = None) -> None:
    """:class:`InputError` when ``project`` is the name of an upload's project or of a job's
    (of ``jobs``; of every job on disk when None)."""
    from openscan_pi.cloud.journal import Journal

    known = store.all() if jobs is None else jobs
    if Journal.find(cfg.data_dir, project) or any(j.record.project == project for j in known):
        raise InputError(f"project {project} exists already: choose another project name")


def cancel(job: Job, *, held: bool) -> bool:
    """Cancel ``job``. When a worker ``held`` it, the cancel is recorded and True returned: the
    caller stops the worker, which ends the job cancelled as it lets go. Otherwise the job is
    ``cancelled`` now (False). :class:`InputError` for a job with nothing left to cancel."""
    if job.state in (S.DONE, S.CANCELLED):
        raise InputError(f"job {job.id} is {job.state.value}: nothing to cancel")
    if held:
        # Durable before the worker is told: a daemon that dies before the worker lets go
        # never resumes the job.
        job.update(cancel_requested=time.time())
        return True
    job.transition(S.CANCELLED, step=None)
    return False


def end_cancelled(job: Job) -> bool:
    """A job whose cancel was recorded (its worker has let go, or the daemon restarted): make
    it ``cancelled``; True when it was."""
    if job.record.cancel_requested and (job.state in ACTIVE or job.state == S.FAILED):
        job.transition(S.CANCELLED, step=None)
        return True
    return False


def retry(job: Job, *, interrupted: bool = False) -> None:
    """Take a failed job back to the step it failed in; with ``interrupted``, a job stopped
    part-way (not failed) is accepted as it is, to go on. :class:`InputError` otherwise."""
    if job.state in (S.DONE, S.CANCELLED):
        raise InputError(f"job {job.id} is {job.state.value}: nothing to retry")
    if job.state == S.FAILED:
        job.transition(resume_state(job.data), error=None)
    elif not interrupted:
        raise InputError(f"job {job.id} is {job.state.value} already: `openscan-pi status` "
                         "follows it")


def pause(job: Job, *, held: bool) -> None:
    """Pause a scan: a queued one at once; one a worker ``held`` at its next position (the
    pause is recorded first, durably; the capture step stops before the next position and the
    worker, letting go, makes it ``paused``: :func:`end_paused`). :class:`InputError` for a job
    that is not scanning or queued for it."""
    from openscan_pi.jobs.lifecycle import Resource, needs

    if job.state == S.PAUSED:
        raise InputError(f"job {job.id} is paused already: `openscan-pi continue {job.id}` goes on")
    if job.state not in (S.QUEUED, S.SCANNING) or needs(job.data) != Resource.RIG:
        raise InputError(f"job {job.id} is {job.state.value}: only a scan can be paused (one "
                         "that is capturing, or queued for it)")
    if held:
        job.update(pause_requested=time.time())
    else:
        job.transition(S.PAUSED, step="paused by the user", pause_requested=None)


def end_paused(job: Job) -> bool:
    """A job whose pause was recorded (its worker has let go, or the daemon restarted): make it
    ``paused`` when it is still at its scan (a pause that came after the last photo is
    dropped); True when it was."""
    if not job.record.pause_requested:
        return False
    if job.state in (S.QUEUED, S.SCANNING):
        job.transition(S.PAUSED, step="paused by the user", pause_requested=None)
        return True
    job.update(pause_requested=None)
    return False


def go_on(job: Job) -> None:
    """``continue``: a paused scan goes on from its next position; one waiting between passes
    plans and captures its next pass. :class:`InputError` for a job that is neither."""
    if job.state not in HELD:
        raise InputError(f"job {job.id} is {job.state.value}, not paused or waiting: nothing to "
                         "continue")
    job.transition(S.SCANNING, step=None, pause_requested=None)
