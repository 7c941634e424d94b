"""OpenCV, imported when a stack is fused (it costs about 15 MB and a quarter second)."""

from __future__ import annotations

from typing import Any

from openscan_pi.fusion.errors import FusionUnavailable

#: The install line of each kind of machine.
PI_INSTALL = "sudo apt install python3-opencv"
PIP_INSTALL = "pip install opencv-python-headless"


def on_raspberry_pi() -> bool:
    """Whether this machine says it is a Raspberry Pi (its device tree's model)."""
    try:
        with open("/proc/device-tree/model", "rb") as fh:
            return b"Raspberry Pi" in fh.read()
    except OSError:
        return False


def install_hint() -> str:
    """How to install OpenCV here: apt's package on a Pi, the headless wheel elsewhere."""
    return PI_INSTALL if on_raspberry_pi() else PIP_INSTALL


def load_cv2() -> Any:
    """The ``cv2`` module, or :class:`FusionUnavailable` naming the install command."""
    try:
        import cv2
    except ImportError as exc:
        raise FusionUnavailable(_missing(str(exc))) from exc
    return cv2


def opencv_version() -> str | None:
    """OpenCV's version, or None when it cannot be imported."""
    try:
        return str(load_cv2().__version__)
    except FusionUnavailable:
        return None


def _missing(why: str) -> str:
    return (f"focus stacks are fused with OpenCV, which cannot be imported ({why}): install it "
            f"with `{install_hint()}` (then `openscan-pi retry JOB` fuses the photos taken), "
            "or scan without a focus stack (camera.focus.stack: 1, no scan --focus-stack)")
