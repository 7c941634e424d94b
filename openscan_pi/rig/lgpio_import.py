"""Importing lgpio: its working folder, its ``chdir`` and its errors, in one place.

``import lgpio`` (lgpio 0.2) opens a notification FIFO ``.lgd-nfy<N>`` in ``$LG_WD``, else in the
current folder, and **changes the process into that folder**. Where it cannot make the FIFO (a
folder this user cannot write, such as ``/`` for a service under ``ProtectSystem``, or an ``LG_WD``
that does not exist) the import raises ``FileNotFoundError``, not ImportError, and gpiozero's
default pin factory quietly falls back to another one.

:func:`import_lgpio` is how openscan-pi imports lgpio, before gpiozero does: it sets ``LG_WD`` to a
folder of this user when it is not set (:func:`ensure_workdir`; the CLI calls that first thing too),
gives the process its working folder back, and turns every failure into :class:`LgpioUnavailable`,
an ImportError that says why and what to do. Only the standard library is imported here.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import stat
import sys
import tempfile
from collections.abc import MutableMapping
from typing import Any

LG_WD = "LG_WD"
INSTALL_FIX = "sudo apt install python3-lgpio (in a venv: create it with --system-site-packages)"
WORKDIR_FIX = ("set LG_WD to a folder this user can write (the service sets LG_WD=/var/lib/openscan-pi), "
               "or unset it")


class LgpioUnavailable(ImportError):
    """lgpio cannot be used here: ``installed`` False when it is missing, True when it is there
    but cannot start; ``fix`` says what to do."""

    def __init__(self, message: str, *, installed: bool, fix: str) -> None:
        super().__init__(message)
        self.installed = installed
        self.fix = fix


def _usable(folder: str) -> bool:
    """An absolute folder this user can make a FIFO in."""
    return os.path.isabs(folder) and os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


def default_workdir() -> str | None:
    """A folder of this user for lgpio's FIFO: ``$XDG_RUNTIME_DIR`` (``/run/user/<uid>``), else
    ``<temp folder>/openscan-pi-<uid>`` (made private; refused when someone else owns it or it is a
    link), else None."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and _usable(runtime):
        return runtime
    uid = os.geteuid()
    folder = os.path.join(tempfile.gettempdir(), f"openscan-pi-{uid}")
    with contextlib.suppress(FileExistsError, OSError):
        os.mkdir(folder, 0o700)
    try:
        st = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        return None
    return folder if _usable(folder) else None


def ensure_workdir(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set ``LG_WD`` to :func:`default_workdir` unless it is set; returns ``LG_WD`` (or None)."""
    env = os.environ if environ is None else environ
    if not env.get(LG_WD):
        folder = default_workdir()
        if folder is not None:
            env[LG_WD] = folder
    return env.get(LG_WD) or None


def import_lgpio() -> Any:
    """The ``lgpio`` module, imported with ``LG_WD`` set and the working folder kept; raises
    :class:`LgpioUnavailable` when it is not installed or cannot start."""
    module = sys.modules.get("lgpio")
    if module is not None:
        return module
    workdir = ensure_workdir()
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    try:
        return importlib.import_module("lgpio")
    except LgpioUnavailable:
        raise
    except ImportError as exc:
        raise LgpioUnavailable(f"lgpio is not installed ({exc})", installed=False,
                               fix=INSTALL_FIX) from exc
    except OSError as exc:
        where = workdir or cwd or "the current folder"
        why = exc.strerror or str(exc)
        raise LgpioUnavailable(f"lgpio cannot start: it makes its notification FIFO in {where} "
                               f"($LG_WD, else the current folder) and cannot ({why})",
                               installed=True, fix=WORKDIR_FIX) from exc
    finally:
        _back_to(cwd)


def _back_to(cwd: str | None) -> None:
    """Undo lgpio's ``chdir`` (the folder it moved to may be gone, or the old one unreadable)."""
    if cwd is None:
        return
    try:
        here: str | None = os.getcwd()
    except OSError:
        here = None
    if here != cwd:
        with contextlib.suppress(OSError):
            os.chdir(cwd)
