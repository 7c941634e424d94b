"""Tests for openscan_pi.cloud.model.extract_model: real zips, hostile ones included, real files."""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest

from openscan_pi.cloud.errors import CloudError, UnsafeModel
from openscan_pi.cloud.model import extract_model
from openscan_pi.errors import InputError


def tree(root: Path) -> list[str]:
    """Every path under ``root`` (hidden ones included), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------ extract_model

OBJ = b"mtllib model.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/1 3/1\n"
MTL = b"newmtl m\nmap_Kd texture.jpg\n"
TEX = os.urandom(300_000)


def make_zip(
    path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = 8
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names
        with zipfile.ZipFile(path, "w", compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def good_entries() -> list[tuple[str | zipfile.ZipInfo, bytes]]:
    exe = zipfile.ZipInfo("model.obj")
    exe.external_attr = (stat.S_IFREG | 0o4777) << 16  # setuid, world-writable: must be ignored
    return [(exe, OBJ), ("model.mtl", MTL), ("tex/", b""), ("tex/texture.jpg", TEX)]


def test_extract_good_model(tmp_path: Path) -> None:
    zpath = make_zip(tmp_path / "m.zip", good_entries())
    out = tmp_path / "out"
    files = extract_model(zpath, out)
    assert files == sorted([out / "model.obj", out / "model.mtl", out / "tex" / "texture.jpg"])
    assert (out / "model.obj").read_bytes() == OBJ
    assert (out / "model.mtl").read_bytes() == MTL
    assert (out / "tex" / "texture.jpg").read_bytes() == TEX
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "tex").stat().st_mode) == 0o755
    assert sorted(os.listdir(tmp_path)) == ["m.zip", "out"]  # no temp folder left


def test_extract_into_empty_dir(tmp_path: Path) -> None:
    zpath = make_zip(tmp_path / "m.zip", good_entries())
    out = tmp_path / "out"
    out.mkdir()
    extract_model(zpath, out)
    assert (out / "tex" / "texture.jpg").read_bytes() == TEX
    assert sorted(os.listdir(tmp_path)) == ["m.zip", "out"]


def test_extract_refuses_non_empty_out_dir(tmp_path: Path) -> None:
    zpath = make_zip(tmp_path / "m.zip", good_entries())
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_bytes(b"keep me")
    before = tree(tmp_path)
    with pytest.raises(InputError) as info:
        extract_model(zpath, out)
    assert str(info.value) == f"{out} exists and is not empty: choose another --out or remove it"
    assert tree(tmp_path) == before
    assert (out / "mine.txt").read_bytes() == b"keep me"


def test_extract_refuses_out_path_that_is_a_file(tmp_path: Path) -> None:
    zpath = make_zip(tmp_path / "m.zip", good_entries())
    (tmp_path / "out").write_bytes(b"x")
    with pytest.raises(InputError):
        extract_model(zpath, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"x"


def _info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


HOSTILE: dict[str, tuple[list[tuple[str | zipfile.ZipInfo, bytes]], str]] = {
    "zip-slip": ([("../evil.txt", b"x")], "'..'"),
    "nested-slip": ([("a/../../evil", b"x")], "'..'"),
    "absolute": ([("/tmp/evil", b"x")], "absolute"),
    "windows-drive": ([("C:\\evil", b"x")], "absolute"),
    "windows-drive-relative": ([("C:evil", b"x")], "absolute"),
    "windows-slip": ([("..\\evil", b"x")], "'..'"),
    "windows-nested-slip": ([("a\\..\\..\\evil", b"x")], "'..'"),
    "unc": ([("\\\\server\\share\\evil", b"x")], "absolute"),
    "symlink": ([(_info("link", stat.S_IFLNK | 0o777), b"/etc/passwd")], "symbolic link"),
    "fifo": ([(_info("pipe", stat.S_IFIFO | 0o644), b"")], "not a regular file"),
    "duplicate": ([("model.obj", b"second")], "duplicate"),
    "file-then-dir": ([("model.mtl/x", b"x")], "share this path"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_extract_refuses_hostile_entry(tmp_path: Path, case: str) -> None:
    bad_entries, rule = HOSTILE[case]
    work = tmp_path / "work"
    work.mkdir()
    # good entries first: a streaming extractor would already have written them
    zpath = make_zip(work / "m.zip", good_entries() + bad_entries)
    out = work / "deep" / "out"
    before, tmp_before = tree(tmp_path), os.path.exists("/tmp/evil")
    with pytest.raises(UnsafeModel) as info:
        extract_model(zpath, out)
    assert rule in str(info.value)
    assert repr(zipfile.ZipFile(zpath).infolist()[-1].filename) in str(info.value)
    assert tree(tmp_path) == before  # nothing written anywhere, not even the parent of out
    assert not out.exists()
    assert os.path.exists("/tmp/evil") == tmp_before


def test_extract_refuses_absolute_path_into_tree(tmp_path: Path) -> None:
    target = tmp_path / "evil.txt"
    zpath = make_zip(tmp_path / "m.zip", [("ok.txt", b"ok"), (str(target), b"x")])
    with pytest.raises(UnsafeModel, match="absolute"):
        extract_model(zpath, tmp_path / "out")
    assert tree(tmp_path) == ["m.zip"]


def test_extract_refuses_too_many_files(tmp_path: Path) -> None:
    zpath = make_zip(tmp_path / "m.zip", [(f"f{i}.txt", b"x") for i in range(4)])
    assert extract_model(zpath, tmp_path / "ok", max_files=4)
    with pytest.raises(UnsafeModel, match=r"4 entries \(limit 3\)"):
        extract_model(zpath, tmp_path / "out", max_files=3)
    assert not (tmp_path / "out").exists()


def test_extract_refuses_declared_bomb(tmp_path: Path) -> None:
    zeros = b"\0" * 3_000_000
    zpath = make_zip(tmp_path / "m.zip", [("a.bin", zeros), ("b.bin", zeros)])
    assert zpath.stat().st_size < 50_000  # compresses to almost nothing
    with pytest.raises(UnsafeModel, match="'b.bin'.*declared sizes"):
        extract_model(zpath, tmp_path / "out", max_bytes=5_000_000)
    assert tree(tmp_path) == ["m.zip"]


def _lie_about_size(path: Path, name: bytes, size: int, crc: int | None = None) -> None:
    """Patch the uncompressed size (and optionally the CRC) of ``name`` in both headers."""
    data = bytearray(path.read_bytes())
    # (signature, offset of crc, of uncompressed size, of name length, of name): APPNOTE 4.3.7/12
    layouts = ((b"PK\x03\x04", 14, 22, 26, 30), (b"PK\x01\x02", 16, 24, 28, 46))
    for sig, crc_at, size_at, len_at, name_at in layouts:
        pos = data.find(sig)
        while pos >= 0:
            (name_len,) = struct.unpack_from("<H", data, pos + len_at)
            if data[pos + name_at : pos + name_at + name_len] == name:
                struct.pack_into("<I", data, pos + size_at, size)
                if crc is not None:
                    struct.pack_into("<I", data, pos + crc_at, crc)
            pos = data.find(sig, pos + 4)
    path.write_bytes(bytes(data))


def test_extract_lying_header_is_refused(tmp_path: Path) -> None:
    zpath = make_zip(tmp_path / "m.zip", [("ok.txt", b"ok"), ("big.bin", b"\0" * 4_000_000)])
    _lie_about_size(zpath, b"big.bin", 1000)
    assert zipfile.ZipFile(zpath).getinfo("big.bin").file_size == 1000
    with pytest.raises(UnsafeModel, match="corrupt model zip: entry 'big.bin'"):
        extract_model(zpath, tmp_path / "out", max_bytes=100_000)
    assert tree(tmp_path) == ["m.zip"]


def test_extract_lying_header_never_writes_more_than_declared(tmp_path: Path) -> None:
    # The CRC is patched to match the declared size: the bytes past it must still not be written.
    zpath = make_zip(tmp_path / "m.zip", [("big.bin", b"\0" * 4_000_000)])
    _lie_about_size(zpath, b"big.bin", 1000, zlib.crc32(b"\0" * 1000))
    files = extract_model(zpath, tmp_path / "out", max_bytes=100_000)
    assert [p.stat().st_size for p in files] == [1000]


def test_extract_counts_real_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A zip reader that trusted the data instead of the header would hand over more bytes.
    zpath = make_zip(tmp_path / "m.zip", [("ok.txt", b"ok"), ("big.bin", b"\0" * 1000)])
    real_open = zipfile.ZipFile.open

    def generous_open(self: zipfile.ZipFile, name: object, *a: object, **k: object) -> object:
        if getattr(name, "filename", name) == "big.bin":
            return io.BytesIO(b"\0" * 5000)  # the header says 1000
        return real_open(self, name, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(zipfile.ZipFile, "open", generous_open)
    with pytest.raises(UnsafeModel, match="'big.bin'.*more data than its header declares"):
        extract_model(zpath, tmp_path / "out")
    assert tree(tmp_path) == ["m.zip"]


def test_extract_corrupt_crc(tmp_path: Path) -> None:
    zpath = make_zip(tmp_path / "m.zip", [("ok.txt", b"ok"), ("tex.jpg", TEX)], compression=0)
    data = bytearray(zpath.read_bytes())
    pos = data.find(TEX[:64])
    data[pos + 1000] ^= 0xFF
    zpath.write_bytes(bytes(data))
    with pytest.raises(UnsafeModel, match="corrupt model zip: entry 'tex.jpg'"):
        extract_model(zpath, tmp_path / "out")
    assert tree(tmp_path) == ["m.zip"]


def test_extract_corrupt_deflate_stream(tmp_path: Path) -> None:
    zpath = make_zip(tmp_path / "m.zip", [("ok.txt", b"ok"), ("model.obj", OBJ * 2000)])
    data = bytearray(zpath.read_bytes())
    start = data.find(b"model.obj") + len("model.obj")  # local header name, then deflate data
    for i in range(start + 10, start + 60):
        data[i] ^= 0x5A
    zpath.write_bytes(bytes(data))
    with pytest.raises(UnsafeModel, match="corrupt model zip"):
        extract_model(zpath, tmp_path / "out")
    assert tree(tmp_path) == ["m.zip"]


def test_extract_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "m.zip").write_bytes(b"<!DOCTYPE html>\n<html lang='en'>\n  <head>\n    <title>Dropbox")
    with pytest.raises(CloudError, match="is not a zip file"):
        extract_model(tmp_path / "m.zip", tmp_path / "out")
    assert tree(tmp_path) == ["m.zip"]


def test_extract_unsupported_compression(tmp_path: Path) -> None:
    zpath = make_zip(tmp_path / "m.zip", [("model.obj", OBJ)], compression=zipfile.ZIP_BZIP2)
    with pytest.raises(UnsafeModel, match="unsupported compression"):
        extract_model(zpath, tmp_path / "out")
    assert tree(tmp_path) == ["m.zip"]
