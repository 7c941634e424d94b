"""Rig failures a user can act on."""

from __future__ import annotations

from openscan_pi.errors import UserError


class RigError(UserError):
    """The rig cannot do what was asked: an angle beyond a limit, homing that timed out, ..."""


class MoveCancelled(RigError):
    """A move was cancelled; the axis position is still known."""


class CameraError(RigError):
    """The camera could not be opened or could not capture."""
