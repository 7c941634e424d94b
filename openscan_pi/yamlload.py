"""YAML for the configuration: PyYAML's safe loader with guards against input that would crash it
or mislead silently.

- Nesting deeper than :data:`MAX_DEPTH` is refused with its line and key path: PyYAML's composer
  recurses (thousands of brackets end in ``RecursionError``, and libyaml's in a segfault).
- An integer longer than Python converts (``sys.get_int_max_str_digits()``, 4300 digits) becomes a
  :class:`HugeNumber`, which the config checks refuse under its key, instead of a ``ValueError``.
- A key given twice in one mapping is refused (YAML forbids it; PyYAML would keep the last one).

Aliases are safe as they are: PyYAML builds an aliased node once and shares it, so an "anchor bomb"
costs nothing until something walks it, and the config checks stop at the first wrong item.

Example::

    data = load("cloud:\\n  retries: 3\\n")  # -> {"cloud": {"retries": 3}}
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

#: The deepest nesting a config may have (its own deepest key is 4 levels down).
MAX_DEPTH = 32
#: Key path components shown in a message before it is cut short.
SHOWN_PATH = 4


class YamlRefused(yaml.MarkedYAMLError):
    """Valid-looking YAML this loader refuses (too deep, a key given twice); it has a mark."""


class HugeNumber:
    """An integer with more digits than Python converts from text; refused by the config checks."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"a number of {self.digits} digits"


def digits(value: int) -> int:
    """How many decimal digits ``value`` has (without converting a huge one to text)."""
    if value.bit_length() < 10_000:
        return len(str(abs(value)))
    return math.floor(value.bit_length() * math.log10(2)) + 1


def key_path(parts: list[str | None]) -> str:
    """``rig.rotor.min_angle``, ``camera.resolution[0]``; cut short after :data:`SHOWN_PATH` parts."""
    named = [p for p in parts if p]
    text = ""
    for part in named[:SHOWN_PATH]:
        text += part if part.startswith("[") or not text else f".{part}"
    return text + ("…" if len(named) > SHOWN_PATH else "")


class GuardedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the guards of this module."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: list[str | None] = []

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if isinstance(parent, SequenceNode):
            label: str | None = f"[{index}]"
        elif isinstance(parent, MappingNode) and isinstance(index, Node):
            label = str(index.value) if isinstance(index, ScalarNode) else "?"
        else:
            label = None  # the document, or a mapping's key
        self._path.append(label)
        try:
            if len(self._path) > MAX_DEPTH:
                raise YamlRefused(None, None, f"{key_path(self._path)}: nested more than {MAX_DEPTH} "
                                  "levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._path.pop()

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: dict[str, Node] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            if key.value in seen:
                where = key_path([*self._path, key.value])
                raise YamlRefused(None, None, f"{where} is given twice (also on line "
                                  f"{seen[key.value].start_mark.line + 1}): keep one", key.start_mark)
            seen[key.value] = key
        return node

    def construct_yaml_int(self, node: ScalarNode) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # only a decimal past the conversion limit gets here
            return HugeNumber(sum(ch.isdigit() for ch in str(node.value)))


GuardedLoader.add_constructor("tag:yaml.org,2002:int", GuardedLoader.construct_yaml_int)


def load(text: str) -> Any:
    """Parse one YAML document with the guards; raises ``yaml.YAMLError`` (a
    :class:`YamlRefused` for what the guards refuse)."""
    loader = GuardedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
