"""A local OpenScan Cloud: a real HTTP server on loopback with the API, upload and share links.

It behaves like the OpenScan Cloud API (``/createProject``, ``/startProject``, ...) plus the Dropbox
upload links it hands out and the Dropbox share link of the result, and it can inject the faults a
real network and a real server produce (see :meth:`LocalCloud.inject`). Its state lives in
``store_dir`` so that a later :class:`LocalCloud` on the same folder (in another process) carries on
where the earlier one stopped. Run it alone with ``python -m openscan_pi.sim.cloud``.

Besides the API, ``GET /_faults?name=count&...`` (optionally ``&retry_after=S`` or ``&bps=N``) arms
faults like :meth:`LocalCloud.inject` and ``GET /_state`` answers :meth:`LocalCloud.state`, for
tests and benchmarks that run the server as a separate process. Neither needs auth.

The parts: :mod:`.cloud` holds :class:`LocalCloud`, its state, persistence and project
statuses; :mod:`.endpoints` the API calls and the state side of upload and share links;
:mod:`.server` the HTTP server and handler; :mod:`.photogrammetry` the model it builds from an
upload; :mod:`.common` the names and types they share; :mod:`.cli` the command line.
"""

from openscan_pi.sim.cloud.cli import main
from openscan_pi.sim.cloud.cloud import LocalCloud
from openscan_pi.sim.cloud.common import (
    API_ENDPOINTS,
    BAD_REQUEST_TEXT,
    ESCAPES,
    FAULT_PARAMS,
    FAULTS,
    TokenLimits,
)
from openscan_pi.sim.cloud.photogrammetry import ContentHasher, process_archive

__all__ = [
    "API_ENDPOINTS",
    "BAD_REQUEST_TEXT",
    "ESCAPES",
    "FAULTS",
    "FAULT_PARAMS",
    "ContentHasher",
    "LocalCloud",
    "TokenLimits",
    "main",
    "process_archive",
]
