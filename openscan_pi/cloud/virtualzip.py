"""The virtual ZIP_STORED archive of an image set: exact layout in advance, bytes on demand.

The archive is never written to disk. :class:`VirtualZip` computes the layout :mod:`zipfile`
would write for stored members (local header and bytes of each image, central directory, end
records, ZIP64 where needed) from the names and sizes alone, and serves any byte range by reading
straight from the image files. The CRC-32 of an image goes into its local header and into the
central directory; a CRC the caller does not know yet (the daemon knows them from capture time, a
resumed upload from its journal) is computed by a background thread that reads ahead of the
upload by a bounded amount, so the CRC pass overlaps the network instead of preceding it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import stat
import struct
import threading
import time
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from openscan_pi.errors import InputError

LIMIT32 = 0xFFFFFFFF  # a 4-byte field at this value means "see the zip64 record"
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


@dataclass(frozen=True)
class Member:
    """One image in a virtual archive."""

    name: str  # name inside the archive: flat (no folders), unique
    path: str  # absolute path on disk
    size: int
    crc32: int | None  # None: computed when first needed (see VirtualZip)
    mtime_ns: int


def name_key(name: str) -> str:
    """How a case-insensitive file system compares names."""
    return unicodedata.normalize("NFC", name).casefold()


def unreadable(path: object, exc: OSError) -> InputError:
    return InputError(f"cannot read {path}: {exc.strerror or exc}")


def check_stat(path: str | Path, size: int, mtime_ns: int) -> None:
    """InputError unless the file still has this size and mtime_ns."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise InputError(_CHANGED.format(path)) from exc
    except OSError as exc:
        raise unreadable(path, exc) from exc
    if st.st_size != size or st.st_mtime_ns != mtime_ns:
        raise InputError(_CHANGED.format(path))


def crc_exactly(path: str, size: int, mtime_ns: int, bufsize: int = 1 << 20) -> int:
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
        raise unreadable(path, exc) from exc
    if left or after.st_size != size or after.st_mtime_ns != mtime_ns:
        raise InputError(
            f"{path} changed while it was read; wait until the photo set is complete "
            "and run the command again"
        )
    return crc


def check_range(start: int, end: int, size: int, chunk_size: int) -> None:
    if not 0 <= start <= end <= size:
        raise ValueError(f"range [{start}, {end}) is outside the archive [0, {size}]")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")


def read_file_range(
    path: str, size: int, start: int, end: int, chunk_size: int
) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of a file that must still be ``size`` bytes long."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, kept open only while read
    except FileNotFoundError as exc:
        raise InputError(_CHANGED.format(path)) from exc
    except OSError as exc:
        raise unreadable(path, exc) from exc
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



class _Local:
    """Placeholder piece: the local header of member ``index`` (its CRC may be unknown yet)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class _Tail:
    """Placeholder piece: the central directory and end records (need every CRC)."""


class VirtualZip:
    """A ZIP_STORED archive of image files, laid out in advance and read by byte ranges.

    The layout is the one :mod:`zipfile` writes for stored members in the given order (ZIP64
    where sizes, offsets or the entry count need it, or everywhere with ``force_zip64``). Members
    whose ``crc32`` is None get it computed by a background thread at most ``lead_bytes`` ahead of
    the reading position; :meth:`known_crcs` tells which are known, for a journal to keep them.
    """

    def __init__(self, members: Sequence[Member], *, force_zip64: bool = False,
                 lead_bytes: int = 64 << 20) -> None:
        self.members: tuple[Member, ...] = tuple(members)
        self.photos: int = len(self.members)
        self._force = force_zip64
        self._lead = lead_bytes
        self._crcs: list[int | None] = [m.crc32 for m in self.members]
        self._offsets: list[int] = []
        self._starts: list[int] = []
        self._lengths: list[int] = []
        self._pieces: list[_Local | Member | _Tail] = []
        self._tail: bytes | None = None
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._error: InputError | None = None
        self._closed = False
        self._demand = 0  # the member whose CRC the reader waits for
        self._reader_pos = 0
        seen: set[str] = set()
        offset = 0
        for k, m in enumerate(self.members):
            if not m.name or "/" in m.name or "\\" in m.name:
                raise ValueError(f"archive name {m.name!r} must be a plain file name")
            if name_key(m.name) in seen:
                raise ValueError(f"archive name {m.name!r} is not unique")
            if m.size < 0 or (m.crc32 is not None and not 0 <= m.crc32 <= LIMIT32):
                raise ValueError(f"member {m.name!r} has a bad size or CRC")
            seen.add(name_key(m.name))
            self._offsets.append(offset)
            offset = self._add(offset, _Local(k), len(self._local_header(k, 0)))
            if m.size:
                offset = self._add(offset, m, m.size)
        self._cd_offset = offset
        self._cd_size = sum(len(self._central_entry(k, 0)) for k in range(len(self.members)))
        end = self._end_records(len(self.members), self._cd_size, offset)
        self._add(offset, _Tail(), self._cd_size + len(end))
        self.size: int = offset + self._cd_size + len(end)
        # Names, sizes, times and order fix every byte but the CRCs, which follow from the bytes.
        layout = [[m.name, m.size, m.mtime_ns] for m in self.members]
        self.digest: str = hashlib.sha256(
            json.dumps(["stored-zip-1", force_zip64, layout]).encode()).hexdigest()

    def _add(self, start: int, piece: _Local | Member | _Tail, length: int) -> int:
        if length:
            self._starts.append(start)
            self._lengths.append(length)
            self._pieces.append(piece)
        return start + length

    # -- the zip format -----------------------------------------------------------------------

    @staticmethod
    def _encoded_name(m: Member) -> tuple[bytes, int]:
        try:
            return m.name.encode("ascii"), 0
        except UnicodeEncodeError:
            return m.name.encode("utf-8"), _UTF8_FLAG

    def _needs_zip64(self, k: int) -> bool:
        return self._force or self.members[k].size >= LIMIT32 or self._offsets[k] >= LIMIT32

    def _local_header(self, k: int, crc: int) -> bytes:
        m = self.members[k]
        name, flags = self._encoded_name(m)
        version = _VERSION_ZIP64 if self._needs_zip64(k) else _VERSION_DEFAULT
        dostime, dosdate = _dos_time(m.mtime_ns)
        if self._force or m.size >= LIMIT32:
            extra = _zip64_extra(m.size, m.size)
            size = LIMIT32
        else:
            extra = b""
            size = m.size
        header = _LOCAL.pack(
            b"PK\x03\x04", version, 0, flags, zipfile.ZIP_STORED, dostime, dosdate,
            crc, size, size, len(name), len(extra),
        )  # fmt: skip
        return header + name + extra

    def _central_entry(self, k: int, crc: int) -> bytes:
        m = self.members[k]
        offset = self._offsets[k]
        name, flags = self._encoded_name(m)
        version = _VERSION_ZIP64 if self._needs_zip64(k) else _VERSION_DEFAULT
        dostime, dosdate = _dos_time(m.mtime_ns)
        values: list[int] = []
        if self._force or m.size >= LIMIT32:
            values += [m.size, m.size]
            size = LIMIT32
        else:
            size = m.size
        if self._force or offset >= LIMIT32:
            values.append(offset)
            header_offset = LIMIT32
        else:
            header_offset = offset
        extra = _zip64_extra(*values) if values else b""
        entry = _CENTRAL.pack(
            b"PK\x01\x02", version, _UNIX, version, 0, flags, zipfile.ZIP_STORED, dostime,
            dosdate, crc, size, size, len(name), len(extra), 0, 0, 0, _FILE_ATTR,
            header_offset,
        )  # fmt: skip
        return entry + name + extra

    def _end_records(self, count: int, cd_size: int, cd_offset: int) -> bytes:
        if not (self._force or count >= _LIMIT16 or cd_size >= LIMIT32 or cd_offset >= LIMIT32):
            return _END.pack(b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0)
        end64 = _END64.pack(
            b"PK\x06\x06", _END64.size - 12, _VERSION_ZIP64, _VERSION_ZIP64, 0, 0,
            count, count, cd_size, cd_offset,
        )  # fmt: skip
        locator = _LOCATOR64.pack(b"PK\x06\x07", 0, cd_offset + cd_size, 1)
        end = _END.pack(b"PK\x05\x06", 0, 0, _LIMIT16, _LIMIT16, LIMIT32, LIMIT32, 0)
        return end64 + locator + end

    def _piece_bytes(self, piece: _Local | _Tail) -> bytes:
        if isinstance(piece, _Local):
            return self._local_header(piece.index, self._crc(piece.index))
        if self._tail is None:
            central = b"".join(self._central_entry(k, self._crc(k)) for k in range(self.photos))
            self._tail = central + self._end_records(self.photos, len(central), self._cd_offset)
        return self._tail

    # -- CRCs ---------------------------------------------------------------------------------

    def known_crcs(self) -> dict[str, dict[str, int]]:
        """``{path: {"size", "mtime_ns", "crc32"}}`` of the members whose CRC is known."""
        with self._cond:
            return {m.path: {"size": m.size, "mtime_ns": m.mtime_ns, "crc32": crc}
                    for m, crc in zip(self.members, self._crcs, strict=True) if crc is not None}

    def _crc(self, k: int) -> int:
        crc = self._crcs[k]
        if crc is not None:
            return crc
        with self._cond:
            self._demand = k
            if self._worker is None:
                self._worker = threading.Thread(target=self._crc_worker, name="zip-crc",
                                                daemon=True)
                self._worker.start()
            self._cond.notify_all()
            while (crc := self._crcs[k]) is None:
                if self._error is not None:
                    raise self._error
                if self._closed:
                    raise InputError("the archive was closed while it was read")
                self._cond.wait(0.5)
            return crc

    def _next_unknown(self) -> int | None:
        """The first member without a CRC from the reader's demand on, else from the start."""
        for k in (*range(self._demand, self.photos), *range(self._demand)):
            if self._crcs[k] is None:
                return k
        return None

    def _crc_worker(self) -> None:
        while True:
            with self._cond:
                k = self._next_unknown()
                if k is None or self._closed:
                    return
                if k != self._demand and self._offsets[k] - self._reader_pos > self._lead:
                    self._cond.wait(0.5)  # far enough ahead of the reader: let it catch up
                    continue
            m = self.members[k]
            try:
                crc = crc_exactly(m.path, m.size, m.mtime_ns)
            except InputError as exc:
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._crcs[k] = crc
                self._cond.notify_all()

    def close(self) -> None:
        """Stop the CRC thread (a read after this fails if it needs an unknown CRC)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- reading ------------------------------------------------------------------------------

    def read_range(self, start: int, end: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield exactly the bytes ``[start, end)`` of the archive, chunks of at most chunk_size.

        Image files are opened only while their bytes are read; one whose size differs from the
        layout raises :class:`InputError`. Raises ValueError for a range outside ``[0, size]``.
        """
        check_range(start, end, self.size, chunk_size)
        return self._iter_range(start, end, chunk_size)

    def _iter_range(self, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        i = bisect.bisect_right(self._starts, start) - 1
        pos = start
        while pos < end:
            piece_start = self._starts[i]
            piece = self._pieces[i]
            hi = min(end - piece_start, self._lengths[i])
            if self._reader_pos != pos:
                with self._cond:
                    self._reader_pos = pos
                    self._cond.notify_all()
            if isinstance(piece, Member):
                yield from read_file_range(piece.path, piece.size, pos - piece_start, hi,
                                            chunk_size)
            else:
                data = self._piece_bytes(piece)
                for lo in range(pos - piece_start, hi, chunk_size):
                    yield data[lo : min(lo + chunk_size, hi)]
            pos = piece_start + hi
            i += 1

    def check_unchanged(self) -> None:
        """Raise InputError when an image's size or mtime_ns differs from the layout's."""
        for m in self.members:
            check_stat(m.path, m.size, m.mtime_ns)
