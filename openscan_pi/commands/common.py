"""What command handlers share."""

from __future__ import annotations

import json
from typing import Any


def emit_json(obj: Any) -> None:
    """Print ``obj`` as one line of JSON on stdout (``--json``)."""
    print(json.dumps(obj, sort_keys=True), flush=True)
