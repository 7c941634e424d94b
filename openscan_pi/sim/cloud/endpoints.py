"""The endpoints of the local cloud: the OpenScan Cloud API calls and the state side of the
Dropbox-like upload and share links (the HTTP side is in :mod:`.server`)."""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openscan_pi.fsutil import fsync_dir
from openscan_pi.sim.cloud.common import _PART_FAULTS, ESCAPES, TokenLimits, _Answer

_INT = re.compile(r"[+-]?\d+")
_BAD_LINKS = ("bad_scheme", "bad_ipv6", "no_scheme")


class _Endpoints:
    """The API calls, upload links and share links of :class:`~.cloud.LocalCloud`, as a mixin.

    It works on the state, locks, storage and processing helpers of the class it is mixed into;
    the attributes and methods it takes from there are declared below.
    """

    # ----------------------------------------------------------------- from the class mixed into

    processing_s: float
    link_lifetime_s: float
    max_part_bytes: int
    _lock: threading.RLock
    _clock: Callable[[], float]
    _data: dict[str, Any]
    _fail_next: int
    _uploads: int
    _receiving: dict[str, int]

    if TYPE_CHECKING:  # declared for the type checker only: the class mixed into defines them

        def _settle(self) -> None: ...
        def _status(self, rec: dict[str, Any], now: float) -> str: ...
        def _limits(self, token: str | None) -> TokenLimits | None: ...
        def _credit(self, token: str, limits: TokenLimits) -> int: ...
        def _by_pid(self, pid: str) -> tuple[str, dict[str, Any]] | None: ...
        def _plock(self, pid: str) -> threading.Lock: ...
        def _pdir(self, pid: str) -> Path: ...
        def _part_path(self, pid: str, index: int) -> Path: ...
        def _save(self) -> None: ...
        def _event(self) -> None: ...
        def _take(self, fault: str) -> bool: ...
        def _link_url(self, lid: str, bad: str | None = None) -> str: ...
        def _dlink(self, name: str, rec: dict[str, Any]) -> str: ...
        def _spawn(self, target: Callable[..., None], *args: Any) -> None: ...
        def _ensure_result(self, pid: str) -> None: ...

    # ----------------------------------------------------------------- API

    def _api(self, endpoint: str, q: dict[str, list[str]]) -> _Answer:
        self._settle()
        return getattr(self, f"_api_{endpoint}")(q)

    @staticmethod
    def _arg(q: dict[str, list[str]], key: str) -> str | None:
        values = q.get(key)
        return values[0] if values else None

    @classmethod
    def _int_arg(cls, q: dict[str, list[str]], key: str) -> int | None:
        value = cls._arg(q, key)
        return int(value) if value is not None and _INT.fullmatch(value) else None

    def _api_getQueueEstimate(self, q: dict[str, list[str]]) -> _Answer:  # noqa: N802
        with self._lock:
            now = self._clock()
            busy = sum(
                1
                for rec in self._data["projects"].values()
                if self._status(rec, now) in ("initialized", "processing started")
            )
        estimate = self.processing_s * (1 + busy)
        value: float | int = int(estimate) if estimate == int(estimate) else estimate
        return _Answer(200, {"estimated_time_seconds": value})

    def _api_getTokenInfo(self, q: dict[str, list[str]]) -> _Answer:  # noqa: N802
        token = self._arg(q, "token")
        with self._lock:
            limits = self._limits(token)
            if token is None or limits is None:
                return _Answer(400)
            return _Answer(
                200,
                {
                    "credit": self._credit(token, limits),
                    "limit_filesize": limits.limit_filesize,
                    "limit_photos": limits.limit_photos,
                },
            )

    def _api_createProject(self, q: dict[str, list[str]]) -> _Answer:  # noqa: N802
        token, name = self._arg(q, "token"), self._arg(q, "project")
        photos, parts = self._int_arg(q, "photos"), self._int_arg(q, "parts")
        filesize = self._int_arg(q, "filesize")
        with self._lock:
            limits = self._limits(token)
            if token is None or limits is None or not name or name in self._data["projects"]:
                return _Answer(400)
            if photos is None or parts is None or filesize is None:
                return _Answer(400)
            credit = self._credit(token, limits)
            if (
                photos < 1
                or photos > limits.limit_photos
                or filesize > limits.limit_filesize
                or filesize > credit
                or parts < 1
                or parts > filesize
                or math.ceil(filesize / self.max_part_bytes) > parts
            ):
                return _Answer(400)
            now = self._clock()
            pid = secrets.token_hex(8)
            while self._by_pid(pid) is not None:
                pid = secrets.token_hex(8)
            links = []
            for index in range(parts):
                lid = secrets.token_hex(16)
                self._data["links"][lid] = {
                    "project": name,
                    "pid": pid,
                    "part": index,
                    "created": now,
                    "used": False,
                    "expired": False,
                }
                links.append(lid)
            self._data["projects"][name] = {
                "id": pid,
                "token": token,
                "photos": photos,
                "filesize": filesize,
                "parts": parts,
                "links": links,
                "created": now,
                "started": None,
                "fail": False,
                "result": None,
                "parts_received": [],
            }
            left = credit - filesize
            self._data["tokens"][token] = {"credit": left}
            counters = self._data["counters"].setdefault(name, {})
            counters["token"] = token
            counters["created_count"] = counters.get("created_count", 0) + 1
            self._save()
            self._event()
            bad = next((f for f in _BAD_LINKS if self._take(f"ulink_{f}")), None)
            ulinks = [self._link_url(x, bad) for x in links]
            body = {"status": "created", "ulink": ulinks, "credit": left}
            return _Answer(200, body, drop=self._take("create_lost_answer"))

    def _own(self, q: dict[str, list[str]]) -> tuple[str, dict[str, Any] | None]:
        """(project name, the caller's project of that name or None)."""
        token, name = self._arg(q, "token"), self._arg(q, "project") or ""
        rec = self._data["projects"].get(name)
        if rec is None or not token or rec["token"] != token:
            return name, None
        return name, rec

    def _api_getProjectInfo(self, q: dict[str, list[str]]) -> _Answer:  # noqa: N802
        with self._lock:
            name, rec = self._own(q)
            if rec is None:  # also for an unknown token: no project of that token has the name
                return _Answer(401, {"error": "Unauthorized access"})
            status = self._status(rec, self._clock())
            dlink = self._dlink(name, rec) if status == "processing done" else None
            ulinks = [self._link_url(x) for x in rec["links"]]
            if self._take("status_escapes"):
                status = f"{ESCAPES}{status}{ESCAPES}"
            return _Answer(200, {"status": status, "ulink": ulinks, "dlink": dlink})

    def _api_startProject(self, q: dict[str, list[str]]) -> _Answer:  # noqa: N802
        with self._lock:
            name, rec = self._own(q)
            if rec is None:
                return _Answer(400)
            if rec["started"] is not None or len(set(rec["parts_received"])) < rec["parts"]:
                return _Answer(400)
            rec["started"] = self._clock()
            if self._fail_next > 0:
                self._fail_next -= 1
                rec["fail"] = True
            counters = self._data["counters"].setdefault(name, {})
            counters["start_count"] = counters.get("start_count", 0) + 1
            self._save()
            self._event()
            drop = self._take("start_lost_answer")
            pid = rec["id"]
        self._spawn(self._ensure_result, pid)
        return _Answer(200, {"status": "initialized"}, drop=drop)

    def _api_resetProject(self, q: dict[str, list[str]]) -> _Answer:  # noqa: N802
        with self._lock:
            rec = self._own(q)[1]
            if rec is None:
                return _Answer(400)
            pid = rec["id"]
        with self._plock(pid):
            with self._lock:
                found = self._by_pid(pid)
                if found is None:
                    return _Answer(400)
                name, rec = found
                del self._data["projects"][name]
                info = self._data["tokens"].setdefault(rec["token"], {"credit": 0})
                info["credit"] = int(info["credit"]) + rec["filesize"]
                for lid in rec["links"]:
                    self._data["links"].pop(lid, None)
                counters = self._data["counters"].setdefault(name, {})
                counters["reset_count"] = counters.get("reset_count", 0) + 1
                self._save()
                self._event()
            shutil.rmtree(self._pdir(pid), ignore_errors=True)
        return _Answer(200, {"status": "reset"})

    # ----------------------------------------------------------------- uploads and shares

    def _upload_begin(self, lid: str) -> tuple[dict[str, str] | None, str | None, str]:
        """Check a link before reading its body: (409 body or None, part fault, project id)."""
        with self._lock:
            link = self._data["links"].get(lid)
            reason = None
            if link is None:
                reason = "unknown"
            elif link["used"]:
                reason = "used"
            elif link["expired"] or self._clock() - link["created"] > self.link_lifetime_s:
                reason = "expired"
            if link is None or reason is not None:
                return {"error": "path/conflict", "reason": reason or "unknown"}, None, ""
            fault = next((f for f in _PART_FAULTS if self._take(f)), None)
            pid = link["pid"]
            self._uploads += 1
            self._receiving[pid] = self._receiving.get(pid, 0)
            self._event()
            return None, fault, pid

    def _upload_progress(self, pid: str, nbytes: int, notify: bool) -> None:
        with self._lock:
            self._receiving[pid] = self._receiving.get(pid, 0) + nbytes
            if notify:
                self._event()

    def _upload_end(self, pid: str, nbytes: int) -> None:
        with self._lock:
            self._uploads -= 1
            left = self._receiving.get(pid, 0) - nbytes
            if left > 0:
                self._receiving[pid] = left
            else:
                self._receiving.pop(pid, None)
            self._event()

    def _upload_commit(self, lid: str, tmp: str) -> bool:
        """Move a fully received body into place as its part; False when the link went away."""
        with self._lock:
            link = self._data["links"].get(lid)
            found = self._by_pid(link["pid"]) if link is not None else None
            if link is None or link["used"] or found is None:
                return False
            pid, index = link["pid"], link["part"]
            self._pdir(pid).mkdir(parents=True, exist_ok=True)
            os.replace(tmp, self._part_path(pid, index))
            fsync_dir(self._pdir(pid))
            link["used"] = True
            link["used_at"] = self._clock()
            found[1]["parts_received"] = sorted(set(found[1]["parts_received"]) | {index})
            self._save()
            self._event()
            return True

    def _share_target(self, pid: str) -> tuple[str, Path] | None:
        """(project name, model zip) when ``pid`` has a downloadable result."""
        self._settle()
        with self._lock:
            found = self._by_pid(pid)
            if found is None or self._status(found[1], self._clock()) != "processing done":
                return None
            path = self._pdir(pid) / "model.zip"
            return (found[0], path) if path.exists() else None
