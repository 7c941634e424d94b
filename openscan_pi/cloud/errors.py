"""Cloud failures, each a one-line :class:`~openscan_pi.errors.UserError` a user can act on.

Secrets (the token, the basic-auth password) never appear in these messages: build them with
:func:`~openscan_pi.masking.mask` when a text may carry a URL with its query. Text from the cloud
is shown as text: control characters and terminal escapes in a message become visible escapes
(:func:`printable`).
"""

from __future__ import annotations

import re

from openscan_pi.errors import UserError
from openscan_pi.masking import MASK_ANYWHERE_LEN, mask  # noqa: F401 (re-exported)


class CloudError(UserError):
    """Base of every failure talking to the OpenScan Cloud or an upload/download link; its
    message is :func:`printable` (it may quote the cloud)."""

    #: True when waiting and trying again may help (network down, server busy).
    transient = False

    def __init__(self, *args: object) -> None:
        super().__init__(*(printable(a) if isinstance(a, str) else a for a in args))


class Cancelled(UserError):
    """A transfer or a call to the cloud was asked to stop; the journal lets it continue later."""

    exit_code = 130


class BadURL(CloudError):
    """A link or redirect that cannot be followed: not http(s), a broken host, a redirect loop."""


class AuthRefused(CloudError):
    """The API answered 401 to a call that needs basic auth."""


class Refused(CloudError):
    """The API answered 400: a pre-check failed, the token is unknown, a name is taken, ..."""


class NoSuchProject(CloudError):
    """``getProjectInfo`` answered 401: the server does not know that project name."""


class BadAnswer(CloudError):
    """An HTML page, non-JSON text or JSON of the wrong shape where the API promises JSON."""

    transient = True


class Unreachable(CloudError):
    """No answer: DNS, refused or dropped connection, timeout."""

    transient = True


class ServerError(CloudError):
    """5xx or 429 still there after the retries."""

    transient = True


class LinkGone(CloudError):
    """An upload link answered 409/410: used already or expired; the project must be re-created."""


class HashMismatch(CloudError):
    """The content-hash the server computed differs from the bytes we sent."""


class ProcessingFailed(CloudError):
    """The cloud reported ``processing failed``."""


class ProjectExpired(CloudError):
    """The cloud reported ``expired``: its result is gone."""


class UnsafeModel(CloudError):
    """A downloaded model zip tried to write outside its folder, held links, or was too large."""


_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                       "\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control characters, terminal escapes (ESC, CSI, C1, DEL) and bidi controls
    written as visible escapes (``\\x1b``, ``\\u202e``): text from the cloud, shown as text."""
    return _CONTROLS.sub(lambda m: _escape(ord(m.group())), text)


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
