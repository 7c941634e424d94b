"""Fixtures of the local cloud tests: a server on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from openscan_pi.sim.cloud import LocalCloud

from .support import FakeClock, new_cloud


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(tmp_path: Path, clock: FakeClock) -> Iterator[LocalCloud]:
    with new_cloud(tmp_path / "store", clock) as server:
        yield server
