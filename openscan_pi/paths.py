"""Where things are by default, and where a client looks for the daemon, as ``Path`` objects.

Cheap to import on purpose (no YAML, no schema). The lookups themselves are
:mod:`openscan_pi.locate`'s, which ``openscan-pi status`` uses without pathlib.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

from openscan_pi import locate
from openscan_pi.locate import DEFAULT_DATA_DIR, DEFAULT_SOCKET  # noqa: F401 (re-exported)

SYSTEM_CONFIG = Path(locate.SYSTEM_CONFIG)


def find_config_file(explicit: str | os.PathLike[str] | None,
                     env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read, in lookup order, or None for the built-in defaults only."""
    found = locate.config_file(explicit, env, system=str(SYSTEM_CONFIG))
    return None if found is None else Path(found)


def writable(path: Path) -> bool:
    """True when ``path`` exists and is writable, or could be created by this user."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return os.access(probe, os.W_OK | os.X_OK)


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def why_not_writable(folder: Path) -> str:
    """``is on a read-only file system`` or ``is not writable for USER``."""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return "is on a read-only file system" if read_only else f"is not writable for {_user()}"


def prepare_data_dir(path: Path) -> Path:
    """Create the data folder ``path`` if needed and check that this user can write it; returns it.

    Raises :class:`~openscan_pi.errors.ConfigError` (exit status 78: restarting cannot fix it)
    naming ``daemon.data_dir`` when it is not a folder, cannot be created, or is read-only.
    """
    from openscan_pi.errors import ConfigError

    fix = "(set daemon.data_dir to a folder this user can write)"
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing == path and not path.is_dir():
        raise ConfigError(f"daemon.data_dir: {path} is not a folder {fix}")
    if existing != path:
        if not existing.is_dir():
            raise ConfigError(f"daemon.data_dir: {path} cannot be created: {existing} is not a folder "
                              f"{fix}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = (why_not_writable(existing) if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
                   else f"{exc.strerror or exc}")
            raise ConfigError(f"daemon.data_dir: {path} cannot be created: {existing} {why} {fix}"
                              ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"daemon.data_dir: {path} {why_not_writable(path)} {fix}")
    return path


def socket_path(configured: str) -> Path:
    """``daemon.socket``, or ``$XDG_RUNTIME_DIR/openscan-pi/openscan-pi.sock`` for a user who
    cannot create the default."""
    return Path(locate.socket_path(configured))


def data_dir(configured: str) -> Path:
    """``daemon.data_dir``, or ``~/.local/share/openscan-pi`` for a user who cannot write the
    default."""
    path = Path(configured).expanduser()
    if configured == DEFAULT_DATA_DIR and not writable(path):
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "openscan-pi"
    return path


def socket_candidates(configured: str) -> list[Path]:
    """Where to look for the daemon: the configured socket; with the default setting, the system
    socket first (clients use it when it exists, even for a user whose own fallback differs)."""
    return [Path(p) for p in locate.socket_candidates(configured)]


def quick_socket_candidates(explicit: str | None) -> list[Path] | None:
    """The socket paths to try before (instead of) loading and validating the whole config, or
    None when only a full load can tell (see :func:`openscan_pi.locate.quick_socket_candidates`)."""
    found = locate.quick_socket_candidates(explicit)
    return None if found is None else [Path(p) for p in found]
