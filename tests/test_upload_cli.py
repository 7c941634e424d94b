"""`openscan-pi upload`, `download` and `token` as a user runs them: real subprocesses, real sockets."""

from __future__ import annotations

import json
import os
import signal
import zipfile
from pathlib import Path

import pytest

from openscan_pi.sim.cloud import LocalCloud

from .conftest import TOKEN, make_set, run_cli, start_cli, write_config
from .test_transfer import assert_archive


def only_project(cloud: LocalCloud) -> tuple[str, dict]:
    projects = cloud.state()["projects"]
    assert len(projects) == 1, projects
    return next(iter(projects.items()))


def mid_part(state: dict, data_dir: Path) -> bool:
    """True while a part the client has not had confirmed is half-way to the server, after two
    confirmed ones (a part the server has finished but whose answer the client has not read yet
    does not count)."""
    records = list((data_dir / "jobs").glob("*/job.json"))
    if len(records) != 1 or len(state["projects"]) != 1:
        return False
    try:
        done = (json.loads(records[0].read_text()).get("transfer") or {}).get("done") or {}
    except ValueError:  # never half-written (atomic rename), but be safe
        return False
    project = next(iter(state["projects"].values()))
    return (len(done) >= 2 and len(project["parts_received"]) == len(done)
            and project["bytes_receiving"] > 0)


def killed_mid_part(cloud: LocalCloud, args: tuple[str, ...], data_dir: Path) -> None:
    """``openscan-pi ARGS`` (an upload) killed with SIGKILL while a part is half-way, after two
    confirmed ones (the cloud reads parts slowly meanwhile)."""
    cloud.inject("part_slow", bps=50_000)
    proc = start_cli(*args)
    try:
        cloud.wait_for(lambda s: mid_part(s, data_dir), timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def test_upload_wait_json(config_path: Path, cloud: LocalCloud, image_set: Path,
                          tmp_path: Path) -> None:
    out = tmp_path / "model"
    proc = run_cli("--config", str(config_path), "upload", str(image_set), "--wait", "--out",
                   str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    name, state = only_project(cloud)
    assert result["project"] == name
    assert name.startswith("set-") and name.endswith(".zip")
    assert result["state"] == "done" and result["model_dir"] == str(out)
    assert result["positions"] == 12 and result["source"] == str(image_set)
    assert state["parts"] >= 1
    assert (out / "model.obj").is_file()
    assert_archive(cloud, name, image_set)
    assert proc.stderr == ""  # --json: no progress either
    # the upload was a job: `jobs` lists it, done, its model in its folder as well
    listed = run_cli("--config", str(config_path), "jobs", "--json")
    (job,) = json.loads(listed.stdout)
    assert (job["id"], job["state"], job["project"]) == (result["id"], "done", name)
    assert (Path(job["model_dir"]) / "model.obj").read_bytes() == (out / "model.obj").read_bytes()


def test_plain_progress_lines_when_not_a_terminal(config_path: Path, cloud: LocalCloud,
                                                  image_set: Path) -> None:
    proc = run_cli("--config", str(config_path), "upload", str(image_set))
    assert proc.returncode == 0, proc.stderr
    name, _ = only_project(cloud)
    assert f"uploading {image_set} as project {name}: 12 photos" in proc.stderr
    assert "uploading: " in proc.stderr and "(100 %)" in proc.stderr
    assert "\r" not in proc.stderr  # no bar redraws in a log
    assert proc.stdout.strip() == (f"project {name} uploaded and started (initialized); fetch the "
                                   f"model later with: openscan-pi download {name}")


def test_power_cut_mid_part_then_the_same_command_continues(config_path: Path, cloud: LocalCloud,
                                                         image_set: Path, tmp_path: Path) -> None:
    args = ("--config", str(config_path), "upload", str(image_set), "--wait", "--out",
            str(tmp_path / "model"))
    killed_mid_part(cloud, args, tmp_path / "data")
    # A power cut takes the Pi's network stack with it: the server never gets the rest of the
    # part that was in flight (after a plain kill -9 the kernel would still deliver what sat in
    # the socket buffer).
    cloud.inject("abort_uploads")
    cloud.wait_for(lambda s: s["uploads_in_progress"] == 0, timeout=30)
    name, state = only_project(cloud)
    received_before = set(state["parts_received"])
    assert 2 <= len(received_before) < state["parts"]

    cloud.inject("part_slow", bps=0)
    uploads_before = cloud.state()["requests"]["upload"]
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"continuing {image_set} as project {name}" in again.stderr
    name2, state = only_project(cloud)
    assert name2 == name
    assert (state["created_count"], state["reset_count"]) == (1, 0), again.stderr
    assert_archive(cloud, name, image_set)
    assert (tmp_path / "model" / "model.obj").is_file()
    # only the parts the server had not confirmed were sent again
    sent_again = cloud.state()["requests"]["upload"] - uploads_before
    assert sent_again == state["parts"] - len(received_before)


def test_running_upload_again_after_it_finished_sending_makes_no_second_project(
        config_path: Path, cloud: LocalCloud, image_set: Path, tmp_path: Path) -> None:
    first = run_cli("--config", str(config_path), "upload", str(image_set), "--json")
    assert first.returncode == 0, first.stderr
    name = json.loads(first.stdout)["project"]
    again = run_cli("--config", str(config_path), "upload", str(image_set), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["project"] == name
    assert only_project(cloud)[1]["created_count"] == 1
    dl = run_cli("--config", str(config_path), "download", name, "--out", str(tmp_path / "m"))
    assert dl.returncode == 0, dl.stderr
    assert dl.stdout.strip() == f"model of {name}: {tmp_path / 'm'}"
    assert (tmp_path / "m" / "model.mtl").is_file()
    # the model is there: a third upload of the same set is a new project
    third = run_cli("--config", str(config_path), "upload", str(image_set), "--json")
    assert json.loads(third.stdout)["project"] != name
    assert len(cloud.state()["projects"]) == 2


def test_download_of_a_project_this_machine_did_not_upload(tmp_path: Path, cloud: LocalCloud,
                                                           image_set: Path) -> None:
    a = write_config(tmp_path / "a.yaml", cloud, tmp_path / "data-a")
    b = write_config(tmp_path / "b.yaml", cloud, tmp_path / "data-b")
    assert run_cli("--config", str(a), "upload", str(image_set), "--project", "shared.zip"
                   ).returncode == 0
    proc = run_cli("--config", str(b), "download", "shared.zip", "--out", str(tmp_path / "m"),
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model_dir"] == str(tmp_path / "m")
    unknown = run_cli("--config", str(b), "download", "nope.zip")
    assert unknown.returncode == 1
    assert unknown.stderr == ("openscan-pi: the cloud knows no project nope.zip: check the name "
                              "(`openscan-pi upload` prints it)\n")


def test_token(config_path: Path, cloud: LocalCloud) -> None:
    proc = run_cli("--config", str(config_path), "token", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert set(info) == {"credit", "limit_filesize", "limit_photos"}
    assert info["limit_photos"] == 1000
    human = run_cli("--config", str(config_path), "token")
    assert "credit left:" in human.stdout and "1000" in human.stdout


def test_token_never_appears_even_with_debug(config_path: Path, cloud: LocalCloud,
                                             image_set: Path) -> None:
    proc = run_cli("--debug", "--config", str(config_path), "upload", str(image_set))
    assert proc.returncode == 0, proc.stderr
    assert "getTokenInfo" in proc.stderr  # urllib3 logged the requests...
    assert TOKEN not in proc.stderr + proc.stdout  # ...with the token masked


def test_unreachable_cloud_is_one_line(tmp_path: Path, image_set: Path) -> None:
    with LocalCloud(tmp_path / "store") as cloud:
        url = cloud.url
    cfg = write_config(tmp_path / "c.yaml", cloud, tmp_path / "data", max_offline_s=0, retries=0)
    proc = run_cli("--config", str(cfg), "upload", str(image_set))
    assert proc.returncode == 1
    last = proc.stderr.splitlines()[-1]
    assert last.startswith(f"openscan-pi: cannot reach {url}/getTokenInfo: ")
    assert "Connection refused" in last and "Traceback" not in proc.stderr
    assert TOKEN not in proc.stderr


def test_bad_inputs_are_one_line(config_path: Path, cloud: LocalCloud, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    with zipfile.ZipFile(tmp_path / "docs.zip", "w") as zf:
        zf.writestr("a.txt", "no images here")
    (tmp_path / "fake.zip").write_text("not a zip")
    full = tmp_path / "full"
    make_set(tmp_path / "s", count=2)
    full.mkdir()
    (full / "x").write_text("keep me")
    cases = {
        str(tmp_path / "absent"): "no such file or folder",
        str(tmp_path / "empty"): "holds no images (.jpg .jpeg .png .tif .tiff .dng)",
        str(tmp_path / "notes"): "holds no images",
        str(tmp_path / "docs.zip"): "holds no images",
        str(tmp_path / "fake.zip"): "is not a zip file",
    }
    for path, message in cases.items():
        proc = run_cli("--config", str(config_path), "upload", path)
        assert proc.returncode == 1, (path, proc.stderr)
        assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    proc = run_cli("--config", str(config_path), "upload", str(tmp_path / "s"), "--wait",
                   "--out", str(full))
    assert proc.returncode == 1
    assert f"{full} exists and is not empty" in proc.stderr
    assert (full / "x").read_text() == "keep me"
    assert cloud.state()["projects"] == {}  # refused before anything was sent


def test_simulate_uses_the_local_cloud_in_process(tmp_path: Path, image_set: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"daemon:\n  data_dir: {tmp_path / 'data'}\ncloud:\n  poll_interval_s: 0.1\n"
                   "  local:\n    processing_s: 0.3\n")
    proc = run_cli("--config", str(cfg), "upload", str(image_set), "--simulate", "--wait",
                   "--out", str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("model of set-")
    assert (tmp_path / "m" / "model.obj").is_file()


def test_a_set_changed_mid_upload_fails_the_job_and_retry_goes_on_once_it_is_back(
        config_path: Path, cloud: LocalCloud, image_set: Path, tmp_path: Path) -> None:
    killed_mid_part(cloud, ("--config", str(config_path), "upload", str(image_set)),
                    tmp_path / "data")
    cloud.inject("abort_uploads")
    cloud.wait_for(lambda s: s["uploads_in_progress"] == 0, timeout=30)
    cloud.inject("part_slow", bps=0)
    photo = sorted(image_set.iterdir())[3]
    original, stat = photo.read_bytes(), photo.stat()
    photo.write_bytes(original + b"edited")
    again = run_cli("--config", str(config_path), "upload", str(image_set))
    assert again.returncode == 1
    last = again.stderr.splitlines()[-1]
    assert f"{image_set} changed since project" in last and "Traceback" not in again.stderr
    (job,) = json.loads(run_cli("--config", str(config_path), "jobs", "--json").stdout)
    assert job["state"] == "failed"
    photo.write_bytes(original)  # put back as it was
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    retry = run_cli("--config", str(config_path), "retry", job["id"])
    assert retry.returncode == 0, retry.stderr
    name, state = only_project(cloud)
    assert (state["created_count"], state["reset_count"]) == (1, 0)
    assert_archive(cloud, name, image_set)


def test_an_unfinished_upload_of_the_previous_release_goes_on_as_a_job(
        config_path: Path, cloud: LocalCloud, image_set: Path, tmp_path: Path) -> None:
    # Release 1 kept a standalone upload's journal in <data_dir>/transfers/: two parts sent.
    from openscan_pi.cloud.api import CloudAPI
    from openscan_pi.cloud.transfer import Transfer
    from openscan_pi.config import load_config

    from .standalone_upload import prepare_upload
    from .test_transfer import Recorder

    class PowerCut(Exception):
        pass

    cfg = load_config(config_path)
    journal, source = prepare_upload(cfg, image_set, "old.zip")
    events = Recorder()

    def cut(fields: dict) -> None:
        if len(journal.parts_done()) >= 2:
            raise PowerCut

    events.hooks["upload"] = cut
    with pytest.raises(PowerCut):
        Transfer(CloudAPI(cfg.cloud), cfg, journal, source, events=events).run(
            wait=False, model_dir=None)
    old = tmp_path / "data" / "transfers" / "old.zip.json"
    assert old.is_file()
    received = len(only_project(cloud)[1]["parts_received"])
    sent = cloud.state()["requests"]["upload"]

    proc = run_cli("--config", str(config_path), "upload", str(image_set), "--wait", "--out",
                   str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr
    assert f"continuing {image_set} as project old.zip" in proc.stderr
    name, state = only_project(cloud)
    assert name == "old.zip" and (state["created_count"], state["reset_count"]) == (1, 0)
    assert cloud.state()["requests"]["upload"] - sent == state["parts"] - received
    assert_archive(cloud, name, image_set)
    assert not old.exists()  # the job's record holds it now
    (job,) = json.loads(run_cli("--config", str(config_path), "jobs", "--json").stdout)
    assert (job["state"], job["project"]) == ("done", "old.zip")
