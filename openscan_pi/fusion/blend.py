"""Blending aligned frames into one sharp image, a strip at a time.

The focus measure of a frame at a pixel is the energy of its Laplacian (of the grayscale, lightly
smoothed so that sensor and JPEG noise do not count as detail), averaged over a small window
(:data:`WINDOW`). Each pixel is given to the frame with the most energy there, and these
choices are then smoothed (the same box, twice) into weights that sum to one: the output is the
weighted mean of the frames. Smoothing the choices, not the pixels, keeps the detail of the sharp
frame while avoiding the speckle and halos of a per-pixel choice (:func:`fuse_max_laplacian`,
the plain method, kept here as the yardstick of the benchmark and the tests).

Every filter reaches at most :func:`margin` rows, so a strip is computed from its rows and a
margin above and below, and the result is the same as on the whole image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

#: Gaussian smoothing of the grayscale before its Laplacian: sigma 1 pixel, cut at 2.
PRE_SIGMA, PRE_REACH = 1.0, 2
#: The window (a box, pixels a side, for a frame of :data:`REFERENCE_HEIGHT` rows; scaled with
#: the frame, as a lens's blur is) the Laplacian's energy is averaged over, and the box the
#: per-pixel choices are smoothed by, twice, into weights (box filters cost the same whatever
#: their size). Measured at 12 MP: 9 gave 41.33 dB, 17 41.58, 25 41.68, 33 41.74.
WINDOW = 25
REFERENCE_HEIGHT = 3040
#: Pixels of a strip with its margins (bounds the memory of the fusion whatever the resolution).
STRIP_PIXELS = 1 << 20


def window(height: int) -> int:
    """The box of :data:`WINDOW` for frames ``height`` rows high (odd, at least 5)."""
    return max(5, round(WINDOW * height / REFERENCE_HEIGHT) // 2 * 2 + 1)


def margin(height: int) -> int:
    """Rows above and below a strip that its filters reach: the pre-smoothing, the Laplacian's
    row, the energy's box and the weights' two boxes."""
    return PRE_REACH + 1 + 3 * (window(height) // 2) + 1


def strip_rows(width: int, height: int) -> int:
    """The rows of a strip (without margins) for frames of ``width`` x ``height`` pixels."""
    return max(16, STRIP_PIXELS // width - 2 * margin(height))


def focus_energy(cv2: Any, rgb: Any, box: int) -> Any:
    """The focus measure of ``rgb`` (uint8) at each pixel, as float32: the Laplacian's energy
    averaged over a ``box`` x ``box`` window."""
    import numpy as np

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    size = 2 * PRE_REACH + 1
    cv2.GaussianBlur(gray, (size, size), PRE_SIGMA, dst=gray)
    laplacian = cv2.Laplacian(gray, cv2.CV_32F, ksize=3)
    del gray
    np.multiply(laplacian, laplacian, out=laplacian)
    return cv2.blur(laplacian, (box, box), dst=laplacian)


def sharpest(measures: Iterable[Any]) -> Any:
    """For each pixel, the index (uint8) of the first of ``measures`` (arrays of one shape, one
    a frame, computed one at a time) that is largest there."""
    import numpy as np

    best = best_index = None
    for k, measure in enumerate(measures):
        if best is None or best_index is None:
            best, best_index = measure, np.zeros(measure.shape, dtype=np.uint8)
            continue
        better = measure > best
        best_index[better] = k
        np.maximum(best, measure, out=best)
    if best_index is None:
        raise ValueError("no frame to choose from")
    return best_index


def fuse_rows(cv2: Any, count: int, read: Callable[[int], Any], box: int) -> Any:
    """Fuse one strip: ``read(k)`` gives frame ``k``'s rows (the strip and its margins, uint8
    RGB; it is called twice per frame, so only one frame's rows are held at a time); ``box`` is
    the :func:`window`. Returns the fused rows (uint8 RGB, margins included)."""
    import numpy as np

    best_index = sharpest(focus_energy(cv2, read(k), box) for k in range(count))
    total: Any = None
    for k in range(count):
        chosen = (best_index == k).astype(np.float32)
        if not chosen.any():  # chosen nowhere near this strip: no weight anywhere in it
            continue
        weight = cv2.blur(chosen, (box, box))
        cv2.blur(weight, (box, box), dst=weight)
        rows = read(k)
        if total is None:
            total = np.zeros(rows.shape, dtype=np.float32)
        for channel in range(3):
            total[:, :, channel] += weight * rows[:, :, channel]
    np.rint(total, out=total)
    np.clip(total, 0, 255, out=total)
    return total.astype(np.uint8)


def fuse_max_laplacian(cv2: Any, frames: Sequence[Any], kernel: int = 5) -> Any:
    """The plain method (OpenCV's per-pixel maximum of the Laplacian, as OpenScan3 and most
    focus-stacking scripts do it): each pixel from the frame whose blurred grayscale has the
    largest absolute Laplacian there. Whole images in memory; for comparison only."""
    import numpy as np

    def measures() -> Iterator[Any]:
        for frame in frames:
            gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (kernel, kernel), 0)
            yield np.abs(cv2.Laplacian(gray, cv2.CV_64F, ksize=kernel))

    best_index = sharpest(measures())
    out = np.empty_like(frames[0])
    for k, frame in enumerate(frames):
        mask = best_index == k
        out[mask] = frame[mask]
    return out
