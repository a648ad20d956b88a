"""Remote traffic control for many-file runs: a process-wide requests-per-second limit, the wait a
server asks for (Retry-After, the Hub's RateLimit header), and per-thread counters so each checkpoint of
a batch reports its own requests, bytes and retries while others are read beside it."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

MAX_WAIT = 120.0  # seconds: a longer Retry-After is capped (a hostile server cannot park a run)
_RATELIMIT_T = re.compile(r"(?:^|[;,\s])t=(\d+)")


@dataclass
class Counters:
    """What one unit of work (one checkpoint of a batch) sent and waited for."""

    requests: int = 0
    bytes: int = 0
    retries: int = 0
    waited: float = 0.0  # seconds slept for the rate limit and Retry-After


class RateLimited(ConnectionError):
    """HTTP 429 or 503: retried after the wait the response asks for."""

    def __init__(self, status: int, headers: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers


class _Limiter:
    """Requests spaced at least 1/rate apart across every thread of the process."""

    def __init__(self) -> None:
        self.interval = 0.0
        self.next_at = 0.0
        self.lock = threading.Lock()

    def acquire(self) -> float:
        if not self.interval:
            return 0.0
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next_at)
            self.next_at = at + self.interval
        wait = at - now
        if wait > 0:
            time.sleep(wait)
        return max(0.0, wait)


_LIMIT = _Limiter()
_LOCAL = threading.local()


def set_max_rate(per_second: float | None) -> None:
    """At most this many requests per second from this process (None or 0: no limit)."""
    _LIMIT.interval = 1.0 / per_second if per_second else 0.0


@contextmanager
def counting() -> Iterator[Counters]:
    """Count this thread's requests, bytes and retries until the block ends."""
    counters = Counters()
    previous = getattr(_LOCAL, "counters", None)
    _LOCAL.counters = counters
    try:
        yield counters
    finally:
        _LOCAL.counters = previous


def _mine() -> Counters | None:
    return getattr(_LOCAL, "counters", None)


def count(nbytes: int, requests: int) -> None:
    """Called before each request (requests=1) and after its body (the bytes): waits for the rate limit."""
    waited = _LIMIT.acquire() if requests else 0.0
    c = _mine()
    if c is not None:
        c.requests += requests
        c.bytes += nbytes
        c.waited += waited


def retry_wait(exc: BaseException, backoff: float) -> float:
    """Seconds to wait before retrying after `exc`: what the server asked for (Retry-After in seconds or
    as a date, or the `t=` of the Hub's RateLimit header), else the exponential backoff; counted as a retry."""
    asked = _asked(exc)
    wait = min(MAX_WAIT, asked) if asked is not None else backoff
    c = _mine()
    if c is not None:
        c.retries += 1
        c.waited += wait
    return wait


def _asked(exc: BaseException) -> float | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        headers = getattr(seen, "headers", None)
        if headers is not None:
            return parse_wait(headers.get("Retry-After"), headers.get("RateLimit"))
        seen = seen.__cause__ or seen.__context__
    return None


def parse_wait(retry_after: str | None, ratelimit: str | None = None) -> float | None:
    """Seconds from a Retry-After value (delta-seconds or an HTTP date) or a RateLimit header's `t=`."""
    if retry_after:
        text = retry_after.strip()
        if text.isdigit():
            return float(text)
        import email.utils  # only for a dated Retry-After: ~6 ms no command should pay at start-up

        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    if ratelimit and (m := _RATELIMIT_T.search(ratelimit)):
        return float(m.group(1))
    return None
