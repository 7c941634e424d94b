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
_API_FAULTS = ("api_drop", "api_5xx", "api_429", "api_html", "api_non_json")
_PART_FAULTS = ("part_drop", "part_5xx", "part_lost_answer", "part_bad_hash")
_COUNTED_FAULTS = _API_FAULTS + _PART_FAULTS + (
    "create_lost_answer",
    "start_lost_answer",
    "download_drop",
)
#: Every fault name :meth:`LocalCloud.inject` knows.
FAULTS = frozenset(
    _COUNTED_FAULTS + ("part_slow", "download_slow", "abort_uploads", "expire_links", "processing_failed")
)
#: Parameters a fault may take.
FAULT_PARAMS = frozenset({"retry_after", "bps"})


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
