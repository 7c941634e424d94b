"""Where the config file is and where a client looks for the daemon, as plain strings.

:mod:`openscan_pi.paths` gives the same answers as ``Path`` objects; this module imports neither
pathlib nor typing nor the YAML library, because ``openscan-pi status`` runs it on every call
(see docs/benchmarks.md). Paths come out as ``str(pathlib.Path(...))`` would spell them.

Example::

    socket_candidates("/run/openscan-pi/openscan-pi.sock")
    # -> ["/run/openscan-pi/openscan-pi.sock"] (for root), or that and
    #    "/run/user/1000/openscan-pi/openscan-pi.sock" for a user who cannot create it
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`status` starts quickly)
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_DATA_DIR = "/var/lib/openscan-pi"
DEFAULT_SOCKET = "/run/openscan-pi/openscan-pi.sock"
SYSTEM_CONFIG = "/etc/openscan-pi/config.yaml"


def pure(path: str) -> str:
    """``str(pathlib.PurePosixPath(path))``: repeated slashes and ``.`` parts dropped, no trailing
    slash (``..`` kept, as pathlib keeps it)."""
    root = "/" if path.startswith("/") else ""
    if path.startswith("//") and not path.startswith("///"):
        root = "//"
    return root + "/".join(p for p in path.split("/") if p and p != ".") or "."


def exists(path: str) -> bool:
    """``pathlib.Path(path).exists()``: False for a missing path, an error for one that cannot be
    looked at (a folder this user may not enter)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return False
        raise
    except ValueError:
        return False
    return True


def config_file(explicit: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None,
                system: str = SYSTEM_CONFIG) -> str | None:
    """The config file to read, in lookup order (``--config``, ``$OPENSCAN_PI_CONFIG``, the system
    file ``system`` when it exists), or None for the built-in defaults only."""
    env = os.environ if env is None else env
    if explicit:
        return pure(os.fspath(explicit))
    if env.get("OPENSCAN_PI_CONFIG"):
        return pure(env["OPENSCAN_PI_CONFIG"])
    return pure(system) if exists(system) else None


def writable(folder: str) -> bool:
    """True when the absolute ``folder`` exists and is writable, or could be created by this
    user."""
    probe = pure(folder)
    while not exists(probe):
        if os.path.dirname(probe) == probe:
            return False
        probe = os.path.dirname(probe)
    return os.access(probe, os.W_OK | os.X_OK)


def socket_path(configured: str) -> str:
    """``daemon.socket``, or ``$XDG_RUNTIME_DIR/openscan-pi/openscan-pi.sock`` for a user who
    cannot create the default."""
    path = pure(os.path.expanduser(configured) if configured.startswith("~") else configured)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if configured == DEFAULT_SOCKET and runtime and not writable(os.path.dirname(path)):
        return pure(f"{runtime}/openscan-pi/openscan-pi.sock")
    return path


def socket_candidates(configured: str) -> list[str]:
    """Where to look for the daemon: the configured socket; with the default setting, the system
    socket first (clients use it when it exists, even for a user whose own fallback differs)."""
    paths = [socket_path(configured)]
    if configured == DEFAULT_SOCKET and paths[0] != DEFAULT_SOCKET:
        paths.insert(0, DEFAULT_SOCKET)
    return paths


def quick_socket_candidates(explicit: str | None) -> list[str] | None:
    """The socket paths to try before (instead of) loading and validating the whole config, or
    None when only a full load can tell.

    A config file that does not mention ``socket`` cannot move the socket; one that does is read
    for that one key: without the YAML library when it is written in plain block style
    (:mod:`openscan_pi.yamlkey`), else with the guarded YAML loader.
    """
    chosen = config_file(explicit)
    if chosen is None:
        return socket_candidates(DEFAULT_SOCKET)
    try:
        with open(chosen, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError):
        return None
    if "socket" not in text:
        return socket_candidates(DEFAULT_SOCKET)
    configured = _configured_socket(text)
    if not isinstance(configured, str) or not configured.startswith(("/", "~")):
        return None
    return socket_candidates(configured)


def _configured_socket(text: str) -> object:
    """``daemon.socket`` as the config file ``text`` sets it (the default when it does not), or
    None when it cannot be read."""
    from openscan_pi.yamlkey import MISSING, UNSURE, read_text_value

    value = read_text_value(text, ("daemon", "socket"))
    if value is MISSING:
        return DEFAULT_SOCKET
    if value is not UNSURE:
        return value
    from openscan_pi.yamlload import load

    try:  # the guarded loader: libyaml's own crashes on deep nesting
        return load(text)["daemon"]["socket"]
    except Exception:  # anything unusual: the full load explains it
        return None
