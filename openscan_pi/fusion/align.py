"""Alignment of the frames of a stack: scale and shift, found by OpenCV's ECC.

Focusing moves the lens, and that magnifies the image a little about the optical axis (focus
breathing): the frames of one stack differ by a scale and a shift. Each frame is matched to the
reference frame (the middle of the stack) by OpenCV's enhanced correlation coefficient
(``findTransformECC``, an affine motion) on reduced grayscale images: first very small, then at
up to :data:`ALIGN_SIZE` pixels, each level starting from the last. The warp found must look like
what a lens does (a scale near 1, no shear or rotation to speak of, a shift of a few percent) and
the correlation must be high; otherwise the frame cannot be aligned (and is left out, or the
fusion fails, as the caller asks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The longest side of the images the fine alignment runs on (JPEG decoded at 1/2, 1/4 or 1/8).
ALIGN_SIZE = 1100
#: The longest side of the coarsest level.
COARSE_SIZE = 280
#: Below this correlation (after alignment) the frames do not show the same view.
MIN_CORRELATION = 0.6
#: What a lens's breathing can do: scale within these, shear/rotation and shift within these.
SCALE_RANGE = (0.85, 1.18)
MAX_SHEAR = 0.02
MAX_SHIFT = 0.1  # of the image's size


@dataclass(frozen=True)
class Warp:
    """A frame's warp to the reference: the 2x3 affine matrix ``matrix`` taking a reference pixel
    to the frame's pixel (full resolution), and the correlation reached."""

    matrix: tuple[tuple[float, float, float], tuple[float, float, float]]
    correlation: float

    @property
    def scale(self) -> float:
        """The frame's magnification relative to the reference."""
        (a, b, _), (c, d, _) = self.matrix
        return float((a * d - b * c) ** 0.5)

    @property
    def shift(self) -> tuple[float, float]:
        """Where the reference's origin lands in the frame (pixels)."""
        return self.matrix[0][2], self.matrix[1][2]


IDENTITY = Warp(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), 1.0)


def reduction(width: int, height: int) -> int:
    """The JPEG decode reduction (1, 2, 4 or 8) that brings the longest side to
    :data:`ALIGN_SIZE` or below (or as near as 8 can)."""
    for factor in (1, 2, 4):
        if max(width, height) / factor <= ALIGN_SIZE:
            return factor
    return 8


def reduced_flags(cv2: Any, factor: int) -> int:
    """``cv2.imread`` flags decoding grayscale at 1/``factor`` (libjpeg scales while decoding)."""
    return {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
            4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[factor]


def find_warp(cv2: Any, reference: Any, frame: Any, factor: int) -> Warp | str:
    """The warp taking ``reference``'s pixels to ``frame``'s (both grayscale, reduced by
    ``factor``), scaled to full resolution; or why there is none (a sentence)."""
    import numpy as np

    pyramid = [(reference, frame, 1)]
    while max(pyramid[-1][0].shape) > COARSE_SIZE:
        ref, img, step = pyramid[-1]
        size = (max(1, ref.shape[1] // 2), max(1, ref.shape[0] // 2))
        pyramid.append((cv2.resize(ref, size, interpolation=cv2.INTER_AREA),
                        cv2.resize(img, size, interpolation=cv2.INTER_AREA), step * 2))
    warp = np.eye(2, 3, dtype=np.float32)
    correlation = 0.0
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 80, 1e-5)
    previous = None
    for ref, img, step in reversed(pyramid):
        if previous is not None:
            warp = rescale(warp, previous / step)
        previous = step
        try:
            correlation, warp = cv2.findTransformECC(ref, img, warp, cv2.MOTION_AFFINE, criteria,
                                                     None, 5)
        except cv2.error as exc:
            return f"no alignment found ({_first_line(str(exc))})"
    full = rescale(warp, factor)
    matrix = tuple(tuple(float(v) for v in row) for row in full.tolist())
    result = Warp(matrix, float(correlation))  # type: ignore[arg-type]
    problem = _implausible(result, reference.shape[1] * factor, reference.shape[0] * factor)
    return problem or result


def rescale(warp: Any, factor: float) -> Any:
    """A warp found between images reduced by ``factor``, for images ``factor`` times larger
    (pixel centres: full = factor x reduced + (factor - 1) / 2)."""
    import numpy as np

    out = np.array(warp, dtype=np.float64)
    linear = out[:, :2]
    centre = np.full(2, (factor - 1) / 2)
    out[:, 2] = factor * out[:, 2] + (np.eye(2) - linear) @ centre
    return out.astype(np.float32)


def _implausible(warp: Warp, width: int, height: int) -> str | None:
    """Why ``warp`` is not what a lens's breathing does, or None."""
    (a, b, dx), (c, d, dy) = warp.matrix
    if warp.correlation < MIN_CORRELATION:
        return f"it does not match the reference (correlation {warp.correlation:.2f})"
    if not SCALE_RANGE[0] <= warp.scale <= SCALE_RANGE[1]:
        return f"its scale {warp.scale:.3f} is beyond what focusing does"
    if max(abs(b), abs(c), abs(a - d)) > MAX_SHEAR:
        return "it is rotated or sheared against the reference"
    if abs(dx) > MAX_SHIFT * width + abs(1 - a) * width or \
            abs(dy) > MAX_SHIFT * height + abs(1 - d) * height:
        return f"it is shifted by ({dx:.0f}, {dy:.0f}) pixels"
    return None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "OpenCV error"
