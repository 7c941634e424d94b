"""JSON-RPC 2.0 over lines: one UTF-8 JSON object per ``\\n``-terminated line, both directions.

Only what both ends share lives here (so that the client imports nothing heavy): the error codes,
the line limit, and how requests, answers and notifications are spelt.
"""

from __future__ import annotations

import json
import math

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`status` starts quickly)
if TYPE_CHECKING:
    from typing import Any

#: A request line longer than this gets an error and the connection is closed.
MAX_LINE = 64 * 1024

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: The request was understood but refused (the rig is busy, the job is finished, ...).
REFUSED = -32000


class RpcError(Exception):
    """An error answered to the caller as a JSON-RPC error object."""

    def __init__(self, code: int, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def encode(obj: dict[str, Any]) -> bytes:
    """One line of JSON (compact, ASCII-safe) with its newline."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def result(request_id: Any, value: Any) -> bytes:
    """The answer to a request."""
    return encode({"jsonrpc": "2.0", "id": request_id, "result": value})


def error(request_id: Any, code: int, message: str) -> bytes:
    """An error answer (``request_id`` is None when the request could not be read)."""
    return encode({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})


def notification(method: str, params: Any) -> bytes:
    """A notification (no id: nothing answers it)."""
    return encode({"jsonrpc": "2.0", "method": method, "params": params})


def request(request_id: Any, method: str, params: Any = None) -> bytes:
    """A request line, as a client sends it."""
    obj: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        obj["params"] = params
    return encode(obj)


def parse_request(line: bytes) -> tuple[Any, str, dict[str, Any], bool]:
    """``(id, method, params, is_notification)`` of a request line; raises :class:`RpcError`.

    ``params`` is always a dict (an absent one is empty; by-position lists are refused, since
    every method here takes named parameters).
    """
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise RpcError(PARSE_ERROR, "parse error: not UTF-8") from None
    except ValueError as exc:
        raise RpcError(PARSE_ERROR, f"parse error: {exc}") from None
    except RecursionError:  # e.g. 30 000 nested brackets: bad input, not a bug of ours
        raise RpcError(PARSE_ERROR, "parse error: nested too deeply") from None
    if not isinstance(obj, dict):
        raise RpcError(INVALID_REQUEST, "invalid request: expected a JSON object")
    request_id = obj.get("id")
    # NaN and Infinity (which Python's json reads) cannot be echoed as JSON: refused as ids.
    if not (request_id is None or isinstance(request_id, (str, int, float))) or isinstance(
            request_id, bool) or (isinstance(request_id, float) and not math.isfinite(request_id)):
        raise RpcError(INVALID_REQUEST,
                       "invalid request: id must be a string, a finite number or null")
    if obj.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"', request_id)
    method = obj.get("method")
    if not isinstance(method, str):
        raise RpcError(INVALID_REQUEST, 'invalid request: "method" must be a string', request_id)
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "invalid params: expected an object of named parameters",
                       request_id)
    return request_id, method, params, "id" not in obj
