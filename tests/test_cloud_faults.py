"""The cloud client against a server it cannot trust: answers trickled a byte at a time, huge
answers, broken bodies, redirect loops, unusable links and terminal escapes, from the bundled local
cloud over real loopback sockets, through the CLI as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from openscan_pi.config import load_config
from openscan_pi.sim.cloud import ESCAPES, LocalCloud

from .conftest import TOKEN, cli_env, make_set, run_cli, write_config

#: A raw control character or terminal escape: C0 (but tab and newline), DEL, C1, bidi controls.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: What a user waits at most in these tests before calling a command stuck.
STUCK_S = 90


def quick_config(tmp_path: Path, cloud: LocalCloud, **keys: Any) -> Path:
    """A config with short bounds: a call ends in 2 s, a transfer moving < 1 KiB in 1 s is cut."""
    values: dict[str, Any] = {"call_timeout_s": 2, "stall_window_s": 1, "stall_min_bytes": 1024,
                              "max_offline_s": 0}
    values.update(keys)
    return write_config(tmp_path / "c.yaml", cloud, tmp_path / "data", **values)


def one_line_naming(proc: subprocess.CompletedProcess[str], cloud: LocalCloud) -> str:
    """The failure of ``proc``: exit 1, its last stderr line naming the local cloud's host, no
    traceback, no token, no raw control character."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("openscan-pi: "), proc.stderr
    assert cloud.url.removeprefix("http://") in last, last
    assert "Traceback" not in proc.stderr and TOKEN not in proc.stderr
    assert not CONTROL.search(proc.stderr + proc.stdout), proc.stderr
    return last


def upload_wait(config: Path, folder: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("--config", str(config), "upload", str(folder), "--wait", "--out", str(out),
                   timeout=STUCK_S)


def uploaded(tmp_path: Path, cloud: LocalCloud, image_set: Path) -> tuple[Path, str]:
    """A config and the name of a project that was uploaded and started (not downloaded)."""
    config = quick_config(tmp_path, cloud, max_offline_s=10)
    proc = run_cli("--config", str(config), "upload", str(image_set), "--json")
    assert proc.returncode == 0, proc.stderr
    return config, json.loads(proc.stdout)["project"]


# ------------------------------------------------------------------------------ deadlines


def test_token_from_a_trickling_cloud_ends_with_one_line(tmp_path: Path, cloud: LocalCloud) -> None:
    cloud.inject("api_trickle", 100)
    proc = run_cli("--config", str(quick_config(tmp_path, cloud)), "token", timeout=STUCK_S)
    assert "within 2 s" in one_line_naming(proc, cloud)


def test_upload_to_a_trickling_cloud_ends_with_one_line(tmp_path: Path, cloud: LocalCloud,
                                                        image_set: Path) -> None:
    cloud.inject("api_trickle", 100)
    proc = upload_wait(quick_config(tmp_path, cloud), image_set, tmp_path / "model")
    one_line_naming(proc, cloud)
    assert cloud.state()["projects"] == {}


def test_a_trickled_api_answer_is_cut_and_retried(tmp_path: Path, cloud: LocalCloud,
                                                  image_set: Path) -> None:
    cloud.inject("api_trickle", 2)
    proc = upload_wait(quick_config(tmp_path, cloud, max_offline_s=60), image_set,
                       tmp_path / "model")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "model" / "model.obj").is_file()


def test_a_trickled_answer_to_a_part_is_cut_and_the_upload_completes(
        tmp_path: Path, cloud: LocalCloud, image_set: Path) -> None:
    cloud.inject("part_trickle")
    proc = upload_wait(quick_config(tmp_path, cloud, max_offline_s=60), image_set,
                       tmp_path / "model")
    assert proc.returncode == 0, proc.stderr
    (project,) = cloud.state()["projects"].values()
    # the part's answer never came: the part was sent again, found its link used, and the project
    # was made again under the same name
    assert project["reset_count"] == 1 and project["created_count"] == 2
    assert "stalled" in proc.stderr and (tmp_path / "model" / "model.obj").is_file()


def test_a_trickled_model_download_is_cut_and_retried(tmp_path: Path, cloud: LocalCloud,
                                                      image_set: Path) -> None:
    config, name = uploaded(tmp_path, cloud, image_set)
    cloud.inject("download_trickle")
    proc = run_cli("--config", str(config), "download", name, "--out", str(tmp_path / "m"),
                   timeout=STUCK_S)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m" / "model.obj").is_file()


def test_download_from_a_trickling_link_ends_with_one_line(tmp_path: Path, cloud: LocalCloud,
                                                           image_set: Path) -> None:
    config, name = uploaded(tmp_path, cloud, image_set)
    cloud.inject("download_trickle", 100)
    config = quick_config(tmp_path, cloud)
    proc = run_cli("--config", str(config), "download", name, "--out", str(tmp_path / "m"),
                   timeout=STUCK_S)
    assert "stalled" in one_line_naming(proc, cloud)
    assert not (tmp_path / "m").exists()


def test_the_scan_preflight_gives_up_on_a_trickling_cloud(tmp_path: Path,
                                                          cloud: LocalCloud) -> None:
    from openscan_pi.jobs.runner import preflight

    cloud.inject("api_trickle", 100)
    cfg = load_config(quick_config(tmp_path, cloud, call_timeout_s=120), env={})
    found: list[list[str]] = []
    worker = threading.Thread(target=lambda: found.append(preflight(cfg, 10)), daemon=True)
    worker.start()
    worker.join(STUCK_S)
    assert found, "the pre-flight token check did not end"
    (warning,) = found[0]
    assert "could not check the token" in warning and cloud.url in warning


def test_stop_ends_a_call_in_flight_and_the_next_never_starts(tmp_path: Path,
                                                             cloud: LocalCloud) -> None:
    from openscan_pi.cloud.api import CloudAPI
    from openscan_pi.cloud.errors import Cancelled

    cloud.inject("api_trickle", 100)
    cfg = load_config(quick_config(tmp_path, cloud, call_timeout_s=600), env={})
    stop = threading.Event()
    api = CloudAPI(cfg.cloud, stop=stop)
    ended: list[BaseException] = []

    def call() -> None:
        try:
            api.token_info()
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            ended.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    cloud.wait_for(lambda s: s["requests"].get("getTokenInfo", 0) == 1)  # the call is in flight
    stop.set()
    worker.join(STUCK_S)
    assert ended and isinstance(ended[0], Cancelled), ended
    with pytest.raises(Cancelled):
        api.token_info()
    assert cloud.state()["requests"]["getTokenInfo"] == 1
    api.close()


# ------------------------------------------------------------- every failure is a cloud error


@pytest.mark.parametrize(("fault", "words"), [
    ("api_broken_chunked", "dropped"),
    ("api_bad_gzip", "could not be decoded"),
    ("api_redirect_loop", "redirect"),
])
def test_a_broken_answer_is_one_line(tmp_path: Path, cloud: LocalCloud, fault: str,
                                     words: str) -> None:
    cloud.inject(fault, 100)
    proc = run_cli("--config", str(quick_config(tmp_path, cloud)), "token", timeout=STUCK_S)
    assert words in one_line_naming(proc, cloud)


@pytest.mark.parametrize("fault", ["api_broken_chunked", "api_bad_gzip"])
def test_a_broken_body_is_retried_like_a_network_error(tmp_path: Path, cloud: LocalCloud,
                                                       image_set: Path, fault: str) -> None:
    cloud.inject(fault, 2)
    proc = upload_wait(quick_config(tmp_path, cloud, max_offline_s=60), image_set,
                       tmp_path / "model")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "model" / "model.obj").is_file()


def test_a_redirect_loop_is_not_retried(tmp_path: Path, cloud: LocalCloud,
                                        image_set: Path) -> None:
    cloud.inject("api_redirect_loop", 100)
    proc = upload_wait(quick_config(tmp_path, cloud, max_offline_s=60), image_set,
                       tmp_path / "model")
    assert "redirect" in one_line_naming(proc, cloud)
    assert cloud.state()["requests"]["getTokenInfo"] == 1


@pytest.mark.parametrize("bad", ["bad_scheme", "bad_ipv6", "no_scheme"])
def test_an_unusable_upload_link_is_one_line(tmp_path: Path, cloud: LocalCloud, image_set: Path,
                                             bad: str) -> None:
    cloud.inject(f"ulink_{bad}")
    proc = upload_wait(quick_config(tmp_path, cloud, max_offline_s=60), image_set,
                       tmp_path / "model")
    assert "link" in one_line_naming(proc, cloud)
    assert cloud.state()["requests"].get("upload", 0) == 0


@pytest.mark.parametrize("bad", ["bad_scheme", "bad_ipv6", "no_scheme"])
def test_an_unusable_model_link_is_one_line(tmp_path: Path, cloud: LocalCloud, image_set: Path,
                                            bad: str) -> None:
    config, name = uploaded(tmp_path, cloud, image_set)
    cloud.inject(f"dlink_{bad}")
    proc = run_cli("--config", str(config), "download", name, "--out", str(tmp_path / "m"),
                   timeout=STUCK_S)
    assert "link" in one_line_naming(proc, cloud)
    assert cloud.state()["requests"].get("share", 0) == 0


# ------------------------------------------------------------------------- bounded answers


def run_measured(*args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """``openscan-pi ARGS`` and its peak RSS in bytes (measured by a parent of its own, so that
    no other child of the test run counts)."""
    probe = ("import json, resource, subprocess, sys\n"
             "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, "
             "stdin=subprocess.DEVNULL)\n"
             "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
             "print(json.dumps([p.returncode, p.stdout, p.stderr, rss * 1024]))\n")
    outer = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "openscan_pi",
                            *args], capture_output=True, text=True, env=cli_env(),
                           timeout=STUCK_S, check=True)
    code, out, err, rss = json.loads(outer.stdout)
    return subprocess.CompletedProcess(args, code, out, err), rss


@pytest.mark.parametrize("fault", ["api_huge", "api_huge_html"])
def test_a_huge_answer_is_one_line_and_the_process_stays_small(tmp_path: Path, cloud: LocalCloud,
                                                               fault: str) -> None:
    cloud.inject(fault, 100)
    proc, rss = run_measured("--config", str(quick_config(tmp_path, cloud, call_timeout_s=60)),
                             "token")
    assert "larger than" in one_line_naming(proc, cloud)
    state = cloud.wait_for(lambda s: s["huge_active"] == 0, timeout=STUCK_S)
    # the client hung up after its cap (what else was sent sat in socket buffers)
    assert state["huge_sent"] < 64_000_000, state["huge_sent"]
    assert rss < 200_000_000, f"peak RSS {rss / 1e6:.0f} MB"


# -------------------------------------------------------------------- cloud text as text


def test_escapes_in_an_error_page_are_shown_as_text(tmp_path: Path, cloud: LocalCloud) -> None:
    cloud.inject("api_escapes", 100)
    proc = run_cli("--config", str(quick_config(tmp_path, cloud)), "token", timeout=STUCK_S)
    last = one_line_naming(proc, cloud)
    assert "\\x1b[2J" in last and "\\u202e" in last and "\\x9b" in last


def test_escapes_in_a_status_are_shown_as_text(tmp_path: Path, cloud: LocalCloud,
                                               image_set: Path) -> None:
    cloud.inject("status_escapes", 2)
    config = quick_config(tmp_path, cloud, max_offline_s=60)
    proc = run_cli("--debug", "--config", str(config), "upload", str(image_set), "--wait",
                   "--out", str(tmp_path / "model"), timeout=STUCK_S)
    assert proc.returncode == 0, proc.stderr
    assert not CONTROL.search(proc.stderr + proc.stdout), proc.stderr
    assert ESCAPES.encode("unicode_escape").decode() in proc.stderr  # shown, as text


def test_a_cloud_thinking_after_the_whole_part_is_in_is_waited_for(tmp_path: Path,
                                                                   cloud: LocalCloud) -> None:
    # The part is all delivered; the answer takes 2.5 s. Nothing moves meanwhile, but nothing is
    # owed by us either: the read timeout bounds that wait, not the stall rule (1 s here).
    make_set(tmp_path / "set", count=3, size=20_000)
    cloud.inject("part_think", 1, seconds=2.5)
    config = quick_config(tmp_path, cloud, stall_window_s=1, stall_min_bytes=8192,
                          call_timeout_s=20, read_timeout_s=10, retries=0)
    proc = upload_wait(config, tmp_path / "set", tmp_path / "model")
    assert proc.returncode == 0, proc.stderr
    assert "stalled" not in proc.stderr and "trying again" not in proc.stderr
    (_, project), = cloud.state()["projects"].items()
    assert project["reset_count"] == 0


def test_slow_but_moving_transfers_are_not_cut(tmp_path: Path, cloud: LocalCloud) -> None:
    make_set(tmp_path / "set", count=4, size=30_000)
    cloud.inject("part_slow", bps=40_000)
    cloud.inject("download_slow", bps=40_000)
    config = quick_config(tmp_path, cloud, stall_window_s=1, stall_min_bytes=8192,
                          call_timeout_s=5)
    proc = upload_wait(config, tmp_path / "set", tmp_path / "model")
    assert proc.returncode == 0, proc.stderr
    assert "stalled" not in proc.stderr and "trying again" not in proc.stderr
