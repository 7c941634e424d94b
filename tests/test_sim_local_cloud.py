"""``cloud.url: local``: the bundled local cloud as a child process (openscan_pi.sim.local_cloud),
its URL handed on as an ordinary one, ended with its parent however the parent ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from openscan_pi.cloud.transfer import Transfer, connect
from openscan_pi.config import load_config
from openscan_pi.errors import UserError
from openscan_pi.sim.local_cloud import BundledCloud, LocalCloudProcess, local_cloud
from tests.conftest import write_config
from tests.standalone_upload import prepare_upload


def gone(pid: int, deadline_s: float = 30.0) -> bool:
    """Whether process ``pid`` has ended (reaped or a zombie) before the deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)  # polling /proc for the end of a process we do not own
    return False


def child_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_a_whole_upload_through_the_bundled_cloud(tmp_path: Path, image_set: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", None, tmp_path / "data", url="local",
                                   token="", poll_interval_s=30, local={"processing_s": 0.2}), env={})
    with local_cloud(cfg) as served:
        assert served.cloud.url.startswith("http://127.0.0.1:") and served.cloud.token == "local"
        assert served.cloud.poll_interval_s == 0.2  # it is quick: no 30 s poll
        pid = child_pids(os.getpid())[-1]
        with connect(served) as api:
            journal, source = prepare_upload(served, image_set, "local-1.zip")
            out = Transfer(api, served, journal, source).run(wait=True, model_dir=tmp_path / "m")
    assert gone(pid)
    assert out.phase == "downloaded" and (tmp_path / "m" / "model.obj").exists()
    assert (tmp_path / "data" / "local-cloud" / "state.json").is_file()  # its store: under data_dir


def test_a_real_url_passes_through(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", None, tmp_path / "data",
                                   url="http://192.0.2.1:1334"), env={})
    with BundledCloud() as bundled:
        assert bundled.resolve(cfg) is cfg and bundled.child is None


def test_one_child_for_every_config_and_the_same_port_next_time(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", None, tmp_path / "data", url="local"),
                      env={})
    with BundledCloud() as bundled:
        first = bundled.resolve(cfg).cloud.url
        assert bundled.resolve(cfg).cloud.url == first  # a reload: the same child
        assert requests.get(f"{first}/_state", timeout=10).json()["url"] == first
    with local_cloud(cfg) as again:  # links handed out before still reach it
        assert again.cloud.url == first


def test_a_child_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "file"
    store.write_text("not a folder")
    with pytest.raises(UserError, match="the bundled local cloud did not start"):
        LocalCloudProcess(store).start()


PARENT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from openscan_pi.sim.local_cloud import LocalCloudProcess
    child = LocalCloudProcess(Path(sys.argv[1]), processing_s=0.1)
    print(child.start(), child.proc.pid, flush=True)
    sys.stdin.read()  # until the test kills us
""")


def test_the_child_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "store")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        url, pid = parent.stdout.readline().split()
        assert requests.get(f"{url}/_state", timeout=10).ok
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        assert gone(int(pid)), "the local cloud outlived its parent"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/_state", timeout=10)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait()
