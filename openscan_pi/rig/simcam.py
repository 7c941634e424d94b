"""The simulated camera: renders a textured sphere as the rig would see it.

The scene is what an OpenScan rig photographs: an object on the turntable, lit by the ring light
around the lens, in front of a dark background. The object is a sphere painted with a
non-repeating texture (smooth colour gradients that differ everywhere, a checker, several octaves
of noise, and a few hundred shapes and labels) so feature matching, and so photogrammetry, has
something to work with. The rotor angle (elevation) and the turntable angle turn the sphere in
front of the camera; the same angles give the same bytes, different angles different images.

Speed: everything that does not depend on the angles is computed once per resolution and cached
(which pixels show the sphere, the surface normal and the shading at each of them, the
background); a frame is then one 3x3 rotation of the normals, a texture look-up and a JPEG
encode, all vectorised in float32: about 0.28 s per 12 MP capture on one desktop core. The cache
for 12 MP holds about 150 MB: simulate at a smaller ``camera.resolution`` on a small board.

numpy and Pillow are imported when the first frame is rendered, not with this module.
"""

from __future__ import annotations

import ctypes
import functools
import io
import math
import os
import time
from pathlib import Path
from typing import Any

from openscan_pi.rig.camera import Shot, exif_bytes, write_photo
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
        """The JPEG (with EXIF) :meth:`capture` writes, without writing it."""
        from PIL import Image

        pixels = render(self.width, self.height, rotor, turntable)
        exif = exif_bytes(orientation=self.cfg.orientation, rotor=rotor, turntable=turntable,
                          index=index, lens_position=lens_position, make=MAKE, model=MODEL)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=self.cfg.jpeg_quality, exif=exif)
        return buffer.getvalue()

    def close(self) -> None:
        """Nothing to release; the cached scene stays for the next camera."""


def render(width: int, height: int, rotor: float, turntable: float) -> Any:
    """The scene as an ``(height, width, 3)`` uint8 RGB array, seen from elevation ``rotor`` with
    the turntable at ``turntable`` (degrees)."""
    import numpy as np

    flat, normals, shade, background = _geometry(width, height)
    texture, tex_w, tex_h = _texture(_texture_width(height))
    rotated = normals @ _rotation(rotor, turntable)
    # Texture coordinates: longitude from atan2, and z itself for the rows (an equal-area map),
    # which saves an arcsin per pixel.
    column = np.arctan2(rotated[:, 1], rotated[:, 0])
    column *= tex_w / (2 * math.pi)
    column += tex_w / 2
    columns = column.astype(np.int32)
    np.minimum(columns, tex_w - 1, out=columns)
    row = rotated[:, 2]
    row *= -(tex_h / 2 - 0.5)
    row += tex_h / 2
    rows = row.astype(np.int32)
    rows *= tex_w
    rows += columns
    colours = texture[rows].view(np.uint8).reshape(-1, 4)[:, :3].astype(np.uint16)
    colours *= shade[:, None]
    colours >>= 8
    out = background.copy()
    out.reshape(-1, 3)[flat] = colours
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


@functools.lru_cache(maxsize=2)
def _geometry(width: int, height: int) -> tuple[Any, Any, Any, Any]:
    """Per resolution: flat indices of the sphere's pixels, their unit normals in the camera
    frame (float32, N x 3), the ring light's shading (uint16, 256 = full), the background."""
    import numpy as np

    focal = FOCAL * height
    tangent = OUTLINE_FRACTION * height / 2 / focal
    radius = DISTANCE * tangent / math.sqrt(1 + tangent * tangent)
    xs = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / focal
    ys = -(np.arange(height, dtype=np.float32) + 0.5 - height / 2) / focal
    # Ray from the camera (origin) along (x, y, -1); sphere centred at (0, 0, -DISTANCE).
    norm2 = xs[None, :] ** 2 + ys[:, None] ** 2 + 1
    disc = DISTANCE**2 - norm2 * (DISTANCE**2 - radius**2)
    flat = np.flatnonzero(disc > 0).astype(np.int32)
    row, col = np.divmod(flat, width)
    x, y = xs[col], ys[row]
    n2 = norm2.reshape(-1)[flat]
    t = (DISTANCE - np.sqrt(disc.reshape(-1)[flat])) / n2
    normals = np.empty((flat.size, 3), dtype=np.float32)
    normals[:, 0] = t * x / radius
    normals[:, 1] = t * y / radius
    normals[:, 2] = (DISTANCE - t) / radius
    # The ring light sits at the lens: brightness follows the angle to the viewing ray.
    facing = np.clip((normals[:, 0] * -x + normals[:, 1] * -y + normals[:, 2]) / np.sqrt(n2), 0, 1)
    shade = np.round((0.18 + 0.82 * facing**0.7) * 256).astype(np.uint16)
    gx = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    gy = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    grey = np.clip(22 + 30 * (1 - (gx * gx + gy * gy) / 2) - 8 * gy, 0, 255).astype(np.uint8)
    background = np.repeat(grey[:, :, None], 3, axis=2)
    background[..., 2] = np.clip(grey.astype(np.int16) + 6, 0, 255).astype(np.uint8)
    return flat, normals, shade, background


@functools.lru_cache(maxsize=2)
def _texture(tex_w: int) -> tuple[Any, int, int]:
    """The sphere's texture as an equal-area map ``tex_w`` x ``tex_w / 2``, packed RGBA uint32
    (flat), deterministic."""
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
    image = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8)).resize(
        (tex_w, tex_h), Image.Resampling.BILINEAR)
    checker = (np.indices((16, 32)).sum(axis=0) % 2 * 70 + 185).astype(np.uint8)
    shading = Image.fromarray(checker).resize((tex_w, tex_h), Image.Resampling.NEAREST)
    noise = np.zeros((tex_h, tex_w), dtype=np.float32)
    for cells, amplitude in ((16, 0.35), (64, 0.3), (256, 0.25), (tex_w // 4, 0.3)):
        small = Image.fromarray(rng.random((max(2, cells // 2), cells), dtype=np.float32))
        noise += amplitude * (np.asarray(small.resize((tex_w, tex_h), Image.Resampling.BILINEAR)) - 0.5)
    grain = Image.fromarray(np.clip(225 + 110 * noise, 0, 255).astype(np.uint8))
    image = ImageChops.multiply(image, Image.merge("RGB", [ImageChops.multiply(shading, grain)] * 3))
    draw = ImageDraw.Draw(image)
    scale = tex_w / 4096
    for i in range(240):
        x, y = int(rng.integers(0, tex_w)), int(rng.integers(tex_h // 12, tex_h * 11 // 12))
        size = int(rng.integers(8, 56) * scale) + 2
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = i % 4
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
    font = _font(max(10, int(64 * scale)))
    for k in range(24):  # longitude labels along two latitudes
        x = int((k + 0.5) * tex_w / 24)
        draw.text((x, tex_h * 0.42), f"{k * 15:03d}", fill=(255, 255, 240), font=font, anchor="mm")
        draw.text((x, tex_h * 0.66), chr(65 + k), fill=(20, 20, 30), font=font, anchor="mm")
    packed = np.ascontiguousarray(np.asarray(image.convert("RGBA"))).view(np.uint32).reshape(-1)
    return packed, tex_w, tex_h


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()
