"""What a job that goes on finds on disk, and what is done about what is missing.

Between two runs a job's files can go (deleted by hand, a disk fault): a photo,
``images/manifest.json``, ``plan.json``, the transfer journal. A download cut short leaves temp
files beside ``model/``, and a ``kill -9`` after the model folder was renamed into place leaves a
finished model the records do not know about yet. The runner asks these helpers before the step
that needs each file, and says in one line what is missing and what it does about it; when only
the user can help, the job fails with that line (:class:`RetryFrom` names where ``retry`` goes
back to).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import zlib
from pathlib import Path
from typing import Any

from openscan_pi.errors import UserError
from openscan_pi.jobs.check import plan_problem
from openscan_pi.jobs.state import JobState
from openscan_pi.jobs.store import Capture, Job

#: The names the scan gives its photos: ``pos<index>_<shot>.jpg``.
PHOTO_NAME = re.compile(r"^pos(\d{4,})_(\d+)\.jpg$")


class RetryFrom(UserError):
    """The job cannot go on from where it is; ``retry`` takes it back to ``state``."""

    def __init__(self, message: str, state: JobState) -> None:
        super().__init__(message)
        self.state = state


# -- photos ---------------------------------------------------------------------------------------


def photo_problem(images: Path, capture: Capture) -> str | None:
    """Why the photo of ``capture`` is not the one captured (missing, another size), or None."""
    try:
        size = (images / capture.file).stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if size != capture.size:
        return f"{size} bytes instead of the {capture.size} captured"
    return None


def bad_photos(job: Job, captures: list[Capture]) -> list[tuple[Capture, str]]:
    """The captures whose photo is missing or changed, with why."""
    found = ((c, photo_problem(job.images, c)) for c in captures)
    return [(c, why) for c, why in found if why]


def read_plan(job: Job) -> list[dict[str, Any]] | None:
    """``plan.json`` when it is there and sound, else None."""
    from openscan_pi.fsutil import read_json

    try:
        plan = read_json(job.folder / "plan.json")
    except (OSError, ValueError):
        return None
    return None if plan_problem(plan, job.data) else plan


def photos_on_disk(job: Job, plan: list[dict[str, Any]] | None,
                   skip: set[tuple[int, int]]) -> list[Capture]:
    """The photos in ``images/`` named as the scan names them, not in ``skip`` ((position, shot)
    pairs), as captures: size and CRC-32 read from the file (a photo is only ever renamed into
    place complete), angles from ``plan`` (None without one), the lens position unknown."""
    positions = int(job.data["positions"])
    found: list[Capture] = []
    try:
        names = sorted(os.listdir(job.images))
    except OSError:
        return []
    for name in names:
        match = PHOTO_NAME.match(name)
        if not match:
            continue
        position, shot = int(match[1]), int(match[2])
        if position >= positions or (position, shot) in skip:
            continue
        crc, size = 0, 0
        try:
            with open(job.images / name, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        except OSError:
            continue
        where = plan[position] if plan else {}
        found.append(Capture(position=position, shot=shot, file=name, size=size, crc32=crc,
                             rotor=where.get("rotor"), turntable=where.get("turntable"),
                             lens_position=None))
    return sorted(found, key=lambda c: (c.position, c.shot))


def listing(items: list[str], most: int = 3) -> str:
    """``a, b, c and 4 more``."""
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


# -- the plan -------------------------------------------------------------------------------------


def _distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    turn = abs(float(a["turntable"]) - float(b["turntable"])) % 360.0
    return math.hypot(float(a["rotor"]) - float(b["rotor"]), min(turn, 360.0 - turn))


def replan(fresh: list[dict[str, float]], captures: list[Capture]) -> list[dict[str, float]]:
    """A plan for a scan whose ``plan.json`` was lost: each position that has a photo keeps the
    angles the photo was taken at, and takes the nearest position of the ``fresh`` plan out of
    the way; the positions still to capture get what is left of ``fresh``, in its order."""
    total = len(fresh)
    kept: dict[int, dict[str, float]] = {}
    for c in sorted(captures, key=lambda c: (c.position, c.shot)):
        if c.position < total and c.position not in kept and c.rotor is not None and (
                c.turntable is not None):
            kept[c.position] = {"rotor": c.rotor, "turntable": c.turntable}
    free = list(fresh)
    for pos in kept.values():
        free.pop(min(range(len(free)), key=lambda i: _distance(free[i], pos)))
    rest = iter(free)
    return [kept[i] if i in kept else next(rest) for i in range(total)]


# -- the model ------------------------------------------------------------------------------------


def model_in_place(model_dir: Path) -> tuple[list[Path] | None, list[str]]:
    """Clear what a cut download left beside ``model_dir`` and say whether the model is there.

    Returns (the model's files, or None when it must be downloaded (again); lines saying what
    was done). The download builds the model in a temp folder, fsyncs every file and folder,
    and renames it into place (see :func:`openscan_pi.cloud.model.extract_model`): a
    ``model/`` folder of the job with files in it is complete. Anything else named ``model``
    (a file, a link) is not the job's download and is removed, as are the temp files.
    """
    from openscan_pi.cloud.model import leftovers

    said: list[str] = []
    for path in leftovers(model_dir):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        said.append(f"removed {path.name}, left by a download cut short")
    if model_dir.is_symlink() or (model_dir.exists() and not model_dir.is_dir()):
        model_dir.unlink()
        said.append(f"{model_dir} was not a folder: removed, the model is downloaded again")
        return None, said
    if not model_dir.is_dir():
        return None, said
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    if not files:
        return None, said  # an empty folder: the download's rename takes its place
    said.append(f"the model in {model_dir} was complete already (the download had finished "
                "when it was cut short): kept")
    return files, said
