"""Is a job folder one this version can run? The typed checks of ``job.json``, of
``images/manifest.json`` and of ``plan.json``.

A folder that fails them is a :class:`BrokenJob`: reported (by the daemon's log, ``jobs`` and
``doctor``) with its path, what is wrong and the fix, and never modified; the other jobs run on.
Every field the code relies on is checked for its type (``true`` is not a number, ``NaN`` is not a
time); fields this version does not know are left alone, so that a newer version's record loads.
"""

from __future__ import annotations

import json
import math
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openscan_pi.errors import UserError
from openscan_pi.jobs.record import VERSION as RECORD_VERSION
from openscan_pi.jobs.state import JobState

MOVE_AWAY = "move the folder out of {root}"


@dataclass(frozen=True)
class BrokenJob:
    """A job folder that cannot be run: where, what is wrong, what to do."""

    path: Path
    problem: str
    fix: str

    @property
    def id(self) -> str:
        """The folder's name (the job id it would have)."""
        return self.path.name

    def line(self) -> str:
        """One line for a log, an error or a listing."""
        return f"broken job folder {self.path} (left as it is): {self.problem}: {self.fix}"

    def as_dict(self) -> dict[str, str]:
        """``{"id", "path", "problem", "fix"}`` for ``--json`` and the socket."""
        return {"id": self.id, "path": str(self.path), "problem": self.problem, "fix": self.fix}


class BrokenJobError(UserError):
    """Raised for a job folder that fails the checks; ``broken`` says why."""

    def __init__(self, broken: BrokenJob) -> None:
        super().__init__(broken.line())
        self.broken = broken


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _kind(value: Any) -> str:
    """How a JSON value is called in a message."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return "an object"


def read_json_file(folder: Path, name: str, fix: str) -> Any:
    """The JSON in ``folder/name``; :class:`BrokenJobError` for a file that is missing, not a
    file, unreadable, not UTF-8, empty or not JSON (``fix`` is the way out offered)."""
    path = folder / name

    def broken(problem: str, how: str = fix) -> BrokenJobError:
        return BrokenJobError(BrokenJob(folder, problem, how))

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise broken(f"there is no {name}") from None
    except IsADirectoryError:
        raise broken(f"{name} is a folder, not a file") from None
    except PermissionError:
        raise broken(f"{name} cannot be read by {_user()} (permission denied)",
                     f"make it readable (`sudo chown -R {_user()} {folder}`), or {fix}") from None
    except OSError as exc:
        raise broken(f"{name} cannot be read ({exc.strerror or exc})") from None
    if not raw.strip():
        raise broken(f"{name} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise broken(f"{name} is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f", line {exc.lineno} column {exc.colno}"
        raise broken(f"{name} is not valid JSON ({exc.msg}{where}: cut short?)") from None
    except ValueError as exc:  # e.g. a number too long to convert
        raise broken(f"{name} is not valid JSON ({exc}: cut short?)") from None


# -- the record ----------------------------------------------------------------------------------


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


_STATES = ", ".join(s.value for s in JobState)

#: field -> (required, check, what it must be)
_FIELDS: dict[str, tuple[bool, Any, str]] = {
    "id": (True, lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "project": (True, lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "state": (True, lambda v: v in JobState._value2member_map_, f"one of {_STATES}"),
    "positions": (True, lambda v: _is_int(v, 1), "a whole number from 1"),
    "created": (True, _is_number, "a time (seconds since 1970)"),
    "updated": (True, _is_number, "a time (seconds since 1970)"),
    "captured": (False, _is_int, "a whole number from 0"),
    "bytes_total": (False, _is_int, "a whole number from 0"),
    "bytes_uploaded": (False, _is_int, "a whole number from 0"),
    "stack": (False, lambda v: _is_int(v, 1), "a whole number from 1"),
    "passes": (False, lambda v: _is_int(v, 1), "a whole number from 1"),
    "pass_no": (False, lambda v: _is_int(v, 1), "a whole number from 1"),
    "cloud_status": (False, lambda v: isinstance(v, str), "a string"),
    "model_dir": (False, lambda v: isinstance(v, str), "a string"),
    "error": (False, lambda v: isinstance(v, str), "a string"),
    "step": (False, lambda v: isinstance(v, str), "a string"),
    "at": (False, lambda v: isinstance(v, str) and bool(v), "a step's name"),
    "resume_state": (False, lambda v: v in JobState._value2member_map_, f"one of {_STATES}"),
    "upload_begun": (False, lambda v: isinstance(v, bool), "true or false"),
    "motion_s": (False, _is_number, "a number"),
    "capture_s": (False, _is_number, "a number"),
    "transfer_s": (False, _is_number, "a number"),
    "motion_estimate_s": (False, _is_number, "a number"),
    "version": (False, lambda v: _is_int(v, 1), "a whole number from 1"),
    "rig_restarts": (False, _is_int, "a whole number from 0"),
    "cancel_requested": (False, _is_number, "a time (seconds since 1970)"),
    "pause_requested": (False, _is_number, "a time (seconds since 1970)"),
    "source": (False, lambda v: isinstance(v, str) and v.startswith("/"), "an absolute path"),
    "transfer": (False, lambda v: isinstance(v, dict) and isinstance(v.get("phase"), str),
                 "a transfer journal (an object with a phase)"),
}


def record_problem(folder_name: str, data: Any) -> str | None:
    """What is wrong with the job record ``data`` of folder ``folder_name``, or None."""
    if not isinstance(data, dict):
        return f"job.json holds {_kind(data)} instead of a job record (an object)"
    for field, (required, ok, expected) in _FIELDS.items():
        value = data.get(field)
        if value is None:
            if required:
                return f"job.json has no {field}"
            continue
        if not ok(value):
            return f"job.json: {field} is {json.dumps(value)[:40]}, not {expected}"
    if _is_int(data.get("version")) and data["version"] > RECORD_VERSION:
        return (f"job.json is version {data['version']} of the job record, written by a newer "
                f"openscan-pi (this one reads up to {RECORD_VERSION})")
    passes = int(data.get("passes") or 1)
    if data["positions"] % passes or int(data.get("pass_no") or 1) > passes:
        return (f"job.json: {data['positions']} positions in {passes} passes, at pass "
                f"{data.get('pass_no') or 1}, do not fit together")
    if data["id"] != folder_name:
        return f"job.json says id {json.dumps(data['id'])[:40]}, but the folder is named {folder_name}"
    return None


# -- the manifest and the plan -------------------------------------------------------------------

#: manifest entry field -> (check, what it must be)
_ENTRY: dict[str, tuple[Any, str]] = {
    "position": (_is_int, "a whole number from 0"),
    "shot": (_is_int, "a whole number from 0"),
    "file": (lambda v: isinstance(v, str) and v not in ("", ".", "..") and not any(
        c in v for c in "/\\\0"), "a plain file name"),
    "size": (_is_int, "a whole number from 0"),
    "crc32": (lambda v: _is_int(v) and v < 2**32, "a CRC-32 (0 to 4294967295)"),
    "rotor": (lambda v: v is None or _is_number(v), "an angle"),
    "turntable": (lambda v: v is None or _is_number(v), "an angle"),
    "lens_position": (lambda v: v is None or _is_number(v), "a number or null"),
}
OPTIONAL_ENTRY_FIELDS = frozenset({"rotor", "turntable", "lens_position"})


def manifest_problem(entries: Any, positions: int) -> str | None:
    """What is wrong with the manifest ``entries`` of a job of ``positions``, or None."""
    name = "images/manifest.json"
    if not isinstance(entries, list):
        return f"{name} holds {_kind(entries)} instead of a list of photos"
    seen: dict[tuple[int, int], int] = {}
    files: dict[str, int] = {}
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            return f"{name}: entry {number} is {_kind(entry)}, not a photo (an object)"
        for field, (ok, expected) in _ENTRY.items():
            if field not in entry and field not in OPTIONAL_ENTRY_FIELDS:
                return f"{name}: entry {number} has no {field}"
            value = entry.get(field)
            if not ok(value):
                return f"{name}: entry {number}: {field} is {json.dumps(value)[:40]}, not {expected}"
        if entry["position"] >= positions:
            return (f"{name}: entry {number}: position {entry['position']} is beyond the job's "
                    f"{positions} positions")
        key = (entry["position"], entry["shot"])
        if key in seen:
            return (f"{name}: entries {seen[key]} and {number} are both position {key[0]} "
                    f"shot {key[1]}")
        if entry["file"] in files:
            return f"{name}: entries {files[entry['file']]} and {number} are both {entry['file']}"
        seen[key] = files[entry["file"]] = number
    return None


def plan_sizes(data: dict[str, Any]) -> tuple[int, ...]:
    """How many positions ``plan.json`` may hold for the job record ``data``: all of them; for
    a scan of several passes, those of the passes planned so far (the current pass is planned
    when its capture begins: before that the plan ends with the pass before)."""
    positions, passes = int(data["positions"]), int(data.get("passes") or 1)
    if passes <= 1:
        return (positions,)
    each, current = positions // passes, int(data.get("pass_no") or 1)
    return (each * current, each * (current - 1))


def plan_problem(plan: Any, data: dict[str, Any]) -> str | None:
    """What is wrong with ``plan.json``'s content for the job record ``data``, or None."""
    if not isinstance(plan, list):
        return f"plan.json holds {_kind(plan)} instead of a list of positions"
    sizes = plan_sizes(data)
    if len(plan) not in sizes:
        return f"plan.json has {len(plan)} positions, the job {sizes[0]}"
    for number, pos in enumerate(plan, 1):
        if not isinstance(pos, dict) or not all(_is_number(pos.get(k)) for k in ("rotor",
                                                                               "turntable")):
            return f"plan.json: position {number} is not {{\"rotor\": degrees, \"turntable\": degrees}}"
    return None


def check_folder(folder: Path, root: Path) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The record of the job in ``folder`` and its manifest entries (None when there is no
    manifest or the job does not need it any more); :class:`BrokenJobError` when the record, or
    a manifest or plan still needed, fails the checks. Reads, never writes."""
    away = MOVE_AWAY.format(root=root)
    data = read_json_file(folder, "job.json", f"fix job.json, or {away}")
    problem = record_problem(folder.name, data)
    if problem:
        raise BrokenJobError(BrokenJob(folder, problem, f"fix job.json, or {away}"))
    from openscan_pi.jobs.lifecycle import next_step

    entries = None
    step = next_step(data)  # for a failed job: the step retry goes back to
    reads = step.reads if step is not None else frozenset()
    if "images/manifest.json" in reads and (folder / "images" / "manifest.json").exists():
        fix = f"fix images/manifest.json, or {away}"
        entries = read_json_file(folder, "images/manifest.json", fix)
        problem = manifest_problem(entries, data["positions"])
        if problem:
            raise BrokenJobError(BrokenJob(folder, problem, fix))
    if "plan.json" in reads and (folder / "plan.json").exists():
        fix = (f"delete plan.json (`openscan-pi retry {folder.name}` makes a new one and keeps "
               f"the photos taken), or {away}")
        problem = plan_problem(read_json_file(folder, "plan.json", fix), data)
        if problem:
            raise BrokenJobError(BrokenJob(folder, problem, fix))
    if "fused/manifest.json" in reads and (folder / "fused" / "manifest.json").exists():
        fix = (f"delete the folder fused (`openscan-pi retry {folder.name}` fuses the stacks "
               f"again), or {away}")
        problem = fused_problem(read_json_file(folder, "fused/manifest.json", fix),
                                data["positions"])
        if problem:
            raise BrokenJobError(BrokenJob(folder, problem, fix))
    return data, entries


def fused_problem(entries: Any, positions: int) -> str | None:
    """What is wrong with the fused manifest ``entries`` of a job of ``positions``, or None."""
    name = "fused/manifest.json"
    if not isinstance(entries, list):
        return f"{name} holds {_kind(entries)} instead of a list of fused photos"
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            return f"{name}: entry {number} is {_kind(entry)}, not an object"
        for field in ("position", "size", "crc32"):
            if not _is_int(entry.get(field)):
                return f"{name}: entry {number} has no {field} (a whole number from 0)"
        if not _ENTRY["file"][0](entry.get("file")):
            return f"{name}: entry {number}: file is not a plain file name"
        if entry["position"] >= positions:
            return f"{name}: entry {number} is of position {entry['position'] + 1}, the job has {positions}"
    return None
