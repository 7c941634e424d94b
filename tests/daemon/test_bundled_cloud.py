"""``openscan-pi daemon`` with ``cloud.url: local``: the bundled cloud is a child process of the
daemon, reached by URL, and it ends with the daemon, on SIGTERM as on SIGKILL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.daemon.conftest import DaemonProcess
from tests.test_sim_local_cloud import child_pids, gone


def bundled_cloud(d: DaemonProcess) -> tuple[int, str]:
    """The pid and URL of the daemon's bundled cloud (its only child running the local cloud)."""
    assert d.proc is not None
    for pid in child_pids(d.proc.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"openscan_pi.sim.cloud" in cmdline:
            port = int((d.data / "local-cloud" / "port").read_text())
            return pid, f"http://127.0.0.1:{port}"
    raise AssertionError(f"no bundled cloud among the daemon's children: {child_pids(d.proc.pid)}")


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_the_bundled_cloud_ends_with_the_daemon(make_daemon: Callable[..., DaemonProcess],
                                                how: str) -> None:
    d = make_daemon().start()
    pid, url = bundled_cloud(d)
    assert requests.get(f"{url}/_state", timeout=10).json()["url"] == url
    d.stop() if how == "stop" else d.kill()
    assert gone(pid), f"the bundled cloud outlived the daemon ({how})"


def test_a_scan_reaches_the_bundled_cloud_by_url(make_daemon: Callable[..., DaemonProcess]) -> None:
    d = make_daemon(rig={"model": "simulated", "sim_time_scale": 0.001}).start()
    _, url = bundled_cloud(d)
    job = d.call("scan", {"positions": 3})
    done = d.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    state = requests.get(f"{url}/_state", timeout=10).json()
    assert list(state["projects"]) == [job["project"]]
