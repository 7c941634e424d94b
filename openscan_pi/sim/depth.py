"""Depth of field for the simulated camera: what a lens focused at a given distance sees.

A capture with a lens position (dioptres, 1 / metres, as ``camera.focus.lens_position`` and
``camera.focus.stack_range``) is rendered in two steps, strip by strip:

1. **The lens's view.** Focusing closer moves the lens away from the sensor, which magnifies the
   image (focus breathing): the magnification is ``1 + BREATHING * lens_position`` about a point
   :data:`AXIS_OFFSET` off the image centre (the optical axis is never exactly there), so frames
   of one stack differ in scale *and* shift, as a real stack does, and must be aligned.
2. **The blur.** Each pixel's scene depth is known (the ray meets the sphere at a real distance;
   the backdrop is far behind). The scene is :data:`METRES_PER_UNIT` metres a unit, so the
   sphere spans about 4.1 to 5.6 dioptres, inside the default ``stack_range`` of 3 to 6. A point
   whose depth is within ``DEPTH_OF_FIELD / 2`` dioptres of the focal plane is sharp; beyond that
   its blur (a Gaussian's sigma, in pixels of a 3040-row frame, scaled with the frame) grows by
   :data:`BLUR_PER_DIOPTRE` per dioptre, up to :data:`MAX_BLUR`. The blur is applied by blending,
   per pixel, the two nearest of a few uniformly blurred copies of the sharp strip.

The ground truth of a stack is the same view with no blur: :func:`render_sharp`. With the
defaults, a 5-frame stack over 3 to 6 dioptres has every point of the sphere sharp in one frame.

Memory: a strip of :data:`STRIP_ROWS` rows is rendered with a margin above and below (3 sigma of
the largest blur), blurred at each level and blended; nothing of the frame is kept but the strips
already yielded, so a 12 MP frame costs a few tens of MB beyond the texture.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from openscan_pi.sim.scene import DISTANCE, pixel_rays, render_rows, render_strips, sphere_radius
from openscan_pi.sim.scene import STRIP_ROWS as SCENE_ROWS

#: Metres per scene unit: the sphere's near side is then at about 0.18 m (5.6 dioptres).
METRES_PER_UNIT = 1 / 14
#: The backdrop's distance (scene units): far behind the object, so always blurred.
BACKDROP = 3 * DISTANCE
#: Depth of field (dioptres): points within half of it from the focal plane are sharp.
DEPTH_OF_FIELD = 0.75
#: Blur (Gaussian sigma, pixels of a 3040-row frame) per dioptre beyond the depth of field.
BLUR_PER_DIOPTRE = 6.0
#: The largest blur (pixels of a 3040-row frame).
MAX_BLUR = 12.0
#: Magnification gained per dioptre of lens position (focus breathing).
BREATHING = 0.008
#: Where the optical axis meets the image, from its centre, as fractions of width and height.
AXIS_OFFSET = (0.03, -0.02)
#: The blur levels (pixels of a 3040-row frame) a pixel's blur is interpolated between.
LEVELS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.5, 7.5, 10.0, 12.0)
#: Rows of a strip (its margin comes on top).
STRIP_ROWS = 128
#: The frame height the blur figures are given for.
REFERENCE_HEIGHT = 3040


def lens_view(width: int, height: int, lens_position: float) -> tuple[float, float, float]:
    """The view ``(magnification, shift x, shift y)`` of a lens at ``lens_position`` dioptres:
    a magnification about the optical axis (:data:`AXIS_OFFSET` from the centre)."""
    magnify = 1.0 + BREATHING * float(lens_position)
    cx, cy = AXIS_OFFSET[0] * width, AXIS_OFFSET[1] * height
    return magnify, (1.0 - magnify) * cx, (1.0 - magnify) * cy


def blur_sigma(dioptres: Any, lens_position: float, height: int) -> Any:
    """The blur (sigma, pixels) of points at ``dioptres`` (array) seen with the lens at
    ``lens_position``, in a frame ``height`` rows high."""
    import numpy as np

    scale = height / REFERENCE_HEIGHT
    defocus = np.abs(dioptres - np.float32(lens_position)) - np.float32(DEPTH_OF_FIELD / 2)
    return np.clip(defocus * np.float32(BLUR_PER_DIOPTRE * scale), 0, MAX_BLUR * scale)


def depth_dioptres(width: int, height: int, top: int, bottom: int,
                   view: tuple[float, float, float]) -> Any:
    """The scene's distance at each pixel of rows ``top`` to ``bottom`` in dioptres (float32,
    ``(rows, width)``): the sphere where a pixel's ray meets it, the backdrop elsewhere."""
    import numpy as np

    radius = sphere_radius(height)
    xs, ys = pixel_rays(width, height, top, bottom, view)
    norm2 = xs[None, :] ** 2 + ys[:, None] ** 2 + np.float32(1)
    disc = np.float32(DISTANCE**2) - norm2 * np.float32(DISTANCE**2 - radius**2)
    hit = disc > 0
    # The ray (x, y, -1) t meets the sphere at depth t (along the optical axis).
    depth = np.full(disc.shape, np.float32(BACKDROP))
    depth[hit] = (np.float32(DISTANCE) - np.sqrt(disc[hit])) / norm2[hit]
    return np.float32(1 / METRES_PER_UNIT) / depth


def render_focused_strips(width: int, height: int, rotor: float, turntable: float,
                          lens_position: float,
                          rows: int = STRIP_ROWS) -> Iterator[tuple[int, Any]]:
    """The scene seen with the lens at ``lens_position`` dioptres, from top to bottom, as
    ``(first row, (n, width, 3) uint8 RGB array)`` strips (as
    :func:`openscan_pi.sim.scene.render_strips` gives the sharp scene)."""
    import numpy as np

    scale = height / REFERENCE_HEIGHT
    levels = _levels(scale)
    margin = math.ceil(3 * levels[-1]) + 1
    view = lens_view(width, height, lens_position)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        above, below = max(0, top - margin), min(height, bottom + margin)
        sharp = np.concatenate([
            render_rows(width, height, first, min(below, first + SCENE_ROWS), rotor, turntable,
                        view, smooth=True)
            for first in range(above, below, SCENE_ROWS)])
        sigma = blur_sigma(depth_dioptres(width, height, top, bottom, view), lens_position, height)
        # Each pixel between the two levels around its blur, linearly: position p in the list.
        where = np.interp(sigma, levels, np.arange(len(levels), dtype=np.float32)).astype(np.float32)
        out = np.zeros((bottom - top, width, 3), dtype=np.float32)
        for k, level in enumerate(levels):
            weight = np.float32(1) - np.abs(where - np.float32(k))
            np.maximum(weight, 0, out=weight)
            if not weight.any():
                continue
            blurred = _blur(sharp, level, top - above, bottom - above)
            blurred *= weight[:, :, None]
            out += blurred
            del blurred
        yield top, np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_sharp(width: int, height: int, rotor: float, turntable: float,
                 lens_position: float) -> Any:
    """The ground truth of a stack: the view of a lens at ``lens_position`` with every point in
    focus, as an ``(height, width, 3)`` uint8 RGB array."""
    import numpy as np

    out = np.empty((height, width, 3), dtype=np.uint8)
    view = lens_view(width, height, lens_position)
    for top, strip in render_strips(width, height, rotor, turntable, rows=STRIP_ROWS, view=view,
                                    smooth=True):
        out[top:top + strip.shape[0]] = strip
    return out


def render_focused(width: int, height: int, rotor: float, turntable: float,
                   lens_position: float) -> Any:
    """:func:`render_focused_strips` as one ``(height, width, 3)`` uint8 RGB array."""
    import numpy as np

    out = np.empty((height, width, 3), dtype=np.uint8)
    for top, strip in render_focused_strips(width, height, rotor, turntable, lens_position):
        out[top:top + strip.shape[0]] = strip
    return out


def _levels(scale: float) -> list[float]:
    """:data:`LEVELS` at this frame's scale, without levels closer than a quarter pixel."""
    levels: list[float] = []
    for level in LEVELS:
        value = level * scale
        if not levels or value - levels[-1] >= 0.25:
            levels.append(value)
    return levels


def _blur(strip: Any, sigma: float, first: int, last: int) -> Any:
    """Rows ``first`` to ``last`` of ``strip`` (uint8 RGB) blurred by a Gaussian of ``sigma``
    pixels, as float32."""
    import numpy as np
    from PIL import Image, ImageFilter

    if sigma <= 0:
        return strip[first:last].astype(np.float32)
    image = Image.fromarray(strip).filter(ImageFilter.GaussianBlur(sigma))
    return np.asarray(image.crop((0, first, image.width, last)), dtype=np.float32)


# -- measures against the ground truth (the benchmark's and the tests') -------------------------


def sharpness(image: Any, border: float = 0.05) -> float:
    """Mean gradient energy (squared differences of neighbouring pixels of the grey image) inside
    ``border`` (a fraction of each side left out: the edges of warped frames are made up)."""
    import numpy as np

    grey = _inner(image, border).astype(np.float32).mean(axis=2)
    dx, dy = np.diff(grey, axis=1)[:-1], np.diff(grey, axis=0)[:, :-1]
    return float((dx * dx + dy * dy).mean())


def psnr(image: Any, truth: Any, border: float = 0.05) -> float:
    """Peak signal-to-noise ratio (dB) of ``image`` against ``truth`` inside ``border``."""
    import numpy as np

    error = np.mean((_inner(image, border).astype(np.float64) - _inner(truth, border)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def _inner(image: Any, border: float) -> Any:
    height, width = image.shape[:2]
    top, left = int(border * height), int(border * width)
    return image[top:height - top, left:width - left]
