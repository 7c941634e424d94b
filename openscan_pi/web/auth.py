"""Who may use the page: sessions, the password, CSRF tokens and the host a request names.

- On loopback without ``web.password`` every visitor gets a signed-in session at once, but only
  when the request names a loopback host (``localhost:8080``, ``127.0.0.1:8080``): a page of
  another site that resolves its own name to 127.0.0.1 (DNS rebinding) is refused.
- With a password, every page but the login form and the static files needs a signed-in session.
  A wrong password is answered after a delay that grows with the client's failures (1 s per
  failure, at most :data:`MAX_DELAY_S`), one attempt at a time per client; the compare is
  constant-time.
- The session is a random id in a cookie (HttpOnly, SameSite=Strict), kept in memory: a
  restarted web process asks for the password again. Every request that changes something
  (any method but GET and HEAD) needs the session's CSRF token, in the ``X-CSRF-Token`` header or
  the form field ``csrf``; without it: 403.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from openscan_pi.schema import is_loopback

COOKIE = "openscan_session"
#: Sessions kept (the least recently used goes first): a flood of visitors costs bounded memory.
MAX_SESSIONS = 1000
#: A session unused this long is forgotten.
IDLE_S = 12 * 3600.0
#: The longest wait after a wrong password.
MAX_DELAY_S = 10.0
#: What may be fetched without a session.
PUBLIC_PREFIXES = ("/login", "/static/", "/three/", "/favicon.ico")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class Session:
    """One browser's session."""

    id: str
    authed: bool
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    used: float = field(default_factory=time.monotonic)


def json_error(status: int, message: str, **headers: str) -> web.Response:
    """An API error: one JSON line ``{"error": message}``."""
    return web.json_response({"error": message}, status=status, headers=headers or None)


def request_host(request: web.Request) -> str:
    """The host name the request was sent to (the Host header, without the port)."""
    host = request.host
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Auth:
    """Sessions and sign-in for one web process (``password`` None: loopback, no sign-in)."""

    def __init__(self, password: str | None) -> None:
        self.password = password
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.failures: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _new(self, authed: bool) -> Session:
        session = Session(secrets.token_urlsafe(32), authed)
        self.sessions[session.id] = session
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return session

    def session_of(self, request: web.Request) -> Session | None:
        """The request's session, if its cookie names a live one."""
        sid = request.cookies.get(COOKIE)
        session = self.sessions.get(sid) if sid else None
        now = time.monotonic()
        if session is None or now - session.used > IDLE_S:
            return None
        session.used = now
        self.sessions.move_to_end(session.id)
        return session

    def csrf_ok(self, session: Session, token: Any) -> bool:
        """Whether ``token`` is the session's CSRF token."""
        return isinstance(token, str) and hmac.compare_digest(token.encode(),
                                                              session.csrf.encode())

    async def login(self, request: web.Request, password: str) -> Session | None:
        """Check ``password`` for the request's client: a new signed-in session, or None after
        the client's delay."""
        client = request.remote or "?"
        lock = self._locks.setdefault(client, asyncio.Lock())
        async with lock:  # one attempt at a time per client: no way around the delay
            expected = (self.password or "").encode()
            if self.password is not None and hmac.compare_digest(password.encode(), expected):
                self.failures.pop(client, None)
                return self._new(True)
            failures = self.failures[client] = self.failures.get(client, 0) + 1
            await asyncio.sleep(min(float(failures), MAX_DELAY_S))
            if len(self.failures) > MAX_SESSIONS:  # bounded, like the sessions
                self.failures.pop(next(iter(self.failures)))
            return None

    def logout(self, session: Session) -> None:
        """Forget ``session``."""
        self.sessions.pop(session.id, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Host, session and CSRF checks before every handler."""
        if self.password is None and not is_loopback(request_host(request)):
            return json_error(403, "this page answers to localhost only (it has no password): "
                                   "open http://localhost:PORT/, or set web.password")
        session = self.session_of(request)
        fresh = session is None
        if session is None:
            session = self._new(self.password is None)
        request["session"] = session
        public = request.path.startswith(PUBLIC_PREFIXES)
        if not session.authed and not public:
            if request.method in SAFE_METHODS and "text/html" in request.headers.get("Accept", ""):
                response: web.StreamResponse = web.Response(status=303,
                                                            headers={"Location": "/login"})
            else:
                response = json_error(401, "sign in first: open /login")
        elif request.method not in SAFE_METHODS and not await self._csrf_in(request, session):
            response = json_error(403, "missing or wrong CSRF token: reload the page and try again")
        else:
            response = await handler(request)
            session = request["session"]  # a login replaces it
            fresh = fresh or request.get("session_changed", False)
        if fresh:
            response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", path="/",
                                max_age=int(IDLE_S))
        return response

    async def _csrf_in(self, request: web.Request, session: Session) -> bool:
        token: object = request.headers.get("X-CSRF-Token")
        if token is None and request.content_type in ("application/x-www-form-urlencoded",
                                                      "multipart/form-data"):
            token = (await request.post()).get("csrf")
        return self.csrf_ok(session, token)
