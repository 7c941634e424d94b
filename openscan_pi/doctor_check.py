"""What one check of ``openscan-pi doctor`` reports (:class:`Check`), shared by the checks in
:mod:`openscan_pi.doctor`, :mod:`openscan_pi.doctor_cloud` and :mod:`openscan_pi.doctor_versions`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]
OK: Status = "ok"
WARN: Status = "warn"
FAIL: Status = "fail"

GB = 1_000_000_000
#: The scan the disk and credit figures are measured against.
SCAN_POSITIONS = 100


@dataclass(frozen=True)
class Check:
    """One check's outcome: what was found (``detail``) and, unless it is ok, the ``fix``."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """``{"name", "status", "detail", "fix"}`` for ``--json``."""
        return dataclasses.asdict(self)


def size(n: float) -> str:
    """Bytes for people: ``1.3 GB``, ``420 MB``."""
    return f"{n / GB:,.1f} GB" if abs(n) >= GB else f"{n / 1e6:,.0f} MB"
