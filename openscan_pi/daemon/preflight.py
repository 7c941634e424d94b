"""The token check before a scan, shared: one ``getTokenInfo`` in flight at a time, a bounded wait.

Every ``scan`` asks the cloud whether the token can take it. A cloud that accepts connections and
never answers must not hold the socket's workers: the check runs on a thread of its own, every scan
asked meanwhile waits on that same check, and nobody waits past :data:`WAIT_S` from when it began
(the scan then goes ahead with the warning a scan gets when the cloud cannot be asked; the upload
waits for the cloud). An outcome is kept a little while (:data:`FRESH_S`, :data:`FAILED_FRESH_S`),
so that a burst of scans asks once. Example::

    check = TokenCheck(lambda: fetch_token_info(cfg))
    await check.settle()      # in the event loop: no thread held while the cloud thinks
    info = check()            # then, in a worker: at once (or raises CloudError)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from openscan_pi.cloud.errors import CloudError, Unreachable

if TYPE_CHECKING:
    from openscan_pi.cloud.api import TokenInfo

log = logging.getLogger(__name__)

#: Longest a scan waits for the cloud's answer about the token, from when the check began.
WAIT_S = 5.0
#: How long an answer is taken as the token's state (its credit changes slowly; a scan is about).
FRESH_S = 30.0
#: How long a failure to ask is kept (so that a burst of scans against a dead cloud asks once).
FAILED_FRESH_S = 10.0


class TokenCheck:
    """``fetch()`` (the token's info, or :class:`CloudError`) single-flight, with a bounded wait and
    a short-lived cache. Thread-safe; :meth:`settle` is for the event loop."""

    def __init__(self, fetch: Callable[[], TokenInfo], *, wait_s: float = WAIT_S,
                 fresh_s: float = FRESH_S, failed_fresh_s: float = FAILED_FRESH_S) -> None:
        self.fetch = fetch
        self.wait_s = wait_s
        self.fresh_s = fresh_s
        self.failed_fresh_s = failed_fresh_s
        self._lock = threading.Lock()
        self._flight: concurrent.futures.Future[TokenInfo] | None = None
        self._deadline = 0.0
        self._last: concurrent.futures.Future[TokenInfo] | None = None
        self._last_until = 0.0
        self._closed = False

    def _begin(self) -> tuple[concurrent.futures.Future[TokenInfo], float]:
        """The fresh outcome, or the check in flight (started now when there is none), and until
        when to wait for it."""
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now < self._last_until:
                return self._last, now
            if self._closed:
                return _failed(Unreachable("the daemon is stopping")), now
            if self._flight is None:
                self._flight = concurrent.futures.Future()
                self._deadline = now + self.wait_s
                threading.Thread(target=self._run, args=(self._flight,), name="token-check",
                                 daemon=True).start()  # a hung call must not hold up an exit
            return self._flight, self._deadline

    def _run(self, future: concurrent.futures.Future[TokenInfo]) -> None:
        fresh = self.fresh_s
        try:
            info = self.fetch()
        except CloudError as exc:
            fresh = self.failed_fresh_s
            told = _tell(future, exc)
        except BaseException as exc:  # a bug: told to this round's callers, never kept
            fresh = 0.0
            told = _tell(future, exc)
        else:
            told = _tell(future, info)
        with self._lock:
            if self._flight is future:
                self._flight = None
            if told and fresh > 0:
                self._last, self._last_until = future, time.monotonic() + fresh

    def __call__(self) -> TokenInfo:
        """The token's info; :class:`CloudError` when the cloud refused, failed, or did not answer
        within :attr:`wait_s` of when the check began."""
        future, until = self._begin()
        try:
            return future.result(timeout=max(0.0, until - time.monotonic()))
        except concurrent.futures.TimeoutError:
            raise Unreachable(f"no answer within {self.wait_s:g} s") from None

    async def settle(self) -> None:
        """Wait (without holding a thread) until the check has an outcome or its wait is over, so
        that a following call returns at once."""
        future, until = self._begin()
        if future.done():
            return
        wrapped = asyncio.wrap_future(future)
        # The outcome is read by the call that follows; a wait cut short leaves ``wrapped`` to
        # get a failure later, taken here so that asyncio does not log it as never retrieved.
        wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(wrapped), max(0.0, until - time.monotonic()))

    def forget(self) -> None:
        """Drop the kept outcome (the config changed)."""
        with self._lock:
            self._last = None

    def close(self) -> None:
        """The daemon stops: whoever waits is let go at once, no new check starts."""
        with self._lock:
            self._closed = True
            flight, self._flight = self._flight, None
        if flight is not None:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # just answered
                flight.set_exception(Unreachable("the daemon is stopping"))


def _tell(future: concurrent.futures.Future[TokenInfo], outcome: TokenInfo | BaseException) -> bool:
    """Give ``future`` its outcome; False when it has one already (the daemon stopped meanwhile)."""
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except concurrent.futures.InvalidStateError:
        return False
    return True


def _failed(exc: BaseException) -> concurrent.futures.Future[TokenInfo]:
    """A future that has failed with ``exc``."""
    future: concurrent.futures.Future[TokenInfo] = concurrent.futures.Future()
    future.set_exception(exc)
    return future
