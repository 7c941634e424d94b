"""Tests for the upload sources: the virtual ZIP of a photo folder and an existing zip file."""

from __future__ import annotations

import io
import os
import random
import re
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from openscan_pi.cloud import virtualzip
from openscan_pi.cloud.archive import (
    IMAGE_SUFFIXES,
    Member,
    Source,
    VirtualZip,
    ZipFileSource,
    crc32_file,
    find_images,
    is_image_name,
    open_source,
    part_ranges,
    scan_members,
)
from openscan_pi.errors import InputError

EXTS = ".jpg .jpeg .png .tif .tiff .dng"
MTIME_NS = 1_623_760_496 * 10**9 + 123_456_789  # 2021-06-15 12:34:56 UTC
BAD_NAME = os.fsdecode(b"bad\xff.jpg")  # not valid UTF-8 on disk

# (relative path, size) of the images of the main set, in sorted relative-path order, with the
# archive name each must get.
IMAGES = [
    ("B.JPEG", 3000, "B.JPEG"),
    ("a-2.jpg", 1500, "a-2.jpg"),
    ("a.jpg", 70_000, "a.jpg"),
    (BAD_NAME, 10, "bad\ufffd.jpg"),
    ("c.Png", 0, "c.Png"),
    ("f.dng", 5000, "f.dng"),
    ("sub/A.JPG", 4096, "A-3.JPG"),
    ("sub/a.jpg", 65537, "a-4.jpg"),
    ("sub/deeper/scan.tif", 12345, "scan.tif"),
    ("sub/über.TIFF", 777, "über.TIFF"),
    ("zz/a-2.JPG", 42, "a-2-2.JPG"),
]
SKIPPED = [".hidden.jpg", ".cache/x.jpg", "sub/._a.jpg", "notes.txt", "sub/readme", "sub/x.jpg.bak"]


def write(path: Path, data: bytes, mtime_ns: int = MTIME_NS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def photo_set(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    rng = random.Random(1)
    for rel, size, _ in IMAGES:
        write(root / rel, rng.randbytes(size))
    for rel in SKIPPED:
        write(root / rel, b"not part of the set")
    outside = tmp_path / "outside"
    write(outside / "linked.jpg", b"behind a symlinked folder")
    (root / "link").symlink_to(outside, target_is_directory=True)
    return root


def expected_names() -> list[str]:
    return [name for _, _, name in IMAGES]


def read_all(src: Source, start: int = 0, end: int | None = None, chunk: int = 1 << 20) -> bytes:
    end = src.size if end is None else end
    chunks = list(src.read_range(start, end, chunk))
    assert all(0 < len(c) <= chunk for c in chunks)
    return b"".join(chunks)


def check_zip(data: bytes, root: Path) -> zipfile.ZipFile:
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.testzip() is None
    assert zf.namelist() == expected_names()
    for (rel, _, _), name in zip(IMAGES, zf.namelist(), strict=True):
        assert zf.read(name) == (root / rel).read_bytes()
    return zf


def test_is_image_name() -> None:
    assert sorted(IMAGE_SUFFIXES) == sorted(EXTS.split())
    for name in ["a.jpg", "A.JPG", "b.JpEg", "c.PNG", "d.tif", "e.TIFF", "f.Dng", "x.y.jpg"]:
        assert is_image_name(name)
    for name in ["a.txt", "jpg", "a.jpg.bak", "a.gif", ".jpg", "a"]:
        assert not is_image_name(name)


def test_find_images(photo_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = find_images(photo_set)
    assert [name for name, _ in found] == expected_names()
    assert [p for _, p in found] == [photo_set / rel for rel, _, _ in IMAGES]
    monkeypatch.chdir(photo_set.parent)
    assert find_images("set") == found  # a relative folder still gives absolute paths


def test_duplicate_names_are_unique_case_insensitively(tmp_path: Path) -> None:
    for rel in ["a/IMG.jpg", "b/img.JPG", "c/Img.jpg", "d/img-2.jpg", "e/IMG-3.JPG"]:
        write(tmp_path / rel, b"x")
    names = [name for name, _ in find_images(tmp_path)]
    assert names == ["IMG.jpg", "img-2.JPG", "Img-3.jpg", "img-2-2.jpg", "IMG-3-2.JPG"]
    assert len({n.lower() for n in names}) == len(names)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "no-images", "hidden-only"])
def test_find_images_input_errors(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "photos"
    if case == "file":
        write(folder, b"a file")
    elif case != "missing":
        folder.mkdir()
    if case == "no-images":
        write(folder / "notes.txt", b"x")
        write(folder / "sub" / "a.gif", b"x")
    if case == "hidden-only":
        write(folder / ".a.jpg", b"x")
        write(folder / ".thumbs" / "b.jpg", b"x")
    with pytest.raises(InputError) as err:
        find_images(folder)
    message = str(err.value)
    assert str(folder) in message and EXTS in message and "\n" not in message
    with pytest.raises(InputError):
        scan_members(folder)
    with pytest.raises(InputError):
        open_source(folder)


def test_crc32_file(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(100_001)
    path = write(tmp_path / "x.jpg", data)
    assert crc32_file(path) == zlib.crc32(data)
    assert crc32_file(path, bufsize=7) == zlib.crc32(data)
    assert crc32_file(write(tmp_path / "e.jpg", b"")) == 0


def test_scan_members(photo_set: Path) -> None:
    calls: list[tuple[int, int]] = []
    members = scan_members(photo_set, progress=lambda done, total: calls.append((done, total)))
    assert [m.name for m in members] == expected_names()
    total = sum(size for _, size, _ in IMAGES)
    for m, (rel, size, _) in zip(members, IMAGES, strict=True):
        data = (photo_set / rel).read_bytes()
        assert m.path == str(photo_set / rel)
        assert (m.size, m.crc32, m.mtime_ns) == (size, zlib.crc32(data), MTIME_NS)
    assert len(calls) == len(IMAGES)
    assert calls[-1] == (total, total)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_crc_cache_is_filled_trusted_and_invalidated(photo_set: Path) -> None:
    cache: dict[str, dict] = {}
    first = scan_members(photo_set, crc_cache=cache)
    assert cache == {
        m.path: {"size": m.size, "mtime_ns": m.mtime_ns, "crc32": m.crc32} for m in first
    }
    # A wrong CRC in the cache for an unchanged file is trusted: proof the file is not read.
    a = str(photo_set / "a.jpg")
    cache[a] = dict(cache[a], crc32=0x12345678)
    second = scan_members(photo_set, crc_cache=cache)
    assert [m.crc32 for m in second if m.path == a] == [0x12345678]
    zf = zipfile.ZipFile(io.BytesIO(read_all(VirtualZip(second))))
    assert zf.getinfo("a.jpg").CRC == 0x12345678
    # A changed mtime invalidates the entry: the file is read again and the cache updated.
    os.utime(a, ns=(MTIME_NS + 1, MTIME_NS + 1))
    third = scan_members(photo_set, crc_cache=cache)
    good = zlib.crc32((photo_set / "a.jpg").read_bytes())
    assert [m.crc32 for m in third if m.path == a] == [good]
    assert cache[a] == {"size": 70_000, "mtime_ns": MTIME_NS + 1, "crc32": good}
    # So does a changed size, and a malformed entry is ignored.
    cache[a] = {"size": 1, "mtime_ns": MTIME_NS + 1, "crc32": 5}
    cache[str(photo_set / "f.dng")] = {"size": "?", "crc32": None}
    fourth = scan_members(photo_set, crc_cache=cache)
    assert [m.crc32 for m in fourth] == [m.crc32 for m in third]


def test_full_archive_is_a_valid_zip(photo_set: Path) -> None:
    vz = VirtualZip(scan_members(photo_set))
    data = read_all(vz, chunk=4097)
    assert len(data) == vz.size
    assert vz.photos == len(IMAGES) == len(vz.members)
    zf = check_zip(data, photo_set)
    for info in zf.infolist():
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.date_time == time.gmtime(MTIME_NS // 10**9)[:6]
        assert info.flag_bits & 0x8 == 0  # no data descriptor
    assert isinstance(vz, Source)


def test_same_layout_as_zipfile(photo_set: Path) -> None:
    members = scan_members(photo_set)
    data = read_all(VirtualZip(members))
    # Byte for byte what zipfile writes for the same stored members.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for m in members:
            info = zipfile.ZipInfo(m.name, time.gmtime(m.mtime_ns // 10**9)[:6])
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            zf.writestr(info, Path(m.path).read_bytes())
    assert data == buf.getvalue()
    # And the same size as zipfile.write() of the files.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for m in members:
            zf.write(m.path, m.name)
    assert len(data) == len(buf.getvalue())


@pytest.mark.parametrize(("part", "chunk"), [(1000, 333), (4096, 1 << 20), (65537, 4095)])
def test_parts_concatenate_to_the_archive(photo_set: Path, part: int, chunk: int) -> None:
    vz = VirtualZip(scan_members(photo_set))
    full = read_all(vz)
    ranges = part_ranges(vz.size, part)
    pieces = [read_all(vz, start, end, chunk) for start, end in ranges]
    assert [len(p) for p in pieces[:-1]] == [part] * (len(ranges) - 1)
    assert b"".join(pieces) == full
    check_zip(b"".join(pieces), photo_set)


def test_one_byte_parts_one_byte_chunks(tmp_path: Path) -> None:
    write(tmp_path / "b" / "x.jpg", b"second")
    write(tmp_path / "a.png", b"first image bytes")
    write(tmp_path / "e.jpg", b"")
    vz = VirtualZip(scan_members(tmp_path))
    full = read_all(vz)
    joined = b"".join(read_all(vz, s, e, 1) for s, e in part_ranges(vz.size, 1))
    assert joined == full
    zf = zipfile.ZipFile(io.BytesIO(joined))
    assert zf.testzip() is None
    assert zf.namelist() == ["a.png", "x.jpg", "e.jpg"]  # sorted by relative path
    assert zf.read("x.jpg") == b"second"


def test_arbitrary_ranges_and_repeatability(photo_set: Path) -> None:
    vz = VirtualZip(scan_members(photo_set))
    full = read_all(vz)
    rng = random.Random(5)
    cd_start = full.rindex(b"PK\x05\x06") - 200
    points = [0, 1, 29, 30, 31, vz.size - 22, vz.size - 1, vz.size, cd_start]
    for _ in range(150):
        points.append(rng.randrange(vz.size + 1))
    for start in points:
        for end in [start, start + 1, start + rng.randrange(80_000), vz.size]:
            end = min(end, vz.size)
            assert read_all(vz, start, end, rng.choice([1 << 20, 1000, 33])) == full[start:end]
    assert list(vz.read_range(5, 5)) == []
    assert read_all(vz) == full  # re-reading gives the same bytes


def test_bad_ranges_raise_at_call(photo_set: Path) -> None:
    vz = VirtualZip(scan_members(photo_set))
    for start, end in [(-1, 5), (0, vz.size + 1), (10, 9), (vz.size + 1, vz.size + 1)]:
        with pytest.raises(ValueError):
            vz.read_range(start, end)
    with pytest.raises(ValueError):
        vz.read_range(0, 1, 0)


def test_files_are_opened_only_while_their_bytes_are_read(
    photo_set: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vz = VirtualZip(scan_members(photo_set))
    full = read_all(vz)
    opened: list[str] = []
    real_open = open

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(virtualzip, "open", spy, raising=False)
    tail = full.index(b"PK\x01\x02")
    assert read_all(vz, tail) == full[tail:]
    assert read_all(vz, 0, 30) == full[:30]
    assert opened == []
    a4 = zipfile.ZipFile(io.BytesIO(full)).getinfo("a-4.jpg")
    data_start = a4.header_offset + 30 + len("a-4.jpg")
    assert read_all(vz, data_start + 10, data_start + 20) == full[data_start + 10 : data_start + 20]
    assert opened == [str(photo_set / "sub" / "a.jpg")]


def test_digest_identifies_the_layout(photo_set: Path) -> None:
    members = scan_members(photo_set)
    vz = VirtualZip(members)
    assert len(vz.digest) == 64
    assert VirtualZip(list(members)).digest == vz.digest
    m0 = members[0]
    # CRCs follow from the bytes and may be unknown yet (lazy): they are not part of the digest,
    # so a resumed upload that knows them matches the run that did not.
    assert VirtualZip(scan_members(photo_set, lazy=True)).digest == vz.digest
    variants = [
        [Member(m0.name, m0.path, m0.size, m0.crc32, m0.mtime_ns + 1), *members[1:]],
        [Member(m0.name, m0.path, m0.size + 1, m0.crc32, m0.mtime_ns), *members[1:]],
        [Member("other.jpg", m0.path, m0.size, m0.crc32, m0.mtime_ns), *members[1:]],
        [members[1], members[0], *members[2:]],
        members[:-1],
    ]
    digests = {vz.digest} | {VirtualZip(v).digest for v in variants}
    assert len(digests) == len(variants) + 1
    assert VirtualZip(members, force_zip64=True).digest != vz.digest


def test_changed_file_is_detected(photo_set: Path) -> None:
    vz = VirtualZip(scan_members(photo_set))
    full = read_all(vz)
    vz.check_unchanged()
    info = zipfile.ZipFile(io.BytesIO(full)).getinfo("scan.tif")
    start = info.header_offset + 30 + len("scan.tif")
    path = photo_set / "sub" / "deeper" / "scan.tif"
    with open(path, "ab") as f:
        f.write(b"more")
    with pytest.raises(InputError, match="changed since the upload began") as err:
        read_all(vz, start, start + 10)
    assert str(path) in str(err.value) and "new project" in str(err.value)
    with pytest.raises(InputError, match=re.escape(str(path))):
        vz.check_unchanged()
    assert read_all(vz, 0, 1000) == full[:1000]  # ranges not touching the file still read


def test_touched_or_removed_file_fails_check(photo_set: Path) -> None:
    vz = VirtualZip(scan_members(photo_set))
    full = read_all(vz)
    path = photo_set / "f.dng"
    os.utime(path, ns=(MTIME_NS + 10**9, MTIME_NS + 10**9))
    with pytest.raises(InputError, match=re.escape(str(path))):
        vz.check_unchanged()
    assert read_all(vz) == full  # read_range checks the size only
    path.unlink()
    for check in [vz.check_unchanged, lambda: read_all(vz)]:
        with pytest.raises(InputError, match="changed since the upload began"):
            check()


def test_non_ascii_names_set_the_utf8_flag(photo_set: Path) -> None:
    vz = VirtualZip(scan_members(photo_set))
    full = read_all(vz)
    zf = zipfile.ZipFile(io.BytesIO(full))
    for info in zf.infolist():
        utf8 = not info.filename.isascii()
        assert bool(info.flag_bits & 0x800) == utf8
        (local_flags,) = struct.unpack_from("<H", full, info.header_offset + 6)
        assert bool(local_flags & 0x800) == utf8
    assert zf.read("über.TIFF") == (photo_set / "sub" / "über.TIFF").read_bytes()
    assert zf.read("bad\ufffd.jpg") == (photo_set / BAD_NAME).read_bytes()


def test_force_zip64(photo_set: Path) -> None:
    members = scan_members(photo_set)
    vz = VirtualZip(members, force_zip64=True)
    full = read_all(vz)
    assert vz.size == len(full) > VirtualZip(members).size
    zf = check_zip(full, photo_set)
    for info, m in zip(zf.infolist(), members, strict=True):
        sig, version, _, _, _, _, _, _, csize, usize, nlen, xlen = struct.unpack_from(
            "<4s2B4HL2L2H", full, info.header_offset
        )
        assert (sig, version, csize, usize) == (b"PK\x03\x04", 45, 0xFFFFFFFF, 0xFFFFFFFF)
        extra = full[info.header_offset + 30 + nlen : info.header_offset + 30 + nlen + xlen]
        assert extra == struct.pack("<HHQQ", 1, 16, m.size, m.size)
    end = struct.unpack("<4s4H2LH", full[-22:])
    assert end == (b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    assert full[-42:-38] == b"PK\x06\x07" and full[-98:-94] == b"PK\x06\x06"


class LazyReader(io.RawIOBase):
    """A seekable file over a Source that reads only what is asked for."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.src.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def, override]
        end = min(self.pos + len(buf), self.src.size)
        data = b"".join(self.src.read_range(self.pos, end)) if end > self.pos else b""
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


def test_real_zip64_with_a_sparse_4gib_file(tmp_path: Path) -> None:
    big_size = 4 * 1024**3 + 10
    write(tmp_path / "a.jpg", b"small first")
    with open(tmp_path / "b.jpg", "wb") as f:
        f.truncate(big_size)
    os.utime(tmp_path / "b.jpg", ns=(MTIME_NS, MTIME_NS))
    write(tmp_path / "c.jpg", b"after the big one")
    big = str(tmp_path / "b.jpg")
    cache = {big: {"size": big_size, "mtime_ns": MTIME_NS, "crc32": 0xDEADBEEF}}
    vz = VirtualZip(scan_members(tmp_path, crc_cache=cache))  # the 4 GiB file is not read

    big_offset = 30 + len("a.jpg") + len(b"small first")
    c_offset = big_offset + 30 + len("b.jpg") + 20 + big_size
    cd_offset = c_offset + 30 + len("c.jpg") + len(b"after the big one")
    cd_size = (46 + 5) + (46 + 5 + 20) + (46 + 5 + 12)
    assert vz.size == cd_offset + cd_size + 56 + 20 + 22

    head = read_all(vz, 0, big_offset + 100)
    assert struct.unpack_from("<4s2B4HL2L2H", head, 0)[1] == 20
    fields = struct.unpack_from("<4s2B4HL2L2H", head, big_offset)
    assert fields[0] == b"PK\x03\x04" and fields[1] == 45
    assert fields[7:] == (0xDEADBEEF, 0xFFFFFFFF, 0xFFFFFFFF, 5, 20)
    zip64_extra = struct.pack("<HHQQ", 1, 16, big_size, big_size)
    assert head[big_offset + 35 : big_offset + 55] == zip64_extra
    assert head[big_offset + 55 :] == bytes(45)  # the sparse file's first bytes

    tail = read_all(vz, cd_offset)
    end64 = struct.unpack_from("<4sQ2H2L4Q", tail, cd_size)
    assert end64 == (b"PK\x06\x06", 44, 45, 45, 0, 0, 3, 3, cd_size, cd_offset)
    locator = struct.unpack_from("<4sLQL", tail, cd_size + 56)
    assert locator == (b"PK\x06\x07", 0, cd_offset + cd_size, 1)

    zf = zipfile.ZipFile(LazyReader(vz))
    a, b, c = zf.infolist()
    assert (b.file_size, b.compress_size, b.header_offset, b.CRC) == (
        big_size, big_size, big_offset, 0xDEADBEEF,
    )  # fmt: skip
    assert c.header_offset == c_offset > 0xFFFFFFFF
    assert zf.read("c.jpg") == b"after the big one"  # CRC checked by zipfile
    assert zf.read("a.jpg") == b"small first"
    with zf.open("b.jpg") as member:
        assert member.read(1000) == bytes(1000)


def test_many_entries_use_the_zip64_end_record(tmp_path: Path) -> None:
    empty = str(write(tmp_path / "e.jpg", b""))
    members = [Member(f"{i}.jpg", empty, 0, 0, MTIME_NS) for i in range(0xFFFF)]
    vz = VirtualZip(members)
    full = read_all(vz)
    assert struct.unpack("<4s4H2LH", full[-22:])[3:5] == (0xFFFF, 0xFFFF)
    assert full[-98:-94] == b"PK\x06\x06"
    zf = zipfile.ZipFile(io.BytesIO(full))
    assert len(zf.infolist()) == 0xFFFF
    assert zf.infolist()[-1].filename == "65534.jpg"
    # One fewer fits the classic end record.
    small = read_all(VirtualZip(members[:-1]))
    assert struct.unpack("<4s4H2LH", small[-22:])[3] == 0xFFFE
    assert b"PK\x06\x06" not in small[-98:]


def test_dos_time_is_clamped(tmp_path: Path) -> None:
    empty = str(write(tmp_path / "e.jpg", b""))
    members = [
        Member("old.jpg", empty, 0, 0, 0),
        Member("neg.jpg", empty, 0, 0, -(10**18)),
        Member("future.jpg", empty, 0, 0, 5_000_000_000 * 10**9),
        Member("far.jpg", empty, 0, 0, 10**30),
    ]
    zf = zipfile.ZipFile(io.BytesIO(read_all(VirtualZip(members))))
    times = [info.date_time for info in zf.infolist()]
    low, high = (1980, 1, 1, 0, 0, 0), (2107, 12, 31, 23, 59, 58)
    assert times == [low, low, high, high]


def test_member_names_must_be_flat_and_unique(tmp_path: Path) -> None:
    path = str(write(tmp_path / "e.jpg", b""))
    for names in [["a.jpg", "A.JPG"], ["x/a.jpg"], [""]]:
        with pytest.raises(ValueError):
            VirtualZip([Member(n, path, 0, 0, MTIME_NS) for n in names])


def make_zip(path: Path, entries: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for d in dirs:
            zf.mkdir(d)
        for name, data in entries.items():
            zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def test_zip_file_source(tmp_path: Path) -> None:
    rng = random.Random(9)
    entries = {
        "scan/IMG_1.JPG": rng.randbytes(5000),
        "scan/img_2.png": rng.randbytes(300),
        "scan/notes.txt": b"hello",
        "IMG_3.dng": rng.randbytes(100),
        "meta.json": b"{}",
    }
    path = make_zip(tmp_path / "set.zip", entries, dirs=("empty.jpg/",))
    src = ZipFileSource.open(path)
    assert isinstance(src, Source)
    raw = path.read_bytes()
    assert (src.path, src.size, src.photos) == (path, len(raw), 3)
    assert src.others == ["scan/notes.txt", "meta.json"]
    assert read_all(src) == raw
    assert read_all(src, 17, 1017, chunk=100) == raw[17:1017]
    assert b"".join(read_all(src, s, e, 7) for s, e in part_ranges(src.size, 999)) == raw
    assert list(src.read_range(3, 3)) == []
    with pytest.raises(ValueError):
        src.read_range(0, src.size + 1)
    assert len(src.digest) == 64
    assert ZipFileSource.open(path).digest == src.digest
    assert open_source(path).digest == src.digest
    entries["IMG_3.dng"] = rng.randbytes(100)  # same sizes, different CRC
    other = make_zip(tmp_path / "other.zip", entries, dirs=("empty.jpg/",))
    assert ZipFileSource.open(other).digest != src.digest
    src.check_unchanged()
    with open(path, "ab") as f:
        f.write(b"junk")
    with pytest.raises(InputError, match="changed since the upload began"):
        src.check_unchanged()
    with pytest.raises(InputError, match="changed since the upload began"):
        read_all(src)


def test_zip_file_source_rejects_bad_input(tmp_path: Path) -> None:
    not_zip = write(tmp_path / "photos.zip", b"PK but not really a zip" * 10)
    with pytest.raises(InputError, match="is not a zip file") as err:
        ZipFileSource.open(not_zip)
    assert str(not_zip) in str(err.value)
    no_images = make_zip(tmp_path / "docs.zip", {"a.txt": b"x", "b/c.gif": b"y"}, ("d.jpg/",))
    with pytest.raises(InputError) as err:
        open_source(no_images)
    assert str(err.value) == f"{no_images} holds no images ({EXTS})"
    with pytest.raises(InputError):
        ZipFileSource.open(tmp_path / "missing.zip")


def test_open_source_dispatch(photo_set: Path, tmp_path: Path) -> None:
    cache: dict[str, dict] = {}
    calls: list[tuple[int, int]] = []
    src = open_source(photo_set, crc_cache=cache, progress=lambda d, t: calls.append((d, t)))
    assert isinstance(src, VirtualZip) and src.photos == len(IMAGES)
    assert len(cache) == len(IMAGES) and len(calls) == len(IMAGES)
    check_zip(read_all(src), photo_set)
    with pytest.raises(InputError) as err:
        open_source(tmp_path / "nothing-here")
    assert "nothing-here" in str(err.value) and EXTS in str(err.value)


def test_part_ranges() -> None:
    assert part_ranges(0, 10) == []
    assert part_ranges(1, 1) == [(0, 1)]
    assert part_ranges(3, 1) == [(0, 1), (1, 2), (2, 3)]
    assert part_ranges(5, 10) == [(0, 5)]
    assert part_ranges(10, 10) == [(0, 10)]
    assert part_ranges(20, 10) == [(0, 10), (10, 20)]
    assert part_ranges(21, 10) == [(0, 10), (10, 20), (20, 21)]
    size, m = 10**9 + 7, 64 * 1024**2
    ranges = part_ranges(size, m)
    assert ranges[0] == (0, m) and ranges[-1][1] == size
    assert all(e - s == m for s, e in ranges[:-1]) and 0 < ranges[-1][1] - ranges[-1][0] <= m
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    for bad in [(10, 0), (10, -1), (-1, 10)]:
        with pytest.raises(ValueError):
            part_ranges(*bad)
