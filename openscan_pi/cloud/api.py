"""The OpenScan Cloud REST API: every endpoint, with timeouts, retries and errors a user can act on.

Every call is a GET with HTTP basic auth and the token in the query. Idempotent calls are retried by
urllib3 on connection errors, timeouts, 429 and 5xx, with exponential backoff and jitter, honouring
``Retry-After``; never on 400/401. ``createProject`` and ``startProject`` are not retried blindly on
a lost answer (the server may have acted): the transfer code checks ``getProjectInfo`` instead.

Each call ends within ``cloud.call_timeout_s``, retries and their waits included, and at once when
:attr:`CloudAPI.stop` is set (:mod:`openscan_pi.cloud.http`); an upload part ends when it stalls.
Answers are read up to 1 MiB. Every failure is a :class:`CloudError` (or :class:`Cancelled`), and
the cloud's text in statuses and messages is shown as text (:func:`printable`).

Example::

    api = CloudAPI(cfg.cloud)
    info = api.token_info()          # TokenInfo(credit=..., limit_filesize=..., limit_photos=...)
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import requests

from openscan_pi import __version__
from openscan_pi.cloud.callscope import call_scope
from openscan_pi.cloud.contenthash import ContentHasher
from openscan_pi.cloud.errors import (
    AuthRefused,
    BadAnswer,
    CloudError,
    LinkGone,
    NoSuchProject,
    Refused,
    ServerError,
    Unreachable,
    mask,
    printable,
)
from openscan_pi.cloud.http import (
    NETWORK_ERRORS,
    WatchedRetry,
    failure,
    make_session,
    open_get,
    read_capped,
)
from openscan_pi.schema import CloudConfig

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER_S = 300.0
#: Bytes handed to the socket at a time while a part is sent (the stall rule counts them).
SEND_SLICE = 64 * 1024


class JitterRetry(WatchedRetry):
    """urllib3 Retry with up to 50 % random jitter on the backoff and a cap on Retry-After."""

    def get_backoff_time(self) -> float:
        base = super().get_backoff_time()
        return base * (1.0 + random.random() * 0.5) if base else 0.0

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), MAX_RETRY_AFTER_S)


@dataclass(frozen=True)
class TokenInfo:
    """``getTokenInfo``: credit left and limits, in bytes and photos."""

    credit: int
    limit_filesize: int
    limit_photos: int


@dataclass(frozen=True)
class ProjectInfo:
    """``getProjectInfo``: status, upload links and the model link once there is one."""

    status: str
    ulinks: list[str]
    dlink: str | None


@dataclass(frozen=True)
class CreatedProject:
    """``createProject``: the upload links (one per part) and the credit left."""

    ulinks: list[str]
    credit: int | None


def snippet(text: str, limit: int = 80) -> str:
    """The first ``limit`` characters of ``text`` with white space collapsed."""
    return " ".join(text.split())[:limit]


class _CountedBody:
    """A request body with a known length, read from an iterator of chunks.

    requests sends it with an explicit Content-Length (``__len__``), never chunked. A reader
    thread pulls the chunks (file reads, lazily computed CRCs) and computes the Dropbox content
    hash a few chunks ahead of the socket, so that neither waits on the other; hashlib and
    zlib release the GIL on large buffers.
    """

    def __init__(self, chunks: Iterable[bytes], length: int,
                 progress: Callable[[int], None] | None, depth: int = 4,
                 moved: Callable[[int], None] | None = None) -> None:
        self._chunks = chunks
        self._length = length
        self._progress = progress
        self._moved = moved
        self._depth = depth
        self.hasher = ContentHasher()
        self.sent = 0

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        pipe: queue.Queue[bytes | BaseException | None] = queue.Queue(self._depth)
        stop = threading.Event()

        def put(item: bytes | BaseException | None) -> bool:
            while not stop.is_set():
                try:
                    pipe.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for chunk in self._chunks:
                    self.hasher.update(chunk)
                    if not put(chunk):
                        return
                put(None)
            except BaseException as exc:  # handed to the sending thread, raised there
                put(exc)

        reader = threading.Thread(target=produce, name="upload-reader", daemon=True)
        reader.start()
        try:
            while (item := pipe.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                view = memoryview(item)
                for start in range(0, len(view), SEND_SLICE):  # progress in small steps
                    piece = view[start:start + SEND_SLICE]
                    self.sent += len(piece)
                    yield piece  # type: ignore[misc]  # a memoryview: sent as it is, not copied
                    if self._moved:
                        self._moved(len(piece))
                    if self._progress:
                        self._progress(len(piece))
        finally:
            stop.set()
            reader.join()


class CloudAPI:
    """Client of the OpenScan Cloud API described in ``openscan-cloud-api.md``."""

    def __init__(self, cfg: CloudConfig, *, base_url: str | None = None,
                 stop: threading.Event | None = None) -> None:
        if not (base_url or cfg.url).startswith(("http://", "https://")):  # e.g. an unresolved 'local'
            raise ValueError(f"cloud.url {cfg.url!r} is not an http(s) URL")
        self.cfg = cfg
        #: Set from another thread: the call in flight ends at once (:class:`Cancelled`) and no
        #: new one starts.
        self.stop = stop
        self.base_url = (base_url or cfg.url).rstrip("/")
        self.timeout = (cfg.connect_timeout_s, cfg.read_timeout_s)
        self._secrets = [s for s in (cfg.token, cfg.password) if s]
        agent = f"openscan-pi/{__version__}"
        self.session = self._session(JitterRetry(
            total=cfg.retries, connect=cfg.retries, read=cfg.retries, status=cfg.retries,
            other=0, backoff_factor=cfg.backoff_s, status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}), respect_retry_after_header=True,
            raise_on_status=False), agent)
        # createProject/startProject: a lost answer is not retried blindly (the server may have
        # acted on it); a refused connection is, since nothing was sent.
        self._once = self._session(JitterRetry(
            total=cfg.retries, connect=cfg.retries, read=0, status=0, other=0,
            backoff_factor=cfg.backoff_s, raise_on_status=False), agent)
        # Upload and model links: one attempt per call; the transfer re-sends a failed part from
        # its start, the download retries on its own.
        self.link_session = self._session(WatchedRetry(total=0, raise_on_status=False), agent)

    @staticmethod
    def _session(retry: WatchedRetry, agent: str) -> requests.Session:
        return make_session(retry, agent)

    @property
    def stall(self) -> tuple[int, float]:
        """The stall rule of streamed transfers: (at least these bytes, in this many seconds)."""
        return self.cfg.stall_min_bytes, self.cfg.stall_window_s

    def close(self) -> None:
        """Close the HTTP connections."""
        for s in (self.session, self._once, self.link_session):
            s.close()

    def mask(self, text: str) -> str:
        """``text`` with the token and password replaced by ``***``."""
        return mask(text, self._secrets)

    # -- endpoints -------------------------------------------------------------------------

    def server_status(self) -> str:
        """``/status``: ``online`` when the API is up."""
        return printable(str(self._get("status", {}, auth=False).get("status", "unknown")))

    def queue_estimate(self) -> float:
        """``/getQueueEstimate``: seconds the cloud expects to need for a new project."""
        data = self._get("getQueueEstimate", {})
        return float(_require(data, "estimated_time_seconds", (int, float), self._url("getQueueEstimate")))

    def token_info(self, *, once: bool = False, timeout_s: float | None = None) -> TokenInfo:
        """``getTokenInfo``: credit and limits of the configured token (``once``: a single
        attempt, for a quick check; ``timeout_s``: a shorter bound than ``cloud.call_timeout_s``)."""
        if not self.cfg.token:
            raise CloudError("no token: set cloud.token in the config or $OPENSCAN_PI_TOKEN "
                             "(a private token comes from cloud@openscan.eu)")
        url = self._url("getTokenInfo")
        data = self._get("getTokenInfo", {"token": self.cfg.token}, once=once, timeout_s=timeout_s,
                         refused=f"the server refused the token {self._token_hint()} "
                                 "(unknown token?): check cloud.token or $OPENSCAN_PI_TOKEN")
        return TokenInfo(credit=_require(data, "credit", int, url),
                         limit_filesize=_require(data, "limit_filesize", int, url),
                         limit_photos=_require(data, "limit_photos", int, url))

    def create_project(self, project: str, *, photos: int, parts: int, filesize: int) -> CreatedProject:
        """``createProject``: one upload link per part. Not retried on a lost answer."""
        url = self._url("createProject")
        data = self._get("createProject", {
            "token": self.cfg.token, "project": project, "photos": photos, "parts": parts,
            "filesize": filesize,
        }, once=True, refused=f"the server refused project {project} (name taken, token unknown "
                              "or over its limits)")
        links = _require(data, "ulink", list, url)
        if len(links) != parts or not all(isinstance(x, str) for x in links):
            raise BadAnswer(f"unexpected answer from {url}: {len(links)} upload links for {parts} parts")
        credit = data.get("credit")
        return CreatedProject(ulinks=links, credit=credit if isinstance(credit, int) else None)

    def start_project(self, project: str) -> str:
        """``startProject``: start processing the uploaded set. Not retried on a lost answer."""
        data = self._get("startProject", {"token": self.cfg.token, "project": project}, once=True,
                         refused=f"the server refused to start project {project} "
                                 "(not every part arrived, or started already)")
        return printable(str(data.get("status", "initialized")))

    def project_info(self, project: str) -> ProjectInfo:
        """``getProjectInfo``; raises :class:`NoSuchProject` when the server does not know the name."""
        url = self._url("getProjectInfo")
        data = self._get("getProjectInfo", {"token": self.cfg.token, "project": project},
                         no_such=project,
                         refused=f"the server refused to tell about project {project}")
        status = printable(_require(data, "status", str, url))
        links = data.get("ulink") or []
        dlink = data.get("dlink") or None
        return ProjectInfo(status=status,
                           ulinks=[x for x in links if isinstance(x, str)] if isinstance(links, list) else [],
                           dlink=dlink if isinstance(dlink, str) else None)

    def reset_project(self, project: str) -> None:
        """``resetProject``: clear a project so that its name can be created again."""
        self._get("resetProject", {"token": self.cfg.token, "project": project},
                  refused=f"the server refused to reset project {project}")

    def upload_part(self, link: str, chunks: Iterable[bytes], length: int, *,
                    progress: Callable[[int], None] | None = None) -> tuple[str, str]:
        """POST one part to its upload link, streamed with an explicit Content-Length.

        Returns ``(server content-hash, content-hash of what was sent)``. Raises
        :class:`LinkGone` on 409/410 (link used or expired), :class:`BadURL` for a link that
        cannot be used, transient errors otherwise (also when the part stalls, its answer
        included: see :attr:`stall`).
        """
        safe = self._link_hint(link)
        with call_scope(stop=self.stop, stall=self.stall) as scope:
            body = _CountedBody(chunks, length, progress, moved=scope.moved)
            try:
                with self.link_session.post(
                        link, data=body, timeout=self.timeout, stream=True, allow_redirects=False,
                        headers={"Content-Type": "application/octet-stream"}) as resp:
                    code = resp.status_code
                    text = read_capped(resp)
            except NETWORK_ERRORS as exc:
                error = failure(exc, f"upload link {safe}", scope, self._secrets)
                if isinstance(error, Unreachable):
                    error = Unreachable(f"{error} (after {body.sent} of {length} bytes; "
                                        f"the link came from {self.base_url})")
                elif isinstance(error, CloudError) and not error.transient:
                    error = type(error)(f"{error} (an upload link from {self.base_url})")
                raise error from None
        if code in (409, 410):
            raise LinkGone(f"upload link {safe} is used or expired (HTTP {code})")
        if code in RETRY_STATUSES:
            raise ServerError(f"upload to {safe} answered HTTP {code}")
        if code != 200:
            raise CloudError(f"upload to {safe} answered HTTP {code}: {self._snippet(text)}")
        data = self._json(text, safe)
        server_hash = _require(data, "content-hash", str, safe)
        return server_hash, body.hasher.hexdigest()

    # -- plumbing ---------------------------------------------------------------------------

    def _url(self, endpoint: str) -> str:
        return f"{self.base_url}/{endpoint}"

    def _token_hint(self) -> str:
        token = self.cfg.token
        return f"…{token[-4:]}" if len(token) > 8 else "(set)"

    @staticmethod
    def _link_hint(link: str) -> str:
        head, _, tail = link.rpartition("/")
        return f"{head}/{tail[:6]}…" if len(tail) > 6 else link

    def _snippet(self, body: bytes) -> str:
        return self.mask(snippet(body[:4096].decode("utf-8", "replace")))

    def _get(self, endpoint: str, params: dict[str, Any], *, auth: bool = True, once: bool = False,
             refused: str = "the server refused the request", no_such: str | None = None,
             timeout_s: float | None = None) -> dict[str, Any]:
        url = self._url(endpoint)
        session = self._once if once else self.session
        log.debug("GET %s %s", url, {k: v for k, v in params.items() if k != "token"})
        limit = self.cfg.call_timeout_s if timeout_s is None else min(timeout_s, self.cfg.call_timeout_s)
        with call_scope(deadline_s=limit, stop=self.stop) as scope:
            try:
                with open_get(session, url, params=params, timeout=self.timeout,
                              headers={"Accept-Encoding": "identity"},
                              auth=(self.cfg.user, self.cfg.password) if auth else None) as resp:
                    code, ctype = resp.status_code, resp.headers.get("Content-Type", "")
                    body = read_capped(resp)
            except NETWORK_ERRORS as exc:
                raise failure(exc, url, scope, self._secrets) from None
        if code == 401:
            if no_such is not None:
                raise NoSuchProject(f"the cloud knows no project {no_such}")
            raise AuthRefused(f"the API at {self.base_url} refused cloud.user/cloud.password "
                              "(HTTP 401): check them in the config (the public values are "
                              "openscan/free)")
        if code == 400:
            raise Refused(f"{refused} (HTTP 400 from {url})")
        if _looks_html(ctype, body):
            status = f"HTTP {code}: " if code != 200 else ""
            raise BadAnswer(f"unexpected answer from {url}: {status}{self._snippet(body)}")
        if code == 429 or code >= 500:
            raise ServerError(f"{url} answered HTTP {code} after {self.cfg.retries} retries: "
                              "the cloud is busy or down; try again later")
        if code != 200:
            raise BadAnswer(f"unexpected answer from {url}: HTTP {code}: {self._snippet(body)}")
        return self._json(body, url)

    def _json(self, body: bytes, where: str) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except (ValueError, json.JSONDecodeError):
            raise BadAnswer(f"unexpected answer from {where}: {self._snippet(body)}") from None
        if not isinstance(data, dict):
            raise BadAnswer(f"unexpected answer from {where}: {self._snippet(body)}")
        return data


def _looks_html(ctype: str, body: bytes) -> bool:
    if "html" in ctype:
        return True
    return body[:200].lstrip().lower().startswith((b"<!doctype", b"<html"))


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadAnswer(f"unexpected answer from {where}: no {key!r} in {snippet(json.dumps(data))}")
    return value
