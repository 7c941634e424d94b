"""How long a job's current state has left, from the rate seen since this daemon saw it begin."""

from __future__ import annotations

import time
from typing import Any


class Eta:
    """Estimates per job (scanning: photos; uploading: bytes); other states have none."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, float, float]] = {}  # job id -> (state, t0, value at t0)

    def estimate(self, job_id: str, job: dict[str, Any]) -> float | None:
        """Seconds left in the current state of ``job`` (its public object), or None."""
        state = job["state"]
        if state == "scanning":
            done, total = float(job["captured"] or 0), float(job["positions"] or 0)
        elif state == "uploading":
            done, total = float(job["bytes_uploaded"] or 0), float(job["bytes_total"] or 0)
        else:
            self._seen.pop(job_id, None)
            return None
        now = time.monotonic()
        seen = self._seen.get(job_id)
        if seen is None or seen[0] != state or done < seen[2]:
            self._seen[job_id] = (state, now, done)
            return None
        rate = (done - seen[2]) / (now - seen[1]) if now > seen[1] else 0.0
        return round((total - done) / rate, 1) if rate > 0 else None
