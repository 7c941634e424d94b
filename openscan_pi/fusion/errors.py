"""Fusion failures a user can act on."""

from __future__ import annotations

from openscan_pi.errors import UserError


class FusionError(UserError):
    """A stack cannot be fused: a frame that is missing, not a JPEG, truncated or of another
    size, or a stack whose frames do not show the same view."""


class FusionUnavailable(FusionError):
    """OpenCV is not installed (the message names the install command)."""
