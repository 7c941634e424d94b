"""The frames of a stack on disk: checked before any work, decoded once, kept as raw strips.

A frame is checked cheaply first (a JPEG's start and end markers, its size from the header), so a
garbage or truncated file is named before anything is decoded. Each frame is then decoded once,
aligned to the reference, and written to a raw file of ``height x width x 3`` RGB bytes in the
work folder (beside the output, never in a RAM-backed /tmp); the fusion reads those files back a
strip at a time (:class:`RawFrame`), so no more than one decoded frame is ever held in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openscan_pi.fusion.errors import FusionError

JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"
#: What to do about a frame that is not fit to fuse.
RECAPTURE = "capture the position again"


@dataclass(frozen=True)
class FrameInfo:
    """A checked frame: its path and its size in pixels."""

    path: Path
    width: int
    height: int


def check_frame(path: Path) -> FrameInfo:
    """``path`` as a :class:`FrameInfo`, or :class:`FusionError` saying why it cannot be fused:
    missing or unreadable, not a JPEG, truncated (no end marker)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as fh:
            start = fh.read(2)
            fh.seek(0, os.SEEK_END)
            length = fh.tell()
            fh.seek(max(0, length - 2))
            end = fh.read(2)
    except OSError as exc:
        raise FusionError(f"focus stack frame {path} cannot be read ({exc.strerror}): "
                          f"{RECAPTURE}") from exc
    if start != JPEG_START:
        raise FusionError(f"focus stack frame {path} is not a JPEG: {RECAPTURE}")
    if end != JPEG_END:
        raise FusionError(f"focus stack frame {path} is truncated ({length} bytes, no JPEG end "
                          f"marker): {RECAPTURE}")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise FusionError(f"focus stack frame {path} is not a readable JPEG ({exc}): "
                          f"{RECAPTURE}") from exc
    return FrameInfo(path=path, width=width, height=height)


def decode(cv2: Any, frame: FrameInfo, flags: int) -> Any:
    """The frame decoded by OpenCV with ``flags``; :class:`FusionError` when it cannot be."""
    image = cv2.imread(str(frame.path), flags)
    if image is None:
        raise FusionError(f"focus stack frame {frame.path} cannot be decoded: {RECAPTURE}")
    return image


def read_exif(path: Path) -> bytes | None:
    """The EXIF block of the JPEG at ``path`` (as Pillow's ``save(exif=...)`` takes it), or None
    when it has none."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            exif = image.info.get("exif")
    except OSError as exc:
        raise FusionError(f"the EXIF of {path} cannot be read ({exc}): {RECAPTURE}") from exc
    return exif if isinstance(exif, bytes) else None


def exif_segment(exif: bytes) -> bytes:
    """``exif`` (``b"Exif\\0\\0"`` + TIFF data, as :func:`read_exif` gives it) as the APP1
    segment that carries it in a JPEG, to go right after the start marker."""
    if len(exif) > 0xFFFF - 2:
        raise FusionError(f"an EXIF block of {len(exif)} bytes does not fit in a JPEG segment")
    return b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif


class RawFrame:
    """A frame of ``height x width`` RGB pixels in a raw file, written and read by rows."""

    def __init__(self, path: Path, width: int, height: int) -> None:
        self.path, self.width, self.height = path, width, height
        self._row_bytes = width * 3
        self._fh = open(path, "w+b")  # noqa: SIM115 - closed by close()

    def write_rows(self, top: int, rows: Any) -> None:
        """Write ``rows`` (``(n, width, 3)`` uint8 RGB) at row ``top``."""
        self._fh.seek(top * self._row_bytes)
        self._fh.write(rows.data)

    def read_rows(self, top: int, bottom: int) -> Any:
        """Rows ``top`` to ``bottom`` as a ``(n, width, 3)`` uint8 array."""
        import numpy as np

        out = np.empty((bottom - top, self.width, 3), dtype=np.uint8)
        self._fh.seek(top * self._row_bytes)
        wanted = out.nbytes
        got = self._fh.readinto(out.data)
        if got != wanted:
            raise FusionError(f"the work file {self.path} is short ({got} of {wanted} bytes at "
                              f"row {top}): is its disk full? Free some space and fuse again")
        return out

    def close(self) -> None:
        """Close the file (the work folder is removed by the caller)."""
        self._fh.close()
