"""Jobs on disk: ``<data_dir>/jobs/<id>/`` with ``job.json``, ``images/`` (and their
``manifest.json``) and ``model/``.

Durable before reported: every change of a job and every captured image is written (temp file,
fsync, rename) before anyone is told about it, so a crash, a power cut or ``kill -9`` at any
moment leaves a job that continues from its last durable step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openscan_pi.cloud.journal import default_project_name
from openscan_pi.cloud.virtualzip import Member
from openscan_pi.errors import DiskError, UserError
from openscan_pi.fsutil import atomic_write_json, read_json, try_lock
from openscan_pi.jobs.check import (
    MOVE_AWAY,
    BrokenJob,
    BrokenJobError,
    check_folder,
    manifest_problem,
    read_json_file,
)
from openscan_pi.jobs.record import VERSION as RECORD_VERSION
from openscan_pi.jobs.record import JobRecord, migrate
from openscan_pi.jobs.state import JobState, check_transition
from openscan_pi.names import check_job_id

log = logging.getLogger(__name__)

#: The fields the socket contract promises in a job object, in that order.
PUBLIC_FIELDS = ("id", "project", "state", "positions", "captured", "bytes_total",
                 "bytes_uploaded", "cloud_status", "model_dir", "error", "created", "updated")


class JobBusy(UserError):
    """Another process is working on the job."""


@dataclass(frozen=True)
class Capture:
    """One image of a job, as the manifest records it (CRC computed at capture time)."""

    position: int
    shot: int  # index within the focus stack
    file: str
    size: int
    crc32: int
    rotor: float | None  # None: a photo found on disk whose angles are not known
    turntable: float | None
    lens_position: float | None

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Capture:
        """A capture from a checked manifest entry (fields this version does not know ignored)."""
        values: dict[str, Any] = {f.name: entry.get(f.name) for f in dataclasses.fields(cls)}
        return cls(**values)

    def member(self, images: Path) -> Member:
        """The image as a member of the upload archive (nothing is read: the CRC is known)."""
        path = images / self.file
        return Member(name=self.file, path=str(path), size=self.size, crc32=self.crc32,
                      mtime_ns=os.stat(path).st_mtime_ns)


class Job:
    """One scan job: its record, its folder, its manifest. Changes are durable on return."""

    def __init__(self, folder: Path, data: dict[str, Any],
                 entries: list[dict[str, Any]] | None = None, *, migrated: bool = False,
                 migrated_from: Path | None = None) -> None:
        """A job from its checked record ``data`` of this version (and manifest ``entries``,
        when read); ``migrated``: ``data`` was migrated from an older version (see
        :func:`~openscan_pi.jobs.record.migrate`), ``migrated_from`` the release 1 journal file
        it took in, removed once the record is written."""
        self.folder = folder
        self.record = JobRecord.from_dict(data)
        self.migrated = migrated
        self._legacy_journal = migrated_from
        self._lock = threading.RLock()
        self._listeners: list[Callable[[Job], None]] = []
        self._published: dict[str, Any] = {}
        if entries is not None and self.record.state in ("queued", "scanning", "failed"):
            self._count(entries)  # captures since the last write
        self._publish()

    # -- the record -------------------------------------------------------------------------

    @property
    def data(self) -> dict[str, Any]:
        """The record as a dict (a copy to read: changes go through :meth:`update`,
        :meth:`transition` and :meth:`progress`)."""
        return self.record.to_dict()

    @property
    def id(self) -> str:
        """The job id (also its folder name)."""
        return self.record.id

    @property
    def state(self) -> JobState:
        """The contract's state."""
        return self.record.state

    @property
    def images(self) -> Path:
        """Where the captured images are."""
        return self.folder / "images"

    @property
    def model_dir(self) -> Path:
        """Where the finished model goes (never half there)."""
        return self.folder / "model"

    def public(self) -> dict[str, Any]:
        """The job object of the socket contract, plus ``step`` (the finer state), for an
        upload ``source`` (the folder or zip it sends), for a scan of several passes ``pass``
        and ``passes``, for one of focus stacks ``focus_stack`` (photos a position): what is
        on disk (plus progress), read without waiting for a write in progress."""
        return dict(self._published)

    def _publish(self) -> None:
        data = self.data
        published = {k: data.get(k) for k in PUBLIC_FIELDS}
        published["step"] = data.get("step")
        if data.get("source"):  # an upload's: the set it sends
            published["source"] = data["source"]
        if int(data.get("passes") or 1) > 1:  # a scan of several passes: which one
            published["pass"], published["passes"] = data.get("pass_no") or 1, data["passes"]
        if int(data.get("stack") or 1) > 1:  # each position a focus stack of this many photos
            published["focus_stack"] = data["stack"]
        self._published = published  # one reference swap: readers never see half of it

    def progress(self, **fields: Any) -> None:
        """Progress that is not a durable step (bytes sent of a part): told, not written."""
        with self._lock:
            self.record.set(**fields)
            self._publish()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the job for this process while it is worked on (a lock the kernel drops when
        the process dies, so a crash never leaves it held)."""
        fd = try_lock(self.folder / ".lock")
        if fd is None:
            raise JobBusy(f"job {self.id} is being run by another openscan-pi process (the daemon, "
                          "or a scan in another terminal): stop it there first")
        try:
            yield
        finally:
            os.close(fd)

    def on_change(self, listener: Callable[[Job], None]) -> None:
        """Call ``listener(job)`` after every durable change."""
        self._listeners.append(listener)

    def update(self, **fields: Any) -> None:
        """Change fields (not ``state``) durably, then tell the listeners."""
        with self._lock:
            self.record.set(**fields)
            self._save()
        self._notify()

    def transition(self, new: JobState, **fields: Any) -> None:
        """Move to ``new`` as the transition table allows; durable, logged by the listeners."""
        with self._lock:
            if not check_transition(self.state, new) and not fields:
                return
            if new == JobState.FAILED and self.state != JobState.FAILED:
                fields.setdefault("resume_state", self.state.value)
            before = dataclasses.replace(self.record)
            self.record.set(**fields, state=new)
            try:
                self._save()
            except DiskError as exc:
                if new != JobState.FAILED:
                    self.record = before
                    raise
                # A full disk cannot take even the record of the failure: say it anyway; the
                # record on disk keeps the last durable step, where a restart continues.
                log.warning("job %s: %s; the failure is not on disk", self.id, exc)
                self._publish()
        self._notify()

    def save(self) -> None:
        """Write the record as it is (a migrated one in this version's form)."""
        with self._lock:
            self._save()

    def _save(self) -> None:
        self.record.updated = time.time()
        atomic_write_json(self.folder / "job.json", self.record.to_dict())
        self._publish()
        self.migrated = False
        if self._legacy_journal is not None:  # the record holds it now
            self._legacy_journal.unlink(missing_ok=True)
            self._legacy_journal = None

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener(self)

    # -- the manifest -----------------------------------------------------------------------

    @property
    def manifest(self) -> Path:
        """The durable record of the captures."""
        return self.images / "manifest.json"

    def captures(self) -> list[Capture]:
        """The images captured so far, in capture order ([] without a manifest);
        :class:`BrokenJobError` when the manifest has been damaged."""
        if not self.manifest.exists():
            return []
        away = MOVE_AWAY.format(root=self.folder.parent)
        fix = f"fix images/manifest.json, or {away}"
        entries = read_json_file(self.folder, "images/manifest.json", fix)
        problem = manifest_problem(entries, self.record.positions)
        if problem:
            raise BrokenJobError(BrokenJob(self.folder, problem, fix))
        return [Capture.of(entry) for entry in entries]

    def add_capture(self, capture: Capture, **fields: Any) -> None:
        """Record an image that is already on disk (written atomically) in the manifest, with
        ``fields`` (e.g. timings). The manifest is the durable record of the captures; the job
        record takes the count at its next write (and recounts from the manifest when loaded),
        which spares a second fsync'd write per photo."""
        with self._lock:
            entries = read_json(self.manifest) if self.manifest.exists() else []
            entries.append(dict(capture.__dict__))
            atomic_write_json(self.manifest, entries)
            self.record.set(**fields)
            self._count(entries)
            self._publish()
        self._notify()

    def set_captures(self, captures: list[Capture]) -> None:
        """Replace the manifest with ``captures`` (photos found missing, or found on disk)."""
        with self._lock:
            entries = [dict(c.__dict__) for c in captures]
            atomic_write_json(self.manifest, entries)
            self._count(entries)
            self._publish()
        self._notify()

    def _count(self, entries: list[dict[str, Any]]) -> None:
        self.record.captured = len({e["position"] for e in entries})
        self.record.bytes_total = sum(e["size"] for e in entries)


class JobStore:
    """All jobs under ``<data_dir>/jobs``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "jobs"

    def create(self, *, positions: int, project: str | None, stack: int, passes: int = 1,
               source: Path | None = None, transfer: dict[str, Any] | None = None) -> Job:
        """A new queued job, on disk before it is returned: a scan of ``positions``, or, with
        ``source``, the upload of that folder or zip (of ``positions`` photos; ``transfer``: a
        transfer journal it takes over)."""
        now = time.time()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        self.root.mkdir(parents=True, exist_ok=True)
        for extra in range(1000):  # two jobs in one millisecond get different ids
            job_id = f"{stamp}-{(int(now * 1000) + extra) % 1000:03d}"
            folder = self.root / job_id
            try:
                folder.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise UserError(f"cannot find a free job id in {self.root}")
        (folder / "images").mkdir()
        if project is None:
            project = (default_project_name(source, now) if source is not None
                       else f"openscan-{int(now * 1000)}.zip")
        data: dict[str, Any] = {"id": job_id, "project": project, "state": JobState.QUEUED.value,
                "positions": positions, "stack": stack, "captured": 0, "bytes_total": 0,
                "bytes_uploaded": 0, "cloud_status": None, "model_dir": None, "error": None,
                "step": None, "created": now, "updated": now, "version": RECORD_VERSION}
        if passes > 1:
            data.update(passes=passes, pass_no=1)
        if source is not None:
            data.update(source=str(source), captured=positions)
        if transfer is not None:
            data.update(transfer={**transfer, "job": job_id}, upload_begun=True)
        job = Job(folder, data)
        job._save()
        return job

    def load(self, job_id: str) -> Job:
        """A job by id; UserError naming `openscan-pi jobs` when there is none,
        :class:`BrokenJobError` when its folder fails the checks."""
        folder = self.root / check_job_id(job_id)
        if not folder.is_dir():
            raise UserError(f"no job {job_id}: `openscan-pi jobs` lists them")
        return self.open(folder)

    def open(self, folder: Path) -> Job:
        """The job in ``folder``, checked (:class:`BrokenJobError` when it fails)."""
        data, entries = check_folder(folder, self.root)
        version = data.get("version")
        data, journal = migrate(data, self.root.parent)
        return Job(folder, data, entries, migrated=version != RECORD_VERSION,
                   migrated_from=journal)

    def survey(self) -> tuple[list[Job], list[BrokenJob]]:
        """Every job (by id, i.e. oldest first) and every broken job folder (see :meth:`look`),
        none modified."""
        jobs: list[Job] = []
        broken: list[BrokenJob] = []
        try:
            entries = sorted(self.root.iterdir())
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            return [], [BrokenJob(self.root, f"the jobs folder cannot be read ({exc.strerror})",
                                  "make it readable for this user")]
        for path in entries:
            found = self.look(path)
            if isinstance(found, Job):
                jobs.append(found)
            elif found is not None:
                broken.append(found)
        return jobs, broken

    def look(self, path: Path) -> Job | BrokenJob | None:
        """What ``path`` (an entry of the jobs folder) is: a job, a broken job folder, or None
        for nothing to report (a hidden name, a folder with no file in it at all: a job being
        created right now, or one whose creation was cut short, with nothing to lose)."""
        if path.name.startswith(".") or not os.path.lexists(path):
            return None
        if not path.is_dir():
            return BrokenJob(path, "not a job folder (a file)", MOVE_AWAY.format(root=self.root))
        if not os.path.lexists(path / "job.json") and _holds_no_file(path):
            return None
        try:
            return self.open(path)
        except BrokenJobError as exc:
            return exc.broken

    def all(self) -> list[Job]:
        """Every job, oldest first (broken folders left out: :meth:`survey` lists them)."""
        return self.survey()[0]


def _holds_no_file(folder: Path) -> bool:
    """True when ``folder`` holds folders at most (an unreadable one counts as holding files)."""
    try:
        for _, _, files in os.walk(folder, onerror=_raise):
            if files:
                return False
    except OSError:
        return False
    return True


def _raise(exc: OSError) -> None:
    raise exc
