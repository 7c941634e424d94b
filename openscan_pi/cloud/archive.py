"""Upload sources: a photo folder as a virtual ZIP, or an existing zip file sent as it is.

A photo set goes to the OpenScan Cloud as one zip archive cut into byte-range parts. The archive
of a folder is never written to disk: :class:`VirtualZip` computes the exact ZIP_STORED layout (the
one :mod:`zipfile` would write) from the names, sizes and CRC-32 of the images, holds only the
headers and the central directory (about 100 bytes per image), and serves any byte range on demand
by reading straight from the image files. Ranges can be read again later (an upload resumed after a
crash) and give the same bytes as long as the files are unchanged, which is checked.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import stat
import struct
import time
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from openscan_pi.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dng"})
_SUFFIX_TEXT = ".jpg .jpeg .png .tif .tiff .dng"

_LIMIT32 = 0xFFFFFFFF  # a 4-byte field at this value means "see the zip64 record"
_LIMIT16 = 0xFFFF
_VERSION_DEFAULT = 20
_VERSION_ZIP64 = 45
_UTF8_FLAG = 0x800
_UNIX = 3
_FILE_ATTR = (stat.S_IFREG | 0o644) << 16

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")

_CHANGED = "{} changed since the upload began; restore it, or upload the set again as a new project"


def is_image_name(name: str) -> bool:
    """True when the file name ends with an image suffix (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


@dataclass(frozen=True)
class Member:
    """One image in a virtual archive."""

    name: str  # name inside the archive: flat (no folders), unique
    path: str  # absolute path on disk
    size: int
    crc32: int
    mtime_ns: int


def _name_key(name: str) -> str:
    """How a case-insensitive file system compares names."""
    return unicodedata.normalize("NFC", name).casefold()


def _unreadable(path: object, exc: OSError) -> InputError:
    return InputError(f"cannot read {path}: {exc.strerror or exc}")


def _check_stat(path: str | Path, size: int, mtime_ns: int) -> None:
    """InputError unless the file still has this size and mtime_ns."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise InputError(_CHANGED.format(path)) from exc
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if st.st_size != size or st.st_mtime_ns != mtime_ns:
        raise InputError(_CHANGED.format(path))


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
            raise _unreadable(directory, exc) from exc
    if not found:
        raise InputError(f"{folder} holds no images ({_SUFFIX_TEXT})")
    found.sort(key=lambda item: item[0])

    taken: set[str] = set()
    result: list[tuple[str, Path]] = []
    for parts, path in found:
        # A name that is not valid UTF-8 on disk still gets a valid (if lossy) archive name.
        name = os.fsencode(parts[-1]).decode("utf-8", "replace")
        if _name_key(name) in taken:
            stem, ext = os.path.splitext(name)
            n = 2
            while _name_key(f"{stem}-{n}{ext}") in taken:
                n += 1
            name = f"{stem}-{n}{ext}"
        taken.add(_name_key(name))
        result.append((name, path))
    return result


def crc32_file(path: str | Path, bufsize: int = 1 << 20) -> int:
    """CRC-32 of a whole file, read in ``bufsize`` pieces."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            crc = zlib.crc32(chunk, crc)
    return crc


def _crc_exactly(path: str, size: int, mtime_ns: int, bufsize: int = 1 << 20) -> int:
    """CRC-32 of the first ``size`` bytes; InputError if the file changes meanwhile."""
    crc = 0
    left = size
    try:
        with open(path, "rb") as f:
            while left > 0:
                chunk = f.read(min(bufsize, left))
                if not chunk:
                    break
                crc = zlib.crc32(chunk, crc)
                left -= len(chunk)
            after = os.fstat(f.fileno())
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if left or after.st_size != size or after.st_mtime_ns != mtime_ns:
        raise InputError(
            f"{path} changed while it was read; wait until the photo set is complete "
            "and run the command again"
        )
    return crc


def _cached_crc(entry: object, size: int, mtime_ns: int) -> int | None:
    if not isinstance(entry, dict):
        return None
    crc = entry.get("crc32")
    if entry.get("size") != size or entry.get("mtime_ns") != mtime_ns:
        return None
    if not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc <= _LIMIT32:
        return None
    return crc


def scan_members(
    folder: str | Path,
    *,
    crc_cache: dict[str, dict] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Member]:
    """The images of ``folder`` (see :func:`find_images`) with their size, mtime and CRC-32.

    ``crc_cache`` maps an absolute path to ``{"size", "mtime_ns", "crc32"}``: an entry whose size
    and mtime_ns match the file is trusted instead of reading the file, and entries are written
    for the files read, so a resumed upload reads nothing twice. ``progress(bytes_done,
    bytes_total)`` is called after each file read (the total counts only the files to read).
    """
    images = find_images(folder)
    stats: list[tuple[str, str, int, int]] = []
    for name, path in images:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        stats.append((name, str(path), st.st_size, st.st_mtime_ns))
    cached = {
        path: _cached_crc(crc_cache.get(path), size, mtime_ns) if crc_cache is not None else None
        for _, path, size, mtime_ns in stats
    }
    total = sum(size for _, path, size, _ in stats if cached[path] is None)
    done = 0
    members: list[Member] = []
    for name, path, size, mtime_ns in stats:
        crc = cached[path]
        if crc is None:
            crc = _crc_exactly(path, size, mtime_ns)
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


def _check_range(start: int, end: int, size: int, chunk_size: int) -> None:
    if not 0 <= start <= end <= size:
        raise ValueError(f"range [{start}, {end}) is outside the archive [0, {size}]")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")


def _read_file_range(
    path: str, size: int, start: int, end: int, chunk_size: int
) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of a file that must still be ``size`` bytes long."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, kept open only while read
    except FileNotFoundError as exc:
        raise InputError(_CHANGED.format(path)) from exc
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    with f:
        if os.fstat(f.fileno()).st_size != size:
            raise InputError(_CHANGED.format(path))
        f.seek(start)
        pos = start
        while pos < end:
            chunk = f.read(min(chunk_size, end - pos))
            if not chunk:
                raise InputError(_CHANGED.format(path))
            pos += len(chunk)
            yield chunk


def _dos_time(mtime_ns: int) -> tuple[int, int]:
    """(DOS time, DOS date) of a modification time, in UTC, clamped to 1980..2107."""
    try:
        t = time.gmtime(mtime_ns // 1_000_000_000)
        dt = (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
    except (OverflowError, OSError, ValueError):
        dt = (1980, 1, 1, 0, 0, 0) if mtime_ns < 0 else (2107, 12, 31, 23, 59, 58)
    if dt[0] < 1980:
        dt = (1980, 1, 1, 0, 0, 0)
    elif dt[0] > 2107:
        dt = (2107, 12, 31, 23, 59, 58)
    year, month, day, hour, minute, second = dt
    return hour << 11 | minute << 5 | min(second, 59) // 2, (year - 1980) << 9 | month << 5 | day


def _zip64_extra(*values: int) -> bytes:
    return struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values)


class VirtualZip:
    """A ZIP_STORED archive of image files, computed in advance and read by byte ranges.

    The layout is the one :mod:`zipfile` writes for stored members in the given order: a local
    header and the file bytes for each member, the central directory, then the end records (ZIP64
    where sizes, offsets or the entry count need it, or everywhere with ``force_zip64``).
    Everything but the file bytes is built once here and held in memory.
    """

    def __init__(self, members: Sequence[Member], *, force_zip64: bool = False) -> None:
        self.members: tuple[Member, ...] = tuple(members)
        self.photos: int = len(self.members)
        self._starts: list[int] = []
        self._pieces: list[bytes | Member] = []
        digest = hashlib.sha256()
        central: list[bytes] = []
        seen: set[str] = set()
        offset = 0
        for m in self.members:
            if not m.name or "/" in m.name or "\\" in m.name:
                raise ValueError(f"archive name {m.name!r} must be a plain file name")
            if _name_key(m.name) in seen:
                raise ValueError(f"archive name {m.name!r} is not unique")
            if m.size < 0 or not 0 <= m.crc32 <= _LIMIT32:
                raise ValueError(f"member {m.name!r} has a bad size or CRC")
            seen.add(_name_key(m.name))
            local = self._local_header(m, force_zip64, offset)
            central.append(self._central_entry(m, force_zip64, offset))
            self._add(offset, local)
            digest.update(local)
            offset += len(local)
            if m.size:
                self._starts.append(offset)
                self._pieces.append(m)
                offset += m.size
        tail = b"".join(central)
        tail += self._end_records(len(self.members), len(tail), offset, force_zip64)
        self._add(offset, tail)
        digest.update(tail)
        self.size: int = offset + len(tail)
        self.digest: str = digest.hexdigest()

    def _add(self, start: int, data: bytes) -> None:
        if data:
            self._starts.append(start)
            self._pieces.append(data)

    @staticmethod
    def _encoded_name(m: Member) -> tuple[bytes, int]:
        try:
            return m.name.encode("ascii"), 0
        except UnicodeEncodeError:
            return m.name.encode("utf-8"), _UTF8_FLAG

    @staticmethod
    def _needs_zip64(m: Member, force: bool, offset: int) -> bool:
        return force or m.size >= _LIMIT32 or offset >= _LIMIT32

    def _local_header(self, m: Member, force: bool, offset: int) -> bytes:
        name, flags = self._encoded_name(m)
        version = _VERSION_ZIP64 if self._needs_zip64(m, force, offset) else _VERSION_DEFAULT
        dostime, dosdate = _dos_time(m.mtime_ns)
        if force or m.size >= _LIMIT32:
            extra = _zip64_extra(m.size, m.size)
            size = _LIMIT32
        else:
            extra = b""
            size = m.size
        header = _LOCAL.pack(
            b"PK\x03\x04", version, 0, flags, zipfile.ZIP_STORED, dostime, dosdate,
            m.crc32, size, size, len(name), len(extra),
        )  # fmt: skip
        return header + name + extra

    def _central_entry(self, m: Member, force: bool, offset: int) -> bytes:
        name, flags = self._encoded_name(m)
        version = _VERSION_ZIP64 if self._needs_zip64(m, force, offset) else _VERSION_DEFAULT
        dostime, dosdate = _dos_time(m.mtime_ns)
        values: list[int] = []
        if force or m.size >= _LIMIT32:
            values += [m.size, m.size]
            size = _LIMIT32
        else:
            size = m.size
        if force or offset >= _LIMIT32:
            values.append(offset)
            header_offset = _LIMIT32
        else:
            header_offset = offset
        extra = _zip64_extra(*values) if values else b""
        entry = _CENTRAL.pack(
            b"PK\x01\x02", version, _UNIX, version, 0, flags, zipfile.ZIP_STORED, dostime,
            dosdate, m.crc32, size, size, len(name), len(extra), 0, 0, 0, _FILE_ATTR,
            header_offset,
        )  # fmt: skip
        return entry + name + extra

    @staticmethod
    def _end_records(count: int, cd_size: int, cd_offset: int, force: bool) -> bytes:
        if not (force or count >= _LIMIT16 or cd_size >= _LIMIT32 or cd_offset >= _LIMIT32):
            return _END.pack(b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0)
        end64 = _END64.pack(
            b"PK\x06\x06", _END64.size - 12, _VERSION_ZIP64, _VERSION_ZIP64, 0, 0,
            count, count, cd_size, cd_offset,
        )  # fmt: skip
        locator = _LOCATOR64.pack(b"PK\x06\x07", 0, cd_offset + cd_size, 1)
        end = _END.pack(b"PK\x05\x06", 0, 0, _LIMIT16, _LIMIT16, _LIMIT32, _LIMIT32, 0)
        return end64 + locator + end

    def read_range(self, start: int, end: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield exactly the bytes ``[start, end)`` of the archive, chunks of at most chunk_size.

        Image files are opened only while their bytes are read; one whose size differs from the
        layout raises :class:`InputError`. Raises ValueError for a range outside ``[0, size]``.
        """
        _check_range(start, end, self.size, chunk_size)
        return self._iter_range(start, end, chunk_size)

    def _iter_range(self, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        i = bisect.bisect_right(self._starts, start) - 1
        pos = start
        while pos < end:
            piece_start = self._starts[i]
            piece = self._pieces[i]
            if isinstance(piece, Member):
                hi = min(end - piece_start, piece.size)
                yield from _read_file_range(
                    piece.path, piece.size, pos - piece_start, hi, chunk_size
                )
            else:
                hi = min(end - piece_start, len(piece))
                for lo in range(pos - piece_start, hi, chunk_size):
                    yield piece[lo : min(lo + chunk_size, hi)]
            pos = piece_start + hi
            i += 1

    def check_unchanged(self) -> None:
        """Raise InputError when an image's size or mtime_ns differs from the layout's."""
        for m in self.members:
            _check_stat(m.path, m.size, m.mtime_ns)


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
            raise _unreadable(path, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path} is not a zip file")
        try:
            if not zipfile.is_zipfile(path):
                raise InputError(f"{path} is not a zip file")
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
                cd_start: int = zf.start_dir  # type: ignore[attr-defined]
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
        for chunk in _read_file_range(str(path), st.st_size, cd_start, st.st_size, 1 << 20):
            digest.update(chunk)
        return cls(path, st.st_size, st.st_mtime_ns, photos, digest.hexdigest(), others)

    def read_range(self, start: int, end: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield exactly the bytes ``[start, end)`` of the zip file, chunks of at most chunk_size.

        Raises InputError if the file's size changed, ValueError for a range outside ``[0, size]``.
        """
        _check_range(start, end, self.size, chunk_size)
        return _read_file_range(str(self.path), self.size, start, end, chunk_size)

    def check_unchanged(self) -> None:
        """Raise InputError when the zip file's size or mtime_ns changed since it was opened."""
        _check_stat(self.path, self.size, self.mtime_ns)


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
) -> Source:
    """A folder becomes a :class:`VirtualZip` of its images, a file a :class:`ZipFileSource`."""
    p = Path(path)
    if p.is_dir():
        return VirtualZip(scan_members(p, crc_cache=crc_cache, progress=progress))
    if p.exists():
        return ZipFileSource.open(p)
    raise InputError(
        f"{path} does not exist: give a folder of images ({_SUFFIX_TEXT}) or a zip of them"
    )
