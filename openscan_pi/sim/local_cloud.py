"""The bundled local cloud as a child process: what ``cloud.url: local`` and ``--simulate`` start.

The commands that talk to the cloud themselves (``scan`` without a daemon, ``upload``,
``download``, ``token``, ``doctor``, and ``daemon`` for its whole life) call
:func:`local_cloud`: with ``cloud.url: local`` it starts ``python -m openscan_pi.sim.cloud`` (its
state under ``daemon.data_dir/local-cloud``, a free port, or the one it had before), reads the URL
it listens on from its standard output, and hands on a config naming that URL, so the rest of the
program sees an ordinary cloud. The child ends with the command: when it is told to, and also when
the parent dies however it dies, because the child serves only until its standard input (a pipe
from the parent) reaches end of file.

Importing this module imports neither the server nor anything heavy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from openscan_pi.config import Config
from openscan_pi.errors import UserError

log = logging.getLogger(__name__)

#: How long the child may take to say where it listens.
START_TIMEOUT_S = 30.0
#: How long it may take to stop once its pipe is closed, before it is killed.
STOP_TIMEOUT_S = 10.0


class LocalCloudProcess:
    """``python -m openscan_pi.sim.cloud`` as a child of this process.

    Example::

        with LocalCloudProcess(Path("/tmp/store"), processing_s=0.3) as child:
            requests.get(f"{child.url}/_state")
    """

    def __init__(self, store: Path | None, *, processing_s: float = 6.0) -> None:
        self.store = store
        self.processing_s = processing_s
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Start the child and wait until it listens; returns its URL (UserError if it fails)."""
        cmd = [sys.executable, "-m", "openscan_pi.sim.cloud", "--until-stdin-closes",
               "--processing-s", repr(float(self.processing_s))]
        if self.store is not None:
            cmd += ["--store", str(self.store)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        line = _read_line(self.proc.stdout, time.monotonic() + timeout)
        if not line.startswith("listening on http://"):
            code = self.proc.poll()
            self.stop()
            why = f"it ended with status {code}" if code is not None else f"it said {line!r}"
            raise UserError(f"the bundled local cloud did not start ({why}; its errors are above): "
                            "check that daemon.data_dir is writable, or set cloud.url to a real cloud")
        self.url = line.removeprefix("listening on ").strip()
        log.debug("bundled local cloud (pid %d) at %s", self.proc.pid, self.url)
        return self.url

    def stop(self) -> None:
        """Close the child's pipe and wait for it to end (killed if it does not, in time)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> LocalCloudProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_line(stream: object, deadline: float) -> str:
    """The first line of the child's output, or what came of it by ``deadline``."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    return data.decode("utf-8", "replace").split("\n", 1)[0]


def served(cfg: Config, url: str) -> Config:
    """``cfg`` with the cloud at ``url`` (the bundled one): any token will do there (``local`` when
    none is set), and it is polled as often as it is quick."""
    cloud = cfg.cloud
    fast = min(cloud.poll_interval_s, max(0.2, cloud.local.processing_s / 5))
    return dataclasses.replace(cfg, cloud=dataclasses.replace(
        cloud, url=url, token=cloud.token or "local", poll_interval_s=fast))


def store_of(cfg: Config) -> Path:
    """Where the bundled local cloud of ``cfg`` keeps its state: ``data_dir/local-cloud``."""
    from openscan_pi.paths import prepare_data_dir

    return prepare_data_dir(cfg.data_dir) / "local-cloud"


class BundledCloud:
    """Resolves ``cloud.url: local`` in configs for as long as it is open: the first config that
    asks for the bundled cloud starts it (one child for every later config, e.g. the daemon's
    reloads); :meth:`close` ends it. Other configs pass through unchanged.

    Example::

        with BundledCloud() as bundled:
            cfg = bundled.resolve(cfg)   # an ordinary URL from here on
    """

    def __init__(self, *, throwaway: bool = False) -> None:
        self.throwaway = throwaway
        self.child: LocalCloudProcess | None = None

    def resolve(self, cfg: Config) -> Config:
        """``cfg`` itself unless ``cloud.url`` is ``local``; else ``cfg`` naming the running
        bundled cloud (started now if it is not yet)."""
        if not cfg.cloud.is_local:
            return cfg
        if self.child is None:
            child = LocalCloudProcess(None if self.throwaway else store_of(cfg),
                                      processing_s=cfg.cloud.local.processing_s)
            child.start()
            self.child = child
        return served(cfg, self.child.url)

    def close(self) -> None:
        """End the bundled cloud, if it was started."""
        child, self.child = self.child, None
        if child is not None:
            child.stop()

    def __enter__(self) -> BundledCloud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def local_cloud(cfg: Config, *, throwaway: bool = False) -> Iterator[Config]:
    """``cfg`` itself unless ``cloud.url`` is ``local``; then the bundled local cloud runs as a
    child process while this lasts and the config yielded names its URL. ``throwaway``: its
    state in a temporary folder (``doctor``: a daemon's local cloud is never touched)."""
    with BundledCloud(throwaway=throwaway) as bundled:
        yield bundled.resolve(cfg)
