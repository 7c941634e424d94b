"""Output into a pipe whose reader has gone (``openscan-pi status | head -1``): no traceback, nothing
on stderr, exit status 141 (128 + SIGPIPE, what a shell shows for ``seq 1000000 | head -1``).

Each command writes into a real pipe: either one whose reader closed before the command ran (so
the very first write fails), or one read like ``head -1`` does (a line, then closed)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import pytest

from tests.conftest import cli_env
from tests.daemon.conftest import DaemonProcess

#: 128 + SIGPIPE.
EX_PIPE = 141

COMMANDS = [
    ["status"], ["status", "--json"], ["jobs"], ["jobs", "--json"], ["plan", "--positions", "100"],
    ["plan", "--positions", "100", "--json"], ["status", "--watch"], ["status", "--watch", "--json"],
]


def cli(daemon: DaemonProcess, *args: str, stdout: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "openscan_pi", "--config", str(daemon.config), *args],
                            stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=cli_env())


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_reader_gone_before_the_first_line(daemon: DaemonProcess, command: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = cli(daemon, *command, stdout=write_end)
    finally:
        os.close(write_end)
    _, stderr = proc.communicate(timeout=60)
    assert (proc.returncode, stderr.decode()) == (EX_PIPE, "")


@pytest.mark.parametrize("command", [["status", "--watch"], ["status", "--watch", "--json"],
                                     ["plan", "--positions", "400"]], ids=" ".join)
def test_head_dash_1(daemon: DaemonProcess, command: list[str]) -> None:
    """A line read, then the reader gone: the watcher of an idle daemon (nothing more to print for
    a long time) notices at once; plan at its next write (its 10 kB do not fit the 4 kB pipe)."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    try:
        proc = cli(daemon, *command, stdout=write_end)
    finally:
        os.close(write_end)
    try:
        first = b""
        while not first.endswith(b"\n"):
            chunk = os.read(read_end, 1)
            assert chunk, "no line before the end"
            first += chunk
    finally:
        os.close(read_end)
    _, stderr = proc.communicate(timeout=60)
    assert (proc.returncode, stderr.decode()) == (EX_PIPE, "")
