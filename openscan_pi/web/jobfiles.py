"""A job's files as the page shows them, confined to ``daemon.data_dir/jobs/<id>/``.

A job id and a file name must each be a name (:data:`openscan_pi.names.RULE`: no slash, no
``..``, no leading dot), and the file, its links resolved, must lie inside the job's folder:
anything else is "not found", never read. Photos are ``images/*.jpg``; the model is the files of
``model/``. Thumbnails are made once, on first view, into ``thumbs/`` (a temp file renamed into
place), at most :data:`THUMB_PX` on their longer side. Zips are made on the fly
(:class:`~openscan_pi.cloud.virtualzip.VirtualZip`, stored): nothing is written for them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from openscan_pi.cloud.virtualzip import Member, VirtualZip
from openscan_pi.names import is_name

#: Photos shown and zipped.
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
#: The longer side of a thumbnail, in pixels.
THUMB_PX = 320
#: Chunks a zip is sent in.
CHUNK = 1 << 20


class NotThere(Exception):
    """No such job or file (or one the page may not read)."""


class JobFiles:
    """The job folders under ``data_dir/jobs``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "jobs"

    def job_dir(self, job_id: str) -> Path:
        """The job's folder, its links resolved; :class:`NotThere` unless it is one."""
        if not is_name(job_id):
            raise NotThere(job_id)
        root = self.root.resolve()
        folder = (root / job_id).resolve()
        if folder.parent != root or not folder.is_dir():
            raise NotThere(job_id)
        return folder

    def file(self, job_id: str, sub: str, name: str) -> Path:
        """``<job>/<sub>/<name>``, resolved inside the job's folder; :class:`NotThere` if not
        (in ``images``, also unless it is a photo)."""
        folder = self.job_dir(job_id)
        if not is_name(name) or (sub == "images" and Path(name).suffix.lower()
                                 not in PHOTO_SUFFIXES):
            raise NotThere(name)
        try:
            path = (folder / sub / name).resolve(strict=True)
        except (OSError, RuntimeError):
            raise NotThere(name) from None
        if not path.is_relative_to(folder) or not path.is_file():
            raise NotThere(name)
        return path

    def _listing(self, job_id: str, sub: str, suffixes: frozenset[str] | None) -> list[str]:
        folder = self.job_dir(job_id) / sub
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return []
        found = []
        for name in names:
            if suffixes is not None and Path(name).suffix.lower() not in suffixes:
                continue
            try:
                self.file(job_id, sub, name)
            except NotThere:
                continue
            found.append(name)
        return found

    def photos(self, job_id: str) -> list[str]:
        """The job's photos (``images/``), by name."""
        return self._listing(job_id, "images", PHOTO_SUFFIXES)

    def model_files(self, job_id: str) -> list[str]:
        """The files of the job's model (``model/``), empty while there is none."""
        return self._listing(job_id, "model", None)

    def model_obj(self, job_id: str) -> str | None:
        """The model's OBJ file, if there is one."""
        return next((n for n in self.model_files(job_id) if n.lower().endswith(".obj")), None)

    def thumbnail(self, job_id: str, name: str) -> Path:
        """The photo's thumbnail, made now if it is not there yet (blocking: run it in a
        thread)."""
        photo = self.file(job_id, "images", name)
        folder = self.job_dir(job_id) / "thumbs"
        thumb = folder / (Path(name).stem + ".jpg")
        try:
            if thumb.stat().st_mtime_ns >= photo.stat().st_mtime_ns:
                return thumb
        except FileNotFoundError:
            pass
        from PIL import Image  # lazy: only the web process, and only when a thumbnail is made

        folder.mkdir(exist_ok=True)
        temp = folder / f".{thumb.name}.{os.getpid()}.tmp"
        with Image.open(photo) as image:
            image.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decoded at a reduced scale
            small = image.convert("RGB")
            small.thumbnail((THUMB_PX, THUMB_PX))
            small.save(temp, "JPEG", quality=80)
        os.replace(temp, thumb)
        return thumb

    def zip_of(self, job_id: str, sub: str) -> VirtualZip:
        """A stored zip of ``photos`` (``images``) or the ``model`` folder's files."""
        names = self.photos(job_id) if sub == "images" else self.model_files(job_id)
        if not names:
            raise NotThere(sub)
        members = []
        for name in names:
            path = self.file(job_id, sub, name)
            st = path.stat()
            members.append(Member(name, str(path), st.st_size, None, st.st_mtime_ns))
        return VirtualZip(members)


def zip_chunks(archive: VirtualZip) -> Iterator[bytes]:
    """The whole archive, chunk by chunk (blocking reads: take each in a thread)."""
    return archive.read_range(0, archive.size, CHUNK)
