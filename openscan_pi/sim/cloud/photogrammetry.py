"""The "photogrammetry" of the local cloud: check an uploaded image set and build a model zip.

The model is a textured UV sphere whose texture is the first image of the set (sorted by name). It
is deterministic: the same upload gives the same zip, byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import zipfile
from pathlib import Path

from openscan_pi.fsutil import atomic_write_bytes

#: Image file extensions the local cloud treats as photos.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})

#: Size of the blocks of the Dropbox content hash.
HASH_BLOCK = 4 * 1024 * 1024

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


class ContentHasher:
    """Incremental Dropbox content hash: SHA-256 over the SHA-256 digests of each 4 MiB block."""

    def __init__(self) -> None:
        self._overall = hashlib.sha256()
        self._block = hashlib.sha256()
        self._in_block = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next bytes of the body."""
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            take = min(HASH_BLOCK - self._in_block, len(view) - pos)
            self._block.update(view[pos : pos + take])
            self._in_block += take
            pos += take
            if self._in_block == HASH_BLOCK:
                self._overall.update(self._block.digest())
                self._block = hashlib.sha256()
                self._in_block = 0

    def hexdigest(self) -> str:
        """The hash of everything fed so far, as lowercase hex."""
        overall = self._overall.copy()
        if self._in_block:
            overall.update(self._block.digest())
        return overall.hexdigest()


def content_hash(data: bytes) -> str:
    """The Dropbox content hash of ``data`` (hex)."""
    hasher = ContentHasher()
    hasher.update(data)
    return hasher.hexdigest()


def sphere_obj(stacks: int = 16, slices: int = 32, mtllib: str = "model.mtl") -> str:
    """A unit UV sphere as Wavefront OBJ text: ``v``, ``vt`` and ``f`` lines, 1-based indices."""
    lines = [f"mtllib {mtllib}", "o sphere"]
    for i in range(stacks + 1):
        theta = math.pi * i / stacks
        for j in range(slices + 1):
            phi = 2 * math.pi * j / slices
            x = math.sin(theta) * math.cos(phi)
            y = math.cos(theta)
            z = math.sin(theta) * math.sin(phi)
            lines.append(f"v {x:.6f} {y:.6f} {z:.6f}")
    for i in range(stacks + 1):
        for j in range(slices + 1):
            lines.append(f"vt {j / slices:.6f} {1 - i / stacks:.6f}")
    lines.append("usemtl material0")

    def idx(i: int, j: int) -> str:
        n = i * (slices + 1) + j + 1
        return f"{n}/{n}"

    for i in range(stacks):
        for j in range(slices):
            a, b, c, d = idx(i, j), idx(i + 1, j), idx(i + 1, j + 1), idx(i, j + 1)
            if i == 0:
                lines.append(f"f {a} {b} {c}")
            elif i == stacks - 1:
                lines.append(f"f {a} {b} {d}")
            else:
                lines.append(f"f {a} {b} {c} {d}")
    return "\n".join(lines) + "\n"


def first_image(names: list[str]) -> str | None:
    """The first photo among zip member ``names``, sorted by name; None when there is none."""
    photos = sorted(
        n
        for n in names
        if not n.endswith("/")
        and not n.startswith("__MACOSX/")
        and not os.path.basename(n).startswith(".")
        and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
    )
    return photos[0] if photos else None


def _fixed_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def model_zip_bytes(texture: bytes, texture_ext: str) -> bytes:
    """The model zip: ``model.obj``, ``model.mtl`` and ``texture<ext>`` (deterministic)."""
    texture_name = f"texture{texture_ext.lower()}"
    mtl = (
        "newmtl material0\n"
        "Ka 1.000000 1.000000 1.000000\n"
        "Kd 1.000000 1.000000 1.000000\n"
        "Ks 0.000000 0.000000 0.000000\n"
        "illum 1\n"
        f"map_Kd {texture_name}\n"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(_fixed_info("model.obj"), sphere_obj())
        zf.writestr(_fixed_info("model.mtl"), mtl)
        zf.writestr(_fixed_info(texture_name), texture)
    return buf.getvalue()


def process_archive(archive: Path, filesize: int, model_path: Path) -> bool:
    """Check the joined upload and, when it is good, write the model zip to ``model_path``.

    Good means: exactly ``filesize`` bytes, a zip whose members all pass their CRC check, and at
    least one photo in it. Returns whether it was good.
    """
    try:
        if archive.stat().st_size != filesize:
            return False
        with zipfile.ZipFile(archive) as zf:
            if zf.testzip() is not None:
                return False
            name = first_image(zf.namelist())
            if name is None:
                return False
            texture = zf.read(name)
    except Exception:  # BadZipFile, OSError, EOFError, zlib.error, unsupported compression...
        return False
    atomic_write_bytes(model_path, model_zip_bytes(texture, os.path.splitext(name)[1]))
    return True
