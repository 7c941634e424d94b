"""Make the data folder of ``tests/legacy_jobs/v1/``: jobs as release 1 of the job record (no
``version`` field, the transfer journal in ``<data_dir>/transfers/``) left them, one in each
state a restart must continue from, with the local cloud's store they were uploaded to.

The folder is test data, made once by the code of that release and kept as it was written; this
script says how (run it at the commit that added it, not later: later code writes the new
record)::

    python3 tests/legacy_jobs/make_legacy.py tests/legacy_jobs/v1

The jobs, three positions of 320x240 photos each, the parts 20 kB:

- ``mid-scan``: stopped after two of its photos (``scanning``);
- ``mid-upload``: stopped after its first part was confirmed (``uploading``, its journal
  ``created`` with one part done);
- ``processing``: started on the cloud, stopped while polling (``processing``);
- ``failed``: its upload refused part after part until the cloud was given up on (``failed``,
  ``resume_state`` ``uploading``);
- ``done``: a model downloaded.

Links in the journals and the cloud's store name the address the cloud had then
(:data:`URL_FILE` keeps it), and the records name files under the folder where it was made
(:data:`ROOT_FILE`): a test serves the store again and puts its own address and folder in their
place, as for a data folder moved to another disk.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import yaml
from openscan_pi.cloud.local import LocalCloud

from openscan_pi.cloud.errors import Cancelled
from openscan_pi.config import load_config
from openscan_pi.errors import UserError
from openscan_pi.jobs.runner import JobRunner
from openscan_pi.jobs.store import JobStore

#: Where the cloud listened when the folder was made.
URL_FILE = "cloud-url.txt"
#: Where the folder was when it was made (the records name their files by absolute path).
ROOT_FILE = "made-in.txt"


def _config(out: Path, url: str) -> Path:
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump({
        "cloud": {"token": "test-token-1234567890", "url": url, "poll_interval_s": 0.05,
                  "poll_max_interval_s": 0.2, "backoff_s": 0.01, "retries": 1,
                  "max_offline_s": 0.3, "max_part_bytes": 20_000},
        "daemon": {"data_dir": str(out / "data")},
        "rig": {"model": "simulated", "sim_time_scale": 0.001},
        "camera": {"resolution": [320, 240]},
    }))
    return path


def _run(cfg: Any, store: JobStore, name: str, until: str | None, *, phase: str = "all") -> None:
    """A job named ``name`` (its project), stopped at the first event ``until`` (when given)."""
    job = store.create(positions=3, project=f"{name}.zip", stack=1)
    stop = threading.Event()
    count = {"scan": 0}

    def events(event: str, **fields: Any) -> None:
        if event == "scan":
            count["scan"] += 1
        second_photo = until == "scan2" and event == "scan" and count["scan"] >= 2
        if second_photo or (until is not None and event == until):
            stop.set()

    runner = JobRunner(cfg, job, events=events, stop=stop)
    try:
        with job.hold():
            runner.run()
    except Cancelled:
        pass
    except UserError as exc:
        print(f"{name}: failed: {exc}", file=sys.stderr)
    print(f"{name}: {job.data['state']} ({job.id})", file=sys.stderr)


def main(out: Path) -> None:
    """Make the folder ``out`` (removed first)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with LocalCloud(out / "cloud-store", processing_s=0.2) as cloud:
        (out / URL_FILE).write_text(cloud.url + "\n")
        (out / ROOT_FILE).write_text(str(out) + "\n")
        cfg = load_config(_config(out, cloud.url), env={})
        store = JobStore(cfg.data_dir)
        _run(cfg, store, "done", None)
        _run(cfg, store, "mid-scan", "scan2")
        _run(cfg, store, "mid-upload", "part")
        cloud.processing_s = 3600.0
        _run(cfg, store, "processing", "status")
        cloud.inject("part_5xx", count=1000)
        _run(cfg, store, "failed", None)
        cloud.inject("part_5xx", count=0)
    (out / "config.yaml").unlink()
    for lock in out.glob("data/jobs/*/.lock"):
        lock.unlink()
    shutil.rmtree(out / "cloud-store" / "tmp", ignore_errors=True)
    states = {p.parent.name: json.loads(p.read_text())["state"]
              for p in out.glob("data/jobs/*/job.json")}
    print(json.dumps(states, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
