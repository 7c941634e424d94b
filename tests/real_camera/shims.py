"""What real picamera2 0.3.38 needs to run on the virtual camera of a machine without a Pi's kernel.

picamera2 and libcamera stay unmodified; these three shims stand in for what the machine lacks:

1. ``pykms`` (Raspberry Pi OS's python3-kms++, for picamera2's DRM preview, which ``import
   picamera2`` imports): a stub module. No preview is ever started.
2. Buffers: no ``/dev/dma_heap`` and no ``/dev/udmabuf`` here, so neither picamera2's
   ``DmaAllocator`` nor its ``LibcameraAllocator`` can allocate. ``MemfdAllocator`` backs each
   buffer with ``memfd_create`` + ``mmap``, NV12 described as two planes of one fd, and hands
   picamera2 its own mapping of a buffer (libcamera keeps a duplicate fd per plane, which
   picamera2's default mapping refuses as "non-contiguous"). picamera2's ``close()`` makes a new
   ``DmaAllocator()`` by its module-global name, so that name points here too.
3. The virtual pipeline refuses ``StreamRole.Raw``, which ``Picamera2()`` uses to list sensor
   modes: ``VirtualPicamera2`` falls back to the Viewfinder role's formats.

:func:`load` returns a stand-in for the ``picamera2`` module (its ``Picamera2`` is
``VirtualPicamera2``) and ``libcamera.controls``, or raises :class:`NotBuilt` saying how to
get the build.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
import sys
import types
from typing import Any

BUILD = ("real picamera2 on the built libcamera is not installed in this Python: "
         "`eval \"$(tools/build_libcamera.sh ../shared/vendor/libcamera-v0.7.1+rpt20260429.tar.gz)\"` "
         "builds it and sets its environment, then run "
         "`\"$OPENSCAN_PI_LIBCAMERA_PREFIX/venv/bin/python\" -m pytest tests/real_camera`")


class NotBuilt(Exception):
    """The built libcamera, its bindings or picamera2 are not importable here."""


class _AnyName:
    """``pykms.PixelFormat.X`` for any X: the preview's format table is built at import."""

    def __getattr__(self, name: str) -> str:
        return name


def _stub_pykms() -> None:
    if "pykms" in sys.modules or importlib.util.find_spec("pykms") is not None:
        return
    stub = types.ModuleType("pykms")
    stub.__doc__ = "A stand-in for python3-kms++: picamera2's DRM preview is never started here."
    stub.PixelFormat = _AnyName()  # type: ignore[attr-defined]
    sys.modules["pykms"] = stub


def load() -> tuple[types.SimpleNamespace, Any]:
    """``(picamera2 stand-in, libcamera.controls)`` on the built libcamera with the shims in place.

    Raises :class:`NotBuilt` when libcamera's bindings or picamera2 cannot be imported, or
    libcamera lists no camera.
    """
    for name in ("libcamera", "picamera2"):
        if importlib.util.find_spec(name) is None:
            raise NotBuilt(f"no {name} module; {BUILD}")
    os.environ.setdefault("LIBCAMERA_LOG_LEVELS", "*:WARN")
    _stub_pykms()
    try:
        import libcamera
        import picamera2
        import picamera2.picamera2 as picamera2_core
        from libcamera import controls
        from picamera2.allocators import Allocator
        from picamera2.allocators.allocator import Sync
    except ImportError as exc:
        raise NotBuilt(f"import failed ({exc}); {BUILD}") from exc

    class MemfdSync(Sync):
        """A buffer's mapping, made once when it was allocated (memfd memory needs no cache sync)."""

        def __init__(self, allocator: MemfdAllocator, fb: Any, write: bool) -> None:
            del write
            self._memory = allocator.mapped_buffers[fb]

        def __enter__(self) -> mmap.mmap:
            return self._memory

        def __exit__(self, *exc: object) -> None:
            pass

    class MemfdAllocator(Allocator):
        """Buffers in ``memfd_create`` memory, one fd per buffer, mapped once."""

        def __init__(self) -> None:
            super().__init__()
            self.sync = MemfdSync
            self.frame_buffers: dict[Any, list[Any]] = {}
            self.mapped_buffers: dict[Any, mmap.mmap] = {}
            self._fds: list[int] = []

        def allocate(self, libcamera_config: Any, use_case: Any) -> None:
            del use_case
            self.close()
            for stream_config in libcamera_config:
                buffers = []
                for i in range(stream_config.buffer_count):
                    size = stream_config.frame_size
                    fd = os.memfd_create(f"openscan-test-{i}")
                    os.ftruncate(fd, size)
                    self._fds.append(fd)
                    buffers.append(libcamera.FrameBuffer(self._planes(stream_config, fd, size)))
                    self.mapped_buffers[buffers[-1]] = mmap.mmap(fd, size)
                self.frame_buffers[stream_config.stream] = buffers

        @staticmethod
        def _planes(stream_config: Any, fd: int, size: int) -> list[Any]:
            """One plane, or for NV12/NV21 two planes of the same fd (libcamera writes
            ``planes[1]``; one plane makes it abort)."""
            luma = stream_config.stride * stream_config.size.height
            if str(stream_config.pixel_format) in ("NV12", "NV21"):
                spans = [(0, luma), (luma, size - luma)]
            else:
                spans = [(0, size)]
            planes = []
            for offset, length in spans:
                plane = libcamera.FrameBuffer.Plane()
                plane.fd, plane.offset, plane.length = fd, offset, length
                planes.append(plane)
            return planes

        def buffers(self, stream: Any) -> list[Any]:
            return self.frame_buffers[stream]

        def close(self) -> None:
            for memory in self.mapped_buffers.values():
                memory.close()
            for fd in self._fds:
                os.close(fd)
            self.mapped_buffers, self._fds, self.frame_buffers = {}, [], {}

        def __del__(self) -> None:
            self.close()

    class VirtualPicamera2(picamera2.Picamera2):
        """picamera2's camera with the memfd allocator, and sensor modes from the Viewfinder
        role where the camera has no Raw role."""

        def __init__(self, camera_num: int = 0, tuning: Any = None) -> None:
            super().__init__(camera_num, tuning=tuning, allocator=MemfdAllocator())

        def _get_raw_modes(self) -> list[dict[str, Any]]:
            if self.camera.generate_configuration([libcamera.StreamRole.Raw]) is not None:
                return super()._get_raw_modes()
            formats = self.camera.generate_configuration([libcamera.StreamRole.Viewfinder]).at(0).formats
            return [{"format": str(pix), "size": (size.width, size.height)}
                    for pix in formats.pixel_formats for size in formats.sizes(pix)]

    picamera2_core.DmaAllocator = MemfdAllocator  # what close() makes again
    if not VirtualPicamera2.global_camera_info():
        raise NotBuilt(f"libcamera lists no camera (is virtual.yaml in its prefix?); {BUILD}")
    return types.SimpleNamespace(Picamera2=VirtualPicamera2), controls
