"""Handlers of ``upload``, ``token`` and ``download``: the cloud chain without the daemon."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from openscan_pi.commands.common import emit_json
from openscan_pi.config import Config
from openscan_pi.errors import InputError, UserError
from openscan_pi.names import check_project
from openscan_pi.paths import prepare_data_dir
from openscan_pi.sim.local_cloud import local_cloud


def _model_dir(out: str | None, project: str) -> Path:
    """Where the model goes: ``out``, or ``./<project name>``; refused when it is not empty."""
    path = Path(out) if out else Path.cwd() / project.removesuffix(".zip")
    path = path.expanduser().resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError(f"{path} exists and is not empty: choose another --out or remove it")
    return path


def _copy_model(model: Path, out: Path) -> None:
    """The finished model folder ``model`` copied to ``out`` (never half there: made beside it
    and renamed into place)."""
    if out == model.resolve():
        return
    out = _model_dir(str(out), "")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        shutil.copytree(model, partial)
        if out.exists():
            out.rmdir()  # empty (checked above)
        partial.rename(out)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise UserError(f"cannot copy the model to {out}: {exc.strerror or exc} (it stays in "
                        f"{model})") from None


def _run_transfer(cfg: Config, journal: Any, source: Any, *, wait: bool, out: Path | None,
                  json_output: bool) -> int:
    """A project that is no job of this machine (``download`` of another's): its journal's
    transfer run here."""
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
    else:
        print(f"model of {outcome.project}: {outcome.model_dir}")
    return 0


def _begun(job: dict[str, Any], continued: bool, json_output: bool) -> None:
    if not json_output:
        verb = "continuing" if continued else "uploading"
        print(f"{verb} {job['source']} as project {job['project']}: {job['positions']} photos, "
              f"job {job['id']}", file=sys.stderr)


def _finished(job: dict[str, Any], out: Path | None, json_output: bool) -> int:
    """Report a job that ran as far as asked: the model copied to ``out`` when it is done."""
    if job["state"] == "done" and out is not None:
        _copy_model(Path(job["model_dir"]), out)
        job = {**job, "model_dir": str(out)}
    if json_output:
        emit_json(job)
    elif job["state"] == "done":
        print(f"model of {job['project']}: {job['model_dir']}")
    else:
        print(f"project {job['project']} uploaded and started ({job['cloud_status']}); fetch the "
              f"model later with: openscan-pi download {job['project']}")
    return 0


def upload(args: argparse.Namespace, cfg: Config) -> int:
    """``upload PATH``: a folder or zip to the cloud as a job that begins at the upload step, in
    the daemon when it listens, else in this process; the same command again goes on with it."""
    from openscan_pi.commands.daemon import daemon_for, watch_done
    from openscan_pi.commands.jobs import run_job
    from openscan_pi.jobs import actions
    from openscan_pi.jobs.store import JobStore

    project = check_project(args.project) if args.project else None
    path = Path(args.path).expanduser().resolve()
    if args.wait and args.out:
        _model_dir(args.out, "")  # refused before anything is sent
    client = daemon_for(args, cfg)
    if client is not None:
        with client:
            params: dict[str, Any] = {"path": str(path)}
            if project:
                params["project"] = project
            job = client.call("upload", params)
            _begun(job, bool(job.pop("continued", False)), args.json)
            if not args.wait:
                if args.json:
                    emit_json(job)
                else:
                    print(f"job {job['id']} queued in the daemon: `openscan-pi status --watch` "
                          "follows it")
                return 0
            job = watch_done(client, job["id"], args.json)
        return _finished(job, _model_dir(args.out, job["project"]), args.json)
    store = JobStore(prepare_data_dir(cfg.data_dir))
    mine, continued = actions.create_upload(cfg, store, path, project)
    _begun(mine.public(), continued, args.json)
    out = _model_dir(args.out, mine.record.project) if args.wait else None
    with local_cloud(cfg) as cfg:
        run_job(cfg, mine, args.json, before=None if args.wait else "poll")
    return _finished(mine.public(), out, args.json)


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


def _job_of(cfg: Config, project: str) -> Any:
    """The job of ``project`` (a scan's or an upload's), or None."""
    from openscan_pi.jobs.store import JobStore

    store = JobStore(prepare_data_dir(cfg.data_dir))
    return next((j for j in store.all() if j.record.project == project), None)


def _finish_job(args: argparse.Namespace, cfg: Config, job: Any) -> int:
    """``download`` of a job's project: the job taken to its end (in the daemon when it listens,
    else here; a failed one is retried), then its model copied to ``--out``."""
    from openscan_pi.commands.daemon import daemon_for, watch_done
    from openscan_pi.commands.jobs import run_job
    from openscan_pi.jobs import actions
    from openscan_pi.jobs.state import JobState

    if job.state == JobState.CANCELLED:
        raise InputError(f"project {job.record.project} is job {job.id}, which was cancelled")
    out = _model_dir(args.out, job.record.project)
    if job.state != JobState.DONE:
        client = daemon_for(args, cfg)
        if client is not None:
            with client:
                if job.state == JobState.FAILED:
                    client.call("retry", {"job": job.id})
                public = watch_done(client, job.id, args.json)
            return _finished(public, out, args.json)
        with job.hold():
            actions.retry(job, interrupted=True)
        with local_cloud(cfg) as cfg:
            run_job(cfg, job, args.json)
    return _finished(job.public(), out, args.json)


def download(args: argparse.Namespace, cfg: Config) -> int:
    """``download PROJECT``: poll a started project and fetch its model."""
    from openscan_pi.cloud.journal import Journal
    from openscan_pi.cloud.transfer import connect

    name = check_project(args.project)
    job = _job_of(cfg, name)
    if job is not None:
        return _finish_job(args, cfg, job)
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
