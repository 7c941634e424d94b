"""The simulated camera: renders a textured sphere as the rig would see it.

The scene is what an OpenScan rig photographs: an object on the turntable, lit by the ring light
around the lens, in front of a dark background. The object is a sphere painted with a
non-repeating texture (smooth colour gradients that differ everywhere, a checker, several octaves
of noise, and a few hundred shapes and labels) so feature matching, and so photogrammetry, has
something to work with. The rotor angle (elevation) and the turntable angle turn the sphere in
front of the camera; the same angles give the same bytes, different angles different images.

Memory: only the texture (4096 x 2048 RGB, 24 MB) is kept between frames, until the camera
closes. A frame is drawn in strips of :data:`STRIP_ROWS` rows (the sphere's pixels, their
normals, the ring light's shading and the texture look-up computed per strip in float32) and
pasted into the one image Pillow encodes, so a 12 MP capture peaks near 125 MB RSS with numpy
and Pillow loaded (it was 460 MB with the per-resolution geometry cached in full), and takes
about 0.3 s on one desktop core (the first one about half a second more: the texture is made).

numpy and Pillow are imported when the first frame is rendered, not with this module.
"""

from __future__ import annotations

import ctypes
import functools
import io
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openscan_pi.rig.camera import Shot, exif_bytes, write_photo
from openscan_pi.rig.preview import Preview, preview_of_rgb, preview_size
from openscan_pi.schema import CameraConfig

MAKE = "OpenScan"
MODEL = "simulated"
#: Exposure reported by the simulated "settle" when none is configured.
SIM_EXPOSURE_US = 10000
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
#: Fault switch for tests: the path of a file holding ``hang INDEX`` or ``abort INDEX``. At the
#: first capture of position INDEX the camera removes the file (the fault happens once) and then
#: blocks forever in a C call, as a wedged camera driver does, or aborts the process.
FAULT_ENV = "OPENSCAN_SIM_CAMERA_FAULT"


def _fault(index: int) -> None:
    """Hang or abort here when the fault switch says so for ``index``."""
    path = os.environ.get(FAULT_ENV)
    if not path:
        return
    try:
        what, at = Path(path).read_text().split()
    except (OSError, ValueError):
        return
    if int(at) != index:
        return
    os.unlink(path)
    if what == "abort":
        os.abort()
    while what == "hang":  # pause() in C: no timeout of this process cuts it short
        ctypes.CDLL(None).pause()


class SimulatedCamera:
    """A camera that renders the scene from the rig's angles instead of photographing it.

    It reports ``has_autofocus`` True so focus stacks run as on a Camera Module 3; the lens
    position is only recorded (in the :class:`~openscan_pi.rig.camera.Shot` and the EXIF).

    Example::

        camera = SimulatedCamera(cfg.camera)
        camera.start()
        shot = camera.capture(Path("IMG_0000.jpg"), rotor=30, turntable=45, index=0)
    """

    name = "simulated"

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.width, self.height = int(cfg.resolution[0]), int(cfg.resolution[1])

    def start(self) -> dict[str, Any]:
        """Report the simulated settings. The scene is built at the first capture (and cached),
        so that an idle daemon holding this camera open stays small."""
        gains = self.cfg.colour_gains
        return {"backend": self.name, "model": MODEL, "resolution": [self.width, self.height],
                "has_autofocus": True, "focus": "simulated: lens positions are recorded only",
                "exposure_us": self.cfg.exposure_us or SIM_EXPOSURE_US,
                "analogue_gain": self.cfg.analogue_gain or 1.0,
                "colour_gains": list(gains) if gains else [1.0, 1.0],
                "jpeg_quality": self.cfg.jpeg_quality}

    def capture(self, path: Path, *, rotor: float, turntable: float, index: int,
                lens_position: float | None = None) -> Shot:
        """Render the sphere at these angles and write it as a JPEG with EXIF to ``path``."""
        _fault(index)
        captured_at = time.time()
        data = self.render_jpeg(rotor=rotor, turntable=turntable, index=index,
                                lens_position=lens_position)
        size, crc = write_photo(path, data)
        return Shot(path=path, size=size, crc32=crc, lens_position=lens_position,
                    captured_at=captured_at, rotor=rotor, turntable=turntable, index=index)

    def render_jpeg(self, *, rotor: float, turntable: float, index: int,
                    lens_position: float | None = None) -> bytes:
        """The JPEG (with EXIF) :meth:`capture` writes, without writing it.

        The strips are pasted into the one full-size image Pillow encodes, so the frame exists
        once (Pillow's 4 bytes a pixel: 49 MB at 12 MP), never also as a numpy array."""
        from PIL import Image

        frame = Image.new("RGB", (self.width, self.height))
        for top, strip in render_strips(self.width, self.height, rotor, turntable):
            frame.paste(Image.fromarray(strip), (0, top))
        exif = exif_bytes(orientation=self.cfg.orientation, rotor=rotor, turntable=turntable,
                          index=index, lens_position=lens_position, make=MAKE, model=MODEL)
        buffer = io.BytesIO()
        frame.save(buffer, format="JPEG", quality=self.cfg.jpeg_quality, exif=exif)
        return buffer.getvalue()

    def preview(self, *, rotor: float, turntable: float,
                lens_position: float | None = None) -> Preview:
        """What the camera sees at these angles, rendered at the preview's size (whatever
        ``camera.resolution``: tens of milliseconds once the texture of that size is made)."""
        width, height = preview_size(self.width, self.height)
        return preview_of_rgb(render(width, height, rotor, turntable),
                              exposure_us=self.cfg.exposure_us or SIM_EXPOSURE_US,
                              gain=self.cfg.analogue_gain or 1.0, lens_position=lens_position)

    def close(self) -> None:
        """Let the texture go (24 MB at 12 MP): a closed camera holds nothing; the next one to
        capture makes it again (about a second)."""
        _texture.cache_clear()


def render(width: int, height: int, rotor: float, turntable: float) -> Any:
    """The scene as an ``(height, width, 3)`` uint8 RGB array, seen from elevation ``rotor`` with
    the turntable at ``turntable`` (degrees). It is built from :func:`render_strips`; a camera
    never holds this array (see :meth:`SimulatedCamera.render_jpeg`)."""
    import numpy as np

    out = np.empty((height, width, 3), dtype=np.uint8)
    for top, strip in render_strips(width, height, rotor, turntable):
        out[top:top + strip.shape[0]] = strip
    return out


def render_strips(width: int, height: int, rotor: float, turntable: float,
                  rows: int = STRIP_ROWS) -> Iterator[tuple[int, Any]]:
    """The scene from top to bottom as ``(first row, (n, width, 3) uint8 RGB array)`` strips of
    at most ``rows`` rows. Only the texture is kept between frames; the geometry of a strip is
    computed when it is drawn, so memory stays at one strip's worth whatever the resolution."""
    texture, tex_w, tex_h = _texture(_texture_width(height))
    rotation = _rotation(rotor, turntable)
    for top in range(0, height, rows):
        yield top, _strip(width, height, top, min(height, top + rows), rotation, texture, tex_w, tex_h)


def _strip(width: int, height: int, top: int, bottom: int, rotation: Any, texture: Any,
           tex_w: int, tex_h: int) -> Any:
    """Rows ``top`` to ``bottom`` of the frame: the background, and the sphere's pixels looked
    up in the texture by their normal turned by ``rotation`` and shaded by the ring light."""
    import numpy as np

    focal = FOCAL * height
    tangent = OUTLINE_FRACTION * height / 2 / focal
    radius = DISTANCE * tangent / math.sqrt(1 + tangent * tangent)
    xs = (np.arange(width, dtype=np.float32) + np.float32(0.5 - width / 2)) / np.float32(focal)
    ys = -(np.arange(top, bottom, dtype=np.float32) + np.float32(0.5 - height / 2)) / np.float32(focal)
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
    columns = column.astype(np.int32)
    np.minimum(columns, tex_w - 1, out=columns)
    lat *= -(tex_h / 2 - 0.5)
    lat += tex_h / 2
    index = lat.astype(np.int32)
    index *= tex_w
    index += columns
    colours = texture[index].astype(np.uint16)
    colours *= shade[:, None]
    colours >>= 8
    out.reshape(-1, 3)[flat] = colours
    return out


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
