"""Job folders that cannot be run, one of each kind, for the store, CLI, doctor and daemon tests."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CREATED = 1_750_000_000.0


def record(name: str, **changes: Any) -> dict[str, Any]:
    """A sound job record for folder ``name`` (a scan of 3 positions, scanning), with changes
    (a value of ``...`` removes the field)."""
    data: dict[str, Any] = {"id": name, "project": f"p-{name}.zip", "state": "scanning",
                            "positions": 3, "stack": 1, "captured": 1, "bytes_total": 10,
                            "bytes_uploaded": 0, "cloud_status": None, "model_dir": None,
                            "error": None, "step": "capturing 2/3", "created": CREATED,
                            "updated": CREATED}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def entry(**changes: Any) -> dict[str, Any]:
    """A sound manifest entry (position 0), with changes."""
    data: dict[str, Any] = {"position": 0, "shot": 0, "file": "pos0000_0.jpg", "size": 10,
                            "crc32": 12345, "rotor": 0.0, "turntable": 0.0, "lens_position": None}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def _folder(root: Path, name: str, job: Any = None, *, raw: bytes | None = None,
            manifest: Any = None, plan: Any = None) -> Path:
    folder = root / name
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "pos0000_0.jpg").write_bytes(b"\xff\xd8photo\xff\xd9")
    if raw is not None:
        (folder / "job.json").write_bytes(raw)
    elif job is not None:
        (folder / "job.json").write_text(json.dumps(job))
    if manifest is not None:
        (folder / "images" / "manifest.json").write_text(json.dumps(manifest))
    if plan is not None:
        (folder / "plan.json").write_text(json.dumps(plan))
    return folder


def _job_json_folder(root: Path, name: str) -> Path:
    folder = _folder(root, name)
    (folder / "job.json").mkdir()
    return folder


def _unreadable(root: Path, name: str) -> Path:
    folder = _folder(root, name, record(name))
    (folder / "job.json").chmod(0)
    return folder


def _stray_file(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("notes about my scans\n")
    return root / name


Maker = Callable[[Path, str], Path]

#: kind -> (make(jobs root, folder name) -> the path, a part of the problem reported)
KINDS: dict[str, tuple[Maker, str]] = {
    "a-list": (lambda r, n: _folder(r, n, []), "job.json holds a list instead of a job record"),
    "a-string": (lambda r, n: _folder(r, n, "x"), "job.json holds a string instead"),
    "empty-object": (lambda r, n: _folder(r, n, {}), "job.json has no id"),
    "no-id": (lambda r, n: _folder(r, n, record(n, id=...)), "job.json has no id"),
    "id-not-folder": (lambda r, n: _folder(r, n, record("20250101-000000-000")),
                      'job.json says id "20250101-000000-000", but the folder is named'),
    "unknown-state": (lambda r, n: _folder(r, n, record(n, state="running")),
                      'job.json: state is "running", not one of queued, scanning'),
    "positions-text": (lambda r, n: _folder(r, n, record(n, positions="12")),
                       'job.json: positions is "12", not a whole number from 1'),
    "created-text": (lambda r, n: _folder(r, n, record(n, created="yesterday")),
                     'job.json: created is "yesterday", not a time'),
    "updated-bool": (lambda r, n: _folder(r, n, record(n, updated=True)),
                     "job.json: updated is true, not a time"),
    "truncated": (lambda r, n: _folder(r, n, raw=json.dumps(record(n)).encode()[:40]),
                  "job.json is not valid JSON"),
    "empty-file": (lambda r, n: _folder(r, n, raw=b""), "job.json is empty"),
    "no-job-json": (lambda r, n: _folder(r, n), "there is no job.json"),
    "job-json-folder": (_job_json_folder, "job.json is a folder, not a file"),
    "not-utf8": (lambda r, n: _folder(r, n, raw=b'{"id": "\xff\xfe"}'), "job.json is not UTF-8"),
    "manifest-object": (lambda r, n: _folder(r, n, record(n), manifest={}),
                        "images/manifest.json holds an object instead of a list of photos"),
    "manifest-entry-text": (lambda r, n: _folder(r, n, record(n), manifest=["pos0000_0.jpg"]),
                            "images/manifest.json: entry 1 is a string, not a photo"),
    "manifest-size-text": (lambda r, n: _folder(r, n, record(n), manifest=[entry(size="10")]),
                           'images/manifest.json: entry 1: size is "10", not a whole number'),
    "manifest-no-crc": (lambda r, n: _folder(r, n, record(n), manifest=[entry(crc32=...)]),
                        "images/manifest.json: entry 1 has no crc32"),
    "manifest-path": (lambda r, n: _folder(r, n, record(n), manifest=[entry(file="../job.json")]),
                      'images/manifest.json: entry 1: file is "../job.json", not a plain file'),
    "plan-short": (lambda r, n: _folder(r, n, record(n), manifest=[entry()],
                                        plan=[{"rotor": 0, "turntable": 0}]),
                   "plan.json has 1 positions, the job 3"),
    "stray-file": (_stray_file, "not a job folder (a file)"),
    "unreadable": (_unreadable, "job.json cannot be read by"),
}

ROOT_SKIPS = {"unreadable"}


def kind_params() -> list[Any]:
    """The kinds as pytest params (the permission one skipped as root)."""
    return [pytest.param(kind, marks=pytest.mark.skipif(
        kind in ROOT_SKIPS and os.geteuid() == 0, reason="root reads any file"))
        for kind in KINDS]


def make_all(root: Path, *, with_root_skips: bool = os.geteuid() != 0) -> dict[str, str]:
    """One folder of every kind under ``root`` (named ``bad-<kind>``); name -> problem part."""
    made = {}
    for kind, (make, problem) in KINDS.items():
        if kind in ROOT_SKIPS and not with_root_skips:
            continue
        make(root, f"bad-{kind}")
        made[f"bad-{kind}"] = problem
    return made


def snapshot(path: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``path`` (and ``path`` itself): mode and, for a file, its bytes."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for p in [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]:
        data = None
        if p.is_file():
            data = p.read_bytes() if os.access(p, os.R_OK) else b"<unreadable>"
        found[str(p.relative_to(path.parent))] = (p.lstat().st_mode, data)
    return found
