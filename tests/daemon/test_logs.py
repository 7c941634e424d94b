"""The daemon's log: secrets are masked where they stand as values (never a short password as a word
of prose), and what a caller sends cannot forge a log line (newlines, NULs, escapes, length), in the
stderr format of a real daemon and through the journal handler."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openscan_pi.config import load_config
from openscan_pi.daemon.client import DaemonClient, DaemonError
from openscan_pi.daemon.protocol import INVALID_PARAMS, REFUSED
from openscan_pi.daemon.service import Service
from openscan_pi.daemon.systemd import journal_handler
from openscan_pi.logs import setup_logging
from openscan_pi.masking import mask
from tests.conftest import TOKEN
from tests.daemon.conftest import DaemonProcess, daemon_config, service_in_thread

SECRETS = (TOKEN, "free")


# -- mask -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    # The short default password is a word of prose here: left alone.
    ("disk full: free some space", "disk full: free some space"),
    ("12.0 GB needed, 0.1 GB free in /data: free some space", None),
    ("project free-scan queued", None),
    ("a freezer", None),
    # ... and a value there.
    ("http://openscan:free@cloud.example/x", "http://openscan:***@cloud.example/x"),
    ("GET /getTokenInfo?password=free&x=1", "GET /getTokenInfo?password=***&x=1"),
    ("auth=('openscan', 'free')", "auth=('openscan', '***')"),
    ('{"user": "openscan", "password": "free"}', '{"user": "openscan", "password": "***"}'),
    ("{'password': 'free'}", "{'password': '***'}"),
    ("cloud.password=free, next", "cloud.password=***, next"),
    # Headers, whatever the credentials.
    ("Authorization: Basic b3BlbnNjYW46ZnJlZQ==", "Authorization: Basic ***"),
    ("{'Authorization': 'Bearer abc.def'}", "{'Authorization': 'Bearer ***'}"),
    # Any token= or password= query value, known or not.
    ("https://h/getProjectInfo?token=other-secret&project=p",
     "https://h/getProjectInfo?token=***&project=p"),
    ("https://u:pw@h/p?Token=x", "https://u:***@h/p?Token=***"),
    # The long token: wherever it is.
    (f"unknown token {TOKEN} refused", "unknown token *** refused"),
    (f"job {TOKEN}x", "job ***x"),
    (f"https://h/x?token={TOKEN}", "https://h/x?token=***"),
])
def test_mask_replaces_secrets_as_values_not_as_words(text: str, expected: str | None) -> None:
    assert mask(text, SECRETS) == (text if expected is None else expected)


def test_mask_without_secrets_still_masks_values() -> None:
    assert mask("see http://a:b@h/?token=t&u=1") == "see http://a:***@h/?token=***&u=1"
    assert mask("nothing secret here: free") == "nothing secret here: free"


# -- the daemon's log (stderr) ----------------------------------------------------------------------

#: The start of every line the daemon writes in its service format.
LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def refused(d: DaemonProcess, method: str, params: dict[str, Any]) -> str:
    """Call ``method`` on its own connection; it must be refused (-32000, or -32602 for a value
    that is not a job id); returns the message."""
    with d.client() as c, pytest.raises(DaemonError) as info:
        c.call(method, params)
    assert info.value.code in (REFUSED, INVALID_PARAMS), info.value
    return str(info.value)


def test_daemon_log_masks_the_token_but_not_the_word_free(daemon: DaemonProcess) -> None:
    refused(daemon, "cancel", {"job": "free some space"})
    refused(daemon, "retry", {"job": f"my {TOKEN} job"})
    job = daemon.call("scan", {"positions": 2, "project": "free-space"})
    assert daemon.wait_job(job["id"], {"done", "failed"})["state"] == "done"
    log = daemon.log_text()
    assert "cancel of 'free some space' asked by" in log, log
    assert "*** some space" not in log and "***-space" not in log, log
    assert "project free-space" in log, log
    assert TOKEN not in log and "retry of 'my *** job' asked by" in log, log


FORGED = "2026-01-01 00:00:00,000 ERROR forged line"


@pytest.mark.parametrize("method", ["cancel", "retry"])
def test_caller_values_cannot_forge_log_lines(daemon: DaemonProcess, method: str) -> None:
    refused(daemon, method, {"job": f"x\n{FORGED}"})
    refused(daemon, method, {"job": "a\x00b\x1b[31mred\r\u2028c"})
    refused(daemon, method, {"job": "L" * 200})
    data = daemon.log.read_bytes()
    assert b"\x00" not in data and b"\x1b" not in data and b"\r" not in data, data[-2000:]
    text = data.decode()
    assert "\u2028" not in text
    for line in text.splitlines():
        assert LINE_START.match(line), f"a log line of the caller's making: {line!r}"
    assert "forged line" in text  # there, but inside the daemon's own line, escaped
    assert "L" * 200 not in text and "L" * 60 in text  # cut, visibly
    assert f"{method} of 'x\\n{FORGED}' asked by" in text, text


# -- the journal ----------------------------------------------------------------------------------


@pytest.fixture
def service(short_dir: Path) -> Iterator[Service]:
    """The daemon's service in this process (so that its log can go to a journal sender)."""
    with service_in_thread(load_config(daemon_config(short_dir), env={})) as svc:
        yield svc


def test_journal_messages_are_escaped_and_masked(service: Service) -> None:
    pytest.importorskip("systemd.journal", reason="systemd-python is not installed")
    sent: list[tuple[str, dict[str, Any]]] = []

    def sender(text: str, /, **fields: Any) -> None:  # journal.send(MESSAGE, **fields)
        sent.append((text, fields))

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    setup_logging(service=True, journal=journal_handler(sender), secrets=SECRETS)
    try:
        with DaemonClient.connect(service.cfg.socket_path, 30) as c:
            for job in (f"x\n{FORGED}\x00", f"{TOKEN}\r\nfree"):
                with pytest.raises(DaemonError, match="no job|is not valid"):
                    c.call("cancel", {"job": job})
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    messages = [m for m, _ in sent if "cancel of" in m]
    assert len(messages) == 2, sent
    for message in messages:
        assert "\n" not in message and "\r" not in message and "\x00" not in message, message
    assert "'x\\n" + FORGED + "\\x00'" in messages[0]
    assert TOKEN not in messages[1] and "'***\\r\\nfree'" in messages[1], messages[1]

