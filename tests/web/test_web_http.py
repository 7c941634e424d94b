"""The web page over HTTP, against a real simulated daemon and its real web process."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from ..conftest import cli_env
from ..daemon.conftest import WAIT_S, DaemonProcess
from .conftest import WebDaemon, WebSession, wait_for_url


def events(s: WebSession) -> Iterator[dict[str, Any] | None]:
    """The page's server-sent events, as statuses."""
    with s.get(s.base + "/events", stream=True, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                yield json.loads(line[6:])


def finished_job(web: WebDaemon, positions: int = 4) -> dict[str, Any]:
    """A scan through the page, waited for until its model is there."""
    s = web.session()
    s.page()
    job = s.act("scan", {"positions": positions}).json()["result"]
    return web.daemon.wait_job(job["id"], {"done"})


def test_the_status_is_pushed_live_and_a_scan_started_from_the_page_advances(web: WebDaemon
                                                                              ) -> None:
    s = web.session()
    r = s.page()
    assert r.status_code == 200 and s.csrf and "Scanner" in r.text
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    stream = events(s)
    first = next(stream)
    assert first is not None and first["state"] == "idle"
    # long enough for a page that gets the latest status at most five times a second
    job = s.act("scan", {"positions": 40}).json()["result"]
    seen = set()
    deadline = time.monotonic() + WAIT_S
    for status in stream:
        current = (status or {}).get("job") or {}
        if current.get("id") == job["id"]:
            seen.add(current.get("captured"))
            if current.get("state") not in ("queued", "scanning"):
                break  # captured: what the page saw of it is all it will see
        assert time.monotonic() < deadline, seen
    assert len(seen - {0, None}) >= 3, seen  # progress pushed step by step, no request for it
    web.daemon.wait_job(job["id"], {"done"})


def test_a_request_that_changes_something_needs_the_csrf_token(web: WebDaemon) -> None:
    s = web.session()
    s.page()
    for token in (None, "wrong"):
        headers = {"X-CSRF-Token": token} if token else {}
        r = s.post(web.url + "/api/light", json={"on": True}, headers=headers, timeout=30)
        assert r.status_code == 403
        assert "CSRF" in r.json()["error"] and "\n" not in r.text.strip()
    stranger = web.session()  # a token of another session does not do either
    stranger.page()
    r = s.post(web.url + "/api/light", json={"on": True},
               headers={"X-CSRF-Token": stranger.csrf}, timeout=30)
    assert r.status_code == 403
    assert web.daemon.call("status")["rig"]["light"] is False
    assert s.act("light", {"on": True}).json()["result"]["on"] is True
    assert web.daemon.call("status")["rig"]["light"] is True


def test_actions_go_through_the_daemon_and_its_refusals_come_back_as_one_line(web: WebDaemon
                                                                             ) -> None:
    s = web.session()
    s.page()
    r = s.act("move", {"rotor": 85})  # beyond the simulated rotor's 80°
    assert r.status_code == 409 and "rig.rotor" in r.json()["error"]  # the daemon's limits
    assert s.act("move", {"turntable": 45}).json()["result"]["turntable"] == pytest.approx(45)
    assert s.act("scan", {"positions": "many"}).status_code == 400
    assert s.act("scan", {"positions": 5, "shell": "rm"}).status_code == 400
    assert s.act("reboot").status_code == 404
    bad = s.post(web.url + "/api/scan", data="{", headers={"X-CSRF-Token": s.csrf}, timeout=30)
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]


def test_pause_continue_and_cancel_from_the_page(web: WebDaemon) -> None:
    s = web.session()
    s.page()
    job = s.act("scan", {"positions": 60}).json()["result"]
    web.daemon.wait_job(job["id"], {"scanning"})
    assert s.act("pause", {"job": job["id"]}).status_code == 200
    web.daemon.wait_job(job["id"], {"paused"})
    assert s.act("continue", {"job": job["id"]}).status_code == 200
    web.daemon.wait_job(job["id"], {"scanning"})
    assert s.act("cancel", {"job": job["id"]}).json()["result"]["state"] == "cancelled"


def test_the_zips_download_whole_and_the_thumbnails_are_made_once(web: WebDaemon) -> None:
    job = finished_job(web)
    s = web.session()
    page = s.page(f"/jobs/{job['id']}")
    assert page.status_code == 200 and "model.zip" in page.text and "photos.zip" in page.text
    folder = web.daemon.data / "jobs" / job["id"]
    for what, sub in (("photos", "images"), ("model", "model")):
        r = s.get(f"{web.url}/jobs/{job['id']}/{what}.zip", timeout=60)
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(r.content)
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            assert zf.testzip() is None
            want = sorted(p.name for p in (folder / sub).iterdir()
                          if sub == "model" or p.suffix == ".jpg")
            assert sorted(zf.namelist()) == want
            for name in want:
                assert zf.read(name) == (folder / sub / name).read_bytes()
    assert not list(folder.rglob("*.zip"))  # streamed: nothing written
    photo = sorted((folder / "images").glob("*.jpg"))[0].name
    r = s.get(f"{web.url}/jobs/{job['id']}/thumbs/{photo}", timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    from PIL import Image

    with Image.open(io.BytesIO(r.content)) as image:
        assert max(image.size) <= 320
    thumb = folder / "thumbs" / photo
    made = thumb.stat().st_mtime_ns, thumb.stat().st_ino
    assert s.get(f"{web.url}/jobs/{job['id']}/thumbs/{photo}", timeout=60).content == r.content
    assert (thumb.stat().st_mtime_ns, thumb.stat().st_ino) == made
    obj = s.get(f"{web.url}/jobs/{job['id']}/model/model.obj", timeout=60)
    assert obj.status_code == 200 and obj.content == (folder / "model" / "model.obj").read_bytes()


def test_nothing_outside_the_job_folders_can_be_read(web: WebDaemon, tmp_path: Path) -> None:
    job = finished_job(web, positions=2)
    folder = web.daemon.data / "jobs" / job["id"]
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not for the page")
    (folder / "images" / "link.jpg").symlink_to(secret)
    (folder / "model" / "link.obj").symlink_to(secret)
    s = web.session()
    s.page()
    j = job["id"]
    for path in (f"/jobs/{j}/photos/..%2Fjob.json", f"/jobs/{j}/photos/manifest.json",
                 f"/jobs/{j}/photos/link.jpg", f"/jobs/{j}/model/link.obj",
                 f"/jobs/{j}/thumbs/link.jpg", "/jobs/..%2F..%2F/photos/passwd",
                 f"/jobs/{j}/photos/%2Fetc%2Fpasswd", "/jobs/.x/photos.zip",
                 "/three/..%2F..%2F..%2Fetc%2Fpasswd", "/static/..%2Fapp.py",
                 f"/jobs/{j}/photos/.hidden.jpg"):
        r = s.get(web.url + path, timeout=30)
        assert r.status_code in (404, 400), (path, r.status_code)
        assert b"not for the page" not in r.content
    with zipfile.ZipFile(io.BytesIO(s.get(f"{web.url}/jobs/{j}/photos.zip", timeout=60).content)
                         ) as zf:
        assert "link.jpg" not in zf.namelist()


def test_a_page_for_another_host_name_is_refused_without_a_password(web: WebDaemon) -> None:
    r = requests.get(web.url + "/", headers={"Host": "attacker.example:8080"}, timeout=30)
    assert r.status_code == 403 and "localhost" in r.json()["error"]
    assert requests.get(web.url + "/", headers={"Host": "localhost:8080"},
                        timeout=30).status_code == 200


def test_with_a_password_a_wrong_one_is_refused_and_slowed(make_web: Callable[..., WebDaemon]
                                                          ) -> None:
    web = make_web(password="open sesame")
    s = web.session()
    r = s.page("/")
    assert r.url.endswith("/login") and "Password" in r.text
    assert s.get(web.url + "/api/status", timeout=30).status_code == 401
    assert s.get(web.url + "/events", timeout=30).status_code == 401
    assert s.post(web.url + "/login", data={"password": "open sesame"},
                  timeout=30).status_code == 403  # no CSRF token: refused before the password
    took = []
    for _ in range(2):
        started = time.monotonic()
        r = s.post(web.url + "/login", data={"password": "guess", "csrf": s.csrf}, timeout=60)
        took.append(time.monotonic() - started)
        assert r.status_code == 403 and "Wrong password" in r.text
    assert took[0] >= 1.0 and took[1] >= 2.0  # a delay per failure that grows
    assert s.get(web.url + "/api/status", timeout=30).status_code == 401
    r = s.post(web.url + "/login", data={"password": "open sesame", "csrf": s.csrf}, timeout=60)
    assert r.status_code == 200 and "Scanner" in r.text
    assert s.get(web.url + "/api/status", timeout=30).json()["status"]["state"] == "idle"
    s.page()
    assert s.act("light", {"on": True}).status_code == 200


def test_a_listen_beyond_loopback_without_a_password_stops_the_daemon_with_78(
        short_dir: Path) -> None:
    config = short_dir / "c.yaml"
    config.write_text(yaml.safe_dump({"daemon": {"socket": str(short_dir / "d.sock"),
                                                 "data_dir": str(short_dir / "data")},
                                      "rig": {"model": "simulated"},
                                      "web": {"listen": "0.0.0.0:8080"}}))
    r = subprocess.run([sys.executable, "-m", "openscan_pi", "--config", str(config), "daemon"],
                       capture_output=True, text=True, env=cli_env(), timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 78
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "web.password" in lines[0] and "Traceback" not in r.stderr
    assert not (short_dir / "d.sock").exists()


def test_the_web_process_ends_with_the_daemon_even_after_kill_9(web: WebDaemon) -> None:
    os.kill(web.pid, 0)
    web.daemon.kill()
    deadline = time.monotonic() + 30
    while True:
        try:
            os.kill(web.pid, 0)
        except ProcessLookupError:
            break
        # a zombie is gone too: it is no longer ours to reap once its parent died
        assert time.monotonic() < deadline, "the web process outlived the daemon"
        time.sleep(0.05)  # polling the pid: nothing else tells a process's end to a non-parent


def test_a_web_process_that_dies_is_started_again(web: WebDaemon) -> None:
    os.kill(web.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        urls = [line for line in web.daemon.log_text().splitlines() if "web page at" in line]
        if len(urls) >= 2:
            break
        assert time.monotonic() < deadline, web.daemon.log_text()
        time.sleep(0.05)  # polling the daemon's log: the restart is said there
    url = urls[-1].split("web page at ", 1)[1].split(" ", 1)[0]
    assert requests.get(url, timeout=30).status_code == 200


def test_the_preview_changes_as_the_rig_moves(web: WebDaemon) -> None:
    s = web.session()
    s.page()
    first = s.get(web.url + "/preview.jpg?after=0", timeout=60)
    assert first.status_code == 200 and first.headers["Content-Type"] == "image/jpeg"
    seq = int(first.headers["X-Preview-Seq"])
    assert float(first.headers["X-Preview-focus"]) > 0
    assert s.act("move", {"turntable": 90, "rotor": 30}).status_code == 200
    problems = []
    deadline = time.monotonic() + WAIT_S
    while True:  # the frame under way when the rig moved may still show the old view
        later = s.get(f"{web.url}/preview.jpg?after={seq}", timeout=60)
        assert later.status_code == 200
        if later.headers["Content-Type"] != "image/jpeg":
            # no frame within the wait (a loaded machine), said as such: ask again
            problems.append(later.json()["problem"])
            assert time.monotonic() < deadline, problems
            continue
        assert int(later.headers["X-Preview-Seq"]) > seq
        seq = int(later.headers["X-Preview-Seq"])
        if later.content != first.content:
            break


def test_the_preview_says_why_there_is_none_during_a_scan(web: WebDaemon) -> None:
    s = web.session()
    s.page()
    job = s.act("scan", {"positions": 60}).json()["result"]
    web.daemon.wait(lambda st: (st.get("rig") or {}).get("job") == job["id"])
    deadline = time.monotonic() + WAIT_S
    while True:
        r = s.get(web.url + "/preview.jpg?after=1000000", timeout=60)
        assert r.status_code == 200
        if "scanning" in r.json().get("problem", ""):
            break
        assert time.monotonic() < deadline, r.text
    s.act("cancel", {"job": job["id"]})




def test_a_port_in_use_is_said_in_the_log_and_the_daemon_runs_on(
        make_daemon: Callable[..., DaemonProcess]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = make_daemon(web={"enabled": True, "listen": f"127.0.0.1:{port}"}).start()
        wanted = f"the web page did not start: cannot listen on 127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while wanted not in daemon.log_text():
            assert time.monotonic() < deadline, daemon.log_text()
            time.sleep(0.05)  # polling the daemon's log: it says so there
        assert daemon.call("status")["state"] == "idle"
        assert "web.listen" in daemon.log_text()


def test_sighup_takes_new_web_keys_with_a_new_web_process(make_web: Callable[..., WebDaemon]
                                                          ) -> None:
    """`web.*` changed and SIGHUP: the page's process is started again with the new keys (here
    a password, then off), as the other keys are taken without a restart."""
    web = make_web()
    d = web.daemon
    config = yaml.safe_load(d.config.read_text())
    config["web"]["password"] = "open sesame"
    d.config.write_text(yaml.safe_dump(config))
    d.reload()
    assert "the web page starts again with its new keys" in d.log_text()
    with pytest.raises(ProcessLookupError):
        os.kill(web.pid, 0)  # the old one is gone (reaped by the daemon before it said so)
    url, pid = wait_for_url(d, nth=1)
    assert pid != web.pid
    assert WebSession(url.rstrip("/")).page("/").url.endswith("/login")  # the password holds
    config["web"]["enabled"] = False
    d.config.write_text(yaml.safe_dump(config))
    d.reload()
    assert "the web page is off" in d.log_text()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert d.call("status")["state"] == "idle"
