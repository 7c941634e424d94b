"""The durable transfer journal: what a restarted upload needs to go on, per cloud project.

A job (a scan's, or an ``upload PATH``'s) keeps its journal in its record (``job.json``, see
:mod:`openscan_pi.jobs.record`); the ``download`` of a project that is no job of this machine
keeps one JSON file per project under ``<data_dir>/transfers/``, as release 1's ``upload`` did.
Both are this class; only where :meth:`Journal.save` writes differs.

It records what a restarted upload needs to continue where the last one stopped: the project name,
the source and the digest of its archive layout, the upload links and their age, the parts done with
their content-hash, and the phase reached. Every change is written atomically (temp file, fsync,
rename) before the transfer goes on, so a ``kill -9`` or a power cut loses at most the part in flight.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from openscan_pi.errors import UserError
from openscan_pi.fsutil import atomic_write_json, read_json
from openscan_pi.names import check_project, fit_name

VERSION = 1

#: Phases in order. ``creating`` is written *before* createProject, so that a crash right after the
#: server created the project is resolved by asking ``getProjectInfo``, never by a second project.
PHASES = ("creating", "created", "uploaded", "started", "processed", "downloaded")
#: Phases after which the journal is closed: nothing left to do for this project.
CLOSED = ("downloaded", "failed")

def sanitize_project(name: str) -> str:
    """A project name made from any text (see :func:`openscan_pi.names.fit_name`)."""
    return fit_name(name)


def default_project_name(source: Path, now: float | None = None) -> str:
    """The firmware's convention: ``<set name>-<epoch ms>.zip``."""
    stem = source.stem if source.is_file() else source.name
    millis = int((time.time() if now is None else now) * 1000)
    return sanitize_project(f"{stem}-{millis}.zip")


class Journal:
    """One project's transfer journal."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    # -- finding and creating -------------------------------------------------------------

    @staticmethod
    def folder(data_dir: Path) -> Path:
        """Where the journals live."""
        return data_dir / "transfers"

    @classmethod
    def path_for(cls, data_dir: Path, project: str) -> Path:
        """The journal file of ``project`` (InputError for a name that is not one)."""
        return cls.folder(data_dir) / f"{check_project(project)}.json"

    @classmethod
    def load(cls, path: Path) -> Journal:
        """Read a journal; a damaged one is reported, never overwritten."""
        try:
            data = read_json(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"transfer journal {path} is unreadable ({exc}); move it away to "
                            "start that project afresh") from None
        if not isinstance(data, dict) or data.get("version") != VERSION or "project" not in data:
            raise UserError(f"transfer journal {path} is not one this version understands; move it "
                            "away to start that project afresh")
        return cls(path, data)

    @classmethod
    def find(cls, data_dir: Path, project: str) -> Journal | None:
        """The journal of ``project``, or None."""
        path = cls.path_for(data_dir, project)
        return cls.load(path) if path.exists() else None

    @classmethod
    def find_open_for_source(cls, data_dir: Path, source: Path) -> Journal | None:
        """The newest journal of ``source`` that is not closed, or None."""
        folder = cls.folder(data_dir)
        if not folder.is_dir():
            return None
        found: list[Journal] = []
        for path in folder.glob("*.json"):
            try:
                journal = cls.load(path)
            except UserError:
                continue
            if journal.data.get("source") == str(source) and not journal.closed:
                found.append(journal)
        return max(found, key=lambda j: j.data.get("created_at", 0), default=None)

    @staticmethod
    def initial(project: str, **fields: Any) -> dict[str, Any]:
        """The fields of a new journal for ``project`` (``fields`` set over the defaults)."""
        now = time.time()
        data = {"version": VERSION, "project": project, "phase": "creating", "links": [],
                "links_created_at": None, "done": {}, "resets": 0, "status": None, "dlink": None,
                "model_dir": None, "error": None, "created_at": now, "updated_at": now}
        data.update(fields)
        return data

    @classmethod
    def create(cls, data_dir: Path, project: str, **fields: Any) -> Journal:
        """A new journal file for ``project``, on disk before anything is sent."""
        journal = cls(cls.path_for(data_dir, project), cls.initial(project, **fields))
        journal.save()
        return journal

    # -- state ----------------------------------------------------------------------------

    @property
    def project(self) -> str:
        """The cloud project name."""
        return str(self.data["project"])

    @property
    def phase(self) -> str:
        """The last phase reached (see :data:`PHASES`), or ``failed``."""
        return str(self.data["phase"])

    @property
    def closed(self) -> bool:
        """True once the model is downloaded or the cloud reported a final failure."""
        return self.phase in CLOSED

    def reached(self, phase: str) -> bool:
        """True when the journal is at ``phase`` or beyond it."""
        return self.phase in PHASES and PHASES.index(self.phase) >= PHASES.index(phase)

    def parts_done(self) -> dict[int, str]:
        """Part index -> content-hash of the parts the server confirmed."""
        return {int(k): v for k, v in self.data["done"].items()}

    def update(self, **fields: Any) -> None:
        """Change fields and write the journal durably before returning."""
        self.data.update(fields)
        self.save()

    def mark_part(self, index: int, content_hash: str,
                  crc_cache: dict[str, dict[str, int]] | None = None) -> None:
        """Record a confirmed part durably (with the CRCs known so far, when given)."""
        self.data["done"][str(index)] = content_hash
        if crc_cache:
            self.data["crc_cache"] = crc_cache
        self.save()

    def save(self) -> None:
        """Write the journal atomically (temp, fsync, rename)."""
        self.data["updated_at"] = time.time()
        atomic_write_json(self.path, self.data)
