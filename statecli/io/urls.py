"""URLs as statecli shows and resolves them: which paths are remote, names without credentials,
`org/repo` from the local Hugging Face cache, and a small pool for concurrent requests."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")
REMOTE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "http", "https", "hf"})
EXTRA_HINT = "install the remote extra: pip install 'torch-statecli[remote]'"
SHARD_THREADS = 16  # shard headers fetched at once

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\",;)]+")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def is_remote(path: str | None) -> bool:
    """Whether `path` is a URL statecli reads through fsspec (not a local path)."""
    m = _SCHEME.match(path or "")
    return bool(m) and m.group(1).lower() in REMOTE_SCHEMES  # type: ignore[union-attr]


def display_name(url: str) -> str:
    """The URL without user info, query or fragment: what statecli prints and puts in JSON."""
    if not _SCHEME.match(url):
        return url
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact(text: str) -> str:
    """`text` with every URL in it shown without credentials (for messages built from raw input)."""
    return _URL_IN_TEXT.sub(lambda m: display_name(m.group(0)), text)


_SECRETS: dict[str, str] = {}  # display name -> URL as given (with its credentials), never shown


def register(url: str) -> str:
    """Remember a URL's credentials and return its display name; the rest of statecli only ever
    sees the display name, and `open_source` turns it back into the URL to fetch."""
    name = display_name(url)
    if name != url:
        _SECRETS[name] = url
    return name


def _real(name: str) -> str:
    return _SECRETS.get(name, name)


def map_concurrent(fn: Callable[[str], T], items: Iterable[str], threads: int = SHARD_THREADS) -> dict[str, T | BaseException]:
    """fn over items on a small thread pool; each result or the exception it raised, by item."""
    todo = list(dict.fromkeys(items))
    if not todo:
        return {}

    def one(item: str) -> T | BaseException:
        try:
            return fn(item)
        except Exception as exc:  # noqa: BLE001 - handed back to the caller, which re-raises in order
            return exc

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(threads, len(todo))) as pool:
        return dict(zip(todo, pool.map(one, todo)))


def hf_cache_path(path: str) -> str | None:
    """`org/repo` or `org/repo@rev` as a folder of the local Hugging Face cache, resolved offline
    (no request is made); None when `path` is not a repo id or the cache does not hold it."""
    if not _REPO_ID.match(path) or os.path.lexists(path):
        return None
    repo, _, rev = path.partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    cache = os.environ.get("HF_HUB_CACHE") or (os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME")
                                               else None)
    try:
        folder = snapshot_download(repo, revision=rev or None, cache_dir=cache, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or not a repo id at all): the caller says "no such file"
        return None
    return str(folder) if os.path.isdir(folder) else None
