"""Requests that fail: whether retrying can help (not found, denied and other 4xx cannot; 429 waits
as the server asks), the one line a failure becomes (403/404 named, credentials never shown), and the
retry loop with backoff every remote read and upload goes through."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import BadInput, NotFound
from . import traffic
from .urls import redact

T = TypeVar("T")
RETRIES = 3  # attempts per request for transient failures (connection, timeout, 5xx), with backoff
BACKOFF = 0.25  # seconds, doubled per attempt


class Fatal(Exception):
    """A failure that a retry cannot fix: not found, denied, a server breaking the protocol."""


def _status_of(exc: BaseException) -> int | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        # `status` of aiohttp's ClientResponseError, `response.status_code` of httpx/requests errors
        # (the Hub); not `code`: aiohttp's payload errors carry a parser code there, not an HTTP status.
        resp = getattr(seen, "response", None)
        status = getattr(seen, "status", None) or getattr(resp, "status_code", None)
        if isinstance(status, int) and 100 <= status < 600:
            return status
        if isinstance(resp, dict):
            code = resp.get("Error", {}).get("Code") or resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if str(code) in ("403", "AccessDenied"):
                return 403
            if str(code) in ("404", "NoSuchKey", "NoSuchBucket"):
                return 404
        seen = seen.__cause__ or seen.__context__
    return None


def _root(exc: BaseException) -> BaseException:
    for _ in range(8):
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


_SHORT_BODY = frozenset({"ContentLengthError", "ClientPayloadError", "TransferEncodingError", "IncompleteRead",
                         "ServerDisconnectedError", "RemoteProtocolError"})


def _fatal(exc: BaseException) -> bool:
    """Whether retrying cannot help: not found, denied, another 4xx."""
    status = _status_of(exc)
    if status == 429:  # too many requests: retried after the wait the server asks for
        return False
    if isinstance(exc, PermissionError) or (status is not None and status < 500):
        return True
    if type(_root(exc)).__name__ == "TooManyRedirects":
        return True
    return isinstance(exc, FileNotFoundError) and exc.__cause__ is None and exc.__context__ is None


def fail(name: str, exc: BaseException, what: str) -> BadInput:
    """One line for a failed request: 403/404 named as such, credentials never included."""
    status = _status_of(exc)
    if isinstance(exc, PermissionError) or status in (401, 403):
        return BadInput(name, "access denied (403)", "check the credentials of this backend (environment, profile, "
                                                      "HF token)")
    if status in (404, 410) or (isinstance(exc, FileNotFoundError) and _root(exc) is exc):
        return NotFound(name, "not found (404)")
    root = _root(exc)
    kind = type(root).__name__
    if kind == "TooManyRedirects":
        return BadInput(name, f"{what} failed: too many redirects (a redirect loop)")
    if kind in _SHORT_BODY:
        return BadInput(name, f"{what} failed: the server sent fewer or more bytes than it declared "
                              "(a wrong Content-Length or a dropped connection)")
    if status is not None:
        return BadInput(name, f"{what} failed: HTTP {status}")
    text = str(root).splitlines()[0] if str(root) else ""
    detail = redact(f"{type(root).__name__}: {text}" if text else type(root).__name__)[:160]
    return BadInput(name, f"{what} failed: {detail}")


def retry(name: str, what: str, fn: Callable[[], T]) -> T:
    delay = BACKOFF
    for attempt in range(RETRIES):
        try:
            return fn()
        except BadInput:
            raise
        except Fatal as exc:
            raise BadInput(name, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - every backend has its own error types
            if _fatal(exc):
                raise fail(name, exc, what) from None
            if attempt == RETRIES - 1:
                raise fail(name, exc, f"{what} (after {RETRIES} attempts)") from None
            time.sleep(traffic.retry_wait(exc, delay))
        delay *= 2
    raise AssertionError("unreachable")


__all__ = ["BACKOFF", "RETRIES", "Fatal", "fail", "retry"]
