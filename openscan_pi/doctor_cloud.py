"""The network checks of ``openscan-pi doctor``: ``cloud``, ``token`` and ``clock``.

``cloud`` and ``token`` share one connection with short timeouts and no retries (doctor reports, it
does not wait); with ``cloud.url: local`` they ask a throwaway bundled local cloud whose store is a
temporary folder, so a running daemon's local cloud is never touched. ``clock`` compares this
machine's time with the HTTP ``Date`` header of the cloud's answers.

Example::

    dates: list[str] = []
    cloud, token = cloud_checks(cfg, dates)
    clock = check_clock(dates[-1] if dates else None)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from openscan_pi.config import SYSTEM_CONFIG, Config
from openscan_pi.doctor_check import FAIL, GB, OK, SCAN_POSITIONS, WARN, Check, size
from openscan_pi.errors import UserError

#: Warn when the token has less credit than this (or than one scan).
LOW_CREDIT_BYTES = GB
#: Largest clock difference from the cloud's ``Date`` header before a warning.
CLOCK_SKEW_S = 300.0
#: A clock before this year was never set (a Pi has no clock battery).
MIN_YEAR = 2024
#: Time bounds of each request to the cloud: connecting, waiting for the answer.
CLOUD_CONNECT_S = 5.0
CLOUD_READ_S = 10.0

CLOUD_FIX = "check the network and cloud.url"
TOKEN_FIX = ("set cloud.token in {file} or $OPENSCAN_PI_TOKEN (a private token comes from "
             "cloud@openscan.eu)")
CLOCK_FIX = ("turn on time sync: sudo timedatectl set-ntp true (a Pi has no clock battery: it needs "
             "the network at boot)")


def check_cloud(cfg: Config, api: Any) -> Check:
    """``/status`` of the cloud (:class:`~openscan_pi.cloud.api.CloudAPI` ``api``)."""
    from openscan_pi.cloud.errors import CloudError

    where = f"bundled local cloud at {api.base_url}" if cfg.cloud.is_local else api.base_url
    started = time.monotonic()
    try:
        status = api.server_status()
    except CloudError as exc:
        return Check("cloud", FAIL, str(exc), f"{CLOUD_FIX} ({cfg.cloud.url})")
    took = time.monotonic() - started
    if status != "online":
        return Check("cloud", WARN, f"{where} answers but says it is {status!r}",
                     "try again later; uploads may fail meanwhile")
    return Check("cloud", OK, f"{where}: {status} ({took:.2f} s)")


def check_token(cfg: Config, api: Any) -> Check:
    """The token's credit and limits (``getTokenInfo``)."""
    from openscan_pi.cloud.errors import CloudError, Refused
    from openscan_pi.jobs.runner import estimated_bytes

    fix = TOKEN_FIX.format(file=cfg.source or SYSTEM_CONFIG)
    if not api.cfg.token:
        return Check("token", FAIL, "no token is set", fix)
    try:
        info = api.token_info()
    except Refused as exc:
        return Check("token", FAIL, str(exc), fix)
    except CloudError as exc:
        return Check("token", FAIL, f"could not ask about the token: {exc}",
                     f"{CLOUD_FIX} ({cfg.cloud.url})")
    detail = (f"credit {size(info.credit)}; a set may hold {size(info.limit_filesize)} and "
              f"{info.limit_photos} photos")
    need = estimated_bytes(cfg, SCAN_POSITIONS)
    if info.credit < max(LOW_CREDIT_BYTES, need):
        return Check("token", WARN, f"low {detail} (a {SCAN_POSITIONS}-position scan is about "
                                    f"{size(need)})", "ask cloud@openscan.eu for more credit")
    return Check("token", OK, detail)


def check_clock(server_date: str | None, *, now: Callable[[], float] = time.time) -> Check:
    """The year is plausible and, given the cloud's HTTP ``Date``, this clock agrees with it."""
    t = now()
    shown = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if datetime.fromtimestamp(t, UTC).year < MIN_YEAR:
        return Check("clock", WARN, f"the clock says {shown}: it was never set", CLOCK_FIX)
    if not server_date:
        return Check("clock", OK, f"{shown} (not compared: the cloud sent no time)")
    try:
        theirs = parsedate_to_datetime(server_date)
    except (TypeError, ValueError):
        return Check("clock", OK, f"{shown} (not compared: unreadable Date {server_date!r})")
    if theirs.tzinfo is None:
        theirs = theirs.replace(tzinfo=UTC)
    skew = t - theirs.timestamp()
    if abs(skew) >= CLOCK_SKEW_S:
        side = "ahead of" if skew > 0 else "behind"
        return Check("clock", WARN, f"{shown} is {abs(skew):,.0f} s {side} the cloud's clock: "
                                    "upload links (4 h) would be judged too old or too young",
                     CLOCK_FIX)
    return Check("clock", OK, f"{shown}, within {abs(skew):.0f} s of the cloud's clock")


def _quick(cfg: Config) -> Config:
    """``cfg`` with short network timeouts and no retries: doctor reports, it does not wait."""
    cloud = dataclasses.replace(cfg.cloud, retries=0,
                                connect_timeout_s=min(cfg.cloud.connect_timeout_s, CLOUD_CONNECT_S),
                                read_timeout_s=min(cfg.cloud.read_timeout_s, CLOUD_READ_S),
                                call_timeout_s=min(cfg.cloud.call_timeout_s,
                                                   CLOUD_CONNECT_S + CLOUD_READ_S))
    return dataclasses.replace(cfg, cloud=cloud)


def cloud_checks(cfg: Config, dates: list[str]) -> list[Check]:
    """``cloud`` and ``token`` over one connection; the ``Date`` headers seen go to ``dates``."""
    from openscan_pi.cloud.transfer import connect
    from openscan_pi.sim.local_cloud import local_cloud

    try:
        with local_cloud(_quick(cfg), throwaway=True) as quick, connect(quick) as api:
            api.session.hooks["response"].append(
                lambda resp, *_a, **_k: dates.append(resp.headers.get("Date", "")))
            cloud = check_cloud(cfg, api)
            if cloud.status == FAIL and api.cfg.token:
                token = Check("token", FAIL, "not checked: the cloud did not answer",
                              "fix the cloud check first")
            else:
                token = check_token(cfg, api)
    except (OSError, UserError) as exc:  # the bundled local cloud could not start
        fix = "see the error; `openscan-pi --debug doctor` shows more"
        cloud = Check("cloud", FAIL, f"the bundled local cloud did not start: {exc}", fix)
        token = Check("token", FAIL, "not checked: no cloud to ask", "fix the cloud check first")
    return [cloud, token]
