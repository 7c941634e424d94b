"""Fuse one focus stack: check the frames, align them, blend them in strips, write one JPEG.

Memory is bounded whatever the resolution: the alignment works on JPEGs decoded at a reduced
scale; each frame is then decoded once at full size, warped a strip at a time onto the
reference and written to a raw file in a work folder beside the output (one decoded frame in
memory at a time); the blend reads those files a strip at a time (:mod:`.blend`); only the output
image is whole, as the JPEG encoder needs it. See ``tools/bench_fusion.py`` for the peak at
12 MP x 5.

The output is written like every photo (temp file beside it, fsync, rename, fsync the folder):
it is there whole or not at all, also when the process is killed. A killed fusion leaves its work
folder (``.NAME.*.fusing``) and maybe a temp file (``.NAME.*.tmp``) in the output's folder:
:func:`remove_leftovers` clears them before the stack is fused again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import shutil
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openscan_pi.fsutil import atomic_open, disk_error
from openscan_pi.fusion.align import IDENTITY, Warp, find_warp, reduced_flags, reduction
from openscan_pi.fusion.blend import fuse_rows, margin, strip_rows, window
from openscan_pi.fusion.errors import FusionError
from openscan_pi.fusion.frames import (
    RECAPTURE,
    FrameInfo,
    RawFrame,
    check_frame,
    decode,
    exif_segment,
    read_exif,
)
from openscan_pi.fusion.opencv import load_cv2

log = logging.getLogger(__name__)

#: The suffix of a fusion's work folder (raw frames), beside its output.
WORK_SUFFIX = ".fusing"
#: Rows warped at a time while a frame is written to its raw file.
WARP_ROWS = 256


@dataclass(frozen=True)
class FrameAlignment:
    """How one frame of the stack was aligned to the reference (its ``warp``: scale, shift and
    the correlation reached), or ``problem`` (a sentence) when it could not be and was left out."""

    path: Path
    warp: Warp
    problem: str | None = None

    @property
    def scale(self) -> float:
        """The frame's magnification relative to the reference."""
        return self.warp.scale

    @property
    def shift(self) -> tuple[float, float]:
        """Where the reference's top-left corner lies in the frame (pixels)."""
        return self.warp.shift

    @property
    def used(self) -> bool:
        """Whether the frame is part of the fused image."""
        return self.problem is None


@dataclass(frozen=True)
class FusionResult:
    """What :func:`fuse_stack` wrote: the JPEG's ``path``, ``size`` and ``crc32`` (for the
    manifest), its pixels, the ``reference`` frame's index (whose geometry and EXIF it has),
    each frame's alignment, and the seconds spent aligning, blending and in all."""

    path: Path
    size: int
    crc32: int
    width: int
    height: int
    reference: int
    frames: tuple[FrameAlignment, ...]
    align_seconds: float
    blend_seconds: float
    seconds: float

    @property
    def skipped(self) -> list[FrameAlignment]:
        """The frames left out because they could not be aligned."""
        return [frame for frame in self.frames if not frame.used]

    def record(self) -> dict[str, Any]:
        """The result as JSON-able facts (for a manifest, a log line or a message between
        processes): the file, its size and CRC-32, the reference, each frame's scale, shift and
        correlation or why it was left out, and the seconds."""
        return {
            "path": str(self.path), "size": self.size, "crc32": self.crc32,
            "width": self.width, "height": self.height, "reference": self.reference,
            "frames": [{"path": str(f.path), "scale": round(f.scale, 6),
                        "shift": [round(v, 3) for v in f.shift],
                        "correlation": round(f.warp.correlation, 4), "problem": f.problem}
                       for f in self.frames],
            "seconds": round(self.seconds, 3), "align_seconds": round(self.align_seconds, 3),
            "blend_seconds": round(self.blend_seconds, 3),
        }


def fuse_stack(frames: Sequence[Path], out: Path, *, exif_from: Path | None = None,
               quality: int = 90, reference: int | None = None, strict: bool = False,
               work_dir: Path | None = None) -> FusionResult:
    """Fuse the JPEG ``frames`` of one position (taken at different lens positions) into one
    JPEG at ``out`` that is sharp wherever one of the frames is.

    - ``reference``: the frame whose geometry the output has (default: the middle one).
    - ``exif_from``: the JPEG whose EXIF the output carries (default: none).
    - ``quality``: the JPEG quality (1-100), as ``camera.jpeg_quality``.
    - ``strict``: a frame that cannot be aligned fails the fusion; by default it is left out,
      logged and listed in :attr:`FusionResult.skipped` (more than half left out always fails).
    - ``work_dir``: where the raw frames go meanwhile (default: ``out``'s folder; never a
      RAM-backed /tmp on a Pi).

    Raises :class:`~openscan_pi.fusion.errors.FusionError` (one line naming the frame and the
    fix) for a missing, garbage, truncated, differently sized or unalignable frame,
    :class:`~openscan_pi.fusion.errors.FusionUnavailable` without OpenCV, and
    :class:`~openscan_pi.errors.DiskError` when the output cannot be written.
    """
    cv2 = load_cv2()
    started = time.monotonic()
    if not frames:
        raise FusionError("a focus stack needs at least one frame")
    if not 1 <= quality <= 100:
        raise FusionError(f"JPEG quality {quality} is not within 1-100")
    infos = [check_frame(Path(path)) for path in frames]
    first = infos[0]
    for info in infos[1:]:
        if (info.width, info.height) != (first.width, first.height):
            raise FusionError(f"focus stack frame {info.path} is {info.width}x{info.height}, "
                              f"{first.path} {first.width}x{first.height}: {RECAPTURE}")
    ref = len(infos) // 2 if reference is None else reference
    if not 0 <= ref < len(infos):
        raise FusionError(f"reference frame {ref} is not one of the {len(infos)} frames")
    exif = read_exif(exif_from) if exif_from is not None else None
    alignments = _align(cv2, infos, ref, strict)
    used = [k for k, alignment in enumerate(alignments) if alignment.used]
    out = Path(out)
    work_parent = Path(work_dir) if work_dir is not None else out.parent
    try:
        work_parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=WORK_SUFFIX, dir=work_parent))
    except OSError as exc:
        raise disk_error(exc, work_parent) from exc
    raws: list[RawFrame] = []
    try:
        for k in used:
            raws.append(_write_aligned(cv2, infos[k], alignments[k], work / f"frame-{k}.rgb"))
        blend_started = time.monotonic()
        align_seconds = blend_started - started
        image = _blend(cv2, raws, first.width, first.height)
        blend_seconds = time.monotonic() - blend_started
        size, crc = _write_jpeg(cv2, image, out, quality, exif)
    except OSError as exc:
        raise disk_error(exc, work) from exc
    finally:
        for raw in raws:
            raw.close()
        shutil.rmtree(work, ignore_errors=True)
    return FusionResult(path=out, size=size, crc32=crc, width=first.width, height=first.height,
                        reference=ref, frames=tuple(alignments), align_seconds=align_seconds,
                        blend_seconds=blend_seconds, seconds=time.monotonic() - started)


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove what fusions killed midway left in ``folder`` (their work folders and temp
    files); returns what was removed. Call it before fusing into ``folder`` again, never while
    another fusion writes there."""
    removed: list[Path] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in Path(folder).iterdir():
            if not entry.name.startswith("."):
                continue
            if entry.name.endswith(WORK_SUFFIX) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.endswith(".tmp") and entry.is_file():
                entry.unlink(missing_ok=True)
            else:
                continue
            removed.append(entry)
    return removed


def _align(cv2: Any, infos: list[FrameInfo], ref: int, strict: bool) -> list[FrameAlignment]:
    """Each frame's alignment to frame ``ref`` (see :mod:`.align`)."""
    factor = reduction(infos[ref].width, infos[ref].height)
    flags = reduced_flags(cv2, factor)
    reference = decode(cv2, infos[ref], flags)
    alignments: list[FrameAlignment] = []
    for k, info in enumerate(infos):
        found: Warp | str = IDENTITY if k == ref else find_warp(
            cv2, reference, decode(cv2, info, flags), factor)
        if isinstance(found, str):
            message = (f"focus stack frame {info.path} cannot be aligned to "
                       f"{infos[ref].path}: {found}")
            if strict:
                raise FusionError(f"{message}: {RECAPTURE}")
            log.warning("%s; left out of the fused image", message)
            alignments.append(FrameAlignment(info.path, IDENTITY, found))
        else:
            alignments.append(FrameAlignment(info.path, found))
    left_out = [a for a in alignments if not a.used]
    if 2 * len(left_out) > len(infos):
        raise FusionError(f"{len(left_out)} of the {len(infos)} frames of the stack of "
                          f"{infos[ref].path} cannot be aligned to it (are they of one position?): "
                          f"{RECAPTURE}")
    return alignments


def _write_aligned(cv2: Any, info: FrameInfo, alignment: FrameAlignment, path: Path) -> RawFrame:
    """Decode ``info`` once, warp it onto the reference a strip at a time, and write it as RGB
    to a raw file at ``path``.

    Pillow decodes (4 bytes a pixel, and nothing more: OpenCV's ``imread`` of a 12 MP JPEG
    peaks at twice its 3 bytes a pixel); each strip of the output is warped from just the rows
    of the frame it reaches."""
    import numpy as np
    from PIL import Image

    raw = RawFrame(path, info.width, info.height)
    try:
        with Image.open(info.path) as opened:
            image = opened.convert("RGB") if opened.mode != "RGB" else opened
            image.load()
            matrix = np.array(alignment.warp.matrix, dtype=np.float64)
            identity = alignment.warp.matrix == IDENTITY.matrix
            for top in range(0, info.height, WARP_ROWS):
                bottom = min(info.height, top + WARP_ROWS)
                if identity:
                    raw.write_rows(top, np.asarray(image.crop((0, top, info.width, bottom))))
                    continue
                first, last = _source_rows(matrix, info.width, info.height, top, bottom)
                source = np.asarray(image.crop((0, first, info.width, last)))
                # Output pixel (x, y) of the strip is the reference's (x, y + top), which is the
                # frame's matrix @ (x, y + top, 1), which is row (that - first) of the source.
                strip = matrix.copy()
                strip[:, 2] += matrix[:, 1] * top
                strip[1, 2] -= first
                rows = cv2.warpAffine(source, strip, (info.width, bottom - top),
                                      flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                      borderMode=cv2.BORDER_REPLICATE)
                raw.write_rows(top, rows)
    except BaseException:
        raw.close()
        raise
    return raw


def _source_rows(matrix: Any, width: int, height: int, top: int, bottom: int) -> tuple[int, int]:
    """The rows of the frame that output rows ``top`` to ``bottom`` reach through ``matrix``
    (with the cubic kernel's reach), within the frame and at least one."""
    ys = [matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
          for x in (0, width - 1) for y in (top, bottom - 1)]
    first = min(max(0, math.floor(min(ys)) - 3), height - 1)
    last = max(min(height, math.ceil(max(ys)) + 4), first + 1)
    return first, last


def _blend(cv2: Any, raws: list[RawFrame], width: int, height: int) -> Any:
    """The fused image (``(height, width, 3)`` uint8, BGR for OpenCV's encoder), blended strip by
    strip (see :mod:`.blend`)."""
    import numpy as np

    image = np.empty((height, width, 3), dtype=np.uint8)
    rows, reach, box = strip_rows(width, height), margin(height), window(height)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        above, below = max(0, top - reach), min(height, bottom + reach)
        fused = fuse_rows(cv2, len(raws), functools.partial(_read, raws, above, below), box)
        image[top:bottom] = fused[top - above:bottom - above, :, ::-1]
    return image


def _read(raws: list[RawFrame], above: int, below: int, k: int) -> Any:
    """Rows ``above`` to ``below`` of raw frame ``k``."""
    return raws[k].read_rows(above, below)


def _write_jpeg(cv2: Any, image: Any, out: Path, quality: int,
                exif: bytes | None) -> tuple[int, int]:
    """Write ``image`` (BGR) as a JPEG at ``out`` durably, with ``exif`` in an APP1 segment
    right after the start marker (OpenCV's encoder writes none); its ``(size, crc32)``.
    OpenCV encodes from the array itself (Pillow would copy it into an image of 4 bytes a
    pixel first)."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FusionError(f"OpenCV could not encode {out}")
    data = memoryview(encoded).cast("B")
    parts: list[bytes | memoryview] = [data[:2], exif_segment(exif), data[2:]] if exif else [data]
    with atomic_open(out, "wb") as fh:
        for part in parts:
            fh.write(part)
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return sum(len(part) for part in parts), crc
