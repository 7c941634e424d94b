"""The ``versions`` check of ``openscan-pi doctor``: the libraries in use, and any that is too old.

On a scanner the venv is built with ``--system-site-packages`` (``tools/install.sh``), so most
libraries are the apt packages of Raspberry Pi OS (Pillow 9.4, numpy 1.24, urllib3 1.26, ...), not
the newest from PyPI. This check shows which versions are imported, fails for one older than the
minimum ``setup.cfg`` declares (the versions CI runs the tests on), and warns for one with a
known defect that costs something, each with the command that fixes it. Nothing is imported: the
versions come from the installed packages' metadata.

Example::

    check = check_versions()
    print(check.status, check.detail, check.fix or "")
"""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from openscan_pi.doctor_check import FAIL, OK, WARN, Check, Status

#: Where Debian's (and so Raspberry Pi OS's) apt packages keep their Python modules.
APT_SITE = Path("/usr/lib/python3/dist-packages")

#: The distributions shown, in order, with the apt package that provides each on a Pi.
APT_NAMES = {
    "PyYAML": "python3-yaml",
    "requests": "python3-requests",
    "urllib3": "python3-urllib3",
    "tqdm": "python3-tqdm",
    "numpy": "python3-numpy",
    "Pillow": "python3-pil",
    "gpiozero": "python3-gpiozero",
    "lgpio": "python3-lgpio",
    "picamera2": "python3-picamera2",
    "simplejpeg": "python3-simplejpeg",
    "systemd-python": "python3-systemd",
}

#: The oldest versions that work: ``install_requires`` and the ``pi`` extra of ``setup.cfg`` (a
#: test keeps the two equal). Below one of these the daemon fails.
MINIMUMS = {
    "PyYAML": "6.0",
    "requests": "2.28.1",
    "urllib3": "1.26.12",
    "tqdm": "4.64.1",
    "numpy": "1.24.2",
    "Pillow": "9.4.0",
    "gpiozero": "2.0",
    "lgpio": "0.2.2",
    "simplejpeg": "1.6.6",
}


@dataclass(frozen=True)
class KnownDefect:
    """Versions of ``name`` below ``fixed_in`` work, but with ``effect``."""

    name: str
    fixed_in: str
    effect: str


#: Versions that work with a cost the user should know about (a warning, not a failure).
KNOWN_DEFECTS = [
    KnownDefect("simplejpeg", "1.8.0", "it has no encode_jpeg_yuv_planes, so photos are encoded with "
                                       "Pillow instead (slower, more memory)"),
]


def version_key(version: str) -> tuple[int, ...]:
    """The leading numbers of a version, for comparing: ``2.0.1.post3`` -> ``(2, 0, 1)``."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def older(version: str, than: str) -> bool:
    """Whether ``version`` is older than ``than`` (``1.26`` is ``1.26.0``)."""
    have, want = version_key(version), version_key(than)
    width = max(len(have), len(want))
    return have + (0,) * (width - len(have)) < want + (0,) * (width - len(want))


@dataclass(frozen=True)
class Installed:
    """One distribution as the running Python finds it."""

    name: str
    version: str
    from_apt: bool


def installed(name: str) -> Installed | None:
    """``name`` as the running interpreter would import it (the first on ``sys.path``), or None."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    where = Path(str(dist.locate_file("")))
    return Installed(name, dist.version, where == APT_SITE or APT_SITE in where.parents)


def upgrade_fix(found: Installed, at_least: str) -> str:
    """How to get ``found.name`` at ``at_least`` or newer where it comes from (apt or pip)."""
    pip = f"{sys.executable} -m pip install '{found.name}>={at_least}'"
    if found.from_apt:
        return (f"sudo apt update && sudo apt install --only-upgrade {APT_NAMES[found.name]} "
                f"(if the archive has no {at_least} yet: {pip})")
    return pip


def check_versions() -> Check:
    """Python and the libraries in use; FAIL below a minimum, WARN for a known defect."""
    found = {name: got for name in APT_NAMES if (got := installed(name)) is not None}
    shown = ", ".join(f"{got.name} {got.version}" for got in found.values())
    detail = f"Python {platform.python_version()}; {shown}"
    problems: list[tuple[Status, str, str]] = []
    for name, minimum in MINIMUMS.items():
        got = found.get(name)
        if got is not None and older(got.version, minimum):
            problems.append((FAIL, f"{name} {got.version} is older than {minimum}, the oldest "
                                   "openscan-pi is tested with", upgrade_fix(got, minimum)))
    for defect in KNOWN_DEFECTS:
        got = found.get(defect.name)
        if got is not None and older(got.version, defect.fixed_in):
            problems.append((WARN, f"{defect.name} {got.version} is older than {defect.fixed_in}: "
                                   f"{defect.effect}", upgrade_fix(got, defect.fixed_in)))
    if not problems:
        return Check("versions", OK, detail)
    status = FAIL if any(p[0] == FAIL for p in problems) else WARN
    return Check("versions", status, "; ".join([detail] + [p[1] for p in problems]),
                 "; ".join(p[2] for p in problems))
