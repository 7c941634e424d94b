"""Tests for openscan_pi.cloud.model: direct links, downloads and fetch_model over real loopback
HTTP servers, real files (extraction: tests/test_model_extract.py)."""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from openscan_pi.cloud.errors import (
    BadAnswer,
    CloudError,
    ServerError,
    Unreachable,
    UnsafeModel,
)
from openscan_pi.cloud.model import direct_link, download_file, fetch_model
from openscan_pi.errors import DiskError, InputError
from tests.test_model_extract import TEX, good_entries, make_zip

Handler = Callable[[BaseHTTPRequestHandler, int], None]


class Server:
    """A loopback HTTP server; ``handler(request, hit_number)`` answers each GET."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.handler: Handler = lambda req, n: reply(req, 200, b"")
        self.release = threading.Event()  # lets stalled handlers finish at teardown
        server = self

        class _Req(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server.hits.append(self.path)
                server.handler(self, len(server.hits))

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Req)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def reply(
    req: BaseHTTPRequestHandler,
    code: int,
    body: bytes,
    *,
    ctype: str = "application/zip",
    headers: dict[str, str] | None = None,
    length: bool = True,
    cut_at: int | None = None,
) -> None:
    """Answer; with ``cut_at`` announce the full length, send only that many bytes, then close."""
    req.send_response(code)
    req.send_header("Content-Type", ctype)
    if length:
        req.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        req.send_header(key, value)
    req.end_headers()
    req.wfile.write(body if cut_at is None else body[:cut_at])
    req.close_connection = True


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as sess:
        yield sess


class Sleeps(list[float]):
    """A recording stand-in for ``time.sleep``."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def tree(root: Path) -> list[str]:
    """Every path under ``root`` (hidden ones included), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


BLOB = os.urandom(2 * 1024 * 1024 + 12345)  # > 2 chunks of 1 MiB


# ------------------------------------------------------------------ direct_link


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://www.dropbox.com/s/abc/model.zip?dl=0",
            "https://www.dropbox.com/s/abc/model.zip?dl=1",
        ),
        (
            "https://www.dropbox.com/scl/fi/x/model.zip?rlkey=K%2B1&dl=0&st=zz",
            "https://www.dropbox.com/scl/fi/x/model.zip?rlkey=K%2B1&dl=1&st=zz",
        ),
        ("https://www.dropbox.com/s/abc/model.zip", "https://www.dropbox.com/s/abc/model.zip?dl=1"),
        ("https://dropbox.com/s/a/m.zip?x=1&y=2", "https://dropbox.com/s/a/m.zip?x=1&y=2&dl=1"),
        ("http://127.0.0.1:8080/share/abc", "http://127.0.0.1:8080/share/abc?dl=1"),
        ("http://localhost/share/abc?name=m", "http://localhost/share/abc?name=m&dl=1"),
        ("http://localhost/share/abc?dl=0", "http://localhost/share/abc?dl=1"),
        (
            "https://www.dropbox.com/s/abc/model.zip?dl=1",
            "https://www.dropbox.com/s/abc/model.zip?dl=1",
        ),
        ("https://example.com/files/model.zip?v=3", "https://example.com/files/model.zip?v=3"),
        ("https://example.com/model.zip", "https://example.com/model.zip"),
        ("https://notdropbox.com/model.zip", "https://notdropbox.com/model.zip"),
        ("https://example.com/x/share/model.zip", "https://example.com/x/share/model.zip"),
    ],
)
def test_direct_link(url: str, expected: str) -> None:
    assert direct_link(url) == expected


# ------------------------------------------------------------------ download_file


def test_download_happy_path(server: Server, session: requests.Session, tmp_path: Path) -> None:
    server.handler = lambda req, n: reply(req, 200, BLOB)
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "model.zip"
    got = download_file(
        session, server.url("/m.zip"), dest, progress=lambda d, t: seen.append((d, t))
    )
    assert got == dest
    assert dest.read_bytes() == BLOB
    assert tree(tmp_path) == ["model.zip"]
    assert len(seen) >= 3
    assert seen[-1] == (len(BLOB), len(BLOB))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_download_replaces_existing_file_only_when_complete(
    server: Server, session: requests.Session, tmp_path: Path
) -> None:
    dest = tmp_path / "model.zip"
    dest.write_bytes(b"old")
    server.handler = lambda req, n: reply(req, 200, BLOB, cut_at=1000)
    with pytest.raises(Unreachable):
        download_file(session, server.url("/m.zip"), dest, attempts=2, sleep=Sleeps())
    assert dest.read_bytes() == b"old"
    assert tree(tmp_path) == ["model.zip"]
    server.handler = lambda req, n: reply(req, 200, BLOB)
    download_file(session, server.url("/m.zip"), dest)
    assert dest.read_bytes() == BLOB


def test_download_retries_a_cut_body(
    server: Server, session: requests.Session, tmp_path: Path
) -> None:
    server.handler = lambda req, n: reply(req, 200, BLOB, cut_at=len(BLOB) // 2 if n == 1 else None)
    sleeps = Sleeps()
    dest = tmp_path / "m.zip"
    download_file(session, server.url("/m.zip"), dest, backoff_s=2.0, sleep=sleeps)
    assert dest.read_bytes() == BLOB
    assert len(server.hits) == 2
    assert len(sleeps) == 1 and 2.0 <= sleeps[0] <= 2.2
    assert tree(tmp_path) == ["m.zip"]


def test_download_always_cut_gives_up(
    server: Server, session: requests.Session, tmp_path: Path
) -> None:
    server.handler = lambda req, n: reply(req, 200, BLOB, cut_at=5000)
    sleeps = Sleeps()
    with pytest.raises(Unreachable) as info:
        download_file(session, server.url("/m.zip"), tmp_path / "m.zip", attempts=3, sleep=sleeps)
    assert str(info.value).startswith(f"cannot download {server.url('/m.zip')}: ")
    assert len(server.hits) == 3
    assert len(sleeps) == 2  # no sleep after the last attempt
    assert 1.0 <= sleeps[0] / 2.0 <= 1.1 and 1.0 <= sleeps[1] / 4.0 <= 1.1  # exponential + jitter
    assert tree(tmp_path) == []


def test_download_honours_retry_after(
    server: Server, session: requests.Session, tmp_path: Path
) -> None:
    def handler(req: BaseHTTPRequestHandler, n: int) -> None:
        if n == 1:
            reply(req, 503, b"busy", ctype="text/plain", headers={"Retry-After": "7"})
        elif n == 2:
            reply(req, 429, b"slow down", ctype="text/plain", headers={"Retry-After": "99999"})
        else:
            reply(req, 200, b"PK-data")

    server.handler = handler
    sleeps = Sleeps()
    download_file(session, server.url("/m.zip"), tmp_path / "m.zip", sleep=sleeps)
    assert sleeps == [7.0, 300.0]  # the server's value, capped at 300 s
    assert (tmp_path / "m.zip").read_bytes() == b"PK-data"


def test_download_persistent_5xx_is_server_error(
    server: Server, session: requests.Session, tmp_path: Path
) -> None:
    server.handler = lambda req, n: reply(req, 502, b"bad gateway", ctype="text/plain")
    with pytest.raises(ServerError, match="HTTP 502"):
        download_file(session, server.url("/m"), tmp_path / "m.zip", attempts=4, sleep=Sleeps())
    assert len(server.hits) == 4
    assert tree(tmp_path) == []


PREVIEW = b"<!DOCTYPE html>\n<html lang='en'>\n  <head>\n    <title>Dropbox - model.zip</title>"


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "application/octet-stream"])
def test_download_html_page_is_bad_answer(
    server: Server, session: requests.Session, tmp_path: Path, ctype: str
) -> None:
    server.handler = lambda req, n: reply(req, 200, PREVIEW + b"x" * 5000, ctype=ctype)
    url = server.url("/s/abc/model.zip?dl=0")
    with pytest.raises(BadAnswer) as info:
        download_file(session, url, tmp_path / "m.zip", sleep=Sleeps())
    msg = str(info.value)
    assert msg.startswith(f"unexpected answer from {url}: <!DOCTYPE html> <html lang='en'> <head>")
    assert "\n" not in msg
    assert len(server.hits) == 1  # not retried
    assert tree(tmp_path) == []


def test_download_404_is_cloud_error(
    server: Server, session: requests.Session, tmp_path: Path
) -> None:
    server.handler = lambda req, n: reply(req, 404, b"nope", ctype="text/plain")
    url = server.url("/gone.zip")
    with pytest.raises(CloudError) as info:
        download_file(session, url, tmp_path / "m.zip", sleep=Sleeps())
    assert str(info.value) == f"{url} answered HTTP 404: the model link is not valid (any more)"
    assert not info.value.transient
    assert len(server.hits) == 1
    assert tree(tmp_path) == []


def test_download_masks_token(server: Server, session: requests.Session, tmp_path: Path) -> None:
    server.handler = lambda req, n: reply(req, 403, b"", ctype="text/plain")
    with pytest.raises(CloudError) as info:
        download_file(session, server.url("/m?token=S3cr3tT0k&x=1"), tmp_path / "m.zip")
    assert "S3cr3tT0k" not in str(info.value)
    assert "token=***&x=1" in str(info.value)


def test_download_unreachable_masks_token(session: requests.Session, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()
    with pytest.raises(Unreachable) as info:
        download_file(
            session,
            f"http://127.0.0.1:{port}/m.zip?token=S3cr3tT0k",
            tmp_path / "m.zip",
            attempts=2,
            sleep=sleeps,
        )
    assert "S3cr3tT0k" not in str(info.value)
    assert "token=***" in str(info.value)
    assert "\n" not in str(info.value)
    assert len(sleeps) == 1
    assert tree(tmp_path) == []


def test_download_read_timeout_is_retried(
    server: Server, session: requests.Session, tmp_path: Path
) -> None:
    def handler(req: BaseHTTPRequestHandler, n: int) -> None:
        if n == 1:
            server.release.wait(10)  # stall until teardown: the client times out
        else:
            reply(req, 200, b"fine")

    server.handler = handler
    dest = tmp_path / "m.zip"
    download_file(session, server.url("/m"), dest, timeout=(2.0, 0.2), sleep=Sleeps())
    assert dest.read_bytes() == b"fine"
    assert len(server.hits) == 2


@pytest.mark.parametrize("length", [True, False])
def test_download_max_bytes(
    server: Server, session: requests.Session, tmp_path: Path, length: bool
) -> None:
    server.handler = lambda req, n: reply(req, 200, BLOB, length=length)
    with pytest.raises(UnsafeModel, match="larger than the limit of 1500000 bytes"):
        download_file(session, server.url("/m"), tmp_path / "m.zip", max_bytes=1_500_000)
    assert len(server.hits) == 1
    assert tree(tmp_path) == []


def test_download_interrupt_leaves_no_temp(
    server: Server, session: requests.Session, tmp_path: Path
) -> None:
    server.handler = lambda req, n: reply(req, 200, BLOB)

    def interrupt(done: int, total: int | None) -> None:
        assert any(p.name.endswith(".part") for p in tmp_path.iterdir())  # temp is beside dest
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_file(session, server.url("/m"), tmp_path / "m.zip", progress=interrupt)
    assert tree(tmp_path) == []


def test_download_disk_full_is_disk_error(
    server: Server, session: requests.Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.handler = lambda req, n: reply(req, 200, BLOB)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskError, match="disk full"):
        download_file(session, server.url("/m"), tmp_path / "m.zip")
    assert tree(tmp_path) == []


# ------------------------------------------------------------------ fetch_model


def _share_handler(zbytes: bytes) -> Handler:
    def handler(req: BaseHTTPRequestHandler, n: int) -> None:
        if req.path == "/share/abc?dl=1":
            reply(req, 200, zbytes)
        elif req.path.startswith("/share/abc"):
            reply(req, 200, PREVIEW, ctype="text/html")
        else:
            reply(req, 404, b"", ctype="text/plain")

    return handler


@pytest.mark.parametrize("keep_zip", [False, True])
def test_fetch_model_end_to_end(
    server: Server, session: requests.Session, tmp_path: Path, keep_zip: bool
) -> None:
    zbytes = make_zip(tmp_path / "src.zip", good_entries()).read_bytes()
    (tmp_path / "src.zip").unlink()
    server.handler = _share_handler(zbytes)
    # the preview link answers HTML, so a download of it would fail: fetch must ask for dl=1
    with pytest.raises(BadAnswer):
        download_file(session, server.url("/share/abc?dl=0"), tmp_path / "x.zip")
    out = tmp_path / "scan1"
    files = fetch_model(session, server.url("/share/abc?dl=0"), out, keep_zip=keep_zip)
    assert server.hits[-1] == "/share/abc?dl=1"
    assert files == sorted([out / "model.obj", out / "model.mtl", out / "tex" / "texture.jpg"])
    assert (out / "tex" / "texture.jpg").read_bytes() == TEX
    assert os.listdir(tmp_path) == ["scan1"]  # the hidden download zip is gone
    assert (out / "model.zip").exists() == keep_zip
    if keep_zip:
        assert (out / "model.zip").read_bytes() == zbytes


def test_fetch_model_refuses_non_empty_out_before_downloading(
    server: Server, session: requests.Session, tmp_path: Path
) -> None:
    server.handler = _share_handler(b"")
    (tmp_path / "scan1").mkdir()
    (tmp_path / "scan1" / "old.obj").write_bytes(b"old")
    with pytest.raises(InputError):
        fetch_model(session, server.url("/share/abc"), tmp_path / "scan1")
    assert server.hits == []
    assert tree(tmp_path) == ["scan1", "scan1/old.obj"]


def test_fetch_model_hostile_zip_leaves_nothing(
    server: Server, session: requests.Session, tmp_path: Path
) -> None:
    zbytes = make_zip(tmp_path / "src.zip", [("ok.txt", b"ok"), ("../evil.txt", b"x")]).read_bytes()
    (tmp_path / "src.zip").unlink()
    server.handler = _share_handler(zbytes)
    with pytest.raises(UnsafeModel):
        fetch_model(session, server.url("/share/abc"), tmp_path / "scan1")
    assert server.hits == ["/share/abc?dl=1"]
    assert tree(tmp_path) == []
