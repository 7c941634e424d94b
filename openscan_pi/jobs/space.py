"""What a scan is expected to write, and whether the disk can take it."""

from __future__ import annotations

import shutil
from pathlib import Path

from openscan_pi.config import Config
from openscan_pi.errors import DiskError

#: Margin on the disk space a scan is estimated to need.
DISK_MARGIN = 1.5
#: JPEG bytes per pixel assumed for the estimate (quality 90 photos of real objects).
JPEG_BYTES_PER_PIXEL = 0.5


def estimated_bytes(cfg: Config, positions: int, stack: int | None = None) -> int:
    """What a scan of ``positions`` is expected to write, for the disk and token checks, with
    ``stack`` photos a position (``camera.focus.stack`` when None)."""
    width, height = cfg.camera.resolution
    stack = cfg.camera.focus.stack if stack is None else stack
    return int(positions * stack * width * height * JPEG_BYTES_PER_PIXEL)


def check_free_space(folder: Path, need: float) -> None:
    """:class:`DiskError` naming the figures when ``folder``'s disk has less than ``need`` bytes."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DiskError(f"not enough disk space for this scan: about {need / 1e9:.1f} GB needed, "
                        f"{free / 1e9:.1f} GB free in {folder}: free some space, or scan fewer "
                        "positions")
