"""Upload sources: a photo folder as a virtual ZIP, or an existing zip file sent as it is.

A photo set goes to the OpenScan Cloud as one zip archive cut into byte-range parts. The archive
of a folder is never written to disk: :class:`VirtualZip` computes the exact ZIP_STORED layout (the
one :mod:`zipfile` would write) from the names, sizes and CRC-32 of the images, holds only the
headers and the central directory (about 100 bytes per image), and serves any byte range on demand
by reading straight from the image files. Ranges can be read again later (an upload resumed after a
crash) and give the same bytes as long as the files are unchanged, which is checked.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from openscan_pi.cloud.virtualzip import (
    LIMIT32,
    Member,
    VirtualZip,
    check_range,
    check_stat,
    crc_exactly,
    name_key,
    read_file_range,
    unreadable,
)
from openscan_pi.errors import InputError

__all__ = [
    "IMAGE_SUFFIXES", "Member", "Source", "VirtualZip", "ZipFileSource", "crc32_file", "find_images",
    "is_image_name", "open_source", "part_ranges", "scan_members",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dng"})
_SUFFIX_TEXT = ".jpg .jpeg .png .tif .tiff .dng"

def is_image_name(name: str) -> bool:
    """True when the file name ends with an image suffix (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _folder_error(folder: str | Path, what: str) -> InputError:
    return InputError(f"{folder} {what}: give a folder of images ({_SUFFIX_TEXT})")


def find_images(folder: str | Path) -> list[tuple[str, Path]]:
    """List the image files below ``folder`` as ``(archive name, path)``.

    Hidden files and folders (names starting with ``.``) are skipped and symlinked folders are not
    followed. The list is sorted by relative path. The archive name is the file's base name; base
    names that clash (compared case-insensitively) get ``-2``, ``-3``... before the extension, the
    first in sorted order keeping its name. Paths are absolute.

    Raises :class:`InputError` when the folder is missing, is not a folder, or holds no images.
    """
    root = Path(os.path.abspath(folder))
    if not root.exists():
        raise _folder_error(folder, "does not exist")
    if not root.is_dir():
        raise _folder_error(folder, "is not a folder")
    found: list[tuple[tuple[str, ...], Path]] = []
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        directory, parts = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((Path(entry.path), (*parts, entry.name)))
                    elif entry.is_file() and is_image_name(entry.name):
                        found.append(((*parts, entry.name), Path(entry.path)))
        except OSError as exc:
            raise unreadable(directory, exc) from exc
    if not found:
        raise InputError(f"{folder} holds no images ({_SUFFIX_TEXT})")
    found.sort(key=lambda item: item[0])

    taken: set[str] = set()
    result: list[tuple[str, Path]] = []
    for parts, path in found:
        # A name that is not valid UTF-8 on disk still gets a valid (if lossy) archive name.
        name = os.fsencode(parts[-1]).decode("utf-8", "replace")
        if name_key(name) in taken:
            stem, ext = os.path.splitext(name)
            n = 2
            while name_key(f"{stem}-{n}{ext}") in taken:
                n += 1
            name = f"{stem}-{n}{ext}"
        taken.add(name_key(name))
        result.append((name, path))
    return result


def crc32_file(path: str | Path, bufsize: int = 1 << 20) -> int:
    """CRC-32 of a whole file, read in ``bufsize`` pieces."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            crc = zlib.crc32(chunk, crc)
    return crc


def _cached_crc(entry: object, size: int, mtime_ns: int) -> int | None:
    if not isinstance(entry, dict):
        return None
    crc = entry.get("crc32")
    if entry.get("size") != size or entry.get("mtime_ns") != mtime_ns:
        return None
    if not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc <= LIMIT32:
        return None
    return crc


def scan_members(
    folder: str | Path,
    *,
    crc_cache: dict[str, dict] | None = None,
    progress: Callable[[int, int], None] | None = None,
    lazy: bool = False,
) -> list[Member]:
    """The images of ``folder`` (see :func:`find_images`) with their size, mtime and CRC-32.

    ``crc_cache`` maps an absolute path to ``{"size", "mtime_ns", "crc32"}``: an entry whose size
    and mtime_ns match the file is trusted instead of reading the file, and entries are written
    for the files read, so a resumed upload reads nothing twice. ``progress(bytes_done,
    bytes_total)`` is called after each file read (the total counts only the files to read).
    With ``lazy``, nothing is read: a CRC not in the cache is left None, for :class:`VirtualZip`
    to compute while the archive is read.
    """
    images = find_images(folder)
    stats: list[tuple[str, str, int, int]] = []
    for name, image in images:
        try:
            st = os.stat(image)
        except OSError as exc:
            raise unreadable(image, exc) from exc
        stats.append((name, str(image), st.st_size, st.st_mtime_ns))
    cached = {
        path: _cached_crc(crc_cache.get(path), size, mtime_ns) if crc_cache is not None else None
        for _, path, size, mtime_ns in stats
    }
    total = sum(size for _, path, size, _ in stats if cached[path] is None)
    done = 0
    members: list[Member] = []
    for name, path, size, mtime_ns in stats:
        crc = cached[path]
        if crc is None and not lazy:
            crc = crc_exactly(path, size, mtime_ns)
            if crc_cache is not None:
                crc_cache[path] = {"size": size, "mtime_ns": mtime_ns, "crc32": crc}
            done += size
            if progress is not None:
                progress(done, total)
        members.append(Member(name=name, path=path, size=size, crc32=crc, mtime_ns=mtime_ns))
    return members


@runtime_checkable
class Source(Protocol):
    """What the transfer code needs from an upload source."""

    size: int  # total bytes of the archive
    photos: int  # images inside
    digest: str  # hex sha256 that identifies the exact archive bytes layout

    def read_range(self, start: int, end: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Exactly the bytes ``[start, end)`` of the archive, in chunks of at most chunk_size."""
        ...

    def check_unchanged(self) -> None:
        """Raise InputError if a file changed (size or mtime_ns) since the layout was computed."""
        ...

    def known_crcs(self) -> dict[str, dict[str, int]]:
        """CRCs computed so far, ``{path: {"size", "mtime_ns", "crc32"}}``, for the journal."""
        ...

    def close(self) -> None:
        """Stop any background reading."""
        ...


class ZipFileSource:
    """An existing zip file of images, sent as it is."""

    def __init__(
        self, path: Path, size: int, mtime_ns: int, photos: int, digest: str, others: list[str]
    ) -> None:
        self.path = path
        self.size = size
        self.mtime_ns = mtime_ns
        self.photos = photos
        self.digest = digest
        self.others = others

    @classmethod
    def open(cls, path: str | Path) -> ZipFileSource:
        """Check that ``path`` is a zip holding at least one image; InputError otherwise."""
        path = Path(path)
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise InputError(f"{path} does not exist") from exc
        except OSError as exc:
            raise unreadable(path, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path} is not a zip file")
        try:
            if not zipfile.is_zipfile(path):
                raise InputError(f"{path} is not a zip file")
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
                cd_start: int = zf.start_dir
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
            raise InputError(f"{path} is not a zip file") from exc
        photos = 0
        others: list[str] = []
        for info in infos:
            if info.is_dir():
                continue
            base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
            if is_image_name(base):
                photos += 1
            else:
                others.append(info.filename)
        if not photos:
            raise InputError(f"{path} holds no images ({_SUFFIX_TEXT})")
        digest = hashlib.sha256(struct.pack("<Q", st.st_size))
        for chunk in read_file_range(str(path), st.st_size, cd_start, st.st_size, 1 << 20):
            digest.update(chunk)
        return cls(path, st.st_size, st.st_mtime_ns, photos, digest.hexdigest(), others)

    def read_range(self, start: int, end: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield exactly the bytes ``[start, end)`` of the zip file, chunks of at most chunk_size.

        Raises InputError if the file's size changed, ValueError for a range outside ``[0, size]``.
        """
        check_range(start, end, self.size, chunk_size)
        return read_file_range(str(self.path), self.size, start, end, chunk_size)

    def check_unchanged(self) -> None:
        """Raise InputError when the zip file's size or mtime_ns changed since it was opened."""
        check_stat(self.path, self.size, self.mtime_ns)

    def known_crcs(self) -> dict[str, dict[str, int]]:
        """Nothing to remember: the zip holds its own CRCs."""
        return {}

    def close(self) -> None:
        """Nothing runs in the background."""


def part_ranges(size: int, max_part_bytes: int) -> list[tuple[int, int]]:
    """Cut ``[0, size)`` into parts of ``max_part_bytes`` (the last one may be shorter)."""
    if size < 0:
        raise ValueError(f"size must not be negative, not {size}")
    if max_part_bytes <= 0:
        raise ValueError(f"max_part_bytes must be positive, not {max_part_bytes}")
    return [(lo, min(lo + max_part_bytes, size)) for lo in range(0, size, max_part_bytes)]


def open_source(
    path: str | Path,
    *,
    crc_cache: dict[str, dict] | None = None,
    progress: Callable[[int, int], None] | None = None,
    lazy: bool = False,
) -> Source:
    """A folder becomes a :class:`VirtualZip` of its images, a file a :class:`ZipFileSource`.

    With ``lazy``, CRCs missing from ``crc_cache`` are computed while the archive is read.
    """
    p = Path(path)
    if p.is_dir():
        return VirtualZip(scan_members(p, crc_cache=crc_cache, progress=progress, lazy=lazy))
    if p.exists():
        return ZipFileSource.open(p)
    raise InputError(
        f"{path} does not exist: give a folder of images ({_SUFFIX_TEXT}) or a zip of them"
    )
