"""Fixtures of the web page's tests: a simulated daemon (a subprocess) with its web process, found
where the daemon's log says it listens, and an HTTP session that holds the page's CSRF token."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from ..daemon.conftest import DaemonProcess, make_daemon, short_dir  # noqa: F401 (fixtures)

pytest.importorskip("aiohttp", reason="the web page needs aiohttp (pip install 'openscan-pi[web]')")

#: How long the web process may take to say where it listens.
START_S = 60.0
WEB_URL = re.compile(r"web page at (http://\S+/) \(process (\d+)\)")


class WebDaemon:
    """A running daemon, its web page's URL and its web process's pid."""

    def __init__(self, daemon: DaemonProcess, url: str, pid: int) -> None:
        self.daemon = daemon
        self.url = url.rstrip("/")
        self.pid = pid

    def session(self) -> WebSession:
        """A browser-like session (cookie jar, CSRF token from the page)."""
        return WebSession(self.url)


class WebSession(requests.Session):
    """``requests`` with the page's base URL and CSRF token."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base
        self.csrf = ""

    def page(self, path: str = "/", **kwargs: Any) -> requests.Response:
        """GET a page and take its CSRF token."""
        r = self.get(self.base + path, headers={"Accept": "text/html"}, timeout=60, **kwargs)
        found = re.search(r'<meta name="csrf" content="([^"]+)">', r.text)
        if found:
            self.csrf = found.group(1)
        return r

    def act(self, action: str, body: dict[str, Any] | None = None, *, csrf: bool = True
            ) -> requests.Response:
        """POST an action, with the token unless ``csrf`` is False."""
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        return self.post(f"{self.base}/api/{action}", json=body or {}, headers=headers, timeout=120)


def wait_for_url(daemon: DaemonProcess, timeout: float = START_S, *, nth: int = 0
                 ) -> tuple[str, int]:
    """Where the daemon's web process listens (from the daemon's log) and its pid: the process
    it started ``nth`` (0: the first)."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(WEB_URL.finditer(daemon.log_text()))
        if len(found) > nth:
            return found[nth].group(1), int(found[nth].group(2))
        if time.monotonic() > deadline:
            raise AssertionError(f"the web page did not start:\n{daemon.log_text()}")
        time.sleep(0.05)  # polling the log: the daemon says it there and nowhere else


@pytest.fixture
def make_web(make_daemon: Callable[..., DaemonProcess]  # noqa: F811 (the fixture)
             ) -> Callable[..., WebDaemon]:
    """``make_web(password=None, **sections)``: a started daemon with its web page on a free
    loopback port."""
    def make(password: str | None = None, **sections: Any) -> WebDaemon:
        web = {"enabled": True, "listen": "127.0.0.1:0", "password": password}
        daemon = make_daemon(web=web, **sections).start()
        url, pid = wait_for_url(daemon)
        return WebDaemon(daemon, url, pid)

    return make


@pytest.fixture
def web(make_web: Callable[..., WebDaemon]) -> Iterator[WebDaemon]:
    """A daemon and its web page on loopback, without a password."""
    yield make_web()
