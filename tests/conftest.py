"""Shared fixtures: a running local cloud, image sets, config files, the CLI as a subprocess."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from openscan_pi.config import Config, load_config
from openscan_pi.sim.cloud import LocalCloud

TOKEN = "test-token-1234567890"


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    """The bundled local cloud on loopback, processing in 0.3 s."""
    with LocalCloud(tmp_path / "cloud-store", processing_s=0.3) as server:
        yield server


def make_set(folder: Path, count: int = 12, size: int = 40_000, seed: int = 1) -> Path:
    """``count`` JPEG-like files of about ``size`` bytes (SOI marker, random body, EOI marker)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        body = rng.randbytes(size + rng.randrange(1000))
        (folder / f"IMG_{i:04d}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + body + b"\xff\xd9")
    return folder


@pytest.fixture
def image_set(tmp_path: Path) -> Path:
    return make_set(tmp_path / "set")


def write_config(path: Path, cloud: LocalCloud | None, data_dir: Path, **cloud_keys: Any) -> Path:
    """A config file pointing at ``cloud`` with fast polling and short backoffs."""
    section: dict[str, Any] = {"token": TOKEN, "poll_interval_s": 0.05,
                               "poll_max_interval_s": 0.2, "backoff_s": 0.01, "retries": 2,
                               "max_offline_s": 10, "connect_timeout_s": 5, "read_timeout_s": 10,
                               "max_part_bytes": 100_000}
    if cloud is not None:
        section["url"] = cloud.url
    section.update(cloud_keys)
    path.write_text(yaml.safe_dump({"cloud": section, "daemon": {"data_dir": str(data_dir)}}))
    return path


@pytest.fixture
def config_path(tmp_path: Path, cloud: LocalCloud) -> Path:
    return write_config(tmp_path / "config.yaml", cloud, tmp_path / "data")


@pytest.fixture
def cfg(config_path: Path) -> Config:
    return load_config(config_path, env={})


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSCAN_PI_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``openscan-pi ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "openscan_pi", *args], capture_output=True,
                          text=True, env=cli_env(), timeout=timeout, stdin=subprocess.DEVNULL)


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "openscan_pi", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(),
                            stdin=subprocess.DEVNULL)
