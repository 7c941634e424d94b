"""The ``openscan-pi`` command line: parse, load the config, call the library, print.

Every failure ends as one line on stderr naming the cause and the fix, with a non-zero exit
status (78 for a broken config); ``--debug`` adds the traceback. ``--json`` prints only JSON on
stdout.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from openscan_pi import __version__
from openscan_pi.config import SIMULATE_OVERRIDES, load_config
from openscan_pi.errors import EX_INTERRUPTED, UserError
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
    up.set_defaults(handler="cloud.upload")

    tok = sub.add_parser("token", help="show the token's credit and limits",
                         description="Ask the cloud for the configured token's credit and limits "
                                     "(getTokenInfo).")
    _add_common(tok)
    tok.set_defaults(handler="cloud.token")

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
    dl.set_defaults(handler="cloud.download")
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
        module, _, name = args.handler.partition(".")
        handler = getattr(importlib.import_module(f"openscan_pi.commands.{module}"), name)
        return int(handler(args, cfg) or 0)
    except UserError as exc:
        if args.debug:
            log.exception("failed")
        print(f"openscan-pi: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("openscan-pi: interrupted; run the same command again to continue", file=sys.stderr)
        return EX_INTERRUPTED
