"""``status`` is read without argparse, exactly as argparse reads it; anything else goes to argparse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from openscan_pi.cli import build_parser, quick_status_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv", [
    ["status"], ["status", "--json"], ["status", "--watch", "--json"], ["--config", "c.yaml", "status"],
    ["--config=c.yaml", "status", "--watch"], ["--config", "status", "status"], ["--config=", "status"],
])
def test_the_quick_reading_is_argparse_s(argv: list[str]) -> None:
    quick = quick_status_args(argv)
    assert quick is not None
    assert vars(quick) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [
    [], ["status", "--help"], ["status", "--json", "--json"], ["--debug", "status"], ["status", "-h"],
    ["--config", "-x", "status"], ["--config"], ["status", "--js"], ["status", "extra"],
    ["status", "--config", "c.yaml"], ["jobs"], ["--conf", "c.yaml", "status"],
])
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert quick_status_args(argv) is None


def test_status_imports_no_argparse_yaml_or_schema(tmp_path: Path) -> None:
    """What ``openscan-pi --config FILE status`` imports to find the socket, on an interpreter
    without site-packages (``-S``: nothing imported on its behalf)."""
    config = tmp_path / "c.yaml"
    config.write_text("# a config\ncloud:\n  token: ''\ndaemon:\n  socket: /tmp/nowhere/d.sock\n")
    code = (f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
            "from openscan_pi.cli import quick_status_args\n"
            "from openscan_pi.locate import quick_socket_candidates\n"
            "import openscan_pi.commands.daemon\n"
            f"args = quick_status_args(['--config', {str(config)!r}, 'status'])\n"
            "assert quick_socket_candidates(args.config) == ['/tmp/nowhere/d.sock']\n"
            "print(' '.join(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    for heavy in ("argparse", "yaml", "openscan_pi.schema", "openscan_pi.config", "dataclasses",
                  "threading", "typing", "pathlib", "openscan_pi.rig.lgpio_import"):
        assert heavy not in loaded, heavy
