"""The OpenScan Cloud REST API: every endpoint, with timeouts, retries and errors a user can act on.

Every call is a GET with HTTP basic auth and the token in the query. Idempotent calls are retried by
urllib3 on connection errors, timeouts, 429 and 5xx, with exponential backoff and jitter, honouring
``Retry-After``; never on 400/401. ``createProject`` and ``startProject`` are not retried blindly on
a lost answer (the server may have acted): the transfer code checks ``getProjectInfo`` instead.

Example::

    api = CloudAPI(cfg.cloud)
    info = api.token_info()          # TokenInfo(credit=..., limit_filesize=..., limit_photos=...)
"""

from __future__ import annotations

import json
import logging
import queue
import random
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from openscan_pi import __version__
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
)
from openscan_pi.schema import CloudConfig

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 500, 502, 503, 504)
_CONNECTION_PREFIX = re.compile(r"^(<[\w.]+ object at 0x[0-9a-f]+>|\w*Connection(Pool)?\([^)]*\)): ")
MAX_RETRY_AFTER_S = 300.0


class JitterRetry(Retry):
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
                 progress: Callable[[int], None] | None, depth: int = 4) -> None:
        self._chunks = chunks
        self._length = length
        self._progress = progress
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
                self.sent += len(item)
                yield item
                if self._progress:
                    self._progress(len(item))
        finally:
            stop.set()
            reader.join()


class CloudAPI:
    """Client of the OpenScan Cloud API described in ``openscan-cloud-api.md``."""

    def __init__(self, cfg: CloudConfig, *, base_url: str | None = None) -> None:
        if cfg.is_local and base_url is None:
            raise ValueError("cloud.url is 'local': pass the local cloud's base_url")
        self.cfg = cfg
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
        self.link_session = self._session(Retry(total=0, raise_on_status=False), agent)

    @staticmethod
    def _session(retry: Retry, agent: str) -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=4)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = agent
        return session

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
        return str(self._get("status", {}, auth=False).get("status", "unknown"))

    def queue_estimate(self) -> float:
        """``/getQueueEstimate``: seconds the cloud expects to need for a new project."""
        data = self._get("getQueueEstimate", {})
        return float(_require(data, "estimated_time_seconds", (int, float), self._url("getQueueEstimate")))

    def token_info(self, *, once: bool = False) -> TokenInfo:
        """``getTokenInfo``: credit and limits of the configured token (``once``: a single
        attempt, for a quick check)."""
        if not self.cfg.token:
            raise CloudError("no token: set cloud.token in the config or $OPENSCAN_PI_TOKEN "
                             "(a private token comes from cloud@openscan.eu)")
        url = self._url("getTokenInfo")
        data = self._get("getTokenInfo", {"token": self.cfg.token}, once=once,
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
        return str(data.get("status", "initialized"))

    def project_info(self, project: str) -> ProjectInfo:
        """``getProjectInfo``; raises :class:`NoSuchProject` when the server does not know the name."""
        url = self._url("getProjectInfo")
        data = self._get("getProjectInfo", {"token": self.cfg.token, "project": project},
                         no_such=project,
                         refused=f"the server refused to tell about project {project}")
        status = _require(data, "status", str, url)
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
        :class:`LinkGone` on 409/410 (link used or expired), transient errors otherwise.
        """
        body = _CountedBody(chunks, length, progress)
        safe = self._link_hint(link)
        try:
            resp = self.link_session.post(
                link, data=body, timeout=self.timeout,
                headers={"Content-Type": "application/octet-stream"})
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise Unreachable(f"upload to {safe} failed after {body.sent} of {length} bytes: "
                              f"{self._reason(exc)}") from None
        if resp.status_code in (409, 410):
            raise LinkGone(f"upload link {safe} is used or expired (HTTP {resp.status_code})")
        if resp.status_code in RETRY_STATUSES:
            raise ServerError(f"upload to {safe} answered HTTP {resp.status_code}")
        if resp.status_code != 200:
            raise CloudError(f"upload to {safe} answered HTTP {resp.status_code}: {snippet(resp.text)}")
        data = self._json(resp, safe)
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

    def _reason(self, exc: BaseException) -> str:
        # requests nests the real cause (refused, DNS, timeout) deep inside; its text carries
        # the URL with the token, hence the mask.
        reason: BaseException = exc
        while reason.args and isinstance(reason.args[0], BaseException):
            reason = reason.args[0]
        text = str(getattr(reason, "reason", None) or reason)
        text = _CONNECTION_PREFIX.sub("", text)  # "HTTPConnection(host=..., port=...): "
        return self.mask(snippet(text, 160))

    def _get(self, endpoint: str, params: dict[str, Any], *, auth: bool = True, once: bool = False,
             refused: str = "the server refused the request", no_such: str | None = None) -> dict[str, Any]:
        url = self._url(endpoint)
        session = self._once if once else self.session
        log.debug("GET %s %s", url, {k: v for k, v in params.items() if k != "token"})
        try:
            resp = session.get(url, params=params, timeout=self.timeout,
                               auth=(self.cfg.user, self.cfg.password) if auth else None)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise Unreachable(f"cannot reach {url}: {self._reason(exc)}") from None
        code = resp.status_code
        if code == 401:
            if no_such is not None:
                raise NoSuchProject(f"the cloud knows no project {no_such}")
            raise AuthRefused(f"the API at {self.base_url} refused cloud.user/cloud.password "
                              "(HTTP 401): check them in the config (the public values are "
                              "openscan/free)")
        if code == 400:
            raise Refused(f"{refused} (HTTP 400 from {url})")
        if _looks_html(resp):
            status = f"HTTP {code}: " if code != 200 else ""
            raise BadAnswer(f"unexpected answer from {url}: {status}{self.mask(snippet(resp.text))}")
        if code == 429 or code >= 500:
            raise ServerError(f"{url} answered HTTP {code} after {self.cfg.retries} retries: "
                              "the cloud is busy or down; try again later")
        if code != 200:
            raise BadAnswer(f"unexpected answer from {url}: HTTP {code}: {self.mask(snippet(resp.text))}")
        return self._json(resp, url)

    def _json(self, resp: requests.Response, where: str) -> dict[str, Any]:
        try:
            data = resp.json()
        except (ValueError, json.JSONDecodeError):
            raise BadAnswer(f"unexpected answer from {where}: {self.mask(snippet(resp.text))}") from None
        if not isinstance(data, dict):
            raise BadAnswer(f"unexpected answer from {where}: {self.mask(snippet(resp.text))}")
        return data


def _looks_html(resp: requests.Response) -> bool:
    ctype = resp.headers.get("Content-Type", "")
    if "html" in ctype:
        return True
    return resp.text[:200].lstrip().lower().startswith(("<!doctype", "<html"))


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadAnswer(f"unexpected answer from {where}: no {key!r} in {snippet(json.dumps(data))}")
    return value
