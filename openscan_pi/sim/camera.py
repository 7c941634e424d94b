"""The simulated camera: renders a textured sphere as the rig would see it.

The scene (:mod:`openscan_pi.sim.scene`) is what an OpenScan rig photographs: a textured sphere
on the turntable, lit by the ring light around the lens, in front of a dark background; the rotor
and turntable angles turn it in front of the camera. A capture with a lens position is seen
through a lens focused there (:mod:`openscan_pi.sim.depth`: depth of field, focus breathing).

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
import io
import os
import time
from pathlib import Path
from typing import Any

from openscan_pi.rig.camera import Shot, exif_bytes, write_photo
from openscan_pi.rig.preview import Preview, preview_of_rgb, preview_size
from openscan_pi.schema import CameraConfig
from openscan_pi.sim.scene import STRIP_ROWS, _texture, make_texture, render, render_strips

__all__ = ["FAULT_ENV", "MAKE", "MODEL", "SIM_EXPOSURE_US", "STRIP_ROWS", "SimulatedCamera",
           "make_texture", "render", "render_strips"]

MAKE = "OpenScan"
MODEL = "simulated"
#: Exposure reported by the simulated "settle" when none is configured.
SIM_EXPOSURE_US = 10000
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

    It reports ``has_autofocus`` True so focus stacks run as on a Camera Module 3. A capture
    with a lens position is rendered with that focus (:mod:`openscan_pi.sim.depth`: depth of
    field on the sphere's real depth, and the lens's change of magnification); without one the
    camera "focused by itself" and every pixel is sharp.

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
                "has_autofocus": True, "focus": "simulated: depth of field from the lens position",
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
        if lens_position is None:
            strips = render_strips(self.width, self.height, rotor, turntable)
        else:
            from openscan_pi.sim.depth import render_focused_strips

            strips = render_focused_strips(self.width, self.height, rotor, turntable, lens_position)
        for top, strip in strips:
            frame.paste(Image.fromarray(strip), (0, top))
        exif = exif_bytes(orientation=self.cfg.orientation, rotor=rotor, turntable=turntable,
                          index=index, lens_position=lens_position, make=MAKE, model=MODEL)
        buffer = io.BytesIO()
        frame.save(buffer, format="JPEG", quality=self.cfg.jpeg_quality, exif=exif)
        return buffer.getvalue()

    def preview(self, *, rotor: float, turntable: float,
                lens_position: float | None = None) -> Preview:
        """What the camera sees at these angles (with a lens position: that focus's depth of
        field), rendered at the preview's size (whatever ``camera.resolution``: tens of
        milliseconds once the texture of that size is made)."""
        width, height = preview_size(self.width, self.height)
        if lens_position is None:
            rgb = render(width, height, rotor, turntable)
        else:  # through a lens focused there, as a capture at that lens position
            import numpy as np

            from openscan_pi.sim.depth import render_focused_strips

            rgb = np.concatenate([strip for _, strip in render_focused_strips(
                width, height, rotor, turntable, lens_position)])
        return preview_of_rgb(rgb,
                              exposure_us=self.cfg.exposure_us or SIM_EXPOSURE_US,
                              gain=self.cfg.analogue_gain or 1.0, lens_position=lens_position)

    def close(self) -> None:
        """Let the texture go (24 MB at 12 MP): a closed camera holds nothing; the next one to
        capture makes it again (about a second)."""
        _texture.cache_clear()


def capture_stack(cfg: CameraConfig, folder: Path, *, rotor: float, turntable: float,
                  index: int) -> tuple[list[Path], list[float]]:
    """One position's focus stack as the rig takes it (``cfg.focus.stack`` frames at lens
    positions spread over ``cfg.focus.stack_range``), written as ``folder/IMG_<index>_<k>.jpg``;
    returns the frames and their lens positions (for tests and benchmarks of the fusion)."""
    from openscan_pi.rig.camera import lens_positions

    camera = SimulatedCamera(cfg)
    camera.start()
    lens = [float(lp) for lp in lens_positions(cfg.focus, True) if lp is not None]
    frames = []
    for k, lp in enumerate(lens):
        path = folder / f"IMG_{index:04d}_{k}.jpg"
        camera.capture(path, rotor=rotor, turntable=turntable, index=index, lens_position=lp)
        frames.append(path)
    camera.close()
    return frames, lens
