"""The typed messages between the daemon and its rig worker: JSON lines over a socketpair.

Stdlib only (the daemon imports this, and must not import the rig's libraries). The daemon sends
:class:`Call` (one named rig operation with its parameters; ``cancelled`` tells whether the
caller's cancel event is set already) and :class:`Cancel` (stop the running operation at its next
step). The worker sends :class:`Hello` once the rig is open (or :class:`Reply` with an error when
it cannot be), :class:`Beat` about every second from a thread that never waits on the rig, and one
:class:`Reply` per call. Errors travel as the name of their class and their text, so a
:class:`~openscan_pi.rig.errors.RigError` or :class:`~openscan_pi.errors.UserError` reaches the
user as the worker said it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: The rig operations a :class:`Call` may name (the rig half of the capture step, the
#: hand-driven ``rig.*`` socket methods and ``preview``).
OPERATIONS = frozenset({"home", "angles", "start_camera", "move", "turn_by", "capture",
                        "preview", "light_on", "light_off", "state"})


@dataclass(frozen=True)
class Call:
    """Run ``op`` with ``args`` on the rig; answered by a :class:`Reply` with the same ``id``."""

    id: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False
    type: str = "call"


@dataclass(frozen=True)
class Cancel:
    """Stop the running operation at its next step (as the rig's cancel event does)."""

    type: str = "cancel"


@dataclass(frozen=True)
class Hello:
    """The rig is open (its camera started): ``info`` is what the camera says about itself."""

    pid: int
    info: dict[str, Any]
    rig: dict[str, Any]
    type: str = "hello"


@dataclass(frozen=True)
class Beat:
    """The worker lives; ``rig`` is where the axes are and whether the light is on."""

    rig: dict[str, Any]
    type: str = "beat"


@dataclass(frozen=True)
class Reply:
    """The answer to call ``id``: ``result``, or ``error`` = {"kind": class name, "text": ...}."""

    id: int
    result: Any = None
    error: dict[str, str] | None = None
    rig: dict[str, Any] | None = None
    type: str = "reply"


Message = Call | Cancel | Hello | Beat | Reply
_TYPES: dict[str, type] = {"call": Call, "cancel": Cancel, "hello": Hello, "beat": Beat,
                           "reply": Reply}


class ProtocolError(Exception):
    """A line that is not a message of this protocol (a bug on the other side)."""


def encode(message: Message) -> bytes:
    """One message as one JSON line."""
    return json.dumps(asdict(message), separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    """The message one JSON line holds."""
    try:
        data = json.loads(line)
        kind = _TYPES[data["type"]]
        return kind(**data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"not a rig message ({exc}): {line[:80]!r}") from None


def error_of(exc: BaseException) -> dict[str, str]:
    """How an exception crosses the boundary."""
    return {"kind": type(exc).__name__, "text": str(exc)}


def raise_error(error: dict[str, str]) -> None:
    """Raise the exception a :class:`Reply`'s ``error`` stands for (the same class for the
    project's user-facing errors, :class:`RemoteError` otherwise)."""
    from openscan_pi.errors import DiskError, InputError, UserError
    from openscan_pi.rig.camera import CameraStalled
    from openscan_pi.rig.errors import CameraError, MoveCancelled, RigError

    known: dict[str, type[Exception]] = {
        c.__name__: c for c in (UserError, InputError, DiskError, RigError, MoveCancelled,
                                CameraError, CameraStalled)}
    kind, text = error.get("kind", ""), error.get("text", "")
    if kind in known:
        raise known[kind](text)
    raise RemoteError(f"{kind}: {text}")


class RemoteError(Exception):
    """An unexpected error inside the worker (a bug): its class name and text."""
