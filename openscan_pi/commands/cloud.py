"""Handlers of ``upload``, ``token`` and ``download``: the cloud chain without the daemon."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from openscan_pi.commands.common import emit_json
from openscan_pi.config import Config
from openscan_pi.errors import InputError
from openscan_pi.names import check_project
from openscan_pi.paths import prepare_data_dir
from openscan_pi.sim.local_cloud import local_cloud


def _model_dir(out: str | None, project: str) -> Path:
    path = Path(out) if out else Path.cwd() / project.removesuffix(".zip")
    path = path.expanduser().resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError(f"{path} exists and is not empty: choose another --out or remove it")
    return path


def _run_transfer(cfg: Config, journal: Any, source: Any, *, wait: bool, out: Path | None,
                  json_output: bool) -> int:
    from openscan_pi.cloud.transfer import Transfer, connect
    from openscan_pi.progress import ProgressPrinter

    printer = ProgressPrinter.for_stream(json_output)
    try:
        with local_cloud(cfg) as cfg, connect(cfg) as api:
            outcome = Transfer(api, cfg, journal, source, events=printer).run(
                wait=wait, model_dir=out)
    finally:
        printer.close()
    if json_output:
        emit_json(outcome.as_dict())
    elif outcome.model_dir:
        print(f"model of {outcome.project}: {outcome.model_dir}")
    else:
        print(f"project {outcome.project} uploaded and started ({outcome.status}); fetch the model "
              f"later with: openscan-pi download {outcome.project}")
    return 0


def upload(args: argparse.Namespace, cfg: Config) -> int:
    """``upload PATH``: a folder or zip to the cloud, resumably."""
    from openscan_pi.cloud.upload import prepare_upload
    from openscan_pi.progress import ProgressPrinter

    if args.project:
        check_project(args.project)
    prepare_data_dir(cfg.data_dir)
    printer = ProgressPrinter.for_stream(args.json)
    try:
        journal, source = prepare_upload(
            cfg, Path(args.path), args.project,
            progress=lambda done, total: printer("crc", done=done, total=total))
    finally:
        printer.close()
    name = journal.project
    out = _model_dir(args.out or journal.data.get("model_dir"), name) if args.wait else None
    if not args.json:
        verb = "continuing" if journal.data.get("create_sent") else "uploading"
        print(f"{verb} {journal.data['source']} as project {name}: {journal.data['photos']} photos, "
              f"{journal.data['size'] / 1e6:,.1f} MB", file=sys.stderr)
    return _run_transfer(cfg, journal, source, wait=args.wait, out=out, json_output=args.json)


def token(args: argparse.Namespace, cfg: Config) -> int:
    """``token``: credit and limits."""
    from openscan_pi.cloud.transfer import connect

    with local_cloud(cfg) as served, connect(served) as api:
        info = api.token_info()
    if args.json:
        emit_json({"credit": info.credit, "limit_filesize": info.limit_filesize,
                    "limit_photos": info.limit_photos})
    else:
        print(f"credit left:        {info.credit / 1e9:,.2f} GB\n"
              f"largest set:        {info.limit_filesize / 1e9:,.2f} GB\n"
              f"most photos a set:  {info.limit_photos}")
    return 0


def download(args: argparse.Namespace, cfg: Config) -> int:
    """``download PROJECT``: poll a started project and fetch its model."""
    from openscan_pi.cloud.journal import Journal
    from openscan_pi.cloud.transfer import connect

    name = check_project(args.project)
    journal = Journal.find(prepare_data_dir(cfg.data_dir), name)
    if journal and not journal.reached("started") and journal.phase != "failed":
        raise InputError(f"project {name} is not uploaded completely: run the same upload "
                         "command again first")
    if journal is None:
        with local_cloud(cfg) as served, connect(served) as api:
            from openscan_pi.cloud.errors import NoSuchProject

            try:
                info = api.project_info(name)
            except NoSuchProject:
                raise InputError(f"the cloud knows no project {name}: check the name "
                                 "(`openscan-pi upload` prints it)") from None
        if info.status == "created":
            raise InputError(f"project {name} was created but never started: upload it again")
        journal = Journal.create(cfg.data_dir, name, phase="started", source=None, digest=None,
                                 size=0, photos=0, part_size=cfg.cloud.max_part_bytes,
                                 status=info.status, created_at=time.time())
    elif journal.phase == "downloaded":
        done_dir = journal.data.get("model_dir")
        wanted = Path(args.out).expanduser().resolve() if args.out else None
        if wanted is None or str(wanted) == done_dir:
            if args.json:
                emit_json({"project": name, "phase": journal.phase, "model_dir": done_dir,
                            "files": journal.data.get("files") or []})
            else:
                print(f"model of {name}: {done_dir}")
            return 0
        journal.update(phase="processed")
    elif journal.phase == "failed":
        raise InputError(f"project {name} ended on the cloud with {journal.data.get('error')}")
    out = _model_dir(args.out, name)
    return _run_transfer(cfg, journal, None, wait=True, out=out, json_output=args.json)
