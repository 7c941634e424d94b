"""Keep the long-running daemon small: fewer malloc arenas, and freed memory given back.

glibc's malloc gives each thread that allocates an arena of its own (up to eight per core), and
keeps memory a thread freed for its next allocation: a daemon whose rig, transfer and socket
threads each allocated for a while holds megabytes it no longer uses. :func:`limit_arenas`
(before the first thread starts) makes the threads share :data:`ARENAS` arenas, and
:func:`give_back` (when a job lets go of a worker) collects Python's garbage and hands the free
pages of every arena back to the kernel (``malloc_trim``). Where the C library is not glibc (no
``mallopt``/``malloc_trim``), both do nothing. Measured in docs/benchmarks.md (the daemon after a
scan).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
from typing import Any

log = logging.getLogger(__name__)

#: glibc's ``M_ARENA_MAX`` option of ``mallopt``.
M_ARENA_MAX = -8
#: How many malloc arenas the daemon's threads share.
ARENAS = 1


@functools.cache
def _libc() -> Any:
    """glibc, or None where the C library has no ``mallopt``/``malloc_trim``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Let the threads started from now on share ``arenas`` malloc arenas; True when the C
    library took it. Call it before the daemon starts its threads."""
    libc = _libc()
    if libc is None:
        log.debug("no glibc mallopt: malloc arenas left as they are")
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def give_back() -> bool:
    """Collect Python's garbage and give the C library's free pages back to the kernel; True
    when pages were returned."""
    gc.collect()
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
