"""The simulated camera's scene: a textured sphere in front of a dark backdrop, drawn in strips.

The scene is what an OpenScan rig photographs: an object on the turntable, lit by the ring light
around the lens, in front of a dark background. The object is a sphere painted with a
non-repeating texture (smooth colour gradients that differ everywhere, a checker, several octaves
of noise, and a few hundred shapes and labels) so feature matching, and so photogrammetry, has
something to work with. The rotor angle (elevation) and the turntable angle turn the sphere in
front of the camera; the same angles give the same bytes, different angles different images.
:class:`~openscan_pi.sim.camera.SimulatedCamera` photographs it; :mod:`openscan_pi.sim.depth`
adds a lens's depth of field.

Only the texture (4096 x 2048 RGB, 24 MB) is kept between frames; a frame is drawn in strips of
:data:`STRIP_ROWS` rows (the sphere's pixels, their normals, the ring light's shading and the
texture look-up computed per strip in float32). numpy and Pillow are imported when the first
strip is drawn, not with this module.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

#: The sphere's outline spans this fraction of the image height.
OUTLINE_FRACTION = 0.8
#: Focal length in pixels = this x image height (a normal lens, about 53 degrees vertical).
FOCAL = 1.0
#: Camera distance from the sphere's centre (its radius follows from OUTLINE_FRACTION).
DISTANCE = 4.0
TEXTURE_SEED = 20240611
#: Rows rendered at a time: a 4056-pixel-wide strip of 32 rows needs a few MB of temporaries.
STRIP_ROWS = 32
#: Rows of the texture made at a time (its noise is float32 while it is made).
TEXTURE_BAND = 64


def render(width: int, height: int, rotor: float, turntable: float) -> Any:
    """The scene as an ``(height, width, 3)`` uint8 RGB array, seen from elevation ``rotor`` with
    the turntable at ``turntable`` (degrees). It is built from :func:`render_strips`; a camera
    never holds this array (see :meth:`SimulatedCamera.render_jpeg`)."""
    import numpy as np

    out = np.empty((height, width, 3), dtype=np.uint8)
    for top, strip in render_strips(width, height, rotor, turntable):
        out[top:top + strip.shape[0]] = strip
    return out


#: The lens's view as ``(magnification, shift x, shift y)``: a scene point drawn at ``(u, v)``
#: pixels from the image centre with ``NO_VIEW`` is drawn at ``(m u + sx, m v + sy)``.
NO_VIEW = (1.0, 0.0, 0.0)


def render_strips(width: int, height: int, rotor: float, turntable: float,
                  rows: int = STRIP_ROWS, view: tuple[float, float, float] = NO_VIEW,
                  smooth: bool = False) -> Iterator[tuple[int, Any]]:
    """The scene from top to bottom as ``(first row, (n, width, 3) uint8 RGB array)`` strips of
    at most ``rows`` rows. Only the texture is kept between frames; the geometry of a strip is
    computed when it is drawn, so memory stays at one strip's worth whatever the resolution.
    ``view`` is the lens's magnification and shift (see :data:`NO_VIEW`); ``smooth`` samples
    the texture bilinearly (slower; views at different scales then agree, see
    :mod:`openscan_pi.sim.depth`)."""
    for top in range(0, height, rows):
        yield top, render_rows(width, height, top, min(height, top + rows), rotor, turntable, view,
                               smooth)


def render_rows(width: int, height: int, top: int, bottom: int, rotor: float, turntable: float,
                view: tuple[float, float, float] = NO_VIEW, smooth: bool = False) -> Any:
    """Rows ``top`` to ``bottom`` of the scene (see :func:`render_strips`)."""
    texture, tex_w, tex_h = _texture(_texture_width(height))
    return _strip(width, height, top, bottom, _rotation(rotor, turntable), texture, tex_w, tex_h,
                  view, smooth)


def pixel_rays(width: int, height: int, top: int, bottom: int,
               view: tuple[float, float, float] = NO_VIEW) -> tuple[Any, Any]:
    """The viewing rays of rows ``top`` to ``bottom``: ``(xs, ys)``, float32, the ray of pixel
    ``(row, col)`` being ``(xs[col], ys[row - top], -1)`` from the camera at the origin."""
    import numpy as np

    magnify, shift_x, shift_y = view
    focal = np.float32(FOCAL * height * magnify)
    xs = (np.arange(width, dtype=np.float32) + np.float32(0.5 - width / 2 - shift_x)) / focal
    ys = -(np.arange(top, bottom, dtype=np.float32) + np.float32(0.5 - height / 2 - shift_y)) / focal
    return xs, ys


def sphere_radius(height: int) -> float:
    """The sphere's radius (scene units; the camera is :data:`DISTANCE` from its centre)."""
    tangent = OUTLINE_FRACTION * height / 2 / (FOCAL * height)
    return DISTANCE * tangent / math.sqrt(1 + tangent * tangent)


def _strip(width: int, height: int, top: int, bottom: int, rotation: Any, texture: Any,
           tex_w: int, tex_h: int, view: tuple[float, float, float] = NO_VIEW,
           smooth: bool = False) -> Any:
    """Rows ``top`` to ``bottom`` of the frame: the background, and the sphere's pixels looked
    up in the texture by their normal turned by ``rotation`` and shaded by the ring light."""
    import numpy as np

    radius = sphere_radius(height)
    xs, ys = pixel_rays(width, height, top, bottom, view)
    out = _background(width, height, top, bottom)
    # Ray from the camera (origin) along (x, y, -1); sphere centred at (0, 0, -DISTANCE).
    norm2 = xs[None, :] ** 2 + ys[:, None] ** 2 + np.float32(1)
    disc = np.float32(DISTANCE**2) - norm2 * np.float32(DISTANCE**2 - radius**2)
    flat = np.flatnonzero(disc > 0)
    if flat.size == 0:
        return out
    row, col = np.divmod(flat, width)
    x, y = xs[col], ys[row]
    n2 = norm2.reshape(-1)[flat]
    t = (np.float32(DISTANCE) - np.sqrt(disc.reshape(-1)[flat])) / n2
    # The unit normal at each pixel, one array a component (a (N, 3) array times the 3x3
    # rotation through matmul is ten times slower than these nine multiply-adds).
    t /= np.float32(radius)
    nx, ny = t * x, t * y
    nz = np.float32(DISTANCE / radius) - t
    # The ring light sits at the lens: brightness follows the angle to the viewing ray.
    facing = np.clip((nx * -x + ny * -y + nz) / np.sqrt(n2), 0, 1)
    shade = np.round((0.18 + 0.82 * facing**0.7) * 256).astype(np.uint16)
    r = [[np.float32(v) for v in row] for row in rotation.tolist()]
    rx = nx * r[0][0] + ny * r[1][0] + nz * r[2][0]
    ry = nx * r[0][1] + ny * r[1][1] + nz * r[2][1]
    lat = nx * r[0][2] + ny * r[1][2] + nz * r[2][2]
    # Texture coordinates: longitude from atan2, and z itself for the rows (an equal-area map),
    # which saves an arcsin per pixel.
    column = np.arctan2(ry, rx)
    column *= tex_w / (2 * math.pi)
    column += tex_w / 2
    lat *= -(tex_h / 2 - 0.5)
    lat += tex_h / 2
    if smooth:
        colours = _bilinear(texture, column, lat, tex_w, tex_h)
    else:
        columns = column.astype(np.int32)
        np.minimum(columns, tex_w - 1, out=columns)
        index = lat.astype(np.int32)
        index *= tex_w
        index += columns
        colours = texture[index].astype(np.uint16)
    colours *= shade[:, None]
    colours >>= 8
    out.reshape(-1, 3)[flat] = colours
    return out


def _bilinear(texture: Any, column: Any, row: Any, tex_w: int, tex_h: int) -> Any:
    """The texture at (fractional) ``column``, ``row`` interpolated between its four nearest
    texels, as uint16 RGB: views of the scene at slightly different scales then agree, as
    photographs do (the nearest texel alone aliases differently at each scale)."""
    import numpy as np

    column = column - np.float32(0.5)
    row = np.clip(row - np.float32(0.5), 0, tex_h - 1)
    c0, r0 = np.floor(column), np.floor(row)
    fc, fr = (column - c0)[:, None], (row - r0)[:, None]
    c0 = c0.astype(np.int32) % tex_w
    c1 = (c0 + 1) % tex_w
    r0 = r0.astype(np.int32)
    r1 = np.minimum(r0 + 1, tex_h - 1) * tex_w
    r0 *= tex_w
    top = texture[r0 + c0] * (1 - fc) + texture[r0 + c1] * fc
    bottom = texture[r1 + c0] * (1 - fc) + texture[r1 + c1] * fc
    return np.rint(top * (1 - fr) + bottom * fr).astype(np.uint16)


def _background(width: int, height: int, top: int, bottom: int) -> Any:
    """Rows ``top`` to ``bottom`` of the dark, slightly blue background (a soft vignette)."""
    import numpy as np

    gx = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    gy = np.linspace(-1, 1, height, dtype=np.float32)[top:bottom, None]
    grey = np.clip(22 + 30 * (1 - (gx * gx + gy * gy) / 2) - 8 * gy, 0, 255).astype(np.uint8)
    out = np.repeat(grey[:, :, None], 3, axis=2)
    out[..., 2] = np.minimum(grey, 249) + 6
    return out


def _rotation(rotor: float, turntable: float) -> Any:
    """The matrix taking camera-frame row vectors (x right, y up, z towards the camera) to the
    object's frame (z up the turntable axis), for a camera at elevation ``rotor`` and the
    turntable turned by ``turntable``."""
    import numpy as np

    e, t = math.radians(rotor), math.radians(turntable)
    # columns: the camera's right, up and backward axes in the world frame
    camera = np.array([[1.0, 0.0, 0.0],
                       [0.0, math.sin(e), -math.cos(e)],
                       [0.0, math.cos(e), math.sin(e)]])
    turn = np.array([[math.cos(t), math.sin(t), 0.0],
                     [-math.sin(t), math.cos(t), 0.0],
                     [0.0, 0.0, 1.0]])  # rotation by -t about z: the object turned by +t
    return (turn @ camera).T.astype(np.float32)


def _texture_width(height: int) -> int:
    """A power of two near the sphere's circumference in pixels (at most 4096)."""
    wanted = math.pi * OUTLINE_FRACTION * height
    return int(min(4096, max(512, 2 ** math.ceil(math.log2(wanted)))))


@functools.lru_cache(maxsize=1)
def _texture(tex_w: int) -> tuple[Any, int, int]:
    """:func:`make_texture` kept for the next frames (one size at a time)."""
    return make_texture(tex_w)


def make_texture(tex_w: int, band: int = TEXTURE_BAND) -> tuple[Any, int, int]:
    """The sphere's texture as an equal-area map ``tex_w`` x ``tex_w / 2``: a ``(pixels, 3)``
    uint8 RGB array (24 MB at the largest), deterministic. It is made in bands of ``band`` rows
    (the same pixels whatever their height, up to Pillow's rounding of a few), so that no
    full-size float or Pillow image ever exists beside it."""
    import numpy as np
    from PIL import Image, ImageChops, ImageDraw

    tex_h = tex_w // 2
    rng = np.random.default_rng(TEXTURE_SEED)
    # Smooth colours that never repeat: computed small, scaled up.
    u = np.linspace(0, 1, 256, endpoint=False, dtype=np.float32)[None, :]
    v = np.linspace(0, 1, 128, dtype=np.float32)[:, None]
    red = 0.55 + 0.4 * np.sin(2 * np.pi * u + 0.3 + 2 * v)
    green = 0.55 + 0.4 * np.sin(2 * np.pi * (u + 0.5 * v) + 2.2)
    blue = 0.55 + 0.4 * np.cos(3 * np.pi * v + np.sin(2 * np.pi * u))
    base = np.stack(np.broadcast_arrays(red, green, blue), axis=-1)
    colours = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8))
    checker = Image.fromarray((np.indices((16, 32)).sum(axis=0) % 2 * 70 + 185).astype(np.uint8))
    octaves = [(Image.fromarray(rng.random((max(2, cells // 2), cells), dtype=np.float32)), amplitude)
               for cells, amplitude in ((16, 0.35), (64, 0.3), (256, 0.25), (tex_w // 4, 0.3))]
    scale = tex_w / 4096
    shapes = [(i % 4, int(rng.integers(0, tex_w)), int(rng.integers(tex_h // 12, tex_h * 11 // 12)),
               int(rng.integers(8, 56) * scale) + 2, tuple(int(c) for c in rng.integers(0, 256, 3)))
              for i in range(240)]
    font = _font(max(10, int(64 * scale)))
    pixels = np.empty((tex_h, tex_w, 3), dtype=np.uint8)
    for top in range(0, tex_h, band):
        rows = min(band, tex_h - top)
        image = _stretch(colours, tex_w, tex_h, top, rows, Image.Resampling.BILINEAR)
        noise = np.zeros((rows, tex_w), dtype=np.float32)
        for small, amplitude in octaves:
            part = _stretch(small, tex_w, tex_h, top, rows, Image.Resampling.BILINEAR)
            noise += amplitude * (np.asarray(part) - np.float32(0.5))
        grain = Image.fromarray(np.clip(225 + 110 * noise, 0, 255).astype(np.uint8))
        shading = _stretch(checker, tex_w, tex_h, top, rows, Image.Resampling.NEAREST)
        image = ImageChops.multiply(image, Image.merge("RGB", [ImageChops.multiply(shading, grain)] * 3))
        _draw(ImageDraw.Draw(image), shapes, font, tex_w, tex_h, top, rows, scale)
        pixels[top:top + rows] = np.asarray(image)
    return pixels.reshape(-1, 3), tex_w, tex_h


def _stretch(small: Any, tex_w: int, tex_h: int, top: int, rows: int, resample: Any) -> Any:
    """Rows ``top`` to ``top + rows`` of ``small`` scaled up to ``tex_w`` x ``tex_h`` (the same
    pixels as scaling it whole and cutting the band out)."""
    sy = small.height / tex_h
    return small.resize((tex_w, rows), resample, box=(0, top * sy, small.width, (top + rows) * sy))


def _draw(draw: Any, shapes: list[tuple[int, int, int, int, tuple[int, ...]]], font: Any,
          tex_w: int, tex_h: int, top: int, rows: int, scale: float) -> None:
    """Draw the shapes and the labels on the band of the texture from row ``top``, ``rows`` high."""
    for kind, x, y, size, colour in shapes:
        if not -3 * size < y - top < rows + 3 * size:
            continue
        y -= top
        if kind == 0:
            draw.ellipse((x - size, y - size, x + size, y + size), fill=colour)
        elif kind == 1:
            draw.rectangle((x - size, y - size // 2, x + size, y + size // 2), outline=colour,
                           width=max(2, int(6 * scale)))
        elif kind == 2:
            draw.line((x - size, y - size, x + size, y + size // 3), fill=colour,
                      width=max(2, int(8 * scale)))
        else:
            draw.polygon([(x, y - size), (x + size, y + size), (x - size, y + size)], fill=colour)
    for k in range(24):  # longitude labels along two latitudes
        x = int((k + 0.5) * tex_w / 24)
        draw.text((x, tex_h * 0.42 - top), f"{k * 15:03d}", fill=(255, 255, 240), font=font,
                  anchor="mm")
        draw.text((x, tex_h * 0.66 - top), chr(65 + k), fill=(20, 20, 30), font=font, anchor="mm")


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()
