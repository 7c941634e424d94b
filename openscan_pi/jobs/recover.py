"""What a job that goes on finds on disk, and what is done about it.

A download cut short (``kill -9``, a power cut) leaves temp files beside ``model/``, and a cut
after the model folder was renamed into place leaves a finished model the records do not know
about yet. The runner asks these helpers before the step that needs each file, and says in one
line what it found and did.
"""

from __future__ import annotations

import shutil
from pathlib import Path

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
