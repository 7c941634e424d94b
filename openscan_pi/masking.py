"""Secrets out of text: the token and passwords replaced by ``***`` where they stand as values.

Used for every log record (:mod:`openscan_pi.logs`) and every cloud error message
(:mod:`openscan_pi.cloud.errors`); only the standard library is imported here.

Example::

    mask("GET /getTokenInfo?token=abc123&x=1")  # -> "GET /getTokenInfo?token=***&x=1"
"""

from __future__ import annotations

import re

#: A known secret this long or longer (a token: long and random) is masked wherever it appears; a
#: shorter one (the default password ``free``) only where it stands as a value, never as a word.
MASK_ANYWHERE_LEN = 8
#: ``token=...``, ``password=...``: a query or key=value pair, whatever the value.
_KEY_VALUE = re.compile(r"(\b(?:token|password|passwd|secret)=)[^&\s'\",;)}\]]+", re.IGNORECASE)
#: ``"password": "..."`` in a dict's repr or JSON.
_QUOTED_KEY = re.compile(r"""(["'](?:token|password|passwd|secret)["']\s*:\s*["'])[^"']*""",
                         re.IGNORECASE)
#: ``scheme://user:password@host``.
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+(?=@)", re.IGNORECASE)
#: ``Authorization: Basic ...`` as a header line or in a dict's repr (with its scheme: prose that
#: mentions authorization is left alone).
_AUTHORIZATION = re.compile(r"""(authorization["']?\s*[:=]\s*["']?(?:basic|bearer|digest|token)\s+)"""
                            r"""[^\s'",}]+""", re.IGNORECASE)


def mask(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """``text`` with secrets replaced by ``***`` where they stand as values: query and key=value
    values of a token or password, basic auth in a URL, ``Authorization`` headers, and a known
    ``secret`` after ``=`` or in quotes. A known secret of :data:`MASK_ANYWHERE_LEN` characters or
    more is replaced wherever it appears; a shorter one (``free``) is left alone in prose."""
    for secret in secrets:
        if not secret:
            continue
        if len(secret) >= MASK_ANYWHERE_LEN:
            text = text.replace(secret, "***")
            continue
        word = re.escape(secret)
        text = re.sub(rf"(=){word}(?=$|[&\s'\",;)}}\]])", r"\1***", text)
        text = re.sub(rf"""(["']){word}(?=\1)""", r"\1***", text)
    for pattern in (_KEY_VALUE, _QUOTED_KEY, _USERINFO, _AUTHORIZATION):
        text = pattern.sub(r"\1***", text)
    return text
