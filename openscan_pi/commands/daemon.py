"""Handlers of ``daemon``, ``status`` and ``cancel``, and how the other commands find the daemon.

Kept light: ``status`` is typed over SSH all day, so this module imports only the socket client
at the top.
"""

from __future__ import annotations

import socket
import sys
import time

from openscan_pi.commands.common import emit_json, on_stdout_closed
from openscan_pi.daemon.client import DaemonClient, find_daemon, not_running
from openscan_pi.errors import InputError, UserError
from openscan_pi.locate import (
    DEFAULT_SOCKET,
    config_file,
    quick_socket_candidates,
    socket_candidates,
    socket_path,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`status` starts quickly)
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from openscan_pi.config import Config

FINISHED = ("done", "failed", "cancelled")


def candidates(cfg: Config) -> list[str]:
    """The socket paths to look for the daemon on."""
    return socket_candidates(cfg.daemon.socket)


def _load(args: argparse.Namespace) -> Config:
    from openscan_pi.config import load_config

    return load_config(args.config)


def quick_daemon(args: argparse.Namespace, *, config_needed: bool = True
                 ) -> tuple[DaemonClient | None, Config | None]:
    """The running daemon, found without loading the whole config when that is safe (``status``
    runs all day over SSH); else after loading it (a broken config is then reported). Without
    ``config_needed`` and without a config file, (None, None) when no daemon answers: the built-in
    defaults hold nothing to report."""
    quick = quick_socket_candidates(args.config)
    client = find_daemon(quick) if quick else None
    if client is not None:
        return client, None
    if not config_needed and quick is not None and config_file(args.config) is None:
        return None, None
    cfg = _load(args)
    return find_daemon(candidates(cfg)), cfg


def daemon_for(args: argparse.Namespace, cfg: Config) -> DaemonClient | None:
    """A client of the running daemon, or None (then the command runs in this process).

    With ``--simulate``, only a daemon that runs the simulated rig is used: the job of a
    simulation must never move a real scanner.
    """
    client = find_daemon(candidates(cfg))
    if client is None or not getattr(args, "simulate", False):
        return client
    if client.call("status")["rig"].get("model") == "simulated":
        return client
    client.close()
    print("note: the running daemon drives a real rig; this simulation runs in this process",
          file=sys.stderr)
    return None


def daemon(args: argparse.Namespace, cfg: Config | None) -> int:
    """``daemon``: run the service in the foreground, logging to stderr."""
    from openscan_pi.config import SIMULATE_OVERRIDES, load_config
    from openscan_pi.daemon.service import run
    from openscan_pi.daemon.systemd import journal_handler, under_journal
    from openscan_pi.logs import setup_logging
    from openscan_pi.sim.local_cloud import BundledCloud

    assert cfg is not None
    secrets = (cfg.cloud.token, cfg.cloud.password, *filter(None, [cfg.web.password]))
    setup_logging(debug=args.debug, secrets=secrets, service=True,
                  journal=journal_handler() if under_journal() else None)

    with BundledCloud() as bundled:  # cloud.url: local: the bundled cloud, a child of the daemon

        def reload() -> Config:
            return bundled.resolve(load_config(args.config,
                                               overrides=SIMULATE_OVERRIDES if args.simulate else None))

        return run(bundled.resolve(cfg), reload)
    return run(cfg)


# -- status -------------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _bar(done: float, total: float, width: int = 24) -> str:
    share = min(1.0, done / total) if total else 0.0
    filled = int(share * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {share * 100:3.0f} %"


def job_progress(job: dict[str, Any]) -> str:
    """One line: the job's state, finer step, progress bar and ETA."""
    state, step = job["state"], job.get("step") or ""
    eta = f"  ETA {_duration(job['eta_s'])}" if job.get("eta_s") is not None else ""
    if state == "scanning":
        return (f"scanning  {_bar(job['captured'], job['positions'])}  {job['captured']}/"
                f"{job['positions']} positions{eta}  ({step})")
    if state == "uploading":
        total = job["bytes_total"] or 0
        return (f"uploading {_bar(job['bytes_uploaded'] or 0, total)}  "
                f"{(job['bytes_uploaded'] or 0) / 1e6:.1f}/{total / 1e6:.1f} MB{eta}  ({step})")
    if state == "processing":
        return f"processing in the cloud: {job.get('cloud_status') or 'waiting'}  ({step})"
    if state == "done":
        return f"done: model in {job['model_dir']}"
    if state == "failed":
        return f"failed: {job['error']} (`openscan-pi retry {job['id']}` continues it)"
    if state == "waiting":
        return (f"waiting   {_bar(job['captured'], job['positions'])}  {job['captured']}/"
                f"{job['positions']} positions  ({step})")
    if state == "paused":
        return (f"paused    {_bar(job['captured'], job['positions'])}  {job['captured']}/"
                f"{job['positions']} positions  (`openscan-pi continue {job['id']}` goes on)")
    return f"{state}  ({step})" if step and step != state else state


def render(status: dict[str, Any]) -> str:
    """``status`` for people."""
    rig = status["rig"]
    where = ""
    if "rotor" in rig:
        where = (f", rotor {rig['rotor']:.1f}°, turntable {rig['turntable']:.1f}°, light "
                 f"{'on' if rig.get('light') else 'off'}")
    lines = [f"daemon {status['version']}: {status['state']} (rig {rig['model']}{where})"]
    if rig.get("task"):
        lines.append(f"rig: {rig['task']}")
    job = status.get("job")
    if job:
        lines.append(f"job {job['id']}  project {job['project']}  {job['state']}")
        lines.append("  " + job_progress(job))
        if job.get("cloud_status") and job["state"] != "processing":
            lines.append(f"  cloud: {job['cloud_status']}")
    else:
        lines.append("no jobs yet: `openscan-pi scan --positions 100` starts one")
    if status.get("queued"):
        lines.append(f"queued: {', '.join(status['queued'])}")
    return "\n".join(lines)


def status(args: argparse.Namespace, cfg: Config | None) -> int:
    """``status [--watch] [--json]``: the daemon's state and its current or last job."""
    client, loaded = quick_daemon(args, config_needed=False)
    if client is None:
        raise not_running(loaded.socket_path if loaded else socket_path(DEFAULT_SOCKET))
    with client:
        if not args.watch:
            now = client.call("status")
            emit_json(now) if args.json else print(render(now))
            return 0
        now = client.call("subscribe")
        tty = sys.stdout.isatty() and not args.json
        shown = ""
        gone = on_stdout_closed(lambda: _wake(client))  # `status --watch | head -1` ends at once
        try:
            for message in _with_first(now, client):
                if args.json:
                    emit_json(message)
                    continue
                text = render(message)
                if text == shown:
                    continue
                if tty and shown:
                    sys.stdout.write(f"\x1b[{shown.count(chr(10)) + 1}F\x1b[J")
                print(text, end="\n" if tty else "\n\n", flush=True)
                shown = text
        except KeyboardInterrupt:
            return 0
        except UserError:
            if gone.is_set():
                raise BrokenPipeError("stdout's reader has gone") from None
            raise
    return 0


def _wake(client: DaemonClient) -> None:
    """Make a read on the daemon's connection return (from another thread)."""
    import contextlib

    with contextlib.suppress(OSError):
        client.sock.shutdown(socket.SHUT_RDWR)


def _with_first(first: dict[str, Any], client: DaemonClient) -> Any:
    yield first
    for note in client.notifications():
        yield note["params"]


# -- following a job ----------------------------------------------------------------------------


def _milestone(job: dict[str, Any]) -> tuple[Any, ...]:
    """What must change for a piped ``--wait`` to print another line."""
    state = job["state"]
    if state == "scanning":
        return state, int(10 * (job["captured"] or 0) / max(1, job["positions"] or 1))
    if state == "uploading":
        return state, int(10 * (job["bytes_uploaded"] or 0) / max(1, job["bytes_total"] or 1))
    return state, job.get("step"), job.get("cloud_status")


def watch(client: DaemonClient, job_id: str, json_output: bool) -> dict[str, Any]:
    """Follow job ``job_id`` to its end with progress on stderr; returns the finished job."""
    watcher = DaemonClient.connect(client.path)
    watcher.call("subscribe")
    tty = sys.stderr.isatty()
    shown = ""
    milestone: tuple[Any, ...] = ()
    try:
        job = client.call("job", {"job": job_id})
        while job["state"] not in FINISHED:
            line = job_progress(job)
            if line != shown and not json_output:
                if tty:  # one line, rewritten
                    sys.stderr.write(f"\r\x1b[K{line[:200]}")
                    sys.stderr.flush()
                elif _milestone(job) != milestone:  # piped: a line per step or 10 %
                    milestone = _milestone(job)
                    print(line, file=sys.stderr)
                shown = line
            for note in watcher.notifications():
                current = note["params"].get("job") or {}
                mine = current.get("id") == job_id
                job = current if mine else client.call("job", {"job": job_id})
                break
            else:
                raise UserError("the daemon stopped; the job continues when it starts again")
    except KeyboardInterrupt:
        raise UserError(f"stopped following job {job_id}; it goes on in the daemon: "
                        "`openscan-pi status --watch` follows it") from None
    finally:
        watcher.close()
        if tty and shown and not json_output:
            sys.stderr.write("\n")
    return job


def unless_done(job: dict[str, Any]) -> None:
    """:class:`UserError` saying how job ``job`` ended, unless it ended ``done``."""
    if job["state"] == "failed":
        raise UserError(f"job {job['id']} failed: {job['error']} (it keeps its images: "
                        f"`openscan-pi retry {job['id']}` continues it)")
    if job["state"] != "done":
        raise UserError(f"job {job['id']} was {job['state']}")


def watch_done(client: DaemonClient, job_id: str, json_output: bool) -> dict[str, Any]:
    """:func:`watch` job ``job_id`` to its end; a job that did not end ``done`` is told (its
    object printed with ``--json``) and raised as :func:`unless_done` says."""
    job = watch(client, job_id, json_output)
    if job["state"] != "done":
        if json_output:
            emit_json(job)
        unless_done(job)
    return job


def follow(client: DaemonClient, cfg: Config, job_id: str, json_output: bool) -> int:
    """Follow job ``job_id`` to its end (``--wait``); exit 0 only when it ends ``done``."""
    job = watch(client, job_id, json_output)
    if json_output:
        emit_json(job)
    unless_done(job)
    if not json_output:
        took = time.time() - float(job["created"])
        print(f"model of {job['project']}: {job['model_dir']} ({took:.0f} s)")
    return 0


# -- cancel -------------------------------------------------------------------------------------


def cancel(args: argparse.Namespace, cfg: Config | None) -> int:
    """``cancel [JOB]``: through the daemon, or on disk when no daemon runs."""
    if args.job is not None:
        from openscan_pi.names import check_job_id

        check_job_id(args.job)
    client, loaded = quick_daemon(args)
    if client is not None:
        with client:
            job = client.call("cancel", {"job": args.job} if args.job else {})
    else:
        from openscan_pi.jobs import actions
        from openscan_pi.jobs.store import JobStore

        if not args.job:
            raise InputError("the daemon is not running: give the job to cancel "
                             "(`openscan-pi jobs` lists them)")
        assert loaded is not None
        stored = JobStore(loaded.data_dir).load(args.job)
        with stored.hold():
            actions.cancel(stored, held=False)
        job = stored.public()
    if args.json:
        emit_json(job)
    else:
        print(f"job {job['id']}: {job['state']}")
    return 0
