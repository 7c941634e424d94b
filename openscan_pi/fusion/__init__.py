"""Focus stacks fused on the device: several frames of one position, taken at different lens
positions, aligned and blended into one JPEG that is sharp everywhere.

The one entry point is :func:`fuse_stack`; :func:`load_cv2` says (in one line) how to install
OpenCV where it is missing. OpenCV and numpy are imported when a stack is fused, never with this
package.

Example::

    result = fuse_stack([Path("IMG_0007_0.jpg"), ..., Path("IMG_0007_4.jpg")],
                        Path("fused/IMG_0007.jpg"), exif_from=Path("IMG_0007_2.jpg"))
    result.size, result.crc32, result.skipped   # for the manifest; frames left out, with why
"""

from openscan_pi.fusion.errors import FusionError, FusionUnavailable
from openscan_pi.fusion.opencv import load_cv2, opencv_version
from openscan_pi.fusion.stack import FrameAlignment, FusionResult, fuse_stack, remove_leftovers

__all__ = ["FrameAlignment", "FusionError", "FusionResult", "FusionUnavailable", "fuse_stack",
           "load_cv2", "opencv_version", "remove_leftovers"]
