"""Upload a set, start it, poll until the model is ready and download it — resumably.

:class:`Transfer` runs one project through the phases of its :class:`Journal`
(``creating → created → uploaded → started → processed → downloaded``). Each phase is durable
before the next begins, so running it again after Ctrl-C, ``kill -9`` or a power cut continues
where it stopped and never creates a second cloud project:

- ``creating`` is written before ``createProject``; a lost answer is resolved through
  ``getProjectInfo`` (the project exists → take its links).
- each part is recorded with its content-hash once the server confirmed the same hash we computed;
  a failed part is re-sent from its start; a used or expired link (409/410), a link near its
  4-hour limit or a wrong content-hash leads to ``resetProject`` + ``createProject`` (same name)
  and the parts are sent again.
- ``startProject`` after a lost answer is checked through ``getProjectInfo``.
- polling backs off while nothing changes and waits out network loss up to ``cloud.max_offline_s``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openscan_pi.cloud.api import CloudAPI, ProjectInfo, TokenInfo
from openscan_pi.cloud.archive import Source, part_ranges
from openscan_pi.cloud.errors import (
    Cancelled,
    CloudError,
    HashMismatch,
    LinkGone,
    NoSuchProject,
    ProcessingFailed,
    ProjectExpired,
    Refused,
)
from openscan_pi.cloud.journal import Journal
from openscan_pi.cloud.model import fetch_model
from openscan_pi.config import Config
from openscan_pi.errors import InputError

log = logging.getLogger(__name__)

LINK_LIFETIME_S = 4 * 3600
MAX_RESETS_PER_RUN = 3
#: Statuses after ``startProject`` while the cloud works on the set.
WORKING = ("created", "started", "file approved", "initialized", "processing started")
DONE = ("processing done", "finished")

Events = Callable[..., None]


def token_problem(info: TokenInfo, size: int, photos: int, *, about: str = "") -> str | None:
    """Why a token with ``info`` cannot take a set of ``size`` bytes and ``photos`` photos
    (``about`` e.g. "about " for an estimate), or None when it can."""
    if photos > info.limit_photos:
        return f"the set has {photos} photos; the token allows {info.limit_photos}"
    if size > info.limit_filesize:
        return (f"the set is {about}{_mb(size)}; the token allows {_mb(info.limit_filesize)} "
                "per project")
    if size > info.credit:
        return f"the set is {about}{_mb(size)}; the token has {_mb(info.credit)} of credit left"
    return None


class _LinkTooOld(Exception):
    """Internal: the links are too close to their 4-hour limit to start another part."""


def _no_events(event: str, **fields: Any) -> None:
    del event, fields


class _Patience:
    """Waits out transient failures with exponential backoff, up to ``max_offline_s`` in a row."""

    def __init__(self, transfer: Transfer) -> None:
        self.t = transfer
        self.since: float | None = None
        self.tries = 0

    def ok(self) -> None:
        self.since = None
        self.tries = 0

    def failed(self, exc: CloudError, doing: str) -> None:
        """Wait before the next try, or raise ``exc`` when the failures have lasted too long."""
        if not exc.transient:
            raise exc
        now = self.t.clock()
        if self.since is None:
            self.since = now
        limit = self.t.cfg.cloud.max_offline_s
        if now - self.since >= limit:
            raise type(exc)(f"{exc} (still failing after {limit:.0f} s; run the same command "
                            "again to continue)") from None
        delay = min(self.t.cfg.cloud.backoff_s * 2 ** self.tries, 60.0)
        self.tries += 1
        self.t.emit("warning", text=f"{doing}: {exc}; trying again in {delay:.1f} s")
        self.t.wait(delay)


@dataclass
class Outcome:
    """What a transfer reached, for the CLI and the daemon."""

    project: str
    phase: str
    status: str | None
    photos: int
    size: int
    parts: int
    model_dir: str | None
    files: list[str]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (``--json``)."""
        return dict(self.__dict__)


class Transfer:
    """One project's way from a :class:`Source` to a model folder.

    ``stop`` (set from another thread) ends the transfer at once, a call to the cloud in flight
    included (the transfer makes it the ``api``'s stop event), with :class:`Cancelled`.
    """

    def __init__(self, api: CloudAPI, cfg: Config, journal: Journal, source: Source | None, *,
                 events: Events = _no_events,
                 stop: threading.Event | None = None, clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.cfg = cfg
        self.journal = journal
        self.source = source
        self.emit = events
        self.stop = stop or threading.Event()
        self.api.stop = self.stop
        self.clock = clock
        self.ranges = part_ranges(int(journal.data["size"]), int(journal.data["part_size"]))

    # -- helpers -------------------------------------------------------------------------------

    @property
    def project(self) -> str:
        """The cloud project name."""
        return self.journal.project

    @property
    def src(self) -> Source:
        """The source being uploaded (only the upload phases need one)."""
        if self.source is None:
            raise InputError(f"project {self.project}: no image set given to upload")
        return self.source

    def wait(self, seconds: float) -> None:
        """Sleep, unless asked to stop (then raise :class:`Cancelled`)."""
        self.stop.wait(seconds)
        self._check_stop()

    def _check_stop(self) -> None:
        """Raise :class:`Cancelled` once asked to stop (the journal keeps where it stopped)."""
        if self.stop.is_set():
            raise Cancelled(f"stopped; run the same command again to continue project {self.project}")

    def _info(self) -> ProjectInfo | None:
        patience = _Patience(self)
        while True:
            try:
                return self.api.project_info(self.project)
            except NoSuchProject:
                return None
            except CloudError as exc:
                patience.failed(exc, "asking for the project's status")

    # -- the phases ----------------------------------------------------------------------------

    def run(self, *, wait: bool, model_dir: Path | None) -> Outcome:
        """Go as far as asked: upload and start; with ``wait``, also poll and download."""
        j = self.journal
        if not j.reached("uploaded"):
            if self.source is None:
                raise InputError(f"project {self.project} is not uploaded completely: run the "
                                 "same upload command again")
            self.source.check_unchanged()
            self.upload()
        if not j.reached("started"):
            self.start()
        if wait and not j.reached("processed"):
            self.poll()
        if wait and not j.reached("downloaded"):
            if model_dir is None:
                raise InputError("no folder for the model: give --out DIR")
            self.download(model_dir)
        return self.outcome()

    def outcome(self) -> Outcome:
        """Where the project stands now."""
        d = self.journal.data
        return Outcome(project=self.project, phase=self.journal.phase, status=d.get("status"),
                       photos=int(d["photos"]), size=int(d["size"]), parts=len(self.ranges),
                       model_dir=d.get("model_dir"), files=list(d.get("files") or []))

    def upload(self) -> None:
        """Create the project (once) and send every part not yet confirmed."""
        resets = 0
        while True:
            if self.journal.phase == "creating":
                self._create()
            todo = [i for i in range(len(self.ranges)) if i not in self.journal.parts_done()]
            if not todo:
                break
            try:
                for index in todo:
                    self._send_part(index)
            except (LinkGone, HashMismatch, _LinkTooOld) as exc:
                resets += 1
                if resets > MAX_RESETS_PER_RUN:
                    raise CloudError(f"project {self.project}: upload links failed {resets} times "
                                     "in a row; run the same command again later") from None
                reason = str(exc) or "upload links close to their 4-hour limit"
                self.emit("warning", text=f"{reason}: resetting project {self.project} and "
                                          "sending its parts again")
                self._reset()
        self.journal.update(phase="uploaded")
        self.src.close()
        count = len(self.ranges)
        self.emit("stage", text=f"{count} part{'s' if count != 1 else ''} uploaded")

    def _preflight(self) -> None:
        """Refuse before any upload when the token cannot take the set."""
        info = self._patient(self.api.token_info, "asking for the token's limits")
        problem = token_problem(info, self.src.size, self.src.photos)
        if problem:
            raise Refused(problem)

    def _patient(self, call: Callable[[], Any], doing: str) -> Any:
        patience = _Patience(self)
        while True:
            try:
                return call()
            except CloudError as exc:
                patience.failed(exc, doing)

    def _create(self) -> None:
        j = self.journal
        patience = _Patience(self)
        if not j.data.get("create_sent"):
            self._preflight()
        while j.phase == "creating":
            info = self._info()
            if info is not None:
                if not j.data.get("create_sent"):
                    raise Refused(f"project name {self.project} is taken on the cloud: choose "
                                  "another with --project")
                if info.status == "created" and len(info.ulinks) == len(self.ranges):
                    # Our createProject went through but its answer was lost.
                    j.update(phase="created", links=info.ulinks,
                             links_created_at=j.data.get("create_sent_at") or self.clock(), done={})
                    break
                self._reset()
                continue
            self.emit("stage", text=f"creating project {self.project}")
            j.update(create_sent=True, create_sent_at=self.clock())
            try:
                created = self.api.create_project(self.project, photos=self.src.photos,
                                                  parts=len(self.ranges), filesize=self.src.size)
            except CloudError as exc:
                patience.failed(exc, f"creating project {self.project}")
                continue  # the loop asks getProjectInfo whether it exists now
            j.update(phase="created", links=created.ulinks, links_created_at=j.data["create_sent_at"],
                     done={}, credit=created.credit)

    def _reset(self) -> None:
        """resetProject (when the server has it) and go back to ``creating`` with no parts."""
        try:
            self._patient(lambda: self.api.reset_project(self.project), "resetting the project")
        except Refused:
            if self._info() is not None:
                raise
        self.journal.update(phase="creating", create_sent=False, links=[], done={},
                            links_created_at=None, resets=int(self.journal.data["resets"]) + 1)

    def _send_part(self, index: int) -> None:
        start, end = self.ranges[index]
        length = end - start
        parts, total = len(self.ranges), self.src.size
        patience = _Patience(self)
        while True:
            age = self.clock() - float(self.journal.data["links_created_at"])
            if age > LINK_LIFETIME_S - self.cfg.cloud.link_margin_s:
                raise _LinkTooOld()
            link = self.journal.data["links"][index]
            base = sum(e - s for i, (s, e) in enumerate(self.ranges) if i in self.journal.parts_done())
            sent = 0

            def progress(n: int, base: int = base) -> None:
                nonlocal sent
                self._check_stop()  # a cancel must not wait for a 200 MB part to finish
                sent += n
                self.emit("upload", part=index, parts=parts, part_done=sent, part_size=length,
                          done=base + sent, total=total)

            self.emit("upload", part=index, parts=parts, part_done=0, part_size=length,
                      done=base, total=total)
            try:
                server_hash, our_hash = self.api.upload_part(
                    link, self.src.read_range(start, end), length, progress=progress)
            except CloudError as exc:
                patience.failed(exc, f"part {index + 1}/{parts}")
                sent = 0
                continue
            if server_hash != our_hash:
                raise HashMismatch(f"part {index + 1}/{parts}: the server's content-hash "
                                   f"{server_hash[:12]}… differs from ours {our_hash[:12]}…")
            self.journal.mark_part(index, our_hash, self.src.known_crcs())
            self.emit("part", part=index, parts=parts, hash=our_hash)
            return

    def start(self) -> None:
        """startProject; a repeated start after a lost answer does not fail."""
        patience = _Patience(self)
        while True:
            try:
                status = self.api.start_project(self.project)
                break
            except CloudError as exc:
                info = self._info()
                if info is not None and info.status not in ("created",):
                    status = info.status  # the first start went through
                    break
                if isinstance(exc, Refused):
                    raise
                patience.failed(exc, f"starting project {self.project}")
        self.journal.update(phase="started", status=status)
        self.emit("status", project=self.project, status=status)

    def poll(self) -> None:
        """getProjectInfo until the model is ready; back off while nothing changes."""
        base = self.cfg.cloud.poll_interval_s
        interval = base
        last = self.journal.data.get("status")
        patience = _Patience(self)
        while True:
            try:
                info = self.api.project_info(self.project)
            except NoSuchProject:
                raise CloudError(f"the cloud no longer knows project {self.project}") from None
            except CloudError as exc:
                patience.failed(exc, "waiting for the cloud")
                continue
            patience.ok()
            if info.status != last:
                last = info.status
                interval = base
                self.journal.update(status=info.status)
                self.emit("status", project=self.project, status=info.status)
            else:
                interval = min(interval * 1.5, self.cfg.cloud.poll_max_interval_s)
            if info.status in DONE and info.dlink:
                self.journal.update(phase="processed", dlink=info.dlink)
                return
            if info.status == "processing failed":
                self.journal.update(phase="failed", error="processing failed")
                raise ProcessingFailed(f"the cloud could not make a model of project {self.project} "
                                       "(processing failed): check that the photos overlap and are "
                                       "sharp, then scan again")
            if info.status == "expired":
                self.journal.update(phase="failed", error="expired")
                raise ProjectExpired(f"project {self.project} expired on the cloud (results are kept "
                                     "about seven days): upload the set again")
            if info.status not in WORKING and info.status not in DONE:
                log.warning("unknown cloud status %r for %s; polling on", info.status, self.project)
            self.wait(interval)

    def download(self, model_dir: Path) -> None:
        """Fetch the model zip and extract it into ``model_dir`` (never half there)."""
        dlink = str(self.journal.data["dlink"])
        self.emit("stage", text=f"downloading the model of {self.project}")

        def progress(done: int, total: int | None) -> None:
            self._check_stop()
            self.emit("download", done=done, total=total)

        files = self._patient(lambda: fetch_model(
            self.api.link_session, dlink, model_dir,
            timeout=self.api.timeout, max_bytes=self.cfg.cloud.max_model_bytes, progress=progress,
            backoff_s=self.cfg.cloud.backoff_s, sleep=self.wait, stop=self.stop,
            stall=self.api.stall, origin=self.api.base_url), "downloading the model")
        self.journal.update(phase="downloaded", model_dir=str(model_dir),
                            files=[str(f) for f in files])
        self.emit("stage", text=f"model saved in {model_dir}")


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


@contextlib.contextmanager
def connect(cfg: Config) -> Iterator[CloudAPI]:
    """The API client for ``cfg.cloud`` (an ordinary URL: ``local`` is resolved by the commands
    that start the bundled cloud, see :mod:`openscan_pi.sim.local_cloud`), closed afterwards."""
    api = CloudAPI(cfg.cloud)
    try:
        yield api
    finally:
        api.close()
