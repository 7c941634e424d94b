"""Simulated focus stacks for the fusion tests: frames from the simulated camera (depth of
field and focus breathing), their ground truth, and the plain per-pixel method on the same
alignment."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openscan_pi.config import load_config
from openscan_pi.sim.camera import capture_stack
from openscan_pi.sim.depth import render_sharp

BASE = load_config(None, env={}).camera


@dataclass(frozen=True)
class Stack:
    """A stack on disk: its frames, their lens positions, the view, the quality."""

    frames: list[Path]
    lens: list[float]
    width: int
    height: int
    rotor: float
    turntable: float
    quality: int

    @property
    def reference(self) -> int:
        return len(self.frames) // 2

    def truth(self) -> Any:
        """The ground truth: the reference frame's view with everything in focus (RGB)."""
        return render_sharp(self.width, self.height, self.rotor, self.turntable,
                            self.lens[self.reference])


def make_stack(folder: Path, *, width: int = 800, height: int = 600, count: int = 5,
               rotor: float = 20.0, turntable: float = 30.0, index: int = 7,
               quality: int = 90) -> Stack:
    """``count`` frames of one position, captured by the simulated camera over the default
    ``camera.focus.stack_range``, as ``folder/IMG_<index>_<k>.jpg``."""
    cfg = dataclasses.replace(BASE, resolution=(width, height), jpeg_quality=quality,
                              focus=dataclasses.replace(BASE.focus, stack=count))
    frames, lens = capture_stack(cfg, folder, rotor=rotor, turntable=turntable, index=index)
    return Stack(frames, lens, width, height, rotor, turntable, quality)


def read_rgb(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def aligned_frames(stack: Stack, matrices: list[Any]) -> list[Any]:
    """The stack's frames warped onto the reference by ``matrices`` (RGB, whole images)."""
    import cv2
    import numpy as np

    out = []
    for path, matrix in zip(stack.frames, matrices, strict=True):
        frame = cv2.imread(str(path))
        warped = cv2.warpAffine(frame, np.array(matrix, dtype=np.float64),
                                (stack.width, stack.height),
                                flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE)
        out.append(cv2.cvtColor(warped, cv2.COLOR_BGR2RGB))
    return out


def jpeg_round_trip(image: Any, quality: int) -> Any:
    """``image`` (RGB) as it comes back from a JPEG of ``quality``."""
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))
