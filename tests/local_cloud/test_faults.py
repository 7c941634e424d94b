"""The local OpenScan Cloud's fault injection, over real loopback sockets."""

from __future__ import annotations

import base64
import http.client
import io
import socket
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from openscan_pi.sim.cloud import ESCAPES, LocalCloud

from .support import (
    AUTH,
    PART,
    PROCESSING_S,
    TOKEN,
    ConnectionFailure,
    FakeClock,
    api,
    assert_400,
    create,
    dropbox_hash,
    image_bytes,
    info,
    post,
    project_state,
    small_set,
    started_project,
    upload,
)

# ------------------------------------------------------------------------------- faults


def test_api_5xx_and_429_with_retry_after(cloud: LocalCloud) -> None:
    cloud.inject("api_5xx", 2, retry_after=3)
    assert api(cloud, "status").status_code == 200  # /status is not an API call
    for _ in range(2):
        answer = api(cloud, "getTokenInfo", token=TOKEN)
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "3"
    assert api(cloud, "getTokenInfo", token=TOKEN).status_code == 200
    cloud.inject("api_429")
    answer = api(cloud, "getQueueEstimate")
    assert answer.status_code == 429
    assert "Retry-After" not in answer.headers
    assert api(cloud, "getQueueEstimate").status_code == 200


def test_api_faults_spare_uploads(cloud: LocalCloud) -> None:
    links = create(cloud, "p", b"x" * 10)
    cloud.inject("api_5xx")
    assert post(links[0], b"x" * 10).status_code == 200
    assert api(cloud, "getQueueEstimate").status_code == 503


def test_api_html_and_non_json(cloud: LocalCloud) -> None:
    cloud.inject("api_html")
    answer = api(cloud, "getTokenInfo", token=TOKEN)
    assert answer.status_code == 502
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "<title>502 Bad Gateway</title>" in answer.text
    cloud.inject("api_non_json")
    answer = api(cloud, "getTokenInfo", token=TOKEN)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.text == "OK"
    assert api(cloud, "getTokenInfo", token=TOKEN).json()["limit_photos"] == 1000


def test_api_drop(cloud: LocalCloud) -> None:
    cloud.inject("api_drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        api(cloud, "createProject", token=TOKEN, project="p", photos=1, parts=1, filesize=10)
    assert "p" not in cloud.state()["projects"]
    assert api(cloud, "getQueueEstimate").status_code == 200


def test_create_lost_answer(cloud: LocalCloud) -> None:
    cloud.inject("create_lost_answer")
    with pytest.raises(requests.exceptions.ConnectionError):
        api(cloud, "createProject", token=TOKEN, project="p", photos=1, parts=1, filesize=10)
    assert info(cloud)["status"] == "created"
    assert cloud.state()["tokens"][TOKEN]["credit"] == 50_000_000_000 - 10
    assert api(cloud, "createProject", token=TOKEN, project="q", photos=1, parts=1,
               filesize=10).status_code == 200


def test_start_lost_answer(cloud: LocalCloud) -> None:
    data = small_set()
    upload(create(cloud, "p", data), data)
    cloud.inject("start_lost_answer")
    with pytest.raises(requests.exceptions.ConnectionError):
        api(cloud, "startProject", token=TOKEN, project="p")
    assert info(cloud)["status"] == "initialized"
    assert project_state(cloud)["start_count"] == 1


def test_part_5xx_leaves_the_link_usable(cloud: LocalCloud) -> None:
    links = create(cloud, "p", b"x" * 1000)
    cloud.inject("part_5xx")
    assert post(links[0], b"x" * 1000).status_code == 500
    assert project_state(cloud)["parts_received"] == []
    assert post(links[0], b"x" * 1000).status_code == 200


def test_part_drop(cloud: LocalCloud) -> None:
    data = image_bytes(4, PART)
    links = create(cloud, "p", data)
    cloud.inject("part_drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        post(links[0], data)
    state = cloud.wait_for(lambda s: s["uploads_in_progress"] == 0)
    assert state["projects"]["p"]["parts_received"] == []
    assert state["projects"]["p"]["bytes_receiving"] == 0
    assert post(links[0], data).json() == {"content-hash": dropbox_hash(data)}


def test_part_lost_answer(cloud: LocalCloud) -> None:
    data = image_bytes(5, 1000)
    links = create(cloud, "p", data)
    cloud.inject("part_lost_answer")
    with pytest.raises(requests.exceptions.ConnectionError):
        post(links[0], data)
    state = cloud.wait_for(lambda s: s["uploads_in_progress"] == 0)
    assert state["projects"]["p"]["parts_received"] == [0]
    assert post(links[0], data).status_code == 409
    assert cloud.archive_path("p").read_bytes() == data


def test_part_bad_hash(cloud: LocalCloud) -> None:
    data = image_bytes(6, 1000)
    links = create(cloud, "p", data)
    cloud.inject("part_bad_hash")
    answer = post(links[0], data)
    assert answer.status_code == 200
    assert answer.json()["content-hash"] != dropbox_hash(data)
    assert project_state(cloud)["parts_received"] == [0]
    assert post(links[0], data).status_code == 409


def test_part_slow(cloud: LocalCloud) -> None:
    data = image_bytes(8, PART)
    links = create(cloud, "p", data)
    cloud.inject("part_slow", bps=2000)
    with ThreadPoolExecutor(1) as pool:
        began = time.monotonic()
        future = pool.submit(post, links[0], data)
        state = cloud.wait_for(lambda s: s["projects"]["p"]["bytes_receiving"] >= 300)
        elapsed = time.monotonic() - began
        assert state["uploads_in_progress"] == 1
        # never faster than the limit (one 100-byte chunk of slack, plus one for timing)
        assert state["projects"]["p"]["bytes_receiving"] <= 2000 * elapsed + 200
        assert not future.done()
        cloud.inject("part_slow", bps=0)
        answer = future.result(timeout=10)
    assert answer.json() == {"content-hash": dropbox_hash(data)}
    assert project_state(cloud)["parts_received"] == [0]


def test_abort_uploads_cuts_bodies_in_flight(cloud: LocalCloud) -> None:
    data = image_bytes(8, PART)
    links = create(cloud, "p", data)
    cloud.inject("part_slow", bps=2000)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(post, links[0], data)
        cloud.wait_for(lambda s: s["projects"]["p"]["bytes_receiving"] > 0)
        cloud.inject("abort_uploads")
        with pytest.raises(ConnectionFailure):
            future.result(timeout=10)
    state = cloud.wait_for(lambda s: s["uploads_in_progress"] == 0)
    assert state["projects"]["p"]["parts_received"] == []
    cloud.inject("part_slow", bps=0)
    assert post(links[0], data).json() == {"content-hash": dropbox_hash(data)}  # link unused


def test_download_drop(cloud: LocalCloud, clock: FakeClock) -> None:
    started_project(cloud)
    clock.advance(PROCESSING_S)
    link = info(cloud)["dlink"].replace("dl=0", "dl=1")
    cloud.inject("download_drop")
    # Read with http.client: urllib3 2 raises on a body shorter than its Content-Length, but
    # urllib3 1.26 (Debian 12's, so a scanner's) hands the short body back without a word.
    parts = urlsplit(link)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        with pytest.raises(http.client.IncompleteRead) as cut:
            conn.getresponse().read()
    finally:
        conn.close()
    got, missing = len(cut.value.partial), cut.value.expected or 0
    assert got > 0 and got == (got + missing) // 2  # the connection dropped halfway
    whole = requests.get(link, timeout=10)
    assert zipfile.ZipFile(io.BytesIO(whole.content)).testzip() is None


def test_download_resumes_with_a_range(cloud: LocalCloud, clock: FakeClock) -> None:
    started_project(cloud)
    clock.advance(PROCESSING_S)
    link = info(cloud)["dlink"].replace("dl=0", "dl=1")
    whole = requests.get(link, timeout=10)
    assert whole.headers["Accept-Ranges"] == "bytes"
    rest = requests.get(link, headers={"Range": "bytes=100-"}, timeout=10)
    assert rest.status_code == 206
    size = len(whole.content)
    assert rest.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    assert rest.content == whole.content[100:]
    middle = requests.get(link, headers={"Range": "bytes=10-19"}, timeout=10)
    assert middle.content == whole.content[10:20]
    beyond = requests.get(link, headers={"Range": f"bytes={len(whole.content)}-"}, timeout=10)
    assert beyond.status_code == 416


def test_unknown_fault(cloud: LocalCloud) -> None:
    with pytest.raises(ValueError):
        cloud.inject("no_such_fault")
    with pytest.raises(ValueError):
        cloud.inject("api_5xx", bogus=1)
    assert_400(requests.get(f"{cloud.url}/_faults?no_such_fault=1", timeout=10))


def test_fault_and_state_hooks_over_http(cloud: LocalCloud) -> None:
    answer = requests.get(f"{cloud.url}/_faults?api_429=2&retry_after=5", timeout=10)
    assert answer.status_code == 200
    for _ in range(2):
        answer = api(cloud, "getQueueEstimate")
        assert (answer.status_code, answer.headers["Retry-After"]) == (429, "5")
    assert api(cloud, "getQueueEstimate").status_code == 200
    create(cloud, "p", b"x" * 10)
    state = requests.get(f"{cloud.url}/_state", timeout=10).json()
    assert state["url"] == cloud.url
    assert state["projects"]["p"]["status"] == "created"
    assert state["requests"]["getQueueEstimate"] == 3
    assert state["uploads_in_progress"] == 0


def test_wait_for_times_out(cloud: LocalCloud) -> None:
    with pytest.raises(TimeoutError):
        cloud.wait_for(lambda s: s["projects"]["never"] is not None, timeout=0.1)


# ------------------------------------------------------------------ answers no client should trust


def raw_get(cloud: LocalCloud, path: str) -> socket.socket:
    """A GET with basic auth sent on a plain socket; the caller reads the answer."""
    host, port = cloud.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    auth = base64.b64encode(b"openscan:free").decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n\r\n"
                 .encode())
    return sock


def test_api_trickle_sends_the_real_answer_a_byte_at_a_time(cloud: LocalCloud) -> None:
    cloud.inject("api_trickle", bps=0.5)
    with raw_get(cloud, f"/getTokenInfo?token={TOKEN}") as sock:
        assert sock.recv(4096) == b"H"  # the status line's first byte, and nothing more yet
    cloud.inject("api_trickle", bps=2000)
    answer = api(cloud, "getTokenInfo", token=TOKEN)
    assert answer.status_code == 200 and answer.json()["limit_photos"] == 1000
    assert api(cloud, "getTokenInfo", token=TOKEN).status_code == 200  # used up


@pytest.mark.parametrize(("fault", "code", "ctype"), [("api_huge", 200, "application/json"),
                                                      ("api_huge_html", 502, "text/html")])
def test_api_huge_is_made_as_it_is_sent(cloud: LocalCloud, fault: str, code: int,
                                        ctype: str) -> None:
    cloud.inject(fault, size=50_000_000)
    with requests.get(f"{cloud.url}/getTokenInfo", params={"token": TOKEN}, auth=AUTH,
                      stream=True, timeout=10) as answer:
        assert answer.status_code == code
        assert answer.headers["Content-Type"] == ctype
        assert answer.headers["Content-Length"] == "50000000"
        first = answer.raw.read(1 << 20)
        assert len(first) == 1 << 20 and first.startswith((b'{"credit"', b"<html>"))
    state = cloud.wait_for(lambda s: s["huge_active"] == 0)
    assert 1 << 20 <= state["huge_sent"] < 50_000_000  # the client hung up: the rest never made


def test_api_broken_chunked_gzip_and_redirect_loop(cloud: LocalCloud) -> None:
    cloud.inject("api_broken_chunked")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api(cloud, "getTokenInfo", token=TOKEN)
    cloud.inject("api_bad_gzip")
    with pytest.raises(requests.exceptions.ContentDecodingError):
        api(cloud, "getTokenInfo", token=TOKEN)
    cloud.inject("api_redirect_loop")
    with pytest.raises(requests.exceptions.TooManyRedirects):
        api(cloud, "getTokenInfo", token=TOKEN)
    assert api(cloud, "getTokenInfo", token=TOKEN).status_code == 200


def test_escapes_in_a_page_and_a_status(cloud: LocalCloud) -> None:
    cloud.inject("api_escapes")
    page = api(cloud, "getTokenInfo", token=TOKEN)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert ESCAPES in page.text
    started_project(cloud)
    cloud.inject("status_escapes")
    assert info(cloud)["status"] == f"{ESCAPES}initialized{ESCAPES}"
    assert info(cloud)["status"] == "initialized"


def test_part_and_download_trickle(cloud: LocalCloud, clock: FakeClock) -> None:
    data = small_set()
    links = create(cloud, "p", data)
    cloud.inject("part_trickle", bps=0.5)
    link = links[0].removeprefix(cloud.url)
    host, port = cloud.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {link} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode() + data)
        assert sock.recv(4096) == b"H"
        assert cloud.wait_for(lambda s: s["projects"]["p"]["parts_received"] == [0])
    assert api(cloud, "startProject", token=TOKEN, project="p").status_code == 200
    clock.advance(PROCESSING_S)
    dlink = info(cloud)["dlink"].replace("dl=0", "dl=1")
    cloud.inject("download_trickle", bps=100_000)
    model = requests.get(dlink, timeout=10).content
    assert zipfile.ZipFile(io.BytesIO(model)).testzip() is None
    assert model == requests.get(dlink, timeout=10).content


@pytest.mark.parametrize(("bad", "expected"), [
    ("bad_scheme", requests.exceptions.InvalidSchema),
    ("bad_ipv6", requests.exceptions.InvalidURL),
    ("no_scheme", requests.exceptions.MissingSchema),
])
def test_unusable_links(cloud: LocalCloud, clock: FakeClock, bad: str,
                        expected: type[Exception]) -> None:
    cloud.inject(f"ulink_{bad}")
    data = small_set()
    spoiled = create(cloud, "p", data)
    with pytest.raises(expected):
        post(spoiled[0], data)
    assert info(cloud)["ulink"] != spoiled  # getProjectInfo tells the real ones
    upload(info(cloud)["ulink"], data)
    assert api(cloud, "startProject", token=TOKEN, project="p").status_code == 200
    clock.advance(PROCESSING_S)
    cloud.inject(f"dlink_{bad}")
    with pytest.raises(expected):
        requests.get(info(cloud)["dlink"], timeout=10)
    assert requests.get(info(cloud)["dlink"], timeout=10).status_code == 200
