"""What the parts of the local cloud share: the names of its endpoints and faults, token limits and
the answer of an API call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The body of every 400 answer, as the real (Flask) server sends it.
BAD_REQUEST_TEXT = "The browser (or proxy) sent a request that this server could not understand."

API_ENDPOINTS = frozenset(
    {
        "getQueueEstimate",
        "getTokenInfo",
        "createProject",
        "getProjectInfo",
        "startProject",
        "resetProject",
    }
)
_API_FAULTS = (
    "api_drop",
    "api_5xx",
    "api_429",
    "api_html",
    "api_non_json",
    "api_trickle",
    "api_huge",
    "api_huge_html",
    "api_broken_chunked",
    "api_bad_gzip",
    "api_redirect_loop",
    "api_escapes",
)
_PART_FAULTS = ("part_drop", "part_5xx", "part_lost_answer", "part_bad_hash", "part_trickle",
                "part_think")
#: Links the API hands out that no client can use: a scheme that is not http(s), a broken IPv6
#: host, no scheme at all.
_LINK_FAULTS = tuple(f"{kind}_{bad}" for kind in ("ulink", "dlink")
                     for bad in ("bad_scheme", "bad_ipv6", "no_scheme"))
_COUNTED_FAULTS = _API_FAULTS + _PART_FAULTS + _LINK_FAULTS + (
    "create_lost_answer",
    "start_lost_answer",
    "download_drop",
    "download_trickle",
    "status_escapes",
)
#: Every fault name :meth:`LocalCloud.inject` knows.
FAULTS = frozenset(
    _COUNTED_FAULTS + ("part_slow", "download_slow", "abort_uploads", "expire_links", "processing_failed")
)
#: Parameters a fault may take.
FAULT_PARAMS = frozenset({"retry_after", "bps", "size", "seconds"})
#: Default pace of a trickled answer: one byte every two seconds.
TRICKLE_BPS = 0.5
#: Default size of a huge answer (``api_huge``, ``api_huge_html``).
HUGE_BYTES = 300_000_000
#: Terminal escapes and controls a hostile or broken server might send (``api_escapes``,
#: ``status_escapes``): a title change, clear screen, colour, a C1 CSI, DEL and a bidi override.
ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31m\x9b1m\x7f\u202e"


@dataclass(frozen=True)
class TokenLimits:
    """What a token may do: bytes of credit left, largest upload, most photos per project."""

    credit: int = 50_000_000_000
    limit_filesize: int = 2_000_000_000
    limit_photos: int = 1000


@dataclass
class _Answer:
    """An API answer: ``body`` None with code 400 means the Flask text; ``drop`` closes silently."""

    code: int
    body: dict[str, Any] | None = None
    drop: bool = False
