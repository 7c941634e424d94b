"""The cloud chain end to end against the bundled local cloud over real loopback sockets.

Each fault the transfer promises to survive is injected into the real server; the assertions look
at what the server received (the joined parts opened with zipfile, how many projects were made).
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from openscan_pi.cloud.api import CloudAPI
from openscan_pi.cloud.errors import (
    AuthRefused,
    BadAnswer,
    ProcessingFailed,
    ProjectExpired,
    Refused,
    Unreachable,
)
from openscan_pi.cloud.journal import Journal
from openscan_pi.cloud.transfer import Transfer
from openscan_pi.config import Config, load_config
from openscan_pi.errors import InputError
from openscan_pi.sim.cloud import LocalCloud, TokenLimits

from .conftest import TOKEN, make_set, write_config
from .standalone_upload import prepare_upload


class Recorder:
    """Collects transfer events; can run a hook on one of them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.hooks: dict[str, Any] = {}

    def __call__(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))
        hook = self.hooks.get(event)
        if hook:
            hook(fields)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == kind]


def transfer(cfg: Config, folder: Path, project: str | None = "set-1.zip", *,
             events: Recorder | None = None, clock: Any = time.time) -> Transfer:
    journal, source = prepare_upload(cfg, folder, project)
    return Transfer(CloudAPI(cfg.cloud), cfg, journal, source, events=events or Recorder(),
                    clock=clock)


def assert_archive(cloud: LocalCloud, project: str, folder: Path) -> None:
    """The server holds exactly the folder's images, as a clean zip."""
    with zipfile.ZipFile(cloud.archive_path(project)) as zf:
        assert zf.testzip() is None
        expected = sorted(p.name for p in folder.iterdir())
        assert zf.namelist() == expected
        for name in expected:
            assert zf.read(name) == (folder / name).read_bytes()


def project_state(cloud: LocalCloud, project: str = "set-1.zip") -> dict[str, Any]:
    return cloud.state()["projects"][project]


def test_happy_path_multi_part_to_model(cfg: Config, cloud: LocalCloud, image_set: Path,
                                        tmp_path: Path) -> None:
    rec = Recorder()
    t = transfer(cfg, image_set, events=rec)
    assert len(t.ranges) > 3  # 12 × 40 kB in 100 kB parts
    out = t.run(wait=True, model_dir=tmp_path / "model")
    assert out.phase == "downloaded"
    assert_archive(cloud, "set-1.zip", image_set)
    state = project_state(cloud)
    assert (state["created_count"], state["reset_count"], state["start_count"]) == (1, 0, 1)
    assert state["parts"] == len(t.ranges)
    names = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert "model.obj" in names and "model.mtl" in names
    assert [p.parent for p in map(Path, out.files)] == [tmp_path / "model"] * len(out.files)
    # progress: every part announced and confirmed, bytes add up to the archive size
    assert [f["part"] for f in rec.of("part")] == list(range(len(t.ranges)))
    assert rec.of("upload")[-1]["done"] == t.src.size
    statuses = [f["status"] for f in rec.of("status")]
    assert statuses[0] == "initialized" and statuses[-1] == "processing done"
    journal = Journal.find(cfg.data_dir, "set-1.zip")
    assert journal is not None and journal.closed and journal.phase == "downloaded"


def test_parts_are_byte_ranges_of_max_part_bytes(cfg: Config, cloud: LocalCloud,
                                                 image_set: Path) -> None:
    t = transfer(cfg, image_set)
    t.run(wait=False, model_dir=None)
    sizes = [end - start for start, end in t.ranges]
    assert all(s == cfg.cloud.max_part_bytes for s in sizes[:-1])
    assert 0 < sizes[-1] <= cfg.cloud.max_part_bytes
    assert cloud.archive_path("set-1.zip").stat().st_size == sum(sizes) == t.src.size


@pytest.mark.parametrize("fault", ["part_drop", "part_5xx"])
def test_failed_part_is_sent_again_from_its_start(cfg: Config, cloud: LocalCloud,
                                                  image_set: Path, fault: str) -> None:
    cloud.inject(fault, 2)
    rec = Recorder()
    transfer(cfg, image_set, events=rec).run(wait=False, model_dir=None)
    assert_archive(cloud, "set-1.zip", image_set)
    state = project_state(cloud)
    assert (state["created_count"], state["reset_count"]) == (1, 0)
    assert len([w for w in rec.of("warning") if "part 1/" in w["text"]]) == 2


@pytest.mark.parametrize("fault", ["part_lost_answer", "part_bad_hash"])
def test_consumed_link_leads_to_reset_and_recreate(cfg: Config, cloud: LocalCloud,
                                                   image_set: Path, fault: str) -> None:
    cloud.inject(fault, 1)
    rec = Recorder()
    transfer(cfg, image_set, events=rec).run(wait=False, model_dir=None)
    assert_archive(cloud, "set-1.zip", image_set)
    state = project_state(cloud)
    assert (state["created_count"], state["reset_count"]) == (2, 1)
    assert any("resetting project set-1.zip" in w["text"] for w in rec.of("warning"))


def test_links_expiring_mid_upload(cfg: Config, cloud: LocalCloud, image_set: Path) -> None:
    rec = Recorder()
    expired = []

    def expire_once(fields: dict[str, Any]) -> None:
        if fields["part"] == 1 and not expired:
            expired.append(True)
            cloud.inject("expire_links")

    rec.hooks["part"] = expire_once
    transfer(cfg, image_set, events=rec).run(wait=False, model_dir=None)
    assert_archive(cloud, "set-1.zip", image_set)
    assert project_state(cloud)["reset_count"] == 1


def test_links_near_their_age_limit_are_replaced_before_use(cfg: Config, cloud: LocalCloud,
                                                            image_set: Path) -> None:
    offset = [0.0]
    rec = Recorder()

    def age_links(fields: dict[str, Any]) -> None:
        if fields["part"] == 0 and not rec.of("warning"):
            offset[0] = 4 * 3600 - 60  # the next part would start a minute before expiry

    rec.hooks["part"] = age_links
    t = transfer(cfg, image_set, events=rec, clock=lambda: time.time() + offset[0])
    rec.hooks["stage"] = lambda f: f["text"].startswith("creating") and offset.__setitem__(0, 0)
    t.run(wait=False, model_dir=None)
    assert_archive(cloud, "set-1.zip", image_set)
    assert project_state(cloud)["reset_count"] == 1
    assert any("4-hour limit" in w["text"] for w in rec.of("warning"))


def test_lost_create_answer_never_makes_a_second_project(cfg: Config, cloud: LocalCloud,
                                                         image_set: Path) -> None:
    cloud.inject("create_lost_answer", 1)
    transfer(cfg, image_set).run(wait=False, model_dir=None)
    state = project_state(cloud)
    assert (state["created_count"], state["reset_count"]) == (1, 0)
    assert_archive(cloud, "set-1.zip", image_set)


def test_lost_start_answer_is_not_a_failure(cfg: Config, cloud: LocalCloud, image_set: Path,
                                            tmp_path: Path) -> None:
    cloud.inject("start_lost_answer", 1)
    out = transfer(cfg, image_set).run(wait=True, model_dir=tmp_path / "m")
    assert out.phase == "downloaded"
    assert project_state(cloud)["start_count"] == 1


@pytest.mark.parametrize("fault", ["api_5xx", "api_429", "api_drop"])
def test_api_calls_are_retried(cfg: Config, cloud: LocalCloud, image_set: Path,
                               tmp_path: Path, fault: str) -> None:
    cloud.inject(fault, 2, retry_after=0)
    out = transfer(cfg, image_set).run(wait=True, model_dir=tmp_path / "m")
    assert out.phase == "downloaded"
    assert project_state(cloud)["created_count"] == 1


def test_retry_after_is_honoured(cfg: Config, cloud: LocalCloud) -> None:
    cloud.inject("api_5xx", 1, retry_after=1)
    api = CloudAPI(cfg.cloud)
    began = time.monotonic()
    assert api.token_info().limit_photos == TokenLimits().limit_photos
    assert time.monotonic() - began >= 0.9


def test_html_error_page_is_one_clear_line(tmp_path: Path, cloud: LocalCloud,
                                           image_set: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", cloud, tmp_path / "data",
                                   max_offline_s=0), env={})
    cloud.inject("api_html", 100)
    with pytest.raises(BadAnswer) as info:
        transfer(cfg, image_set).run(wait=False, model_dir=None)
    message = str(info.value)
    assert message.startswith(f"unexpected answer from {cloud.url}/getTokenInfo: HTTP 502: <html>")
    assert "\n" not in message and TOKEN not in message


def test_non_json_answer(tmp_path: Path, cloud: LocalCloud) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", cloud, tmp_path / "data",
                                   max_offline_s=0), env={})
    cloud.inject("api_non_json", 1)
    with pytest.raises(BadAnswer, match=r"unexpected answer from .*/getTokenInfo: OK"):
        CloudAPI(cfg.cloud).token_info()


def test_wrong_basic_auth(tmp_path: Path, cloud: LocalCloud) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", cloud, tmp_path / "data",
                                   password="wrong"), env={})
    with pytest.raises(AuthRefused, match=r"refused cloud.user/cloud.password"):
        CloudAPI(cfg.cloud).token_info()


def test_unknown_token_is_masked(tmp_path: Path, image_set: Path) -> None:
    with LocalCloud(tmp_path / "store", tokens={"the-good-one": TokenLimits()}) as cloud:
        cfg = load_config(write_config(tmp_path / "c.yaml", cloud, tmp_path / "data"), env={})
        with pytest.raises(Refused) as info:
            transfer(cfg, image_set).run(wait=False, model_dir=None)
    assert "refused the token …7890" in str(info.value)
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(("limits", "message"), [
    (TokenLimits(limit_photos=5), "the set has 12 photos; the token allows 5"),
    (TokenLimits(limit_filesize=100_000), "the token allows 0.1 MB per project"),
    (TokenLimits(credit=200_000), "the token has 0.2 MB of credit left"),
])
def test_preflight_refuses_before_any_upload(tmp_path: Path, image_set: Path,
                                             limits: TokenLimits, message: str) -> None:
    with LocalCloud(tmp_path / "store", tokens={TOKEN: limits}) as cloud:
        cfg = load_config(write_config(tmp_path / "c.yaml", cloud, tmp_path / "data"), env={})
        with pytest.raises(Refused, match=message):
            transfer(cfg, image_set).run(wait=False, model_dir=None)
        assert cloud.state()["projects"] == {}
        assert cloud.state()["requests"].get("createProject", 0) == 0


def test_name_taken_by_someone_else_is_not_reset(cfg: Config, cloud: LocalCloud,
                                                  image_set: Path, tmp_path: Path) -> None:
    transfer(cfg, image_set).run(wait=False, model_dir=None)
    other = load_config(write_config(tmp_path / "o.yaml", cloud, tmp_path / "other-data"), env={})
    with pytest.raises(Refused, match="name set-1.zip is taken"):
        transfer(other, image_set).run(wait=False, model_dir=None)
    assert project_state(cloud)["reset_count"] == 0


def test_processing_failed(cfg: Config, cloud: LocalCloud, image_set: Path, tmp_path: Path) -> None:
    cloud.inject("processing_failed", 1)
    with pytest.raises(ProcessingFailed, match="processing failed"):
        transfer(cfg, image_set).run(wait=True, model_dir=tmp_path / "m")
    journal = Journal.find(cfg.data_dir, "set-1.zip")
    assert journal is not None and journal.phase == "failed"
    assert not (tmp_path / "m").exists()


def test_expired(tmp_path: Path, image_set: Path) -> None:
    with LocalCloud(tmp_path / "store", processing_s=0.2, result_ttl_s=0) as cloud:
        cfg = load_config(write_config(tmp_path / "c.yaml", cloud, tmp_path / "data"), env={})
        with pytest.raises(ProjectExpired, match="expired on the cloud"):
            transfer(cfg, image_set).run(wait=True, model_dir=tmp_path / "m")


def test_polling_waits_out_a_network_loss(cfg: Config, cloud: LocalCloud, image_set: Path,
                                          tmp_path: Path) -> None:
    rec = Recorder()
    rec.hooks["status"] = lambda f: f["status"] == "initialized" and cloud.inject("api_drop", 8)
    out = transfer(cfg, image_set, events=rec).run(wait=True, model_dir=tmp_path / "m")
    assert out.phase == "downloaded"
    assert any("waiting for the cloud" in w["text"] for w in rec.of("warning"))


def test_network_loss_is_bounded_by_max_offline(tmp_path: Path, image_set: Path) -> None:
    cloud = LocalCloud(tmp_path / "store", processing_s=60).start()
    cfg = load_config(write_config(tmp_path / "c.yaml", cloud, tmp_path / "data",
                                   max_offline_s=0.3), env={})
    rec = Recorder()
    rec.hooks["status"] = lambda f: cloud.stop()
    with pytest.raises(Unreachable, match=r"still failing after 0 s; run the same command again"):
        transfer(cfg, image_set, events=rec).run(wait=True, model_dir=tmp_path / "m")
    assert Journal.find(cfg.data_dir, "set-1.zip").phase == "started"  # type: ignore[union-attr]


def test_download_cut_short_is_retried(cfg: Config, cloud: LocalCloud, image_set: Path,
                                       tmp_path: Path) -> None:
    cloud.inject("download_drop", 1)
    out = transfer(cfg, image_set).run(wait=True, model_dir=tmp_path / "m")
    assert out.phase == "downloaded"
    assert (tmp_path / "m" / "model.obj").stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_resume_after_an_interrupted_run_sends_only_missing_parts(
        cfg: Config, cloud: LocalCloud, image_set: Path) -> None:
    class Stop(Exception):
        pass

    rec = Recorder()

    def stop_after_two(fields: dict[str, Any]) -> None:
        if fields["part"] == 1:
            raise Stop

    rec.hooks["part"] = stop_after_two
    with pytest.raises(Stop):
        transfer(cfg, image_set, events=rec).run(wait=False, model_dir=None)
    rec2 = Recorder()
    t = transfer(cfg, image_set, events=rec2)
    t.run(wait=False, model_dir=None)
    assert [f["part"] for f in rec2.of("part")] == list(range(2, len(t.ranges)))
    assert project_state(cloud)["created_count"] == 1
    assert_archive(cloud, "set-1.zip", image_set)


def test_a_changed_set_is_not_mixed_into_an_unfinished_upload(
        cfg: Config, cloud: LocalCloud, image_set: Path) -> None:
    class Stop(Exception):
        pass

    rec = Recorder()
    rec.hooks["part"] = lambda f: (_ for _ in ()).throw(Stop())
    with pytest.raises(Stop):
        transfer(cfg, image_set, events=rec).run(wait=False, model_dir=None)
    (image_set / "IMG_0003.jpg").write_bytes(b"\xff\xd8 changed \xff\xd9")
    with pytest.raises(InputError, match="changed since project set-1.zip began uploading"):
        transfer(cfg, image_set)


def test_zip_is_sent_as_it_is(cfg: Config, cloud: LocalCloud, tmp_path: Path) -> None:
    folder = make_set(tmp_path / "z", count=5)
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"photos/{p.name}")
    t = transfer(cfg, archive)
    t.run(wait=False, model_dir=None)
    assert cloud.archive_path("set-1.zip").read_bytes() == archive.read_bytes()
    assert project_state(cloud)["photos"] == 5


def test_status_and_queue_estimate(cfg: Config, cloud: LocalCloud) -> None:
    api = CloudAPI(cfg.cloud)
    assert api.server_status() == "online"
    assert api.queue_estimate() == pytest.approx(0.3)  # processing_s with nothing queued
    info = api.token_info()
    assert (info.credit, info.limit_filesize, info.limit_photos) == (
        TokenLimits().credit, TokenLimits().limit_filesize, TokenLimits().limit_photos)
