"""An upload part's body is sent under its own bound, not urllib3's connect timeout (urllib3 1.26
and 2.x send a request body while the socket still has the connect timeout; the read timeout only
starts after it). A slow Wi-Fi part that keeps moving goes through; a stalled one is still cut."""

from __future__ import annotations

from pathlib import Path

from openscan_pi.sim.cloud import LocalCloud

from .conftest import make_set
from .test_cloud_faults import quick_config, upload_wait


def test_a_slow_part_is_not_cut_by_the_connect_timeout(tmp_path: Path, cloud: LocalCloud) -> None:
    """A 4 MB part to a server reading 1 MB/s through a 16 KiB window: once the socket's send
    buffer is full (about 2.5 MB on loopback), each 64 KiB send waits some 65 ms for the server,
    longer than a 20 ms connect timeout. The part moves far faster than the stall rule's minimum
    (8 KiB in 2 s), so it must go through, in one try."""
    make_set(tmp_path / "set", count=4, size=1_000_000)
    cloud.inject("part_slow", bps=1_000_000)
    config = quick_config(tmp_path, cloud, connect_timeout_s=0.02, stall_window_s=2,
                          stall_min_bytes=8192, call_timeout_s=10, max_part_bytes=5_000_000)
    proc = upload_wait(config, tmp_path / "set", tmp_path / "model")
    assert proc.returncode == 0, proc.stderr
    assert "trying again" not in proc.stderr and "stalled" not in proc.stderr, proc.stderr
    assert (tmp_path / "model" / "model.obj").is_file()


def test_a_stalled_part_is_still_cut(tmp_path: Path, cloud: LocalCloud) -> None:
    """Below the stall rule's minimum (300 bytes/s against 8 KiB in 2 s) the part is cut within
    the window, whatever the socket's timeout during the body, and said so in one line."""
    make_set(tmp_path / "set", count=2, size=60_000)
    cloud.inject("part_slow", bps=300)
    config = quick_config(tmp_path, cloud, connect_timeout_s=0.2, stall_window_s=2,
                          stall_min_bytes=8192, call_timeout_s=5, max_offline_s=0)
    proc = upload_wait(config, tmp_path / "set", tmp_path / "model")
    assert proc.returncode == 1
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("openscan-pi: ") and "stalled: less than 8192 bytes moved in 2 s" in last, (
        proc.stderr)
