"""The core of the local cloud: :class:`LocalCloud` with its lifecycle, test helpers, state and
its persistence in ``store_dir``, and the project statuses and processing.

The API calls and the state side of upload and share links are mixed in from :mod:`.endpoints`;
the HTTP side is :mod:`.server`.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

from openscan_pi.fsutil import atomic_open, atomic_write_bytes, atomic_write_json, read_json
from openscan_pi.sim.cloud.common import _API_FAULTS, FAULT_PARAMS, FAULTS, TokenLimits
from openscan_pi.sim.cloud.endpoints import _Endpoints
from openscan_pi.sim.cloud.photogrammetry import process_archive
from openscan_pi.sim.cloud.server import _Handler, _Server

#: Receive buffer of connections accepted while ``part_slow`` is on.
_SLOW_RCVBUF = 16 * 1024


def _empty_data() -> dict[str, Any]:
    return {"version": 1, "projects": {}, "tokens": {}, "links": {}, "counters": {}}


class LocalCloud(_Endpoints):
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
        self._params: dict[str, dict[str, float]] = {}
        self._huge_sent = 0  # bytes of huge answers written to clients
        self._huge_active = 0  # huge answers being sent
        self._part_bps = 0.0
        self._rcvbuf: int | None = None  # the listening socket's receive buffer before part_slow
        self._download_bps = 0.0
        self._abort_generation = 0  # bumped by the abort_uploads fault
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
        """Bind and serve in daemon threads; ``url`` is set when this returns.

        With ``port`` 0 it binds the port an earlier server on this ``store_dir`` had, if that is
        free, so that the links that server handed out (kept in a client's journal) still work,
        as the real cloud's do; else any free port."""
        if self._server is not None:
            return self
        shutil.rmtree(self._tmp_dir, ignore_errors=True)
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        earlier = self._earlier_port() if self.port == 0 else None
        server = self._bind(earlier)
        server.cloud = self
        host, port = server.server_address[:2]
        if not isinstance(host, str):  # bound, it is getsockname()'s str; the type allows bytes too
            host = bytes(host).decode("ascii")
        self.url = f"http://{host}:{port}"
        if earlier is None or earlier == port:  # not when another server holds the earlier one
            atomic_write_bytes(self._port_path, f"{port}\n".encode())
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="local-cloud",
            daemon=True,
        )
        self._thread.start()
        if self._part_bps > 0:
            self._pace_window()
        return self

    @property
    def _port_path(self) -> Path:
        return self.store_dir / "port"

    def _earlier_port(self) -> int | None:
        try:
            port = int(self._port_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return port if 0 < port < 65536 else None

    def _bind(self, earlier: int | None) -> _Server:
        if earlier is not None:
            try:
                return _Server((self.host, earlier), _Handler)
            except OSError:  # taken by now: the earlier links no longer reach this server
                pass
        return _Server((self.host, self.port), _Handler)

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
        """Arm ``fault`` for the next ``count`` matching requests (``count`` 0 disarms it).
        Thread-safe.

        API calls (not ``/status``, not uploads): ``api_5xx`` (503) and ``api_429`` (both take
        ``retry_after`` seconds for a ``Retry-After`` header), ``api_html`` (502 HTML page),
        ``api_non_json`` (200 ``text/plain`` "OK"), ``api_drop`` (connection closed, no answer),
        ``create_lost_answer`` / ``start_lost_answer`` (the call takes effect, then no answer).
        Uploads to a valid link: ``part_5xx`` (body read, 500, link unused), ``part_drop`` (half
        the body read, connection cut, nothing stored), ``part_lost_answer`` (stored, link used,
        no answer), ``part_bad_hash`` (stored, wrong content-hash). ``part_slow`` sets a read
        rate of ``bps`` bytes/s for upload bodies (0 removes it; count ignored).
        ``abort_uploads`` cuts every upload body in flight (as when the client's network dies
        with it in a power cut): nothing stored, links unused. ``expire_links`` expires every
        link issued so far. ``processing_failed``: the next
        ``count`` projects started end ``processing failed``. ``download_drop``: model downloads
        send the full Content-Length, half the bytes, then close. ``download_slow`` sends model
        downloads at ``bps`` bytes/s (0 removes it; count ignored).

        Answers no client should wait on or believe (each for the next ``count`` requests):
        ``api_trickle`` sends the API's real answer, status line and headers included, at ``bps``
        bytes/s (default one byte every 2 s); ``part_trickle`` stores a part, then trickles its
        answer; ``part_think`` stores a part, then answers after ``seconds`` (default 2) of
        silence; ``download_trickle`` trickles a model download. ``api_huge`` answers 200 JSON of
        ``size`` bytes (default 300 MB), ``api_huge_html`` a 502 HTML page of that size, both
        generated as they are sent (``state()["huge_sent"]`` counts what the client took).
        ``api_broken_chunked`` answers a chunked body whose framing breaks, ``api_bad_gzip`` a
        body declared gzip that is not, ``api_redirect_loop`` a redirect to ``/_loop``, which
        redirects to itself. ``api_escapes`` answers a 200 HTML page and ``status_escapes`` a
        ``getProjectInfo`` status, both full of terminal escapes (:data:`ESCAPES`).
        ``ulink_bad_scheme``, ``ulink_bad_ipv6``, ``ulink_no_scheme`` make the next ``count``
        ``createProject`` answers hand out unusable upload links; ``dlink_*`` the same for the
        next ``count`` model links of ``getProjectInfo``.

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
                self._pace_window()
            elif fault == "download_slow":
                self._download_bps = max(0.0, float(params.get("bps", 0)))
            elif fault == "abort_uploads":
                self._abort_generation += 1
            elif fault == "expire_links":
                for link in self._data["links"].values():
                    link["expired"] = True
                self._save()
            elif fault == "processing_failed":
                self._fail_next += count
            else:
                self._faults[fault] = self._faults.get(fault, 0) + count if count else 0
                if "retry_after" in params:
                    self._retry_after[fault] = params["retry_after"]
                self._params[fault] = {k: float(v) for k, v in params.items() if k != "retry_after"}
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
                "huge_sent": self._huge_sent,
                "huge_active": self._huge_active,
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

    def _pace_window(self) -> None:
        """While ``part_slow`` is on, connections accepted from now on get a small receive buffer,
        so that the pace shows on the wire (the client's bytes are acknowledged as they are read,
        as on a slow link) instead of vanishing into loopback's megabytes of buffer."""
        server = self._server
        if server is None:
            return
        if self._rcvbuf is None:
            self._rcvbuf = server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        size = _SLOW_RCVBUF if self._part_bps > 0 else self._rcvbuf
        with contextlib.suppress(OSError):
            server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

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

    def _link_url(self, lid: str, bad: str | None = None) -> str:
        return self._spoil(f"{self.url}/upload/{lid}", bad)

    def _dlink(self, name: str, rec: dict[str, Any]) -> str:
        bad = next((f for f in ("bad_scheme", "bad_ipv6", "no_scheme") if self._take(f"dlink_{f}")), None)
        return self._spoil(f"{self.url}/share/{rec['id']}/{quote(name, safe='')}.zip?dl=0", bad)

    def _spoil(self, link: str, bad: str | None) -> str:
        """``link`` made unusable as ``bad`` says (``bad_scheme``, ``bad_ipv6``, ``no_scheme``)."""
        parts = urlsplit(link)
        rest = f"{parts.path}?{parts.query}" if parts.query else parts.path
        if bad == "bad_scheme":
            return f"ftp://{parts.netloc}{rest}"
        if bad == "bad_ipv6":
            return f"http://[::1:{parts.port}{rest}"
        if bad == "no_scheme":
            return f"{parts.hostname}{rest}"
        return link

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

    def _param(self, fault: str, name: str, default: float) -> float:
        """A parameter ``fault`` was armed with (``bps``, ``size``), or ``default``."""
        with self._lock:
            return self._params.get(fault, {}).get(name, default)

    def _huge_progress(self, sent: int, active: int) -> None:
        with self._lock:
            self._huge_sent += sent
            self._huge_active += active
            self._event()

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
