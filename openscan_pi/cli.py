"""The ``openscan-pi`` command line: parse, load the config, call the library, print.

Every failure ends as one line on stderr naming the cause and the fix, with a non-zero exit
status (78 for a broken config); ``--debug`` adds the traceback. ``--json`` prints only JSON on
stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openscan_pi import __version__
from openscan_pi.config import SIMULATE_OVERRIDES, Config, load_config
from openscan_pi.errors import EX_INTERRUPTED, InputError, UserError
from openscan_pi.logs import setup_logging

log = logging.getLogger("openscan_pi")

EPILOG = """\
configuration: --config FILE, else $OPENSCAN_PI_CONFIG, else /etc/openscan-pi/config.yaml,
else the built-in defaults (see config/openscan-pi.yaml). $OPENSCAN_PI_TOKEN overrides
cloud.token.

examples:
  openscan-pi upload ~/scans/vase --wait --out ~/models/vase
  openscan-pi token
  openscan-pi download vase-1700000000000.zip --out ~/models/vase
"""


def _add_common(p: argparse.ArgumentParser, *, simulate: bool = True) -> None:
    p.add_argument("--json", action="store_true",
                   help="print only JSON on stdout (for scripts); no progress output")
    if simulate:
        p.add_argument("--simulate", action="store_true",
                       help="use the simulated rig and the bundled local cloud (cloud.url: local)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``openscan-pi`` (global options come before the command)."""
    parser = argparse.ArgumentParser(
        prog="openscan-pi",
        description="Scanner daemon and tools for the OpenScan Classic and Mini: capture, upload "
                    "to the OpenScan Cloud, and fetch the 3D model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="read this config file (YAML)")
    parser.add_argument("--debug", action="store_true",
                        help="log everything to stderr and show tracebacks")
    parser.add_argument("--version", action="version", version=f"openscan-pi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser(
        "upload", help="upload a folder of photos or a zip to the OpenScan Cloud",
        description="Upload an image set (a folder of .jpg/.jpeg/.png/.tif/.tiff/.dng, searched "
                    "recursively, or a zip of them) to the OpenScan Cloud and start processing. "
                    "The set is streamed as a zip made on the fly: nothing is copied to disk. "
                    "Interrupted? Run the same command again: it continues where it stopped and "
                    "never creates a second project.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  openscan-pi upload ~/scans/vase\n"
               "  openscan-pi upload vase.zip --project vase-v2 --wait --out ~/models/vase\n")
    up.add_argument("path", metavar="PATH", help="folder of images, or a zip of images")
    up.add_argument("--project", metavar="NAME",
                    help="cloud project name ([A-Za-z0-9_.-]; default: <set name>-<epoch ms>.zip)")
    up.add_argument("--wait", action="store_true",
                    help="poll until the model is ready, then download it into --out")
    up.add_argument("--out", metavar="DIR",
                    help="folder for the model with --wait (default: ./<project name>); must "
                         "not exist or be empty")
    _add_common(up)
    up.set_defaults(func=cmd_upload)

    tok = sub.add_parser("token", help="show the token's credit and limits",
                         description="Ask the cloud for the configured token's credit and limits "
                                     "(getTokenInfo).")
    _add_common(tok)
    tok.set_defaults(func=cmd_token)

    dl = sub.add_parser(
        "download", help="wait for a started cloud project and fetch its model",
        description="Poll a started project until its model is ready, then download and extract "
                    "it safely into --out (never half there).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  openscan-pi download vase-1700000000000.zip --out ~/models/vase\n")
    dl.add_argument("project", metavar="PROJECT", help="the cloud project name")
    dl.add_argument("--out", metavar="DIR",
                    help="folder for the model (default: ./<project name>); must not exist or "
                         "be empty")
    _add_common(dl)
    dl.set_defaults(func=cmd_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``openscan-pi``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(debug=args.debug)
    try:
        cfg = load_config(args.config,
                          overrides=SIMULATE_OVERRIDES if getattr(args, "simulate", False) else None)
        setup_logging(debug=args.debug, secrets=(cfg.cloud.token, cfg.cloud.password))
        return int(args.func(args, cfg) or 0)
    except UserError as exc:
        if args.debug:
            log.exception("failed")
        print(f"openscan-pi: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("openscan-pi: interrupted; run the same command again to continue", file=sys.stderr)
        return EX_INTERRUPTED


def _emit_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


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
        with connect(cfg) as (api, rebase):
            outcome = Transfer(api, cfg, journal, source, events=printer, rebase=rebase).run(
                wait=wait, model_dir=out)
    finally:
        printer.close()
    if json_output:
        _emit_json(outcome.as_dict())
    elif outcome.model_dir:
        print(f"model of {outcome.project}: {outcome.model_dir}")
    else:
        print(f"project {outcome.project} uploaded and started ({outcome.status}); fetch the model "
              f"later with: openscan-pi download {outcome.project}")
    return 0


def cmd_upload(args: argparse.Namespace, cfg: Config) -> int:
    """``upload PATH``: a folder or zip to the cloud, resumably."""
    from openscan_pi.cloud.upload import prepare_upload
    from openscan_pi.progress import ProgressPrinter

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


def cmd_token(args: argparse.Namespace, cfg: Config) -> int:
    """``token``: credit and limits."""
    from openscan_pi.cloud.transfer import connect

    with connect(cfg) as (api, _):
        info = api.token_info()
    if args.json:
        _emit_json({"credit": info.credit, "limit_filesize": info.limit_filesize,
                    "limit_photos": info.limit_photos})
    else:
        print(f"credit left:        {info.credit / 1e9:,.2f} GB\n"
              f"largest set:        {info.limit_filesize / 1e9:,.2f} GB\n"
              f"most photos a set:  {info.limit_photos}")
    return 0


def cmd_download(args: argparse.Namespace, cfg: Config) -> int:
    """``download PROJECT``: poll a started project and fetch its model."""
    from openscan_pi.cloud.journal import Journal
    from openscan_pi.cloud.transfer import connect

    name = args.project
    journal = Journal.find(cfg.data_dir, name)
    if journal and not journal.reached("started") and journal.phase != "failed":
        raise InputError(f"project {name} is not uploaded completely: run the same upload "
                         "command again first")
    if journal is None:
        with connect(cfg) as (api, _):
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
                _emit_json({"project": name, "phase": journal.phase, "model_dir": done_dir,
                            "files": journal.data.get("files") or []})
            else:
                print(f"model of {name}: {done_dir}")
            return 0
        journal.update(phase="processed")
    elif journal.phase == "failed":
        raise InputError(f"project {name} ended on the cloud with {journal.data.get('error')}")
    out = _model_dir(args.out, name)
    return _run_transfer(cfg, journal, None, wait=True, out=out, json_output=args.json)
