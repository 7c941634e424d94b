"""Handlers of ``scan``, ``jobs`` and ``retry``: through the daemon when it listens, else in this
process (the same job code either way)."""

from __future__ import annotations

import argparse
import sys
import time

from openscan_pi.commands.common import emit_json
from openscan_pi.commands.daemon import daemon_for, follow
from openscan_pi.config import Config
from openscan_pi.errors import InputError, UserError
from openscan_pi.jobs.state import HELD
from openscan_pi.jobs.store import Job, JobBusy, JobStore
from openscan_pi.names import check_job_id, check_project
from openscan_pi.paths import prepare_data_dir
from openscan_pi.schema import MAX_FOCUS_STACK
from openscan_pi.sim.local_cloud import local_cloud


def run_job(cfg: Config, job: Job, json_output: bool, *, before: str | None = None) -> None:
    """Run ``job`` in this process, to its end or up to the step named ``before``, with progress
    on stderr; a failure is one line saying what ``retry`` does (with ``--json``, the failed job
    is printed first)."""
    from openscan_pi.jobs.runner import JobRunner
    from openscan_pi.progress import ProgressPrinter

    printer = ProgressPrinter.for_stream(json_output)
    try:
        with job.hold():
            JobRunner(cfg, job, events=printer).run(before=before)
    except JobBusy:
        printer.close()
        raise
    except UserError as exc:
        printer.close()
        if job.state in HELD:  # a pass done: the job waits for the user (`continue`)
            return
        if json_output:
            emit_json(job.public())
        if "`openscan-pi retry" in str(exc):  # it says what retry does already
            raise UserError(str(exc)) from None
        raise UserError(f"{exc} (job {job.id} keeps its images: `openscan-pi retry {job.id}` "
                        "continues it)") from None
    except KeyboardInterrupt:
        printer.close()
        raise UserError(f"interrupted: `openscan-pi retry {job.id}` continues job {job.id} where "
                        "it stopped") from None
    printer.close()


def _run(cfg: Config, job: Job, json_output: bool) -> int:
    if not json_output:
        print(f"job {job.id}: {job.data['positions']} positions, project {job.data['project']}",
              file=sys.stderr)
    run_job(cfg, job, json_output)
    if json_output:
        emit_json(job.public())
    elif job.state in HELD:
        print(f"job {job.id}: {job.data['step']}")
    else:
        took = time.time() - float(job.data["created"])
        print(f"model of {job.data['project']}: {job.data['model_dir']} ({took:.0f} s)")
    return 0


def scan(args: argparse.Namespace, cfg: Config) -> int:
    """``scan --positions N``: a whole scan to a model on disk (in the daemon, or here)."""
    from openscan_pi.jobs import actions

    if not 1 <= args.positions <= 10_000:
        raise InputError("--positions must be from 1 to 10000")
    if not 1 <= args.passes <= 20 or args.positions * args.passes > 10_000:
        raise InputError("--passes must be from 1 to 20, with at most 10000 positions in all")
    stack: int | None = args.focus_stack
    if stack is not None and not 1 <= stack <= MAX_FOCUS_STACK:
        raise InputError(f"--focus-stack must be from 1 (no stack) to {MAX_FOCUS_STACK}")
    project = check_project(args.project) if args.project else None
    client = daemon_for(args, cfg)
    if client is not None:
        with client:
            params: dict = {"positions": args.positions}
            if args.passes > 1:
                params["passes"] = args.passes
            if stack is not None:
                params["focus_stack"] = stack
            if args.project:
                params["project"] = args.project
            job = client.call("scan", params)
            if args.wait:
                return follow(client, cfg, job["id"], args.json)
        if args.json:
            emit_json(job)
        else:
            each = f" x {args.passes} passes" if args.passes > 1 else ""
            if job.get("focus_stack"):
                each += f", a focus stack of {job['focus_stack']} photos at each"
            print(f"job {job['id']} queued in the daemon ({args.positions} positions{each}, project "
                  f"{job['project']}): `openscan-pi status --watch` follows it")
        return 0
    prepare_data_dir(cfg.data_dir)
    store = JobStore(cfg.data_dir)
    if project:  # a taken name is refused before the checks ask the cloud
        actions.create_problem(cfg, store, project)
    with local_cloud(cfg) as cfg:
        for warning in actions.check_new(cfg, args.positions * args.passes, stack=stack):
            print(f"warning: {warning}", file=sys.stderr)
        job = actions.create(cfg, store, positions=args.positions, project=project,
                             passes=args.passes, stack=stack)
        return _run(cfg, job, args.json)


def retry(args: argparse.Namespace, cfg: Config) -> int:
    """``retry JOB``: continue a failed or interrupted job from its last durable step."""
    check_job_id(args.job)
    client = daemon_for(args, cfg)
    if client is not None:
        with client:
            job_data = client.call("retry", {"job": args.job})
            if args.wait:
                return follow(client, cfg, args.job, args.json)
        if args.json:
            emit_json(job_data)
        else:
            print(f"job {args.job} continues in the daemon ({job_data['state']}): "
                  "`openscan-pi status --watch` follows it")
        return 0
    from openscan_pi.jobs import actions

    job = JobStore(prepare_data_dir(cfg.data_dir)).load(args.job)
    with job.hold():
        actions.retry(job, interrupted=True)  # a scan stopped part-way goes on as well
    with local_cloud(cfg) as cfg:
        return _run(cfg, job, args.json)


def pause(args: argparse.Namespace, cfg: Config) -> int:
    """``pause [JOB]``: through the daemon (the one that runs the scan)."""
    if args.job is not None:
        check_job_id(args.job)
    client = daemon_for(args, cfg)
    if client is None:
        raise UserError("no daemon is running: a scan run in a terminal stops with Ctrl-C, and "
                        "`openscan-pi retry JOB` goes on with it")
    with client:
        job = client.call("pause", {"job": args.job} if args.job else {})
    if args.json:
        emit_json(job)
    elif job["state"] == "paused":
        print(f"job {job['id']} paused: `openscan-pi continue {job['id']}` goes on")
    else:
        print(f"job {job['id']} pauses before its next position: `openscan-pi status` shows it; "
              f"`openscan-pi continue {job['id']}` goes on")
    return 0


def go_on(args: argparse.Namespace, cfg: Config) -> int:
    """``continue [JOB]``: a paused scan goes on (in the daemon, or here)."""
    from openscan_pi.jobs import actions

    if args.job is not None:
        check_job_id(args.job)
    client = daemon_for(args, cfg)
    if client is not None:
        with client:
            job_data = client.call("continue", {"job": args.job} if args.job else {})
            if args.wait:
                return follow(client, cfg, job_data["id"], args.json)
        if args.json:
            emit_json(job_data)
        else:
            print(f"job {job_data['id']} continues in the daemon ({job_data['state']}): "
                  "`openscan-pi status --watch` follows it")
        return 0
    store = JobStore(prepare_data_dir(cfg.data_dir))
    if args.job is None:
        paused = [j for j in store.all() if j.state in HELD]
        if not paused:
            raise InputError("nothing to continue: no job is paused or waiting")
        job = max(paused, key=lambda j: float(j.data["updated"]))
    else:
        job = store.load(args.job)
    with job.hold():
        actions.go_on(job)
    with local_cloud(cfg) as cfg:
        return _run(cfg, job, args.json)


def jobs(args: argparse.Namespace, cfg: Config) -> int:
    """``jobs``: every job with its state, then the job folders that cannot be run.

    ``--json`` prints the list of job objects (the broken folders go to stderr, one line each);
    ``--broken --json`` the list of broken folders."""
    from openscan_pi.daemon.client import DaemonError
    from openscan_pi.daemon.protocol import METHOD_NOT_FOUND

    client = daemon_for(args, cfg)
    if client is not None:
        with client:
            items = [] if args.broken else client.call("jobs")
            try:
                broken = client.call("jobs.broken")
            except DaemonError as exc:  # a daemon of a version without it
                if exc.code != METHOD_NOT_FOUND:
                    raise
                broken = []
    else:
        found, reports = JobStore(cfg.data_dir).survey()
        items = [job.public() for job in found]
        broken = [b.as_dict() for b in reports]
    if args.broken:
        if args.json:
            emit_json(broken)
        elif not broken:
            print("no broken job folders")
        else:
            for b in broken:
                print(f"{b['path']}: {b['problem']}\n  fix: {b['fix']}")
        return 0
    if args.json:
        emit_json(items)
        for b in broken:
            print(f"warning: broken job folder {b['path']}: {b['problem']} (`openscan-pi jobs "
                  "--broken` says how to fix it)", file=sys.stderr)
        return 0
    if not items and not broken:
        print("no jobs yet: `openscan-pi scan --positions 100` starts one")
        return 0
    if items:
        print(f"{'job':<20} {'state':<12} {'captured':>9}  project / model")
    for j in items:
        where = j["model_dir"] or j["error"] or j["step"] or ""
        print(f"{j['id']:<20} {j['state']:<12} {j['captured']:>4}/{j['positions']:<4}  "
              f"{j['project']}  {where}")
    if broken:
        print(f"{len(broken)} job folder{'s' if len(broken) != 1 else ''} cannot be run (left as "
              "they are; the other jobs are not affected):")
        for b in broken:
            print(f"  {b['path']}: {b['problem']}\n    fix: {b['fix']}")
    return 0
