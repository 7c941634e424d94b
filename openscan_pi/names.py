"""Project names and job ids: the one check every entry point makes before a name becomes a path.

A name is 1 to :data:`MAX_NAME` characters of ``A-Z a-z 0-9 _ . -`` that does not start with a dot:
never empty, ``.``, ``..`` or hidden, no slash, no NUL, always one path component that fits a file
name (a transfer journal is ``<project>.json``). The command line, the socket's methods, the job
store and the transfer journal all check with it, so nothing is created or read outside
``daemon.data_dir``.

A project name the user gives is used exactly as given, or refused with a suggestion: never
changed behind their back (then ``download NAME`` finds what ``upload --project NAME`` made).
Only a default name, derived from a folder's name, is made to fit (:func:`fit_name`).

Example::

    check_project("vase-2.zip")   # -> "vase-2.zip"
    check_project("../../x")      # InputError: project name '../../x' is not allowed: ...
    fit_name("My vase (2)")       # -> "My_vase_2"
"""

from __future__ import annotations

import re
from typing import Any

from openscan_pi.errors import InputError

#: The longest name: ``<name>.json`` stays far below a file name's 255 bytes.
MAX_NAME = 120
NAME = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
RULE = (f"a name is 1-{MAX_NAME} characters of A-Z a-z 0-9 _ . - and does not start with a dot")
_UNFIT = re.compile(r"[^A-Za-z0-9_.-]+")


def fit_name(text: str) -> str:
    """A valid name made from any text (a folder's name): odd characters become ``_``, no dot or
    underscore at either end, at most :data:`MAX_NAME` characters; ``scan`` when nothing is left."""
    return (_UNFIT.sub("_", text).strip("._") or "scan")[:MAX_NAME]


def is_name(value: Any) -> bool:
    """True for a valid project name or job id."""
    return isinstance(value, str) and NAME.fullmatch(value) is not None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def project_problem(value: Any) -> str | None:
    """Why ``value`` is not a project name (one line), or None."""
    if is_name(value):
        return None
    example = fit_name(value) if isinstance(value, str) and value.strip("._/ ") else "vase.zip"
    return f"project name {_shown(value)} is not allowed: {RULE} (e.g. {example})"


def job_problem(value: Any) -> str | None:
    """Why ``value`` is not a job id (one line), or None."""
    if is_name(value):
        return None
    return (f"job id {_shown(value)} is not valid: a job id looks like 20261202-070104-969 "
            "(`openscan-pi jobs` lists them)")


def check_project(value: Any) -> str:
    """``value`` when it is a valid project name, else :class:`InputError` saying what one is."""
    problem = project_problem(value)
    if problem:
        raise InputError(problem)
    return str(value)


def check_job_id(value: Any) -> str:
    """``value`` when it is a valid job id, else :class:`InputError`."""
    problem = job_problem(value)
    if problem:
        raise InputError(problem)
    return str(value)
