"""The fusion process of one job: every position whose focus stack is complete in the job's
manifest is fused into ``fused/posNNNN.jpg`` and recorded in ``fused/manifest.json``.

``python -m openscan_pi.fusion.worker JOB_FOLDER --stack K [--quality Q] [--follow]``

It reads the job's ``images/manifest.json`` (written atomically by the capture step) and fuses
what it finds; with ``--follow`` it then waits for a line on its standard input (the capture
step writes one after each position) and looks again, until the end of its input (the capture
ended, or the daemon went away), when it fuses what is left and exits. Each fused photo is on
disk (atomically) before its entry is written to the fused manifest (atomically), so a process
killed at any point loses at most the stack in hand: the next one removes what it left and fuses
that stack again. One process at a time fuses a job (a lock in ``fused/``); a second one waits
for the first. Exit status 0 when every complete stack it met is fused, 1 with one line on
standard error otherwise (a broken frame: retry captures it again). It runs at a lower CPU
priority (``nice`` +10), so that a fusion never takes the CPU from the steppers.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import sys
from pathlib import Path
from typing import Any

from openscan_pi.errors import UserError
from openscan_pi.fsutil import atomic_write_json, read_json

log = logging.getLogger(__name__)

#: How much lower than the daemon's and the rig worker's the fusion's CPU priority is.
NICENESS = 10
#: The folder of the fused photos and their manifest, inside the job's folder.
FOLDER = "fused"
MANIFEST = "manifest.json"


def fused_name(position: int) -> str:
    """The file name of a position's fused photo."""
    return f"pos{position:04d}.jpg"


def read_entries(path: Path) -> list[dict[str, Any]]:
    """A manifest's entries ([] when it is not there yet)."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        return []
    if not isinstance(data, list):
        raise UserError(f"{path} is not a list of photos: move it away and retry the job")
    return data


def intact(folder: Path, entry: dict[str, Any]) -> bool:
    """True when the fused photo of ``entry`` is in ``folder`` at the size recorded (one that
    went missing is fused again)."""
    try:
        return (folder / str(entry["file"])).stat().st_size == int(entry["size"])
    except (OSError, KeyError, TypeError, ValueError):
        return False


def complete_stacks(entries: list[dict[str, Any]], stack: int) -> dict[int, list[dict[str, Any]]]:
    """The positions whose ``stack`` frames are all in the manifest, with their entries by shot."""
    by_position: dict[int, dict[int, dict[str, Any]]] = {}
    for entry in entries:
        by_position.setdefault(int(entry["position"]), {})[int(entry["shot"])] = entry
    return {position: [shots[k] for k in range(stack)]
            for position, shots in by_position.items() if all(k in shots for k in range(stack))}


class Fuser:
    """Fuses the complete stacks of one job folder that its fused manifest lacks."""

    def __init__(self, job: Path, stack: int, quality: int) -> None:
        self.job = job
        self.stack = stack
        self.quality = quality
        self.folder = job / FOLDER
        self.manifest = self.folder / MANIFEST

    def pass_once(self) -> int:
        """Fuse what is complete and not fused yet; returns how many stacks were fused."""
        from openscan_pi.fusion.stack import fuse_stack

        entries = read_entries(self.job / "images" / MANIFEST)
        fused = [e for e in read_entries(self.manifest) if intact(self.folder, e)]
        done = {int(e["position"]) for e in fused}
        count = 0
        for position, frames in sorted(complete_stacks(entries, self.stack).items()):
            if position in done:
                continue
            paths = [self.job / "images" / str(e["file"]) for e in frames]
            out = self.folder / fused_name(position)
            result = fuse_stack(paths, out, exif_from=paths[len(paths) // 2],
                                quality=self.quality)
            fused.append({"position": position, "file": out.name, "size": result.size,
                          "crc32": result.crc32, "frames": [e["file"] for e in frames],
                          "skipped": [str(a.path.name) for a in result.skipped]})
            atomic_write_json(self.manifest, fused)
            count += 1
            print(f"fused position {position + 1}: {len(fused)} stacks", flush=True)
        return count


def main(argv: list[str] | None = None) -> int:
    """The process: fuse, follow the capture when asked, exit with its status."""
    parser = argparse.ArgumentParser(prog="python -m openscan_pi.fusion.worker")
    parser.add_argument("job", type=Path)
    parser.add_argument("--stack", type=int, required=True)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--follow", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # Behind the rig: the steppers' timing (the rig worker's) wins over a fusion for the CPU.
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    fuser = Fuser(args.job, args.stack, args.quality)
    try:
        fuser.folder.mkdir(exist_ok=True)
        lock = os.open(fuser.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(lock, fcntl.LOCK_EX)  # another fusion of this job: wait for it
        from openscan_pi.fusion.stack import remove_leftovers

        remove_leftovers(fuser.folder)
        fuser.pass_once()
        if args.follow:
            for _ in sys.stdin:  # a position was captured
                fuser.pass_once()
            fuser.pass_once()  # the capture ended: what is left
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
