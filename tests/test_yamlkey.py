"""The reader of one config value without PyYAML: inside its subset it answers what the YAML
loader answers, and everything else it leaves to that loader."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from openscan_pi.yamlkey import MISSING, UNSURE, Answer, read_text_value
from openscan_pi.yamlload import load

ROOT = Path(__file__).resolve().parents[1]
KEY = ("daemon", "socket")


def loader_says(text: str) -> Any:
    """What the guarded YAML loader reads at ``daemon.socket``: the value, MISSING, or an
    exception's class for a document it refuses."""
    try:
        data = load(text)
    except Exception as exc:  # the reader must then be UNSURE
        return type(exc)
    value: Any = data
    for part in KEY:
        if not isinstance(value, dict):
            return TypeError
        if part not in value:
            return MISSING
        value = value[part]
    return value


def agrees(text: str) -> str | Answer:
    """The reader's answer, checked against the loader's."""
    got = read_text_value(text, KEY)
    want = loader_says(text)
    if got is UNSURE:
        return got
    assert got == want, (text, got, want)
    return got


@pytest.mark.parametrize(("text", "expected"), [
    ("daemon:\n  socket: /tmp/d.sock\n", "/tmp/d.sock"),
    ("daemon:\n  socket: /tmp/d.sock   # my socket\n  data_dir: /x\n", "/tmp/d.sock"),
    ("\ufeff# config\ndaemon:\n    data_dir: /x\n    socket: ~/d.sock\nrig:\n  model: mini\n", "~/d.sock"),
    ("daemon:\n  socket: '/tmp/with space.sock'\n", "/tmp/with space.sock"),
    ('daemon:\n  socket: "/tmp/q.sock"\n', "/tmp/q.sock"),
    ("daemon:\n  socket: /tmp/a b.sock\n", "/tmp/a b.sock"),
    ("cloud:\n  token: \"\"\ndaemon:\n  socket_group: null\n", MISSING),
    ("camera:\n  resolution: [4056, 3040]\n  focus:\n    stack_range: [3.0, 6.0]\n"
     "daemon:\n  socket: /s\n", "/s"),
    ("# socket: /not/this\ncloud:\n  url: http://x:1334/a\n", MISSING),
    ("camera:\n  resolution:\n  - 640\n  - 480\ndaemon:\n  socket: /s\nrig:\n  pins:\n    - 17\n", "/s"),
])
def test_reads_what_the_yaml_loader_reads(text: str, expected: str | Answer) -> None:
    assert agrees(text) == expected


@pytest.mark.parametrize("text", [
    "daemon: {socket: /tmp/x.sock}\n",              # a flow mapping
    "daemon:\n  socket: /tmp/a\n    b\n",            # a value on two lines
    "daemon:\n\tsocket: /tmp/a\n",                   # a tab
    "daemon:\n  socket: /a\n  socket: /b\n",         # a key given twice
    "daemon:\n  socket: /a\ndaemon:\n  data_dir: /b\n",
    "daemon:\n  socket: &s /a\n",                    # an anchor
    "base: &b\n  socket: /a\ndaemon: *b\n",          # an alias
    "<<: {daemon: {socket: /a}}\n",                  # a merge key
    "daemon:\n  socket: !!str /a\n",                 # a tag
    "daemon:\n  socket: |\n    /a\n",                # a block scalar
    'daemon:\n  socket: "/a\\tb"\n',                 # an escape
    "daemon:\n  socket: ~\n",                        # null
    "daemon:\n  socket: relative.sock\n",            # plain text YAML may read otherwise
    "daemon:\n  socket:\n",                          # null
    "daemon:\n",                                     # daemon is null
    "daemon: /a\n",                                  # daemon is text
    "  daemon:\n    socket: /a\n",                   # an indented document
    "daemon:\n    socket: /a\n  data_dir: /b\n",     # indentation that does not line up
    "--- \ndaemon:\n  socket: /a\n",                 # a document marker
    "daemon:\n  socket: /a\r\n",                     # a carriage return
    "daemon:\n  socket: /a\x00b\n",                  # a control character
    "daemon:\n  - socket: /a\n",                     # a block list
    "daemon:\n- /a\n",                                # daemon is a list
    "daemon:\n  socket:\n  - /a\n",                  # the socket is a list
    "x:\n  - 1\n    - 2\n",                          # items that do not line up
    "# only a comment about the socket\n",
    "daemon:\n  socket: /a:\n",                      # a value ending in ':'
])
def test_leaves_the_rest_to_the_yaml_loader(text: str) -> None:
    assert read_text_value(text, KEY) is UNSURE


def test_the_shipped_config_files_are_inside_the_subset() -> None:
    for path in (ROOT / "config" / "openscan-pi.yaml", ROOT / "openscan_pi" / "data" / "openscan-pi.yaml"):
        text = path.read_text("utf-8")
        assert agrees(text) == "/run/openscan-pi/openscan-pi.sock", path


SECTIONS = ["daemon:", "cloud:", "rig:", "daemon: null", " daemon:", "daemon: {}", "# socket", "",
            "- /a", "daemon: /a"]
CHILDREN = ["socket: /a", "socket: '/b c'", "socket: \"/h\"", "socket: /i # c", "socket: /j:k",
            "socket:", "socket: ~", "socket: x", "data_dir: /d", "url: http://x:1", "retries: 3",
            "pins: [17, 27]", "light:", "  socket: /f", "  x: 1", " socket: /g", "- 2", "# c", "",
            "  - 3", "- /k", "- a: 1"]


def test_random_documents_agree_with_the_yaml_loader() -> None:
    """Sections of random lines: whatever the reader answers (when it is sure) the loader answers."""
    rng = random.Random(20261203)
    answers: dict[str, int] = {"text": 0, "missing": 0, "unsure": 0}
    for _ in range(8000):
        lines = []
        for _ in range(rng.randint(1, 3)):
            lines.append(rng.choice(SECTIONS))
            indent = rng.choice(["  ", "  ", "    ", " "])
            lines += [indent + rng.choice(CHILDREN) for _ in range(rng.randint(0, 3))]
        got = agrees("\n".join(lines) + "\n")
        answers["unsure" if got is UNSURE else "missing" if got is MISSING else "text"] += 1
    assert answers["text"] > 40 and answers["missing"] > 200, answers  # both put to the test
