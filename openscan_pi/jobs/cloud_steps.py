"""The network steps of a job: upload, start, poll, download (see :mod:`.lifecycle`).

Each runs from the job's transfer journal (:class:`JobJournal`, kept in the job record), never creating
a second cloud project: uploading continues with the parts not confirmed yet, starting checks a
start whose answer was lost, polling goes on, downloading takes a model folder that was renamed
into place before the records said so, or starts the download again (the model folder is never
half there). What is found missing on the way (a photo, the manifest, the journal) is dealt with
as :mod:`.recover` describes.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from openscan_pi.cloud.journal import Journal
from openscan_pi.errors import UserError
from openscan_pi.jobs import fuse, recover
from openscan_pi.jobs.recover import RetryFrom
from openscan_pi.jobs.state import JobState
from openscan_pi.jobs.store import Capture, Job

if TYPE_CHECKING:
    from openscan_pi.cloud.transfer import Transfer
    from openscan_pi.jobs.runner import JobRunner


class JobJournal(Journal):
    """The transfer journal of a job: the ``transfer`` field of its record, written with the
    record (atomically, before the transfer goes on)."""

    def __init__(self, job: Job, data: dict[str, Any]) -> None:
        super().__init__(job.folder / "job.json", data)
        self.job = job

    @classmethod
    def of(cls, job: Job) -> JobJournal | None:
        """The job's journal, or None before its upload began."""
        data = job.record.transfer
        return cls(job, data) if data is not None else None

    @classmethod
    def start(cls, owner: Job, project: str, /, **fields: Any) -> JobJournal:
        """A new journal for the job ``owner``, in its record on disk before anything is sent."""
        journal = cls(owner, cls.initial(project, **fields))
        journal.save()
        return journal

    def save(self) -> None:
        """Write the job record holding the journal."""
        self.data["updated_at"] = time.time()
        self.job.update(transfer=self.data)


class CloudSession:
    """What the network steps of one run share: the journal, the set (while it is uploaded),
    the connection to the cloud and the :class:`Transfer` over it. Closed by the runner."""

    def __init__(self, r: JobRunner) -> None:
        from openscan_pi.cloud.transfer import Transfer, connect

        job, cfg = r.job, r.cfg
        project = job.record.project
        other = Journal.find(cfg.data_dir, project)
        if other is not None and other.data.get("job") != job.id:
            raise UserError(f"project {project} belongs to another upload: give the scan "
                            "another --project")
        journal: Journal | None = JobJournal.of(job)
        uploading = job.state == JobState.UPLOADING and not (journal and journal.reached("uploaded"))
        source = _upload_source(r, journal) if uploading else None
        if journal is None:
            journal = _new_journal(r, source)
        elif source is not None and journal.data.get("digest") != source.digest:
            if job.record.source:
                raise UserError(f"{job.record.source} changed since project {project} began "
                                "uploading: put it back as it was and `openscan-pi retry "
                                f"{job.id}`, or upload it as a new project (`openscan-pi upload "
                                f"{job.record.source} --project NEW`)")
            _set_changed(r, journal, source)
        self.journal = journal
        self._exit = contextlib.ExitStack()
        api = self._exit.enter_context(connect(cfg))
        self.transfer: Transfer = Transfer(api, cfg, journal, source,
                                           events=lambda event, **f: _events(r, event, **f),
                                           stop=r.stop)

    def close(self) -> None:
        """Close the connection."""
        self._exit.close()


def _events(r: JobRunner, event: str, **fields: Any) -> None:
    if event == "upload":
        r.job.progress(bytes_uploaded=fields["done"])  # not a durable step
    elif event == "part":
        r.job.update(step=f"uploading part {fields['part'] + 1}/{fields['parts']}")
    elif event == "status":
        r.job.update(cloud_status=fields["status"])
    r.emit(event, **fields)


def upload(r: JobRunner) -> None:
    """The upload step: create the project (once) and send every part not yet confirmed."""
    s = r.cloud()
    r.job.update(step="uploading", bytes_total=int(s.journal.data["size"]))
    if not s.journal.reached("uploaded"):
        s.transfer.upload()


def start(r: JobRunner) -> None:
    """The start step: startProject (a start whose answer was lost is not sent twice)."""
    s = r.cloud()
    if not s.journal.reached("started"):
        s.transfer.start()
    r.job.update(bytes_uploaded=int(s.journal.data["size"]),
                 cloud_status=s.journal.data.get("status"))


def poll(r: JobRunner) -> None:
    """The poll step: ask the cloud until the model is ready."""
    s = r.cloud()
    if not s.journal.reached("processed"):
        s.transfer.poll()


def download(r: JobRunner) -> None:
    """The download step: the model into the job's ``model/`` (never half there)."""
    job = r.job
    if not _model_in_place(r, JobJournal.of(job)):
        s = r.cloud()
        if not s.journal.reached("processed"):  # a journal made again: no link yet
            s.transfer.poll()
        if not s.journal.reached("downloaded"):
            s.transfer.download(job.model_dir)
    job.update(model_dir=str(job.model_dir))


def _model_in_place(r: JobRunner, journal: Any) -> bool:
    """Clear what a cut download left; True (and the journal closed) when the model folder was
    renamed into place before the records said so."""
    job = r.job
    if journal is not None and journal.reached("downloaded"):
        return False
    files, said = recover.model_in_place(job.model_dir)
    for line in said:
        r.emit("warning", text=line)
    if files is None:
        return False
    journal = journal or _new_journal(r, None, quiet=True)
    journal.update(phase="downloaded", model_dir=str(job.model_dir),
                   files=[str(f) for f in files])
    return True


def _upload_source(r: JobRunner, journal: Journal | None) -> Any:
    """The set to upload: the job's photos (see :func:`upload_captures`), or the folder or zip
    an ``upload PATH`` job names, read where it is (the CRCs its journal knows are trusted while
    each file's size and time are unchanged)."""
    from openscan_pi.cloud.archive import open_source
    from openscan_pi.cloud.virtualzip import VirtualZip

    if r.job.record.source:
        known = dict((journal.data.get("crc_cache") if journal else None) or {})
        return open_source(r.job.record.source, crc_cache=known, lazy=True)
    captures = upload_captures(r)
    if fuse.stacked(r.job) and r.cfg.camera.focus.upload == "fused":
        return VirtualZip(fuse.fused_members(r.job))  # one all-in-focus photo a position
    return VirtualZip([c.member(r.job.images) for c in captures])


def upload_captures(r: JobRunner) -> list[Capture]:
    """The photos to upload, from the manifest (rebuilt from the photos when it was lost);
    :class:`RetryFrom` (back to scanning) when a photo is missing or not as captured, or a
    position has none."""
    job = r.job
    captures = job.captures()
    if not job.manifest.exists():
        captures = recover.photos_on_disk(job, recover.read_plan(job), set())
        if captures:
            job.set_captures(captures)
            r.emit("warning", text=f"{job.manifest} is missing: rebuilt from the "
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


def _new_journal(r: JobRunner, source: Any, *, quiet: bool = False) -> Any:
    """A transfer journal for the job's project. The first one before anything is sent;
    one that went missing later is made again from the job (its project name): a set being
    uploaded is asked for on the cloud and sent again, a started project polled again."""
    job, cfg = r.job, r.cfg
    project = str(job.data["project"])
    fields: dict[str, Any] = {"source": job.record.source or str(job.images),
                              "part_size": cfg.cloud.max_part_bytes, "crc_cache": {},
                              "job": job.id}
    if source is not None:
        fields.update(digest=source.digest, size=source.size, photos=source.photos)
    else:
        fields.update(digest=None, size=int(job.data.get("bytes_total") or 0),
                      photos=int(job.data.get("captured") or 0))
    begun = bool(job.data.get("upload_begun") or job.data.get("bytes_uploaded"))
    if job.state == JobState.UPLOADING and not begun:
        job.progress(upload_begun=True)  # written with the journal, in one write
        return JobJournal.start(job, project, **fields)
    path = Journal.path_for(cfg.data_dir, project)
    fields.update(create_sent=True, create_sent_at=time.time())
    if job.state == JobState.UPLOADING:
        r.emit("warning", text=f"transfer journal {path} is missing: project {project} "
                               "(its name is in the job) is asked for on the cloud and "
                               "its photos are sent again")
        return JobJournal.start(job, project, **fields)
    if not quiet:
        r.emit("warning", text=f"transfer journal {path} is missing: polling project "
                               f"{project} again (its name is in the job)")
    return JobJournal.start(job, project, phase="started",
                            status=job.data.get("cloud_status"), **fields)


def _set_changed(r: JobRunner, journal: Any, source: Any) -> None:
    """The set is not the one the journal began uploading (photos captured again): nothing
    sent yet takes the new set as it is; otherwise the project (same name) takes it anew."""
    fresh = {"digest": source.digest, "size": source.size, "photos": source.photos,
             "crc_cache": {}, "done": {}, "links": []}
    if journal.phase == "creating" and not journal.data.get("create_sent"):
        journal.update(**fresh)
        return
    r.emit("warning", text=f"the photos of job {r.job.id} changed since their upload "
                           f"began: sending them again to project {journal.project}")
    journal.update(phase="creating", create_sent=True, create_sent_at=time.time(),
                   links_created_at=None, **fresh)
