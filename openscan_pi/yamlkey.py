"""One text value from a config file in plain block style, read without the YAML library.

``openscan-pi status`` only needs ``daemon.socket`` to find the daemon, and importing PyYAML
(its pure-Python reader compiles large regular expressions) costs more than the rest of the
command. :func:`read_text_value` reads a strict subset of YAML: the block mappings our config
files are written in, with plain, single-quoted and double-quoted values and one-line lists of
plain items. Whatever lies outside that subset (tabs, anchors, aliases, tags, multi-line values,
flow mappings, block lists, escapes, a key given twice, odd indentation, control characters, ...)
is answered with :data:`UNSURE`, and the caller asks the YAML loader instead. Inside the subset
the answer is the one the YAML loader gives.

Example::

    read_text_value("daemon:\\n  socket: /tmp/d.sock  # mine\\n", ("daemon", "socket"))
    # -> "/tmp/d.sock"
    read_text_value("cloud:\\n  retries: 3\\n", ("daemon", "socket"))    # -> MISSING
    read_text_value("daemon: {socket: /x}\\n", ("daemon", "socket"))     # -> UNSURE
"""

from __future__ import annotations

import functools
import re
from enum import Enum


class Answer(Enum):
    """What :func:`read_text_value` says when it has no text to give."""

    #: The file is inside the subset and does not set the key.
    MISSING = "missing"
    #: The file (or the key's value) is outside the subset: ask the YAML loader.
    UNSURE = "unsure"


MISSING = Answer.MISSING
UNSURE = Answer.UNSURE

_SAFE = r"A-Za-z0-9_/~.+=@%-"
#: A plain scalar on one line: no indicator first, no ``: `` or `` #`` inside, no trailing space.
_PLAIN = rf"-?[A-Za-z0-9_/~.+](?:[{_SAFE}]|:(?=[{_SAFE}])| +(?=[{_SAFE}]))*"
_ITEM = r"-?[A-Za-z0-9_.+/~]+"
_VALUE = (rf"(?P<plain>{_PLAIN})|\"(?P<double>[^\"\\]*)\"|'(?P<single>[^']*)'"
          rf"|(?P<list>\[ *(?:{_ITEM}(?: *, *{_ITEM})*)? *\])")
_LINE = re.compile(rf"(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?: +(?:{_VALUE}))?(?: +#.*)? *")
#: An item of a block list, holding one value of the kinds above.
_LIST_ITEM = r"(?P<indent> *)- +(?:" + _VALUE.replace("(?P<", "(?P<item_") + r")(?: +#.*)? *"
#: Characters the subset leaves to the YAML loader: control characters (tabs and carriage returns
#: included), YAML's other line breaks, surrogates, byte-order marks and non-characters.
_ODD = "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]"


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    """A pattern compiled when first needed (``status`` pays only for what its file uses)."""
    return re.compile(pattern)


def read_text_value(text: str, key_path: tuple[str, ...]) -> str | Answer:
    """The text at ``key_path`` in the YAML document ``text``, :data:`MISSING` when the document
    does not set it, or :data:`UNSURE` when only the YAML loader can tell.

    A plain (unquoted) value is given only when YAML surely reads it as text, which this reader
    knows for values starting with ``/`` or ``~`` (a path); other plain values are
    :data:`UNSURE`.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    # Python's printable characters are printable in YAML too; only other text needs the look.
    if not text.replace("\n", "").isprintable() and _compiled(_ODD).search(text):
        return UNSURE
    levels: list[tuple[int, set[str], tuple[str, ...]]] = []  # indent, keys so far, where
    opener: tuple[int, tuple[str, ...]] | None = None  # the last key without a value
    items: tuple[int, int] | None = None  # a list of plain items: their indent, their key's
    without_value: set[tuple[str, ...]] = set()
    opened: set[tuple[str, ...]] = set()
    found: re.Match[str] | None = None
    for line in text.split("\n"):
        content = line.lstrip(" ")
        if not content or content.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            match = _compiled(_LIST_ITEM).fullmatch(line)
            if match is None:
                return UNSURE
        indent = len(match["indent"])
        if "key" not in match.re.groupindex:  # an item of a list: the value of the key above it
            if items is None and opener is not None and indent >= opener[0] and levels:
                if opener[1] == key_path[:len(opener[1])]:
                    return UNSURE  # the key, or a parent of it, is a list
                items, opener = (indent, opener[0]), None
            elif items is None or indent != items[0]:
                return UNSURE
            continue
        if items is not None:
            if indent > items[1]:
                return UNSURE
            items = None
        if not levels:
            if indent:
                return UNSURE
            levels.append((0, set(), ()))
        elif opener is not None and indent > opener[0]:
            levels.append((indent, set(), opener[1]))
            opened.add(opener[1])
        else:
            while levels[-1][0] > indent:
                levels.pop()
            if levels[-1][0] != indent:
                return UNSURE
        _, keys, where = levels[-1]
        if match["key"] in keys:
            return UNSURE  # the YAML loader refuses a key given twice
        keys.add(match["key"])
        here = (*where, match["key"])
        has_value = any(match[group] is not None for group in ("plain", "double", "single", "list"))
        opener = None if has_value else (indent, here)
        if not has_value:
            without_value.add(here)
        if here == key_path:
            found = match
        elif here == key_path[:len(here)] and has_value:
            return UNSURE  # a parent of the key holds a value, not a mapping
    if not levels:
        return UNSURE  # nothing but comments: not a mapping
    for depth in range(1, len(key_path)):
        parent = key_path[:depth]
        if parent in without_value and parent not in opened:
            return UNSURE  # a parent of the key is null
    if found is None:
        return MISSING
    if found["double"] is not None:
        return found["double"]
    if found["single"] is not None:
        return found["single"]
    plain = found["plain"]
    if plain is not None and plain[0] in "/~" and plain != "~":
        return plain
    return UNSURE
