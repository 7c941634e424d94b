"""Lazily computed CRCs: same bytes as the eager archive, computed ahead of the reader, bounded."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import pytest

from openscan_pi.cloud.archive import part_ranges, scan_members
from openscan_pi.cloud.virtualzip import VirtualZip
from openscan_pi.errors import InputError


@pytest.fixture
def many(tmp_path: Path) -> Path:
    rng = random.Random(5)
    root = tmp_path / "many"
    root.mkdir()
    for i in range(40):
        (root / f"p{i:02d}.jpg").write_bytes(rng.randbytes(3000 + rng.randrange(3000)))
    return root


def test_lazy_archive_has_the_same_bytes_in_any_read_order(many: Path) -> None:
    eager = VirtualZip(scan_members(many))
    lazy = VirtualZip(scan_members(many, lazy=True))
    assert all(m.crc32 is None for m in lazy.members)
    assert (lazy.size, lazy.digest) == (eager.size, eager.digest)
    ranges = part_ranges(lazy.size, 7000)
    order = list(range(len(ranges)))
    random.Random(2).shuffle(order)  # a resumed upload may need a late part first
    parts = {i: b"".join(lazy.read_range(*ranges[i], chunk_size=999)) for i in order}
    joined = b"".join(parts[i] for i in range(len(ranges)))
    assert joined == b"".join(eager.read_range(0, eager.size))
    zf = zipfile.ZipFile(io.BytesIO(joined))
    assert zf.testzip() is None
    assert lazy.known_crcs() == eager.known_crcs()
    assert [lazy.known_crcs()[m.path]["crc32"] for m in eager.members] == [
        m.crc32 for m in eager.members]


def test_known_crcs_feed_a_cache_that_a_resumed_run_trusts(many: Path) -> None:
    first = VirtualZip(scan_members(many, lazy=True))
    b"".join(first.read_range(0, first.size))
    cache = first.known_crcs()
    members = scan_members(many, crc_cache=cache, lazy=True)
    assert all(m.crc32 is not None for m in members)  # nothing left to read


def test_crc_thread_stays_within_its_lead(many: Path) -> None:
    lead = 10_000
    vz = VirtualZip(scan_members(many, lazy=True), lead_bytes=lead)
    first = part_ranges(vz.size, 5000)[0]
    b"".join(vz.read_range(*first))
    known = vz.known_crcs()
    assert known  # the first headers needed theirs
    offsets = {m.path: off for m, off in zip(vz.members, vz._offsets, strict=True)}
    largest = max(m.size for m in vz.members)
    assert max(offsets[p] for p in known) <= first[1] + lead + largest
    assert len(known) < len(vz.members)
    vz.close()


def test_a_file_changed_before_its_crc_is_read(many: Path) -> None:
    vz = VirtualZip(scan_members(many, lazy=True), lead_bytes=0)
    victim = vz.members[20]
    Path(victim.path).write_bytes(b"shorter now")
    with pytest.raises(InputError, match="changed"):
        b"".join(vz.read_range(0, vz.size))
