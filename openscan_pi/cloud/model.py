"""Fetch the 3D model the OpenScan Cloud made: download its zip and extract it safely.

Promises: a half-downloaded or half-extracted model never sits where a finished one is expected
(both are built in a temp sibling and renamed into place), and a hostile zip never writes outside
the output folder (every entry is checked before anything is written).
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import itertools
import os
import random
import re
import shutil
import stat
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.exceptions as uexc
from requests import exceptions as rexc

from openscan_pi.cloud.callscope import CallAborted, call_scope
from openscan_pi.cloud.errors import (
    BadAnswer,
    BadURL,
    CloudError,
    ServerError,
    Unreachable,
    UnsafeModel,
    mask,
)
from openscan_pi.cloud.http import NETWORK_ERRORS, failure, open_get
from openscan_pi.errors import InputError
from openscan_pi.fsutil import disk_error, fsync_dir

CHUNK = 1 << 20
MAX_RETRY_AFTER_S = 300.0
_DRIVE = re.compile(r"^[A-Za-z]:")
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")
_SUPPORTED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_HTML_START = (b"<!doctype html", b"<html")

Progress = Callable[[int, int | None], None]


def direct_link(url: str) -> str:
    """Turn a Dropbox-style share link into one that answers with the file itself.

    ``dl=0`` becomes ``dl=1``; ``dl=1`` is added when there is no ``dl`` parameter and the host is
    ``dropbox.com`` (or a subdomain) or the path starts with ``/share/`` (the bundled local cloud).
    Other links, and the order and spelling of other query parameters, are left as they are.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a broken IPv6 host: the download says what is wrong with it
        return url
    params = parts.query.split("&") if parts.query else []
    has_dl = False
    for i, param in enumerate(params):
        key, _, value = param.partition("=")
        if key == "dl":
            has_dl = True
            if value == "0":
                params[i] = "dl=1"
    host = (parts.hostname or "").lower()
    dropbox = host == "dropbox.com" or host.endswith(".dropbox.com")
    if not has_dl and (dropbox or parts.path.startswith("/share/")):
        params.append("dl=1")
    return urlunsplit(parts._replace(query="&".join(params)))


class _Retry(Exception):
    """One attempt failed in a way another may cure; args: (reason, server_fault, delay_or_None)."""


def _describe(exc: BaseException) -> str:
    """A short, secret-free, one-line description of a network error."""
    text = " ".join(str(exc).split())
    if found := _ERRNO_TEXT.search(text):
        text = found.group(0).strip()
    elif isinstance(exc, rexc.Timeout):
        text = "no answer within the timeout"
    elif isinstance(exc, rexc.ChunkedEncodingError):
        text = "the connection dropped during the transfer"
    return mask(text[:200] or type(exc).__name__)


def _retry_after(resp: requests.Response) -> float | None:
    """A numeric ``Retry-After`` header in seconds, capped; None when absent or a date."""
    with contextlib.suppress(ValueError):
        value = float(resp.headers.get("Retry-After", ""))
        return min(max(value, 0.0), MAX_RETRY_AFTER_S) if value == value else None
    return None


def download_file(
    session: requests.Session,
    url: str,
    dest: str | Path,
    *,
    timeout: tuple[float, float] = (10.0, 60.0),
    attempts: int = 5,
    backoff_s: float = 2.0,
    max_bytes: int = 4_000_000_000,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
    stall: tuple[int, float] | None = None,
    origin: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` durably; ``dest`` is either absent/unchanged or complete.

    Network failures, cut transfers, 5xx and 429 are retried from the start, ``attempts`` times
    in all, with exponential backoff (or the server's numeric ``Retry-After``). An HTML answer
    raises :class:`BadAnswer`, another 4xx :class:`CloudError`, a body over ``max_bytes``
    :class:`UnsafeModel`, a link that cannot be used :class:`BadURL` (naming ``origin``, who
    gave it); out of attempts, :class:`ServerError` or :class:`Unreachable`.

    With a session of :func:`~openscan_pi.cloud.http.make_session`, an attempt ends at once when
    ``stop`` is set (:class:`~openscan_pi.cloud.errors.Cancelled`) and is cut as a failure when
    it moves less than ``stall`` = (bytes, seconds), the wait for the answer included.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    dest = Path(dest)
    safe_url = mask(url)
    too_big = f"the model at {safe_url} is larger than the limit of {max_bytes} bytes"
    # Small reads when a stall rule counts them: a slow link still shows progress in each window.
    chunk_size = min(CHUNK, max(4096, stall[0] // 2)) if stall else CHUNK

    def attempt() -> None:
        with call_scope(stop=stop, stall=stall) as scope:
            try:
                fetch(scope.moved)
            except NETWORK_ERRORS as exc:
                error = failure(exc, safe_url, scope)
                if isinstance(error, CloudError) and error.transient:
                    why = scope.why() if scope.reason else _describe(exc)
                    raise _Retry(why, False, None) from None
                if isinstance(error, BadURL) and origin:
                    error = BadURL(f"{error} (the model link from {origin})")
                raise error from None

    def fetch(moved: Callable[[int], None]) -> None:
        headers = {"Accept-Encoding": "identity"}  # so Content-Length counts the bytes we get
        with open_get(session, url, timeout=timeout, headers=headers) as resp:
            code = resp.status_code
            if code == 429 or code >= 500:
                raise _Retry(f"the server answered HTTP {code}", True, _retry_after(resp))
            if 400 <= code < 500:
                raise CloudError(
                    f"{safe_url} answered HTTP {code}: the model link is not valid (any more)"
                )
            if not 200 <= code < 300:
                raise BadAnswer(f"unexpected answer from {safe_url}: HTTP {code}")
            length = resp.headers.get("Content-Length", "").strip()
            plain = resp.headers.get("Content-Encoding", "identity").lower() == "identity"
            total = int(length) if plain and length.isdigit() else None
            if total is not None and total > max_bytes:
                raise UnsafeModel(too_big)
            chunks = resp.iter_content(chunk_size)
            first = next(chunks, b"")
            moved(len(first))
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype == "text/html" or first[:64].lstrip().lower().startswith(_HTML_START):
                start = " ".join(first[:400].decode("utf-8", "replace").split())[:80]
                raise BadAnswer(f"unexpected answer from {safe_url}: {mask(start)}")
            tmp: str | None = None
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
                done = 0
                with os.fdopen(fd, "wb") as fh:
                    for chunk in itertools.chain([first], chunks):
                        moved(len(chunk))
                        done += len(chunk)
                        if done > max_bytes:
                            raise UnsafeModel(too_big)
                        fh.write(chunk)
                        if progress is not None and chunk:
                            progress(done, total)
                    fh.flush()
                    os.fsync(fh.fileno())
                if total is not None and done != total:
                    raise _Retry(f"the transfer was cut after {done} of {total} bytes", False, None)
                os.replace(tmp, dest)
                tmp = None
                fsync_dir(dest.parent)
            except (requests.RequestException, uexc.HTTPError, http.client.HTTPException,
                    CallAborted):  # the network's, not the disk's
                raise
            except OSError as exc:
                raise disk_error(exc, dest) from exc
            finally:
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)

    last, server = "no attempt made", False
    for i in range(attempts):
        delay: float | None = None
        try:
            attempt()
            return dest
        except _Retry as exc:
            last, server, delay = exc.args
        if i + 1 < attempts:
            sleep(delay if delay is not None else backoff_s * 2**i * (1 + 0.1 * random.random()))
    raise (ServerError if server else Unreachable)(f"cannot download {safe_url}: {last}")


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    is_dir: bool


def _check_out_dir(out_dir: str | Path) -> None:
    out = Path(out_dir)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise InputError(f"{out_dir} exists and is not empty: choose another --out or remove it")


def _plan(zf: zipfile.ZipFile, max_bytes: int, max_files: int) -> list[_Entry]:
    """Check every entry of ``zf``; raise :class:`UnsafeModel` on the first rule broken."""
    infos = zf.infolist()
    if len(infos) > max_files:
        raise UnsafeModel(f"the model zip holds {len(infos)} entries (limit {max_files})")
    entries: list[_Entry] = []
    seen: set[tuple[str, ...]] = set()
    files: set[tuple[str, ...]] = set()
    needed_dirs: set[tuple[str, ...]] = set()
    declared = 0
    for info in infos:
        name = info.filename
        norm = name.replace("\\", "/")

        def bad(rule: str, name: str = name) -> UnsafeModel:
            return UnsafeModel(f"unsafe entry {name!r} in the model zip: {rule}; nothing extracted")

        if norm.startswith("/") or _DRIVE.match(norm):
            raise bad("absolute path")
        raw = norm.split("/")
        if ".." in raw:
            raise bad("'..' path component")
        parts = tuple(p for p in raw if p not in ("", "."))
        is_dir = norm.endswith("/")
        ftype = stat.S_IFMT(info.external_attr >> 16)
        if ftype == stat.S_IFLNK:
            raise bad("symbolic link")
        if ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise bad("not a regular file or directory")
        if not parts and is_dir:
            continue  # "./"
        if not parts:
            raise bad("empty file name")
        if parts in seen:
            raise bad("duplicate name")
        if any(parts[:k] in files for k in range(1, len(parts))) or (
            not is_dir and parts in needed_dirs
        ):
            raise bad("a file and a directory share this path")
        if not is_dir:
            if info.flag_bits & 0x1:
                raise bad("encrypted")
            if info.compress_type not in _SUPPORTED_COMPRESSION:
                raise bad(f"unsupported compression method {info.compress_type}")
            declared += info.file_size
            if declared > max_bytes:
                raise bad(f"the declared sizes add up to more than the limit of {max_bytes} bytes")
            files.add(parts)
        seen.add(parts)
        needed_dirs.update(parts[:k] for k in range(1, len(parts) + is_dir))
        entries.append(_Entry(info, parts, is_dir))
    return entries


def _make_dirs(root: Path, parts: tuple[str, ...], made: dict[Path, None]) -> None:
    path = root
    for part in parts:
        path = path / part
        if path not in made:
            path.mkdir()
            os.chmod(path, 0o755)
            made[path] = None


def _extract_all(zf: zipfile.ZipFile, entries: list[_Entry], tmp: Path, max_bytes: int) -> None:
    os.chmod(tmp, 0o755)
    made: dict[Path, None] = {}  # insertion-ordered: parents before children
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    total = 0
    for entry in entries:
        _make_dirs(tmp, entry.parts if entry.is_dir else entry.parts[:-1], made)
        if entry.is_dir:
            continue
        name, declared = entry.info.filename, entry.info.file_size
        try:
            src = zf.open(entry.info)
            with src, os.fdopen(os.open(tmp.joinpath(*entry.parts), flags, 0o644), "wb") as fh:
                os.fchmod(fh.fileno(), 0o644)
                written = 0
                while chunk := src.read(CHUNK):  # count real bytes: headers may lie
                    written += len(chunk)
                    total += len(chunk)
                    if written > declared or total > max_bytes:
                        raise UnsafeModel(
                            f"unsafe entry {name!r} in the model zip: holds more data than its "
                            f"header declares ({declared} bytes) or than the limit ({max_bytes})"
                        )
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            detail = " ".join(str(exc).split())
            raise UnsafeModel(f"corrupt model zip: entry {name!r}: {detail}") from exc
    for path in reversed(made):
        fsync_dir(path)
    fsync_dir(tmp)


def extract_model(
    zip_path: str | Path,
    out_dir: str | Path,
    *,
    max_bytes: int = 4_000_000_000,
    max_files: int = 10_000,
) -> list[Path]:
    """Safely extract the model zip into ``out_dir`` (absent or empty); return its files, sorted.

    Every entry is checked first (no absolute path, ``..``, link, special file or duplicate; at
    most ``max_files`` entries and ``max_bytes`` declared bytes): a violation raises
    :class:`UnsafeModel` before anything is written. Files (0o644, dirs 0o755) go into a temp
    sibling folder, counting the real bytes, which is then renamed onto ``out_dir``; on any error
    the temp folder is removed and ``out_dir`` is left as it was.
    """
    zip_path = Path(zip_path)
    out = Path(os.path.abspath(out_dir))
    _check_out_dir(out_dir)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise BadAnswer(f"{zip_path} is not a zip file: the download is not a model") from exc
    except OSError as exc:
        raise CloudError(f"cannot read {zip_path}: {exc.strerror or exc}") from exc
    with zf:
        entries = _plan(zf, max_bytes, max_files)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        except OSError as exc:
            raise disk_error(exc, out_dir) from exc
        try:
            _extract_all(zf, entries, tmp, max_bytes)
            try:
                # rename(2) atomically replaces an empty directory, so out_dir never goes missing.
                os.rename(tmp, out)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    _check_out_dir(out_dir)
                raise
            fsync_dir(out.parent)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise disk_error(exc, out_dir) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return sorted(Path(out_dir).joinpath(*e.parts) for e in entries if not e.is_dir)


def leftovers(out_dir: str | Path) -> list[Path]:
    """What a download into ``out_dir`` cut short (``kill -9``, a power cut) leaves beside it:
    the model zip (``.<name>.model.zip``), its temp file (``..<name>.model.zip.*.part``) and the
    temp folder of an extraction (``.<name>.*.partial``). ``out_dir`` itself is never among
    them: it only ever appears by the rename of a complete extraction (see :func:`extract_model`).
    """
    out = Path(os.path.abspath(out_dir))
    zip_name = f".{out.name}.model.zip"
    found = [p for p in (out.parent / zip_name,) if p.is_file() or p.is_symlink()]
    found += sorted(out.parent.glob(f".{glob_escape(zip_name)}.*.part"))
    found += sorted(out.parent.glob(f".{glob_escape(out.name)}.*.partial"))
    return found


def fetch_model(
    session: requests.Session,
    dlink: str,
    out_dir: str | Path,
    *,
    keep_zip: bool = False,
    timeout: tuple[float, float] = (10.0, 60.0),
    attempts: int = 5,
    backoff_s: float = 2.0,
    max_bytes: int = 4_000_000_000,
    max_files: int = 10_000,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
    stall: tuple[int, float] | None = None,
    origin: str | None = None,
) -> list[Path]:
    """Download the model zip behind ``dlink`` (:func:`download_file`), extract it into
    ``out_dir``, return its files.

    The zip goes to ``.<out name>.model.zip`` beside ``out_dir`` and is deleted afterwards (also on
    failure); with ``keep_zip`` it is moved into ``out_dir`` as ``model.zip`` (never overwriting).
    """
    _check_out_dir(out_dir)  # fail before a long download, not after it
    out = Path(os.path.abspath(out_dir))
    zip_path = out.parent / f".{out.name}.model.zip"
    try:
        download_file(
            session,
            direct_link(dlink),
            zip_path,
            timeout=timeout,
            attempts=attempts,
            backoff_s=backoff_s,
            max_bytes=max_bytes,
            progress=progress,
            sleep=sleep,
            stop=stop,
            stall=stall,
            origin=origin,
        )
        files = extract_model(zip_path, out_dir, max_bytes=max_bytes, max_files=max_files)
        if keep_zip:
            kept, n = out / "model.zip", 1
            while kept.exists() or kept.is_symlink():  # never overwrite an extracted file
                kept, n = out / f"model.download-{n}.zip", n + 1
            os.replace(zip_path, kept)
            fsync_dir(out)
    except OSError as exc:  # only the move above: the calls before raise UserErrors
        raise disk_error(exc, out_dir) from exc
    finally:
        with contextlib.suppress(OSError):
            zip_path.unlink()
    return files
