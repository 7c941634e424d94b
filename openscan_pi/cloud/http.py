"""Abortable HTTP calls: the sessions whose calls a :class:`~openscan_pi.cloud.callscope.CallScope`
can end from outside (a deadline, a stop event, a stall rule).

A call runs inside a :class:`CallScope` (``with call_scope(...)``): the sessions made by
:func:`make_session` register every socket of the call with the scope (through the connection and
pool classes below, mounted by an :class:`~requests.adapters.HTTPAdapter`), and one watcher
thread shuts those sockets down when the deadline passes, the stop event is set, or a streamed
transfer stalls. The blocked call then ends at once with :class:`CallAborted`, which urllib3 does
not retry, and retry sleeps wake on the stop event. Only APIs that urllib3 1.26 (Raspberry Pi OS
bookworm) and 2.x both have are used.

Answers are read with a size cap (:func:`read_capped`) and redirects are followed here
(:func:`open_get`), so that no body the client did not ask for is read into memory.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import time
import zlib
from typing import Any, Self
from urllib.parse import urlsplit

import requests
import urllib3.exceptions as uexc
from requests import exceptions as rexc
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.connection import allowed_gai_family
from urllib3.util.retry import Retry

from openscan_pi.cloud.callscope import (
    STALLED,
    CallAborted,
    CallScope,
    current,
)
from openscan_pi.cloud.errors import (
    BadAnswer,
    BadURL,
    Cancelled,
    CloudError,
    Unreachable,
    mask,
)

log = logging.getLogger(__name__)

#: Largest API answer (JSON, error page) read; more is not an API answer.
MAX_ANSWER_BYTES = 1 << 20
#: Largest body urllib3 may read and drop before retrying a 5xx/429 (it reads it into memory);
#: an answer with a larger or unknown length is handed back instead, for a capped read.
MAX_DRAIN_BYTES = 64 * 1024
#: Redirects followed for one call.
MAX_REDIRECTS = 10

# -- the urllib3 side: sockets registered with the scope ----------------------------------------


def _open_socket(address: tuple[str, int], timeout: Any, source: Any, options: Any,
                 scope: CallScope) -> socket.socket:
    """urllib3's ``create_connection``, with the socket watched before it connects (a shutdown
    ends a connect that hangs)."""
    host, port = address
    host = host.strip("[]")
    try:
        host.encode("idna")
    except UnicodeError:
        raise uexc.LocationParseError(f"'{host}', label empty or too long") from None
    err: OSError | None = None
    for family, kind, proto, _, addr in socket.getaddrinfo(host, port, allowed_gai_family(),
                                                           socket.SOCK_STREAM):
        sock = None
        try:
            scope.check()
            sock = socket.socket(family, kind, proto)
            scope.add(sock)
            for option in options or ():
                sock.setsockopt(*option)
            if isinstance(timeout, (int, float)):
                sock.settimeout(timeout)
            if source:
                sock.bind(source)
            sock.connect(addr)
            return sock
        except OSError as exc:
            err = exc
            if sock is not None:
                sock.close()
    raise err or OSError("getaddrinfo returns an empty list")


class _WatchedConnection:
    """Mixin for urllib3's connections: every socket they open is watched by the current scope."""

    def _new_conn(self) -> Any:
        scope = current()
        if scope is None:
            return super()._new_conn()  # type: ignore[misc]
        conn: Any = self
        try:
            return _open_socket((conn._dns_host, conn.port), conn.timeout, conn.source_address,
                                conn.socket_options, scope)
        except CallAborted:
            raise
        except OSError as exc:
            if scope.reason:
                raise CallAborted(scope.reason) from None
            if isinstance(exc, socket.timeout):
                raise uexc.ConnectTimeoutError(
                    conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
                ) from exc
            raise uexc.NewConnectionError(
                conn, f"Failed to establish a new connection: {exc}") from exc

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        scope = current()
        if scope is not None:
            scope.add(self.sock)  # type: ignore[attr-defined]  # the TLS socket, for HTTPS

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        """The answer: while the server has the whole request and thinks, the stall rule waits
        (:meth:`CallScope.awaiting`); it counts again once the answer's head is in."""
        scope = current()
        if scope is not None:
            scope.awaiting(True)
        try:
            return super().getresponse(*args, **kwargs)  # type: ignore[misc]
        finally:
            if scope is not None:
                scope.awaiting(False)

    def send(self, data: Any) -> None:
        """http.client's ``send`` (the headers, then each piece of a body), bounded by the stall
        rule (:meth:`CallScope.send_bound`) instead of the connect timeout urllib3 leaves on the
        socket until the body is out; a send blocked that long is a stall. urllib3 sets the read
        timeout itself once the body is sent."""
        scope = current()
        bound = scope.send_bound(data) if scope is not None else None
        sock = getattr(self, "sock", None)
        if bound is None or sock is None:
            super().send(data)  # type: ignore[misc]
            return
        assert scope is not None
        sock.settimeout(bound)
        try:
            super().send(data)  # type: ignore[misc]
        except TimeoutError:  # socket.timeout
            scope.abort(STALLED)
            raise CallAborted(STALLED) from None


class _HTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _HTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedPool:
    """Mixin for urllib3's pools: a reused connection's socket is watched too, and an aborted
    call raises :class:`CallAborted` (not retried) instead of the error its shut socket gave."""

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        scope = current()
        if scope is None:
            return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]
        scope.check()
        scope.add(getattr(conn, "sock", None))
        try:
            return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]
        except CallAborted:
            raise
        except Exception:
            if scope.reason:
                raise CallAborted(scope.reason) from None
            raise


class _HTTPPool(_WatchedPool, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_WatchedPool, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class WatchedAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools (direct or through an HTTP proxy) are watched."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager


class WatchedRetry(Retry):
    """urllib3's Retry whose sleeps wake on the call's stop event and end at its deadline, and
    which hands back (instead of retrying) an answer whose body is too large to read and drop."""

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None
                  ) -> Self:
        if response is not None:
            length = (response.headers.get("Content-Length") or "").strip()
            if not length.isdigit() or int(length) > MAX_DRAIN_BYTES:
                raise uexc.MaxRetryError(_pool, url,
                                         uexc.ResponseError("the answer is too large to drop"))
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def sleep_for_retry(self, response: Any = None) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after:
            _sleep(retry_after)
            return True
        return False

    def _sleep_backoff(self) -> None:
        backoff = self.get_backoff_time()
        if backoff > 0:
            _sleep(backoff)


def _sleep(seconds: float) -> None:
    scope = current()
    if scope is None:
        time.sleep(seconds)
    else:
        scope.sleep(seconds)


def make_session(retry: Retry, agent: str) -> requests.Session:
    """A requests session whose calls a :func:`call_scope` can end."""
    session = requests.Session()
    adapter = WatchedAdapter(max_retries=retry, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = agent
    session.max_redirects = MAX_REDIRECTS
    return session


# -- calls --------------------------------------------------------------------------------------


def open_get(session: requests.Session, url: str, *, params: dict[str, Any] | None = None,
             auth: tuple[str, str] | None = None, headers: dict[str, str] | None = None,
             timeout: tuple[float, float]) -> requests.Response:
    """GET ``url`` with the body left unread (``stream``), following up to ``MAX_REDIRECTS``
    redirects without reading their bodies; basic auth goes only to the first host.

    Raises :class:`BadURL` for a redirect loop or a redirect that is not http(s), and the
    exceptions of requests and urllib3 (see :func:`failure`).
    """
    resp = session.get(url, params=params, auth=auth, headers=headers, timeout=timeout,
                       stream=True, allow_redirects=False)
    first = urlsplit(resp.url)  # a URL requests could use: urlsplit takes it
    for hops in range(MAX_REDIRECTS + 1):
        target = session.get_redirect_target(resp)
        if not target:
            return resp
        if hops == MAX_REDIRECTS:
            break
        where = resp.url
        resp.close()
        target = requests.compat.urljoin(where, target)
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https"):
            raise BadURL(f"{where_of(where)} redirected to {short(target)}, which is not an "
                         "http(s) link")
        same = (parts.scheme, parts.netloc) == (first.scheme, first.netloc)
        resp = session.get(target, auth=auth if same else None, headers=headers, timeout=timeout,
                           stream=True, allow_redirects=False)
    resp.close()
    raise BadURL(f"{where_of(url)} redirected more than {MAX_REDIRECTS} times (a redirect loop): "
                 "the cloud or a proxy on the way is misconfigured")


def read_capped(resp: requests.Response, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """The body of ``resp``, decoded (gzip, deflate), at most ``limit`` bytes before and after
    decoding; :class:`TooLarge` past that (the rest is never read)."""
    chunks: list[bytes] = []
    got = 0
    while chunk := resp.raw.read(min(64 * 1024, limit + 1 - got), decode_content=False):
        chunks.append(chunk)
        got += len(chunk)
        if got > limit:
            raise TooLarge(limit)
    data = b"".join(chunks)
    coding = resp.headers.get("Content-Encoding", "").strip().lower()
    if coding in ("", "identity"):
        return data
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise zlib.error(f"unsupported content encoding {coding!r}")
    inflate = zlib.decompressobj(47 if "gzip" in coding else 15)
    out = inflate.decompress(data, limit + 1)
    if len(out) > limit or inflate.unconsumed_tail:
        raise TooLarge(limit)
    return out + inflate.flush()


class TooLarge(Exception):
    """An answer over the size cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


#: What a failed call raises that :func:`failure` turns into a cloud error.
NETWORK_ERRORS = (requests.RequestException, uexc.HTTPError, http.client.HTTPException, OSError,
                  CallAborted, TooLarge, zlib.error)


def failure(exc: BaseException, where: str, scope: CallScope | None = None,
            secrets: tuple[str, ...] | list[str] = ()) -> Exception:
    """The one-line error for a call to ``where`` (a URL or link, shown as is) that failed with
    ``exc``: :class:`Cancelled` when stopped, a transient :class:`Unreachable` or
    :class:`BadAnswer` for what another try may cure, :class:`BadURL` for the rest. ``secrets``
    (and any ``token=`` in a URL) are masked."""
    if scope is not None:
        with contextlib.suppress(CallAborted):
            scope.check()
        if scope.reason:
            return scope.error(where)
    if isinstance(exc, CloudError | Cancelled):
        return exc
    detail = mask(reason(exc), secrets)
    if isinstance(exc, TooLarge):
        return BadAnswer(f"the answer from {where} is larger than {exc.limit} bytes: not an "
                         "answer of the cloud's API")
    if isinstance(exc, rexc.TooManyRedirects):
        return BadURL(f"{where} redirected too many times (a redirect loop): the cloud or a "
                      "proxy on the way is misconfigured")
    if isinstance(exc, rexc.InvalidSchema | rexc.MissingSchema | rexc.InvalidURL
                  | rexc.URLRequired | uexc.LocationValueError | uexc.ProxySchemeUnknown):
        return BadURL(f"cannot use the link {where}: {detail}")
    if isinstance(exc, rexc.InvalidHeader | rexc.InvalidJSONError | rexc.StreamConsumedError):
        return CloudError(f"cannot send the request to {where}: {detail}")
    if isinstance(exc, rexc.ContentDecodingError | uexc.DecodeError | zlib.error):
        return BadAnswer(f"the answer from {where} could not be decoded ({detail})")
    if isinstance(exc, rexc.ChunkedEncodingError | uexc.ProtocolError | http.client.IncompleteRead):
        return Unreachable(f"the connection to {where} dropped during the answer ({detail})")
    if isinstance(exc, http.client.HTTPException) and not isinstance(exc, OSError):
        return BadAnswer(f"unexpected answer from {where}: not HTTP ({detail})")
    return Unreachable(f"cannot reach {where}: {detail}")


def reason(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, in a few words, on one line."""
    cause: BaseException = exc
    while cause.args and isinstance(cause.args[0], BaseException):
        cause = cause.args[0]
    nested = getattr(cause, "reason", None)
    if isinstance(nested, BaseException):
        cause = nested
    text = str(cause) or type(cause).__name__
    if isinstance(cause, uexc.NewConnectionError | uexc.ProtocolError):
        text = text.rpartition(": ")[2] if ": " in text else text
    elif isinstance(cause, socket.timeout | rexc.Timeout | uexc.TimeoutError):
        return "no answer within the timeout"
    return short(text, 160)


def short(text: str, limit: int = 80) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def where_of(url: str) -> str:
    """A URL shown without its query (which may hold the token)."""
    return short(url.partition("?")[0], 120)
