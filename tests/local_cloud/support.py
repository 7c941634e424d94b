"""Shared helpers and fixtures of the local cloud tests."""

from __future__ import annotations

import hashlib
import io
import math
import random
import zipfile
from pathlib import Path

import requests

from openscan_pi.sim.cloud import BAD_REQUEST_TEXT, LocalCloud

AUTH = ("openscan", "free")
TOKEN = "test-token"
PART = 64 * 1024
PROCESSING_S = 4.0
TTL_S = 1000.0
LIFETIME_S = 100.0
REPO = Path(__file__).resolve().parents[2]
ConnectionFailure = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_cloud(store: Path | None, clock: FakeClock, **kwargs: object) -> LocalCloud:
    options: dict = {
        "processing_s": PROCESSING_S,
        "max_part_bytes": PART,
        "result_ttl_s": TTL_S,
        "link_lifetime_s": LIFETIME_S,
        "clock": clock,
    }
    options.update(kwargs)
    return LocalCloud(store, **options)


def api(cloud: LocalCloud, endpoint: str, auth: tuple[str, str] | None = AUTH, **params: object):
    return requests.get(f"{cloud.url}/{endpoint}", params=params, auth=auth, timeout=10)


def image_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def small_set() -> bytes:
    return make_zip({"img_002.jpg": image_bytes(2, 3000), "img_001.jpg": image_bytes(1, 3000)})


def split(data: bytes, size: int = PART) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def create(cloud: LocalCloud, name: str, data: bytes, photos: int = 2, token: str = TOKEN):
    parts = math.ceil(len(data) / PART)
    answer = api(
        cloud, "createProject", token=token, project=name, photos=photos, parts=parts,
        filesize=len(data),
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["ulink"]


def post(link: str, body: object) -> requests.Response:
    headers = {"Content-Type": "application/octet-stream"}
    return requests.post(link, data=body, headers=headers, timeout=10)


def upload(links: list[str], data: bytes) -> None:
    for link, chunk in zip(links, split(data), strict=True):
        answer = post(link, chunk)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"content-hash": dropbox_hash(chunk)}


def dropbox_hash(data: bytes) -> str:
    block = 4 * 1024 * 1024
    digests = b"".join(
        hashlib.sha256(data[i : i + block]).digest() for i in range(0, len(data), block)
    )
    return hashlib.sha256(digests).hexdigest()


def started_project(cloud: LocalCloud, name: str = "p", data: bytes | None = None) -> bytes:
    data = small_set() if data is None else data
    upload(create(cloud, name, data), data)
    answer = api(cloud, "startProject", token=TOKEN, project=name)
    assert answer.json() == {"status": "initialized"}
    return data


def info(cloud: LocalCloud, name: str = "p") -> dict:
    answer = api(cloud, "getProjectInfo", token=TOKEN, project=name)
    assert answer.status_code == 200, answer.text
    return answer.json()


def project_state(cloud: LocalCloud, name: str = "p") -> dict:
    return cloud.state()["projects"][name]


def assert_400(answer: requests.Response) -> None:
    assert answer.status_code == 400
    assert answer.text == BAD_REQUEST_TEXT
    assert answer.headers["Content-Type"].startswith("text/html")
