"""Byte sources: local files and remote objects (S3, GCS, Azure, HTTP(S), the Hugging Face Hub) read
through fsspec by bounded range requests, with the credentials kept out of every name statecli shows."""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar, cast

from ..errors import BadInput, NotFound
from . import traffic
from .failures import Fatal, retry
from .urls import (  # noqa: F401 - re-exported: the URL side of a source
    EXTRA_HINT,
    REMOTE_SCHEMES,
    _real,
    display_name,
    hf_cache_path,
    is_remote,
    map_concurrent,
    redact,
    register,
)

T = TypeVar("T")
MAX_RANGE = 16 << 20  # one request never asks for more: a hostile server cannot make us allocate beyond it
BLOCK = 64 << 10  # metadata reads are served from cached 64 KiB blocks: many tiny reads, few requests
TAIL = 256 << 10  # the first read near the end fetches this much: zip end record, directory and tail scan at once
CACHE_BLOCKS = 256  # 16 MiB of cached metadata blocks, shared by every open of a URL
TIMEOUT = 20.0  # seconds without progress before a request counts as failed
SHARD_THREADS = 16  # shard headers fetched at once


@dataclass
class Stats:
    """Process-wide transfer counters (what tests and benchmarks assert on)."""

    requests: int = 0
    bytes: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def reset(self) -> None:
        self.requests = self.bytes = self.in_flight = self.max_in_flight = 0


STATS = Stats()
_LOCK = threading.Lock()
_SIZES: dict[str, int] = {}
_BLOCKS: OrderedDict[tuple[str, int], bytes] = OrderedDict()


def clear_cache() -> None:
    """Forget cached sizes and blocks (tests; a long-lived process reading changed objects)."""
    with _LOCK:
        _SIZES.clear()
        _BLOCKS.clear()
        _DIRS.clear()


def cached_prefix(name: str) -> bytes:
    """The first bytes of `name` already fetched into the block cache (the 64 KiB a format sniff read),
    so a reader starting at byte 0 does not request them again; empty when none are cached."""
    out = []
    with _LOCK:
        i = 0
        while (block := _BLOCKS.get((name, i))) is not None:
            out.append(block)
            if len(block) < BLOCK:
                break
            i += 1
    return b"".join(out)


def _filesystem(name: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError as exc:
        raise BadInput(name, "reading URLs needs fsspec", EXTRA_HINT) from exc
    kwargs: dict[str, Any] = {}
    scheme = name.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        try:
            import aiohttp
        except ImportError as exc:
            raise BadInput(name, "reading http(s) URLs needs aiohttp", EXTRA_HINT) from exc
        kwargs["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT, sock_read=TIMEOUT)}
    try:
        return cast("tuple[Any, str]", fsspec.core.url_to_fs(_real(name), **kwargs))
    except ImportError as exc:
        raise BadInput(name, f"no {scheme}:// support installed ({exc})", EXTRA_HINT) from exc
    except ValueError as exc:
        raise BadInput(name, f"unsupported URL scheme {scheme}://", EXTRA_HINT) from exc


class Source:
    """Bytes addressed by offset: `pread` returns exactly `n` bytes or raises BadInput."""

    name: str
    size: int

    def pread(self, offset: int, n: int) -> bytes:
        raise NotImplementedError

    def span(self, offset: int, n: int, what: str) -> bytearray:
        """`n` bytes at `offset` in requests of at most MAX_RANGE; `what` runs past the end: BadInput."""
        if offset < 0 or offset + n > self.size:
            raise BadInput(self.name, f"{what} at byte {offset} runs past the end of the file")
        out = bytearray()
        for off in range(offset, offset + n, MAX_RANGE):
            out += self.pread(off, min(MAX_RANGE, offset + n - off))
        return out

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_local(path: str) -> BinaryIO:
    """Open an untrusted local path for reading, refusing anything but a regular file (a FIFO or a
    device would block or never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as exc:
        raise NotFound(path, "no such file") from exc
    except IsADirectoryError as exc:
        raise BadInput(path, "is a directory") from exc
    except OSError as exc:
        raise BadInput(path, f"cannot open: {exc.strerror}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadInput(path, "not a regular file (a FIFO, socket or device); refusing to read it")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class LocalSource(Source):
    """A regular local file (FIFOs and devices refused by open_local)."""

    def __init__(self, path: str) -> None:
        self.name = path
        self.f = open_local(path)
        self.size = os.fstat(self.f.fileno()).st_size

    def pread(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise BadInput(self.name, f"truncated file: {n} bytes at {offset} run past the end ({self.size} bytes)")
        out = bytearray()
        while len(out) < n:
            part = os.pread(self.f.fileno(), n - len(out), offset + len(out))
            if not part:
                raise BadInput(self.name, f"truncated file: short read at byte {offset + len(out)}")
            out += part
        return bytes(out)

    def close(self) -> None:
        self.f.close()


# Byte ranges of a file that readers open as files of their own (a DCP item inside a `.distcp`):
# only names statecli registered here are ranges, so no path a user types is ever read as one.
_RANGES: dict[str, tuple[str, int, int]] = {}


def register_range(path: str, offset: int, length: int, label: str) -> str:
    """A name under which bytes offset..offset+length of `path` (a file or URL) open as a file."""
    name = f"{path}[{label}]"
    _RANGES[name] = (path, offset, length)
    with _LOCK:  # the file may have been rewritten since this name was last read: no stale cached blocks
        for key in [k for k in _BLOCKS if k[0] == name]:
            del _BLOCKS[key]
    return name


def is_range(name: str | None) -> bool:
    return name in _RANGES


class RangeSource(Source):
    """A registered byte range of a file or URL; reads past either end of the range are refused."""

    def __init__(self, name: str) -> None:
        self.name = name
        path, self.base, self.size = _RANGES[name]
        self.inner = open_source(path)  # a URL's items are read by bounded ranges like the rest of it
        if self.base + self.size > self.inner.size:
            self.inner.close()
            raise BadInput(name, f"the item's {self.size} bytes at offset {self.base} run past the end of "
                                 f"{os.path.basename(path)!r} ({self.inner.size} bytes)")

    def pread(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise BadInput(self.name, f"truncated item: {n} bytes at {offset} run past its end ({self.size} bytes)")
        return self.inner.pread(self.base + offset, n)

    def close(self) -> None:
        self.inner.close()


class RemoteSource(Source):
    """An object behind fsspec: its size from one metadata request, then bounded ranged reads."""

    def __init__(self, name: str) -> None:
        self.name = register(name)
        self.fs, self.path = _filesystem(self.name)
        self.http = self.name.lower().startswith(("http://", "https://"))
        if self.http and self.name.split("?", 1)[0].endswith("/"):
            raise no_http_folders(self.name)
        with _LOCK:
            size = _SIZES.get(self.name)
        if size is None:
            info = retry(self.name, "metadata request", self._info)
            if info.get("type") == "directory":
                raise BadInput(self.name, "is a folder, not a file")
            if self.http and _is_web_page(info.get("mimetype")):  # a server's folder listing
                raise no_http_folders(self.name)
            size = info.get("size")
            if not isinstance(size, int) or size < 0:
                raise BadInput(self.name, "the server does not say how large the file is; cannot read it by ranges")
            with _LOCK:
                _SIZES[self.name] = size
        self.size = size

    def _info(self) -> dict[str, Any]:
        return _counted(self.fs.info, self.path)

    def pread(self, offset: int, n: int) -> bytes:
        if n > MAX_RANGE:
            raise BadInput(self.name, f"refusing a {n}-byte range request (cap {MAX_RANGE})")
        if offset < 0 or offset + n > self.size:
            raise BadInput(self.name, f"truncated file: {n} bytes at {offset} run past the end ({self.size} bytes)")
        if n == 0:
            return b""
        return retry(self.name, f"range request at byte {offset}", lambda: self._get(offset, n))

    def _get(self, offset: int, n: int) -> bytes:
        with _LOCK:
            STATS.in_flight += 1
            STATS.max_in_flight = max(STATS.max_in_flight, STATS.in_flight)
        try:
            _count(0)
            if self.http:
                from fsspec.asyn import sync

                data = sync(self.fs.loop, _http_range, self.fs, self.path, offset, n)
            else:
                data = self.fs.cat_file(self.path, start=offset, end=offset + n)
        finally:
            with _LOCK:
                STATS.in_flight -= 1
        _count(len(data), requests=0)
        if len(data) != n:
            raise ConnectionError(f"short read: asked {n} bytes at {offset}, got {len(data)}")
        return bytes(data)


def _is_web_page(content_type: object) -> bool:
    return isinstance(content_type, str) and content_type.split(";")[0].strip().lower() in ("text/html",
                                                                                         "application/xhtml+xml")


def no_http_folders(url: str) -> BadInput:
    """A folder over HTTP (a URL ending in '/', or a server's listing page): HTTP cannot list a folder, so
    name the file that stands for the whole checkpoint."""
    base = url.split("?", 1)[0].rstrip("/")
    return BadInput(url, "HTTP has no folders: an http(s) URL names one file (this one is a web page or ends in "
                         "'/')", f"pass the URL of the checkpoint's *.index.json (e.g. {base}/model.safetensors."
                         "index.json) or of one weights file")
def _counted(fn: Callable[[str], Any], path: str) -> dict[str, Any]:
    _count(0)
    return dict(fn(path))


def _count(nbytes: int, requests: int = 1) -> None:
    traffic.count(nbytes, requests)
    with _LOCK:
        STATS.requests += requests
        STATS.bytes += nbytes


async def _http_range(fs: Any, url: str, offset: int, n: int) -> bytes:
    """One ranged GET over fsspec's own aiohttp session, read at most `n` bytes: fsspec's cat_file would
    read a whole body, and a server that ignores Range answers with the whole file."""
    session = await fs.set_session()
    kw = {k: v for k, v in fs.kwargs.items() if k != "headers"}
    headers = dict(fs.kwargs.get("headers") or {})
    headers["Range"] = f"bytes={offset}-{offset + n - 1}"
    kw.setdefault("max_redirects", 5)
    async with session.get(fs.encode_url(url), headers=headers, **kw) as r:
        if r.status in (401, 403, 404, 410):
            raise FileNotFoundError(url) if r.status in (404, 410) else PermissionError(url)
        if r.status == 200 and _is_web_page(r.headers.get("Content-Type")):
            raise no_http_folders(url)
        if r.status == 200:
            raise Fatal("the server ignored the Range request (it answered with the whole file); refusing to "
                         "download it")
        if r.status in (429, 503):
            raise traffic.RateLimited(r.status, r.headers)
        if r.status != 206:
            err = ConnectionError(f"HTTP {r.status}")
            if r.status < 500:
                raise Fatal(f"range request answered HTTP {r.status}")
            raise err
        rng = r.headers.get("Content-Range", "")
        if not rng.startswith(f"bytes {offset}-{offset + n - 1}/"):
            raise Fatal(f"the server answered range bytes={offset}-{offset + n - 1} with {rng[:60]!r}")
        if r.content_length is not None:
            if r.content_length != n:
                raise Fatal(f"the server declared {r.content_length} bytes for a range of {n} at byte {offset}")
            return cast(bytes, await r.read())  # aiohttp reads exactly Content-Length bytes, or fails on a short body
        out = bytearray()
        while len(out) <= n:
            chunk = await r.content.read(min(1 << 20, n + 1 - len(out)))
            if not chunk:
                break
            out += chunk
        if len(out) > n:
            raise Fatal(f"the server sent more than the {n} bytes asked for at byte {offset}")
        return bytes(out)


_DIRS: dict[str, list[str] | None] = {}


def listdir(url: str) -> list[str] | None:
    """The names in a remote folder, or None when `url` is not a folder (HTTP has no folders)."""
    url = register(url).rstrip("/")
    if url.lower().startswith(("http://", "https://")):
        return None
    with _LOCK:
        if url in _DIRS:
            return _DIRS[url]
    fs, path = _filesystem(url)

    def ls() -> list[str] | None:
        _count(0)
        if not fs.isdir(path):
            return None
        return sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))

    names = retry(url, "listing", ls)
    with _LOCK:
        _DIRS[url] = names
    return names


def isdir(path: str) -> bool:
    return listdir(path) is not None if is_remote(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
    return exists(path) if is_remote(path) else os.path.isfile(path)


def exists(path: str) -> bool:
    """Whether a file exists (a metadata request for a URL, answered from the cache when read before)."""
    if not is_remote(path):
        return os.path.exists(path)
    try:
        RemoteSource(path)
    except NotFound:
        return False
    return True


def remote_info(path: str, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """A remote object's metadata (size, ETag, version id, LFS hash) from one request, or `known` (a listing's
    entry: none); its size is kept, so opening the object then costs no request either."""
    name = register(path)
    if known is not None:  # a listing's entry: no file system either (resolving one per object costs ~0.1 ms)
        found = dict(known)
    else:
        fs, real = _filesystem(name)
        found = retry(name, "metadata request", lambda: _counted(fs.info, real))
    if isinstance(found.get("size"), int) and found.get("type", "file") == "file":
        with _LOCK:
            _SIZES[name] = found["size"]
    return found


def file_size(path: str) -> int:
    """Bytes in a local file or a remote object."""
    if is_remote(path):
        return RemoteSource(path).size
    return os.path.getsize(path)


def open_source(path: str) -> Source:
    """A Source for a local path or a URL (s3://, gs://, az://, http(s)://, hf://)."""
    return RemoteSource(path) if is_remote(path) else LocalSource(path)
