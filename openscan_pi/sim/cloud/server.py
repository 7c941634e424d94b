"""The HTTP side of the local cloud: a threading server and its request handler, which route API
calls, uploads, share links and the test hooks to :class:`~.cloud.LocalCloud` and inject the faults
that live on the wire (dropped connections, HTML error pages, slow and cut bodies)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import html
import json
import os
import re
import socket
import struct
import sys
import tempfile
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from openscan_pi.sim.cloud.common import (
    API_ENDPOINTS,
    BAD_REQUEST_TEXT,
    ESCAPES,
    FAULT_PARAMS,
    FAULTS,
    HUGE_BYTES,
    TRICKLE_BPS,
)
from openscan_pi.sim.cloud.photogrammetry import ContentHasher

if TYPE_CHECKING:
    from openscan_pi.sim.cloud.cloud import LocalCloud

_CHUNK = 1024 * 1024  # big reads: the server must not set the pace of a benchmark
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
        trickle: float | None = None,
    ) -> None:
        if trickle is not None:
            self._trickle(self._answer_bytes(code, body, ctype, headers), trickle)
            return
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

    def _send_400(self, trickle: float | None = None) -> None:
        self._send(400, BAD_REQUEST_TEXT.encode(), "text/html; charset=utf-8", trickle=trickle)

    def _answer_bytes(self, code: int, body: bytes, ctype: str,
                      headers: dict[str, str] | None = None) -> bytes:
        """A whole HTTP/1.1 answer as bytes (status line, headers, body); it closes the connection."""
        lines = [f"HTTP/1.1 {code} {self.responses.get(code, ('',))[0]}", f"Content-Type: {ctype}",
                 f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def _trickle(self, data: bytes, bps: float) -> None:
        """Send ``data`` one byte at a time at ``bps`` bytes/s: until all is sent, the client hangs
        up (the write fails) or the server stops."""
        self.close_connection = True
        interval = 1.0 / bps if bps > 0 else 0.0
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            if self.cloud._stopping.wait(interval):
                self._abort()
                return

    def _huge(self, fault: str) -> None:
        """A 200 JSON answer (``api_huge``) or a 502 HTML page (``api_huge_html``) of ``size``
        bytes, made as it is sent; what the client took is added to ``huge_sent``."""
        size = int(self.cloud._param(fault, "size", HUGE_BYTES))
        if fault == "api_huge":
            code, ctype = 200, "application/json"
            head, tail = b'{"credit": 1, "limit_filesize": 1, "limit_photos": 1, "pad": "', b'"}'
        else:
            code, ctype = 502, "text/html"
            head, tail = b"<html><head><title>502 Bad Gateway</title></head><body>", b"</body></html>"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(size))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        block = memoryview(b"x" * _CHUNK)
        sent = 0
        self.cloud._huge_progress(0, 1)
        try:
            self.wfile.write(head)
            sent += len(head)
            left = size - len(head) - len(tail)
            while left > 0 and not self.cloud._stopping.is_set():
                n = min(left, len(block))
                self.wfile.write(block[:n])
                sent += n
                left -= n
            self.wfile.write(tail)
            sent += len(tail)
        finally:
            self.cloud._huge_progress(sent, -1)

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
        elif endpoint not in API_ENDPOINTS and endpoint not in ("status", "_faults", "_state", "_loop"):
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
            elif endpoint == "_loop":  # api_redirect_loop: a redirect to itself, for ever
                self._send(302, b"", "text/plain", headers={"Location": f"{self.cloud.url}/_loop"})
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
        trickle: float | None = None
        if fault is not None:
            name, retry_after = fault
            if name != "api_trickle":
                self._api_fault(name, retry_after)
                return
            trickle = self.cloud._param(name, "bps", TRICKLE_BPS)
        if not self._authorized():
            self._send_json(
                401,
                {"error": "Unauthorized access"},
                headers={"WWW-Authenticate": 'Basic realm="Authentication Required"'},
                trickle=trickle,
            )
            return
        answer = self.cloud._api(endpoint, q)
        if answer.drop:
            self._abort()
        elif answer.code == 400 and answer.body is None:
            self._send_400(trickle)
        else:
            self._send_json(answer.code, answer.body, trickle=trickle)

    def _api_fault(self, name: str, retry_after: float | int | str | None) -> None:
        """Answer an API call with the fault ``name`` instead of the API."""
        headers = {} if retry_after is None else {"Retry-After": _header_number(retry_after)}
        if name == "api_drop":
            self._abort()
        elif name == "api_5xx":
            self._send(503, _HTML_503, "text/html", headers=headers)
        elif name == "api_429":
            self._send_json(429, {"error": "Too Many Requests"}, headers=headers)
        elif name == "api_html":
            self._send(502, _HTML_502, "text/html")
        elif name in ("api_huge", "api_huge_html"):
            self._huge(name)
        elif name == "api_broken_chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b'5\r\n{"cre\r\nzz\r\nnot a chunk\r\n')
            self.close_connection = True
        elif name == "api_bad_gzip":
            self._send(200, b"this is not gzip data", "application/json",
                       headers={"Content-Encoding": "gzip"}, close=True)
        elif name == "api_redirect_loop":
            self._send(302, b"", "text/plain", headers={"Location": f"{self.cloud.url}/_loop"})
        elif name == "api_escapes":
            page = (f"<html><head><title>{ESCAPES}Sign in{ESCAPES}</title></head><body>{ESCAPES}"
                    "</body></html>")
            self._send(200, page.encode(), "text/html; charset=utf-8")
        else:
            self._send(200, b"OK", "text/plain")

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
        if self.cloud._take("download_trickle"):
            with open(model, "rb") as fh:
                fh.seek(first)
                body = fh.read(length)
            headers = {"Accept-Ranges": "bytes"}
            self._send(200 if length == size else 206, body, "application/zip", headers=headers,
                       trickle=self.cloud._param("download_trickle", "bps", TRICKLE_BPS))
            return
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
            bps = self.cloud._download_bps
            began, sent = time.monotonic(), 0
            while left > 0:
                chunk = fh.read(min(_CHUNK if bps <= 0 else max(1, int(bps / 20)), left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
                sent += len(chunk)
                if bps > 0:  # download_slow: keep to bps bytes/s
                    time.sleep(max(0.0, began + sent / bps - time.monotonic()))
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
            trickle = cloud._param(fault, "bps", TRICKLE_BPS) if fault == "part_trickle" else None
            if fault == "part_think":  # the whole body is in; the answer takes a while
                cloud._stopping.wait(cloud._param(fault, "seconds", 2.0))
            self._send_json(200, {"content-hash": digest}, trickle=trickle)
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
        generation = cloud._abort_generation
        while received < want:
            if cloud._abort_generation != generation:
                self._abort(reset=True)
                break
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

