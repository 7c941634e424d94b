"""The local OpenScan Cloud's API, uploads, statuses, model and persistence, over real loopback sockets."""

from __future__ import annotations

import io
import math
import os
import signal
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from openscan_pi.sim.cloud import LocalCloud, TokenLimits

from .support import (
    AUTH,
    LIFETIME_S,
    PART,
    PROCESSING_S,
    REPO,
    TOKEN,
    TTL_S,
    FakeClock,
    api,
    assert_400,
    create,
    dropbox_hash,
    image_bytes,
    info,
    make_zip,
    new_cloud,
    post,
    project_state,
    small_set,
    split,
    started_project,
    upload,
)

# ------------------------------------------------------------------------------- basic API


def test_status_needs_no_auth(cloud: LocalCloud) -> None:
    answer = api(cloud, "status", auth=None)
    assert answer.status_code == 200
    assert answer.json() == {"status": "online"}


@pytest.mark.parametrize("auth", [None, ("openscan", "wrong"), ("someone", "free")])
def test_api_needs_basic_auth(cloud: LocalCloud, auth: tuple[str, str] | None) -> None:
    for endpoint in ("getTokenInfo", "getQueueEstimate", "createProject"):
        answer = api(cloud, endpoint, auth=auth, token=TOKEN)
        assert answer.status_code == 401
        assert answer.json() == {"error": "Unauthorized access"}


def test_token_info_any_token_by_default(cloud: LocalCloud) -> None:
    answer = api(cloud, "getTokenInfo", token="anything")
    assert answer.json() == {
        "credit": 50_000_000_000,
        "limit_filesize": 2_000_000_000,
        "limit_photos": 1000,
    }
    assert_400(api(cloud, "getTokenInfo", token=""))
    assert_400(api(cloud, "getTokenInfo"))


def test_token_limits_and_credit(tmp_path: Path, clock: FakeClock) -> None:
    limits = TokenLimits(credit=1000, limit_filesize=800, limit_photos=3)
    with new_cloud(tmp_path, clock, tokens={"good": limits}, max_part_bytes=1000) as cloud:
        assert api(cloud, "getTokenInfo", token="good").json() == {
            "credit": 1000,
            "limit_filesize": 800,
            "limit_photos": 3,
        }
        assert_400(api(cloud, "getTokenInfo", token="bad"))
        base = {"token": "good", "parts": 1}
        assert_400(api(cloud, "createProject", project="a", photos=4, filesize=10, **base))
        assert_400(api(cloud, "createProject", project="a", photos=3, filesize=801, **base))
        assert_400(api(cloud, "createProject", project="a", photos=3, filesize=10, token="bad",
                       parts=1))
        answer = api(cloud, "createProject", project="a", photos=3, filesize=500, **base)
        assert answer.json()["credit"] == 500
        # 600 is within limit_filesize but more than the credit left
        assert_400(api(cloud, "createProject", project="b", photos=3, filesize=600, **base))
        assert api(cloud, "getTokenInfo", token="good").json()["credit"] == 500
        assert cloud.state()["tokens"]["good"] == {"credit": 500}
        assert api(cloud, "resetProject", token="good", project="a").json() == {"status": "reset"}
        assert api(cloud, "getTokenInfo", token="good").json()["credit"] == 1000
        answer = api(cloud, "createProject", project="b", photos=3, filesize=600, **base)
        assert answer.json()["credit"] == 400


def test_queue_estimate_counts_projects_in_processing(cloud: LocalCloud, clock: FakeClock) -> None:
    assert api(cloud, "getQueueEstimate").json() == {"estimated_time_seconds": PROCESSING_S}
    started_project(cloud, "p")
    started_project(cloud, "q")
    assert api(cloud, "getQueueEstimate").json() == {"estimated_time_seconds": 3 * PROCESSING_S}
    clock.advance(PROCESSING_S)
    assert api(cloud, "getQueueEstimate").json() == {"estimated_time_seconds": PROCESSING_S}


def test_create_project_answer(cloud: LocalCloud) -> None:
    answer = api(cloud, "createProject", token=TOKEN, project="p", photos=5, parts=3,
                 filesize=3 * PART)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "created"
    assert body["credit"] == 50_000_000_000 - 3 * PART
    assert len(body["ulink"]) == 3 and len(set(body["ulink"])) == 3
    for link in body["ulink"]:
        assert link.startswith(f"{cloud.url}/upload/")
    assert info(cloud) == {"status": "created", "ulink": body["ulink"], "dlink": None}
    state = project_state(cloud)
    assert state["status"] == "created"
    assert (state["photos"], state["parts"], state["filesize"]) == (5, 3, 3 * PART)
    assert state["created_count"] == 1 and state["parts_received"] == []
    assert cloud.state()["tokens"][TOKEN]["credit"] == body["credit"]
    assert cloud.state()["requests"]["createProject"] == 1


@pytest.mark.parametrize(
    "params",
    [
        {"token": "", "photos": 1, "parts": 1, "filesize": 10},
        {"photos": 0, "parts": 1, "filesize": 10},
        {"photos": 1001, "parts": 1, "filesize": 10},
        {"photos": 1, "parts": 30518, "filesize": 2_000_000_001},
        {"photos": 1, "parts": 0, "filesize": 10},
        {"photos": 1, "parts": 1, "filesize": PART + 1},
        {"photos": 1, "parts": 5, "filesize": 3},
        {"photos": "x", "parts": 1, "filesize": 10},
        {"photos": 1, "parts": 1, "filesize": "1.5"},
        {"photos": 1, "parts": 1},
        {"photos": 1, "filesize": 10},
    ],
)
def test_create_project_refused(cloud: LocalCloud, params: dict) -> None:
    params = {"token": TOKEN, "project": "p", **params}
    assert_400(api(cloud, "createProject", **params))
    assert "p" not in cloud.state()["projects"]
    assert cloud.state()["tokens"].get(TOKEN) is None


def test_create_project_name_taken(cloud: LocalCloud) -> None:
    create(cloud, "p", b"x" * 10)
    assert_400(api(cloud, "createProject", token=TOKEN, project="p", photos=1, parts=1,
                   filesize=10))
    assert_400(api(cloud, "createProject", token="other", project="p", photos=1, parts=1,
                   filesize=10))


def test_project_info_unknown_name_is_401(cloud: LocalCloud) -> None:
    answer = api(cloud, "getProjectInfo", token=TOKEN, project="nope")
    assert answer.status_code == 401
    assert answer.json() == {"error": "Unauthorized access"}
    create(cloud, "p", b"x" * 10)
    assert api(cloud, "getProjectInfo", token="another", project="p").status_code == 401
    assert api(cloud, "getProjectInfo", token="", project="p").status_code == 401


# ------------------------------------------------------------------------------- uploads


def test_upload_and_start(cloud: LocalCloud) -> None:
    data = small_set()
    links = create(cloud, "p", data)
    assert_400(api(cloud, "startProject", token=TOKEN, project="p"))  # no part yet
    answer = post(links[0], data)
    assert answer.status_code == 200
    assert answer.json() == {"content-hash": dropbox_hash(data)}
    assert project_state(cloud)["parts_received"] == [0]
    assert api(cloud, "startProject", token=TOKEN, project="p").json() == {
        "status": "initialized"
    }
    assert_400(api(cloud, "startProject", token=TOKEN, project="p"))  # already started
    assert_400(api(cloud, "startProject", token=TOKEN, project="nope"))
    assert_400(api(cloud, "startProject", token="other", project="p"))
    assert project_state(cloud)["start_count"] == 1
    assert cloud.state()["requests"]["upload"] == 1


def test_start_needs_every_part(cloud: LocalCloud) -> None:
    data = make_zip({"a.jpg": image_bytes(1, 2 * PART)})
    links = create(cloud, "p", data)
    assert len(links) == 3
    post(links[0], split(data)[0])
    post(links[2], split(data)[2])
    assert_400(api(cloud, "startProject", token=TOKEN, project="p"))
    post(links[1], split(data)[1])
    assert api(cloud, "startProject", token=TOKEN, project="p").status_code == 200


def test_link_is_single_use(cloud: LocalCloud) -> None:
    links = create(cloud, "p", b"x" * 10)
    assert post(links[0], b"x" * 10).status_code == 200
    again = post(links[0], b"y" * 10)
    assert again.status_code == 409
    assert again.json()["error"] == "path/conflict"
    assert post(f"{cloud.url}/upload/0123456789abcdef", b"x").status_code == 409


def test_link_expires(cloud: LocalCloud, clock: FakeClock) -> None:
    links = create(cloud, "p", b"x" * 20, photos=1)
    assert len(links) == 1
    clock.advance(LIFETIME_S + 1)
    answer = post(links[0], b"x" * 20)
    assert answer.status_code == 409
    assert answer.json()["reason"] == "expired"
    assert project_state(cloud)["parts_received"] == []


def test_expire_links_fault(cloud: LocalCloud) -> None:
    links = create(cloud, "p", b"x" * 20)
    cloud.inject("expire_links")
    assert post(links[0], b"x" * 20).status_code == 409
    links = create(cloud, "q", b"x" * 20)  # links issued later are fine
    assert post(links[0], b"x" * 20).status_code == 200


def test_upload_larger_than_a_part_is_413(cloud: LocalCloud) -> None:
    links = create(cloud, "p", b"x" * 20)
    assert post(links[0], b"x" * (PART + 1)).status_code == 413
    assert post(links[0], b"x" * 20).status_code == 200


def test_chunked_upload_is_411(cloud: LocalCloud) -> None:
    links = create(cloud, "p", b"x" * 20)

    def body() -> Iterator[bytes]:
        yield b"x" * 10
        yield b"x" * 10

    answer = post(links[0], body())
    assert answer.status_code == 411
    assert answer.json() == {"error": "length required"}
    assert project_state(cloud)["parts_received"] == []
    assert post(links[0], b"x" * 20).status_code == 200


def test_upload_cut_short_stores_nothing(cloud: LocalCloud) -> None:
    links = create(cloud, "p", b"x" * 1000)
    url = urlsplit(links[0])
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = f"POST {url.path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        sock.sendall(head.encode() + b"x" * 100)
        state = cloud.wait_for(lambda s: s["projects"]["p"]["bytes_receiving"] == 100)
        assert state["uploads_in_progress"] == 1
    state = cloud.wait_for(lambda s: s["uploads_in_progress"] == 0)
    assert state["projects"]["p"]["parts_received"] == []
    assert state["projects"]["p"]["bytes_receiving"] == 0
    assert post(links[0], b"x" * 1000).status_code == 200


def test_content_hash_of_several_blocks(tmp_path: Path, clock: FakeClock) -> None:
    data = image_bytes(7, 9 * 1024 * 1024 + 123)
    with new_cloud(tmp_path, clock, max_part_bytes=len(data)) as cloud:
        links = create(cloud, "p", data)
        answer = post(links[0], data)
        assert answer.json() == {"content-hash": dropbox_hash(data)}
        assert cloud.archive_path("p").read_bytes() == data


def test_multi_part_upload_is_joined(cloud: LocalCloud, clock: FakeClock) -> None:
    files = {f"scan/img_{i:03d}.jpg": image_bytes(i, 50_000) for i in range(5)}
    data = make_zip(files)
    links = create(cloud, "p", data, photos=5)
    assert len(links) == math.ceil(len(data) / PART) > 1
    for index in reversed(range(len(links))):  # order of arrival does not matter
        assert post(links[index], split(data)[index]).status_code == 200
    assert project_state(cloud)["parts_received"] == list(range(len(links)))
    with zipfile.ZipFile(cloud.archive_path("p")) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in zf.namelist()} == files
    api(cloud, "startProject", token=TOKEN, project="p")
    clock.advance(PROCESSING_S)
    assert info(cloud)["status"] == "processing done"
    assert cloud.archive_path("p").read_bytes() == data


# ------------------------------------------------------------------------------- statuses


def test_statuses_advance_with_the_clock(cloud: LocalCloud, clock: FakeClock) -> None:
    started_project(cloud)
    links = info(cloud)["ulink"]
    assert info(cloud) == {"status": "initialized", "ulink": links, "dlink": None}
    clock.advance(0.25 * PROCESSING_S - 0.01)
    assert info(cloud)["status"] == "initialized"
    clock.advance(0.01)
    assert info(cloud)["status"] == "processing started"
    assert project_state(cloud)["status"] == "processing started"
    clock.advance(0.75 * PROCESSING_S)
    done = info(cloud)
    assert done["status"] == "processing done"
    project_id = urlsplit(done["dlink"]).path.split("/")[2]
    assert done["dlink"] == f"{cloud.url}/share/{project_id}/p.zip?dl=0"
    clock.advance(TTL_S - 1)
    assert info(cloud)["status"] == "processing done"
    clock.advance(1)
    assert info(cloud) == {"status": "expired", "ulink": links, "dlink": None}
    assert requests.get(done["dlink"].replace("dl=0", "dl=1"), timeout=10).status_code == 404


def test_invalid_zip_fails(cloud: LocalCloud, clock: FakeClock) -> None:
    started_project(cloud, "garbage", image_bytes(3, 5000))
    data = small_set()
    answer = api(cloud, "createProject", token=TOKEN, project="short", photos=2, parts=1,
                 filesize=len(data) + 1)
    post(answer.json()["ulink"][0], data)
    api(cloud, "startProject", token=TOKEN, project="short")
    started_project(cloud, "noimages", make_zip({"readme.txt": b"hello"}))
    clock.advance(PROCESSING_S)
    for name in ("garbage", "short", "noimages"):
        assert info(cloud, name) == {
            "status": "processing failed",
            "ulink": info(cloud, name)["ulink"],
            "dlink": None,
        }


def test_processing_failed_fault(cloud: LocalCloud, clock: FakeClock) -> None:
    cloud.inject("processing_failed")
    started_project(cloud, "p")
    started_project(cloud, "q")
    clock.advance(PROCESSING_S)
    assert info(cloud, "p")["status"] == "processing failed"
    assert info(cloud, "q")["status"] == "processing done"


def test_reset_project(cloud: LocalCloud) -> None:
    data = small_set()
    links = create(cloud, "p", data)
    assert post(links[0], data).status_code == 200
    credit = api(cloud, "getTokenInfo", token=TOKEN).json()["credit"]
    assert api(cloud, "resetProject", token=TOKEN, project="p").json() == {"status": "reset"}
    assert api(cloud, "getTokenInfo", token=TOKEN).json()["credit"] == credit + len(data)
    assert api(cloud, "getProjectInfo", token=TOKEN, project="p").status_code == 401
    assert post(links[0], data).status_code == 409
    state = project_state(cloud)
    assert (state["status"], state["created_count"], state["reset_count"]) == ("reset", 1, 1)
    new_links = create(cloud, "p", data)
    assert set(new_links).isdisjoint(links)
    upload(new_links, data)
    state = project_state(cloud)
    assert (state["status"], state["created_count"], state["reset_count"]) == ("created", 2, 1)
    assert_400(api(cloud, "resetProject", token=TOKEN, project="nope"))
    assert_400(api(cloud, "resetProject", token="other", project="p"))


# ------------------------------------------------------------------------------- the model


def test_share_link_preview_and_download(cloud: LocalCloud, clock: FakeClock) -> None:
    first = image_bytes(10, 4000)
    data = make_zip(
        {
            "z_last.png": image_bytes(11, 4000),
            "notes.txt": b"not an image",
            "scan/b.jpg": image_bytes(12, 4000),
            "scan/a.jpg": first,
        }
    )
    started_project(cloud, "p", data)
    clock.advance(PROCESSING_S)
    dlink = info(cloud)["dlink"]
    preview = requests.get(dlink, timeout=10)
    assert preview.status_code == 200
    assert preview.headers["Content-Type"].startswith("text/html")
    assert "<html" in preview.text.lower()
    no_dl = requests.get(dlink.split("?")[0], timeout=10)
    assert no_dl.headers["Content-Type"].startswith("text/html")
    download = requests.get(dlink.replace("dl=0", "dl=1"), timeout=10)
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "application/zip"
    assert int(download.headers["Content-Length"]) == len(download.content)
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        assert sorted(zf.namelist()) == ["model.mtl", "model.obj", "texture.jpg"]
        assert zf.read("texture.jpg") == first
        mtl = zf.read("model.mtl").decode()
        assert "map_Kd texture.jpg" in mtl.splitlines()
        obj = zf.read("model.obj").decode().splitlines()
    assert "mtllib model.mtl" in obj
    assert any(line.startswith("usemtl ") for line in obj)
    vertices = [line for line in obj if line.startswith("v ")]
    uvs = [line for line in obj if line.startswith("vt ")]
    faces = [line for line in obj if line.startswith("f ")]
    assert len(vertices) == len(uvs) > 100 and len(faces) > 100
    for face in faces:
        for corner in face.split()[1:]:
            v, vt = (int(x) for x in corner.split("/"))
            assert 1 <= v <= len(vertices) and 1 <= vt <= len(uvs)
    # deterministic: the same set gives the same zip byte for byte
    started_project(cloud, "again", data)
    clock.advance(PROCESSING_S)
    other = requests.get(info(cloud, "again")["dlink"].replace("dl=0", "dl=1"), timeout=10)
    assert other.content == download.content


def test_texture_keeps_its_extension(cloud: LocalCloud, clock: FakeClock) -> None:
    texture = image_bytes(20, 1000)
    started_project(cloud, "p", make_zip({"b.jpg": b"x", "a.PNG": texture}))
    clock.advance(PROCESSING_S)
    zipped = requests.get(info(cloud)["dlink"].replace("dl=0", "dl=1"), timeout=10).content
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        assert zf.read("texture.png") == texture
        assert "map_Kd texture.png" in zf.read("model.mtl").decode()


# ------------------------------------------------------------------------------- persistence


def test_state_survives_a_new_server(tmp_path: Path, clock: FakeClock) -> None:
    store = tmp_path / "store"
    data = make_zip({f"img_{i}.jpg": image_bytes(i, 40_000) for i in range(3)})
    with new_cloud(store, clock) as first:
        links = create(first, "p", data, photos=3)
        assert len(links) == 2
        assert post(links[0], split(data)[0]).status_code == 200
        create(first, "gone", b"x" * 10)
        api(first, "resetProject", token=TOKEN, project="gone")
        credit = first.state()["tokens"][TOKEN]["credit"]
    with new_cloud(store, clock) as second:
        state = second.state()
        assert state["tokens"][TOKEN]["credit"] == credit
        assert state["projects"]["p"]["parts_received"] == [0]
        assert state["projects"]["gone"]["reset_count"] == 1
        # the same port as the first server: the links it handed out still work, as real ones do
        assert second.url == first.url and info(second)["ulink"] == links
        assert post(links[0], split(data)[0]).status_code == 409
        assert post(links[1], split(data)[1]).status_code == 200
        assert api(second, "startProject", token=TOKEN, project="p").status_code == 200
    clock.advance(PROCESSING_S)
    with socket.create_server(("127.0.0.1", int(first.url.rsplit(":", 1)[1]))), \
            new_cloud(store, clock) as third:  # its port taken meanwhile: it serves on another
        assert third.url != first.url and info(third)["ulink"][0].startswith(f"{third.url}/upload/")
        assert info(third)["status"] == "processing done"
        with zipfile.ZipFile(third.archive_path("p")) as zf:
            assert zf.testzip() is None
        assert project_state(third)["start_count"] == 1


def test_temporary_store_is_removed(clock: FakeClock) -> None:
    cloud = new_cloud(None, clock).start()
    store = cloud.store_dir
    assert store.is_dir()
    create(cloud, "p", b"x" * 10)
    cloud.stop()
    assert not store.exists()


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "openscan_pi.sim.cloud", "--port", "0", "--store",
         str(tmp_path / "store"), "--processing-s", "1", "--max-part-bytes", "1000"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert requests.get(f"{url}/status", timeout=10).json() == {"status": "online"}
        answer = requests.get(f"{url}/createProject", auth=AUTH, timeout=10, params={
            "token": TOKEN, "project": "p", "photos": 1, "parts": 1, "filesize": 1001,
        })
        assert answer.status_code == 400  # --max-part-bytes took effect
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
