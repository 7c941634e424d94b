"""Handler of ``doctor``: run the checks of :mod:`openscan_pi.doctor` and print them."""

from __future__ import annotations

import argparse

from openscan_pi.commands.common import emit_json
from openscan_pi.config import Config
from openscan_pi.errors import EX_FAILURE

LABELS = {"ok": "ok", "warn": "warn", "fail": "FAIL"}


def render_line(status: str, name: str, detail: str, fix: str | None) -> str:
    """One check for people: ``ok    camera     simulated camera, 1024x768``, with the fix."""
    line = f"{LABELS.get(status, status):<6}{name:<11}{detail}"
    return f"{line} → fix: {fix}" if fix and status != "ok" else line


def doctor(args: argparse.Namespace, cfg: Config) -> int:
    """``doctor [--json]``: every check, one line each; exit 1 when one failed (warnings pass)."""
    from openscan_pi.doctor import FAIL, WARN, run_checks

    checks = run_checks(cfg)
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    if args.json:
        emit_json({"ok": not failed, "checks": [c.as_dict() for c in checks]})
    else:
        for c in checks:
            print(render_line(c.status, c.name, c.detail, c.fix))
        notes = f", {warned} warning{'s' * (warned != 1)}" if warned else ""
        if failed:
            print(f"{failed} of {len(checks)} checks failed{notes}: fix them and run "
                  "`openscan-pi doctor` again")
        else:
            print(f"all {len(checks)} checks passed{notes}")
    return EX_FAILURE if failed else 0
