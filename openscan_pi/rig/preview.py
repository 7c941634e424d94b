"""The camera's preview: what it sees now as a small JPEG, with a focus figure and the exposure.

A user places the object and turns the focus ring (or tries lens positions) while watching the
preview over SSH or on the web page; a scan then photographs what the preview showed. Camera
backends build a :class:`Preview` with :func:`preview_of_planes` (a camera that gives YUV 4:2:0
planes, the Pi camera) or :func:`preview_of_rgb` (the simulated camera's render).

The focus figure is the variance of the Laplacian of the grey image over the centre third of the
frame, where the object stands: the sharper the detail, the stronger the second derivative, the
higher the figure. It compares frames of one camera, scene and light: turn the focus ring for the
highest figure. It is computed on the frame as the camera delivers it (the Pi camera's whole
resolution, so a slight blur the small JPEG hides still lowers it).

numpy and Pillow are imported when a preview is made, not with this module.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

#: The widest preview JPEG (pixels); narrower frames keep their size.
PREVIEW_WIDTH = 640
#: The preview's JPEG quality: enough to judge framing and focus, small to send twice a second.
PREVIEW_QUALITY = 85


@dataclass(frozen=True)
class Preview:
    """One preview: ``jpeg`` (``width`` x ``height``), the ``focus`` figure, and the exposure in
    use: ``exposure_us`` (µs) and analogue ``gain``, each None when the camera does not say;
    ``lens_position`` (dioptres) on a camera with a focus motor, else None."""

    jpeg: bytes
    width: int
    height: int
    focus: float
    exposure_us: int | None
    gain: float | None
    lens_position: float | None

    def public(self) -> dict[str, Any]:
        """As the socket's ``preview`` method answers: the JPEG base64-encoded under ``jpeg``."""
        return {"jpeg": base64.b64encode(self.jpeg).decode("ascii"), "width": self.width,
                "height": self.height, "focus": self.focus, "exposure_us": self.exposure_us,
                "gain": self.gain, "lens_position": self.lens_position}


def preview_size(width: int, height: int, max_width: int = PREVIEW_WIDTH) -> tuple[int, int]:
    """The preview's size for a ``width`` x ``height`` frame: at most ``max_width`` wide, the
    same aspect ratio."""
    if width <= max_width:
        return width, height
    return max_width, max(1, round(height * max_width / width))


def focus_figure(gray: Any) -> float:
    """The variance of the Laplacian (4-neighbour) over the centre third of ``gray``, a 2-D array
    of brightness (any numeric type, any strides); higher is sharper. 0.0 for a frame too small
    to have a centre third of at least 3 x 3 pixels."""
    import numpy as np

    height, width = gray.shape
    centre = np.asarray(gray[height // 3:height - height // 3, width // 3:width - width // 3],
                        dtype=np.float32)
    if centre.shape[0] < 3 or centre.shape[1] < 3:
        return 0.0
    laplacian = centre[1:-1, :-2] + centre[1:-1, 2:]
    laplacian += centre[:-2, 1:-1]
    laplacian += centre[2:, 1:-1]
    laplacian -= 4 * centre[1:-1, 1:-1]
    return round(float(laplacian.var(dtype=np.float64)), 2)


def preview_of_planes(y: Any, u: Any, v: Any, *, exposure_us: Any, gain: Any,
                      lens_position: Any) -> Preview:
    """The preview of a frame given as YUV 4:2:0 planes (full-range BT.601, as the Pi camera's
    stills are): the focus figure from the whole-resolution Y plane, each plane scaled down with
    a box filter (no aliasing to fake sharpness) and encoded as one small JPEG."""
    from PIL import Image

    height, width = y.shape
    size = preview_size(width, height)
    planes = [_plane(p).resize(size, Image.Resampling.BOX) for p in (y, u, v)]
    return Preview(jpeg=_jpeg(Image.merge("YCbCr", planes)), width=size[0], height=size[1],
                   focus=focus_figure(y), exposure_us=_int(exposure_us), gain=_float(gain),
                   lens_position=_float(lens_position))


def preview_of_rgb(rgb: Any, *, exposure_us: Any, gain: Any, lens_position: Any) -> Preview:
    """The preview of an ``(height, width, 3)`` uint8 RGB frame (scaled down when wider than
    :data:`PREVIEW_WIDTH`); the focus figure from its grey image at the frame's own size."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb))
    focus = focus_figure(np.asarray(image.convert("L")))
    size = preview_size(image.width, image.height)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BOX)
    return Preview(jpeg=_jpeg(image), width=size[0], height=size[1], focus=focus,
                   exposure_us=_int(exposure_us), gain=_float(gain),
                   lens_position=_float(lens_position))


def _plane(plane: Any) -> Any:
    """One 8-bit plane as a Pillow image (a strided view is copied once, as Pillow needs)."""
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(plane))


def _jpeg(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
    return buffer.getvalue()


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)
