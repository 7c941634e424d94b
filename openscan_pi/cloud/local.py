"""A local OpenScan Cloud: a real HTTP server on loopback with the API, upload and share links.

It behaves like the OpenScan Cloud API (``/createProject``, ``/startProject``, ...) plus the Dropbox
upload links it hands out and the Dropbox share link of the result, and it can inject the faults a
real network and a real server produce (see :meth:`LocalCloud.inject`). Its state lives in
``store_dir`` so that a later :class:`LocalCloud` on the same folder (in another process) carries on
where the earlier one stopped. Run it alone with ``python -m openscan_pi.cloud.local``.

Besides the API, ``GET /_faults?name=count&...`` (optionally ``&retry_after=S`` or ``&bps=N``) arms
faults like :meth:`LocalCloud.inject` and ``GET /_state`` answers :meth:`LocalCloud.state`, for
tests and benchmarks that run the server as a separate process. Neither needs auth.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import html
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from openscan_pi.cloud.localmodel import ContentHasher, process_archive
from openscan_pi.fsutil import atomic_open, atomic_write_json, fsync_dir, read_json

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
FAULTS = frozenset(_COUNTED_FAULTS + ("part_slow", "expire_links", "processing_failed"))
#: Parameters a fault may take.
FAULT_PARAMS = frozenset({"retry_after", "bps"})

_CHUNK = 64 * 1024
_NOTIFY_EVERY = 1024 * 1024
_LINGER_CAP = 256 * 1024 * 1024
_HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    b"</h1></center><hr><center>nginx</center></body></html>\n"
)
_HTML_503 = (
    b"<html><head><title>503 Service Unavailable</title></head><body><center><h1>503 Service "
    b"Unavailable</h1></center></body></html>\n"
)
_INT = re.compile(r"[+-]?\d+")


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


def _header_number(value: float | int | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a ``Range: bytes=`` request; the whole file when absent or odd;
    None when it cannot be satisfied (416)."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if match is None or not (match.group(1) or match.group(2)):
        return (0, size - 1) if size else None
    if match.group(1):
        first = int(match.group(1))
        last = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    else:
        first, last = max(0, size - int(match.group(2))), size - 1
    return (first, last) if first <= last else None


def _empty_data() -> dict[str, Any]:
    return {"version": 1, "projects": {}, "tokens": {}, "links": {}, "counters": {}}


class LocalCloud:
    """The OpenScan Cloud API plus Dropbox-like upload and share links, served on loopback.

    ``tokens`` None accepts any non-empty token with :class:`TokenLimits` defaults (credit tracked
    per token). Times are absolute ``clock()`` values, so a fake clock drives link expiry and the
    project statuses.
    """

    def __init__(
        self,
        store_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        processing_s: float = 6.0,
        link_lifetime_s: float = 4 * 3600,
        result_ttl_s: float = 7 * 86400,
        max_part_bytes: int = 200_000_000,
        tokens: dict[str, TokenLimits] | None = None,
        user: str = "openscan",
        password: str = "free",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="openscan-local-cloud-")
            store_dir = self._tmpdir.name
        self.store_dir = Path(store_dir)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port
        self.processing_s = float(processing_s)
        self.link_lifetime_s = float(link_lifetime_s)
        self.result_ttl_s = float(result_ttl_s)
        self.max_part_bytes = int(max_part_bytes)
        self._tokens = dict(tokens) if tokens is not None else None
        self._credentials = (user, password)
        self._clock = clock
        self.url = ""
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._gen = 0
        self._plocks: dict[str, threading.Lock] = {}
        self._faults: dict[str, int] = {}
        self._retry_after: dict[str, float | int | str] = {}
        self._part_bps = 0.0
        self._fail_next = 0
        self._requests: dict[str, int] = {}
        self._receiving: dict[str, int] = {}
        self._uploads = 0
        self._conns: set[socket.socket] = set()
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        path = self._state_path
        self._data: dict[str, Any] = read_json(path) if path.exists() else _empty_data()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> LocalCloud:
        """Bind and serve in daemon threads; ``url`` is set when this returns."""
        if self._server is not None:
            return self
        shutil.rmtree(self._tmp_dir, ignore_errors=True)
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.cloud = self
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="local-cloud",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, wait for handlers; remove a temporary store."""
        server, self._server = self._server, None
        self._stopping.set()
        if server is not None:
            server.shutdown()
            server.server_close()
            with self._lock:
                conns = list(self._conns)
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            deadline = time.monotonic() + 5.0
            with self._cond:
                while self._conns and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout=30.0)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- test helpers

    def inject(self, fault: str, count: int = 1, **params: float | int | str) -> None:
        """Arm ``fault`` for the next ``count`` matching requests. Thread-safe.

        API calls (not ``/status``, not uploads): ``api_5xx`` (503) and ``api_429`` (both take
        ``retry_after`` seconds for a ``Retry-After`` header), ``api_html`` (502 HTML page),
        ``api_non_json`` (200 ``text/plain`` "OK"), ``api_drop`` (connection closed, no answer),
        ``create_lost_answer`` / ``start_lost_answer`` (the call takes effect, then no answer).
        Uploads to a valid link: ``part_5xx`` (body read, 500, link unused), ``part_drop`` (half
        the body read, connection cut, nothing stored), ``part_lost_answer`` (stored, link used,
        no answer), ``part_bad_hash`` (stored, wrong content-hash). ``part_slow`` sets a read
        rate of ``bps`` bytes/s for upload bodies (0 removes it; count ignored).
        ``expire_links`` expires every link issued so far. ``processing_failed``: the next
        ``count`` projects started end ``processing failed``. ``download_drop``: model downloads
        send the full Content-Length, half the bytes, then close.

        Raises ValueError for an unknown fault or parameter, or a negative count.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
        unknown = set(params) - FAULT_PARAMS
        if unknown:
            raise ValueError(f"unknown fault parameter(s): {', '.join(sorted(unknown))}")
        if count < 0:
            raise ValueError("fault count must be >= 0")
        with self._lock:
            if fault == "part_slow":
                self._part_bps = max(0.0, float(params.get("bps", 0)))
            elif fault == "expire_links":
                for link in self._data["links"].values():
                    link["expired"] = True
                self._save()
            elif fault == "processing_failed":
                self._fail_next += count
            else:
                self._faults[fault] = self._faults.get(fault, 0) + count
                if "retry_after" in params:
                    self._retry_after[fault] = params["retry_after"]
            self._event()

    def state(self) -> dict[str, Any]:
        """A JSON-able snapshot: projects, token credits, request counts, uploads in flight."""
        self._settle()
        with self._lock:
            now = self._clock()
            projects: dict[str, Any] = {}
            for name, counters in self._data["counters"].items():
                projects[name] = {
                    "status": "reset",
                    "token": counters.get("token", ""),
                    "photos": 0,
                    "filesize": 0,
                    "parts": 0,
                    "parts_received": [],
                    "bytes_receiving": 0,
                    "created_count": counters.get("created_count", 0),
                    "reset_count": counters.get("reset_count", 0),
                    "start_count": counters.get("start_count", 0),
                }
            for name, rec in self._data["projects"].items():
                projects.setdefault(name, {"created_count": 0, "reset_count": 0, "start_count": 0})
                projects[name].update(
                    status=self._status(rec, now),
                    token=rec["token"],
                    photos=rec["photos"],
                    filesize=rec["filesize"],
                    parts=rec["parts"],
                    parts_received=sorted(rec["parts_received"]),
                    bytes_receiving=self._receiving.get(rec["id"], 0),
                )
            tokens: dict[str, Any] = {}
            for token, limits in (self._tokens or {}).items():
                tokens[token] = {"credit": limits.credit}
            for token, info in self._data["tokens"].items():
                tokens[token] = {"credit": info["credit"]}
            return {
                "url": self.url,
                "projects": projects,
                "tokens": tokens,
                "requests": dict(self._requests),
                "uploads_in_progress": self._uploads,
            }

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """Block until ``predicate(state())`` holds and return that state; TimeoutError if not.

        Woken on every request start, upload progress (at least every MiB) and upload end. A
        predicate raising KeyError (a project not there yet) counts as false.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                gen = self._gen
            snapshot = self.state()
            try:
                if predicate(snapshot):
                    return snapshot
            except KeyError:
                pass
            with self._cond:
                while self._gen == gen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"local cloud state did not match within {timeout} s")
                    self._cond.wait(remaining)

    def archive_path(self, project: str) -> Path:
        """The parts of ``project`` received so far joined in order (KeyError if unknown)."""
        with self._lock:
            rec = self._data["projects"].get(project)
            if rec is None:
                raise KeyError(project)
            pid = rec["id"]
        with self._plock(pid):
            return self._join(pid)

    def rebase_link(self, url: str) -> str:
        """Point a link issued by an earlier server on this ``store_dir`` at this server."""
        link = urlsplit(url)
        base = urlsplit(self.url)
        return urlunsplit((base.scheme, base.netloc, link.path, link.query, link.fragment))

    # ----------------------------------------------------------------- storage

    @property
    def _state_path(self) -> Path:
        return self.store_dir / "state.json"

    @property
    def _tmp_dir(self) -> Path:
        return self.store_dir / "tmp"

    def _pdir(self, pid: str) -> Path:
        return self.store_dir / "projects" / pid

    def _part_path(self, pid: str, index: int) -> Path:
        return self._pdir(pid) / f"part-{index:05d}"

    def _save(self) -> None:
        atomic_write_json(self._state_path, self._data)

    def _event(self) -> None:
        """Wake :meth:`wait_for` callers; the lock must be held."""
        self._gen += 1
        self._cond.notify_all()

    def _plock(self, pid: str) -> threading.Lock:
        with self._lock:
            return self._plocks.setdefault(pid, threading.Lock())

    def _by_pid(self, pid: str) -> tuple[str, dict[str, Any]] | None:
        for name, rec in self._data["projects"].items():
            if rec["id"] == pid:
                return name, rec
        return None

    def _link_url(self, lid: str) -> str:
        return f"{self.url}/upload/{lid}"

    def _dlink(self, name: str, rec: dict[str, Any]) -> str:
        return f"{self.url}/share/{rec['id']}/{quote(name, safe='')}.zip?dl=0"

    def _limits(self, token: str | None) -> TokenLimits | None:
        if not token:
            return None
        if self._tokens is None:
            return TokenLimits()
        return self._tokens.get(token)

    def _credit(self, token: str, limits: TokenLimits) -> int:
        return int(self._data["tokens"].get(token, {}).get("credit", limits.credit))

    def _take(self, fault: str) -> bool:
        with self._lock:
            left = self._faults.get(fault, 0)
            if left <= 0:
                return False
            self._faults[fault] = left - 1
            return True

    def _take_api_fault(self) -> tuple[str, float | int | str | None] | None:
        with self._lock:
            for fault in _API_FAULTS:
                if self._take(fault):
                    return fault, self._retry_after.get(fault)
        return None

    def _count(self, endpoint: str) -> None:
        with self._lock:
            self._requests[endpoint] = self._requests.get(endpoint, 0) + 1
            self._event()

    # ----------------------------------------------------------------- processing

    def _status(self, rec: dict[str, Any], now: float) -> str:
        started = rec["started"]
        if started is None:
            return "created"
        if now < started + 0.25 * self.processing_s:
            return "initialized"
        if now < started + self.processing_s or rec["result"] is None:
            return "processing started"
        if rec["result"] != "done":
            return "processing failed"
        if now < started + self.processing_s + self.result_ttl_s:
            return "processing done"
        return "expired"

    def _settle(self) -> None:
        """Finish the processing of every project whose result is due; never call with the lock."""
        with self._lock:
            now = self._clock()
            due = [
                rec["id"]
                for rec in self._data["projects"].values()
                if rec["started"] is not None
                and rec["result"] is None
                and now >= rec["started"] + self.processing_s
            ]
        for pid in due:
            self._ensure_result(pid)

    def _ensure_result(self, pid: str) -> None:
        with self._plock(pid):
            with self._lock:
                found = self._by_pid(pid)
                if found is None or found[1]["started"] is None or found[1]["result"] is not None:
                    return
                fail, filesize = found[1]["fail"], found[1]["filesize"]
            ok = False
            if not fail:
                try:
                    ok = process_archive(self._join(pid), filesize, self._pdir(pid) / "model.zip")
                except Exception:
                    if self._stopping.is_set():
                        return
                    traceback.print_exc(file=sys.stderr)
            with self._lock:
                found = self._by_pid(pid)
                if found is not None:
                    found[1]["result"] = "done" if ok else "failed"
                    self._save()
                    self._event()

    def _join(self, pid: str) -> Path:
        """Join the parts of ``pid`` (the caller holds its project lock)."""
        with self._lock:
            found = self._by_pid(pid)
            if found is None:
                raise KeyError(pid)
            received = sorted(found[1]["parts_received"])
            started = found[1]["started"] is not None
        pdir = self._pdir(pid)
        archive = pdir / "archive.zip"
        if started and archive.exists():
            return archive
        target = archive if started else pdir / "preview.zip"
        with atomic_open(target, "wb") as out:
            for index in received:
                with open(self._part_path(pid, index), "rb") as part:
                    shutil.copyfileobj(part, out, 1024 * 1024)
        if started:  # parts are frozen once started: keep one copy only
            for index in received:
                self._part_path(pid, index).unlink(missing_ok=True)
            (pdir / "preview.zip").unlink(missing_ok=True)
        return target

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        worker = threading.Thread(target=target, args=args, daemon=True, name="local-cloud-work")
        with self._lock:
            self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

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
            ulinks = [self._link_url(x) for x in links]
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    cloud: LocalCloud

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) or self.cloud._stopping.is_set():
            return
        traceback.print_exc(file=sys.stderr)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "OpenScanLocalCloud/1.0"
    timeout = 120
    server: _Server

    # ------------------------------------------------------------- plumbing

    @property
    def cloud(self) -> LocalCloud:
        return self.server.cloud

    def setup(self) -> None:
        super().setup()
        with self.cloud._lock:
            self.cloud._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.cloud._lock:
                self.cloud._conns.discard(self.connection)
                self.cloud._event()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the tests and the CLI read state through ``/_state``."""

    def _send(
        self,
        code: int,
        body: bytes,
        ctype: str,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code: int, obj: Any, **kwargs: Any) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json", **kwargs)

    def _send_400(self) -> None:
        self._send(400, BAD_REQUEST_TEXT.encode(), "text/html; charset=utf-8")

    def _abort(self, reset: bool = False) -> None:
        """Close the connection with no (further) answer; ``reset`` sends a TCP RST."""
        self.close_connection = True
        if reset:
            with contextlib.suppress(OSError):
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _refuse(self, code: int, obj: Any) -> None:
        """Answer before reading the body, then discard what the client still sends, and close."""
        self._send_json(code, obj, close=True)
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(2.0)
            drained = 0
            while drained < _LINGER_CAP:
                data = self.connection.recv(_CHUNK)
                if not data:
                    break
                drained += len(data)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (user, password) == self.cloud._credentials

    def _drain_get_body(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and 0 < int(length) <= 1024 * 1024:
            self.rfile.read(int(length))
        elif (length and length != "0") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    # ------------------------------------------------------------- routing

    def do_GET(self) -> None:  # noqa: N802
        """Route a GET: API calls, ``/status``, share links and the test hooks."""
        split = urlsplit(self.path)
        path = split.path
        q = parse_qs(split.query, keep_blank_values=True)
        self._drain_get_body()
        endpoint = path.strip("/")
        if path.startswith("/share/"):
            endpoint = "share"
        elif endpoint not in API_ENDPOINTS and endpoint not in ("status", "_faults", "_state"):
            endpoint = "other"
        if endpoint != "_state":
            self.cloud._count(endpoint)
        try:
            if endpoint == "status":
                self._send_json(200, {"status": "online"})
            elif endpoint == "_state":
                self._send_json(200, self.cloud.state())
            elif endpoint == "_faults":
                self._faults_hook(q)
            elif endpoint == "share":
                self._share(path, q)
            elif endpoint in API_ENDPOINTS:
                self._api(endpoint, q)
            else:
                self._send(404, b"<html><body>Not Found</body></html>", "text/html")
        except OSError:
            raise
        except Exception:
            traceback.print_exc(file=sys.stderr)
            with contextlib.suppress(OSError):
                self._send_json(500, {"error": "internal error"}, close=True)

    def do_POST(self) -> None:  # noqa: N802
        """Route a POST: only upload links take one."""
        path = urlsplit(self.path).path
        try:
            if path.startswith("/upload/"):
                self.cloud._count("upload")
                self._upload(path[len("/upload/") :])
            else:
                self.cloud._count("other")
                self._refuse(405, {"error": "method not allowed"})
        except OSError:
            raise
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self._abort()

    def _faults_hook(self, q: dict[str, list[str]]) -> None:
        params: dict[str, float | int | str] = {}
        faults: list[tuple[str, int]] = []
        try:
            for key, values in q.items():
                value = values[0] if values else ""
                if key in FAULT_PARAMS:
                    params[key] = float(value)
                elif key in FAULTS:
                    faults.append((key, int(value) if value else 1))
                else:
                    raise ValueError(key)
            for fault, count in faults:
                self.cloud.inject(fault, count, **params)
        except ValueError:
            self._send_400()
            return
        self._send_json(200, {"injected": dict(faults)})

    def _api(self, endpoint: str, q: dict[str, list[str]]) -> None:
        fault = self.cloud._take_api_fault()
        if fault is not None:
            name, retry_after = fault
            headers = {} if retry_after is None else {"Retry-After": _header_number(retry_after)}
            if name == "api_drop":
                self._abort()
            elif name == "api_5xx":
                self._send(503, _HTML_503, "text/html", headers=headers)
            elif name == "api_429":
                self._send_json(429, {"error": "Too Many Requests"}, headers=headers)
            elif name == "api_html":
                self._send(502, _HTML_502, "text/html")
            else:
                self._send(200, b"OK", "text/plain")
            return
        if not self._authorized():
            self._send_json(
                401,
                {"error": "Unauthorized access"},
                headers={"WWW-Authenticate": 'Basic realm="Authentication Required"'},
            )
            return
        answer = self.cloud._api(endpoint, q)
        if answer.drop:
            self._abort()
        elif answer.code == 400 and answer.body is None:
            self._send_400()
        else:
            self._send_json(answer.code, answer.body)

    def _share(self, path: str, q: dict[str, list[str]]) -> None:
        match = re.fullmatch(r"/share/([0-9a-f]+)/[^/]+\.zip", path)
        target = self.cloud._share_target(match.group(1)) if match else None
        if target is None:
            self._send(404, b"<html><body>This link is gone.</body></html>", "text/html")
            return
        name, model = target
        if q.get("dl", ["0"])[0] != "1":
            title = html.escape(f"{name}.zip - Dropbox")
            page = (
                f"<!DOCTYPE html><html><head><title>{title}</title></head><body>"
                f'<h1>{title}</h1><a href="?dl=1">Download</a></body></html>'
            )
            self._send(200, page.encode(), "text/html; charset=utf-8")
            return
        size = model.stat().st_size
        span = _byte_range(self.headers.get("Range"), size)
        if span is None:
            self._send(416, b"", "text/plain", headers={"Content-Range": f"bytes */{size}"})
            return
        first, last = span
        length = last - first + 1
        drop = self.cloud._take("download_drop")
        self.send_response(200 if length == size else 206)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if length != size:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Disposition", f'attachment; filename="{quote(name)}.zip"')
        self.end_headers()
        with open(model, "rb") as fh:
            fh.seek(first)
            left = length // 2 if drop else length
            while left > 0:
                chunk = fh.read(min(_CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
            if drop:
                self._abort()

    # ------------------------------------------------------------- uploads

    def _upload(self, lid: str) -> None:
        cloud = self.cloud
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or not (length_text or "").isdigit():
            self._refuse(411, {"error": "length required"})
            return
        length = int(length_text or "0")
        if length > cloud.max_part_bytes:
            self._refuse(413, {"error": "payload too large", "limit": cloud.max_part_bytes})
            return
        conflict, fault, pid = cloud._upload_begin(lid)
        if conflict is not None:
            self._refuse(409, conflict)
            return
        received = 0
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(prefix="upload-", dir=cloud._tmp_dir)
            hasher = ContentHasher()
            want = length // 2 if fault == "part_drop" else length
            with os.fdopen(fd, "wb") as out:
                received = self._read_body(out, hasher, want, pid)
                if received < want:  # the client went away: nothing stored, link unused
                    self.close_connection = True
                    return
                if fault == "part_drop":
                    self._abort(reset=True)
                    return
                if fault == "part_5xx":
                    self._send(500, b"Internal Server Error", "text/plain")
                    return
                out.flush()
                os.fsync(out.fileno())
            if not cloud._upload_commit(lid, tmp):
                self._send_json(409, {"error": "path/conflict", "reason": "used"})
                return
            tmp = None
            if fault == "part_lost_answer":
                self._abort()
                return
            digest = hasher.hexdigest()
            if fault == "part_bad_hash":
                digest = hashlib.sha256(b"bad" + digest.encode()).hexdigest()
            self._send_json(200, {"content-hash": digest})
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            cloud._upload_end(pid, received)

    def _read_body(self, out: Any, hasher: ContentHasher, want: int, pid: str) -> int:
        """Copy ``want`` body bytes to ``out`` in small chunks, honouring ``part_slow``."""
        cloud = self.cloud
        received = 0
        pace_bps = -1.0
        pace_start = time.monotonic()
        pace_bytes = 0
        while received < want:
            bps = cloud._part_bps
            if bps != pace_bps:
                pace_bps, pace_start, pace_bytes = bps, time.monotonic(), 0
            size = min(_CHUNK, want - received)
            if bps > 0:
                size = min(size, max(1, int(bps / 20)))
            try:
                chunk = self.rfile.read1(size)
            except OSError:
                break
            if not chunk:
                break
            out.write(chunk)
            hasher.update(chunk)
            crossed = (received + len(chunk)) // _NOTIFY_EVERY != received // _NOTIFY_EVERY
            cloud._upload_progress(pid, len(chunk), notify=received == 0 or crossed or bps > 0)
            received += len(chunk)
            if bps > 0:
                pace_bytes += len(chunk)
                delay = pace_bytes / bps - (time.monotonic() - pace_start)
                if delay > 0 and cloud._stopping.wait(min(delay, 0.25)):
                    break
        return received


def main(argv: list[str] | None = None) -> int:
    """Serve a local cloud until SIGTERM/SIGINT; print ``listening on URL`` once it is up."""
    parser = argparse.ArgumentParser(
        prog="python -m openscan_pi.cloud.local",
        description="Serve a local OpenScan Cloud (API, upload and share links) on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--store", default=None, help="state folder (default: a temporary one)")
    parser.add_argument("--processing-s", type=float, default=6.0)
    parser.add_argument("--max-part-bytes", type=int, default=200_000_000)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        cloud = LocalCloud(
            args.store,
            host=args.host,
            port=args.port,
            processing_s=args.processing_s,
            max_part_bytes=args.max_part_bytes,
        )
        with cloud:
            print(f"listening on {cloud.url}", flush=True)
            while not stop.wait(0.2):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
