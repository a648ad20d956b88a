"""Outputs at a URL (`-o s3://bucket/out.safetensors`): the rewrite is written and verified in a local
temp folder as any output is, and only then uploaded through fsspec; on any error the temp folder is
removed and nothing of this run is left at the URL.

A file goes up with `put_file` (s3fs sends a big file as a multipart upload that S3 completes only
when every part arrived, and aborts it on an exception); a folder (shards, a Hugging Face folder, DCP)
file by file with its index (`*.index.json`, DCP's `.metadata`) last, so a reader never finds an index
that names a missing shard. Credentials come from each backend's standard chain only; messages and
results show the URL as `source.display_name` gives it.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import tempfile
from collections.abc import Callable
from typing import Any

from ..errors import BadInput, StatecliError, UsageError
from ..io import atomic, source
from ..io.failures import fail
from ..state import Checkpoint

PART_SIZE: int | None = None  # multipart part size for backends that take `chunksize` (None: theirs); tests set it
_INDEX_NAMES = (".index.json", ".metadata")
_READ_ONLY = ("http", "https")  # fsspec's HTTP file system reads only


def is_url(path: str | None) -> bool:
    return source.is_remote(path)


def output_url(url: str, inputs: list[str]) -> str:
    """The output URL as statecli shows it (its credentials remembered, never shown), after the checks
    that need no request: a read-only scheme, or the input itself, is refused."""
    name = source.register(url)
    scheme = name.split("://", 1)[0].lower()
    if scheme in _READ_ONLY:
        raise UsageError(name, f"{scheme}:// URLs are read-only; statecli cannot upload there",
                         "write to a local path, or to s3://, gs://, az:// or hf://")
    if name.rstrip("/") in {f.rstrip("/") for f in inputs}:
        raise UsageError(name, "is the input; statecli never overwrites its input without --in-place")
    return name


def write_remote(url: str, folder: bool, need: int, write: Callable[[str], Checkpoint]) -> Checkpoint:
    """Run `write(local_path)` into a fresh local temp folder, then upload what it wrote to `url` (a
    folder when `folder`). The returned checkpoint names the URL; on any error nothing stays behind."""
    fs, root = _filesystem(url)
    _check_target(fs, root, url, folder)
    before = None if folder else _etag(fs, root)
    with tempfile.TemporaryDirectory(prefix=".statecli-upload-") as tmp:
        local = os.path.join(tmp, posixpath.basename(root.rstrip("/")) or "out")
        atomic.check_space(local, need)
        try:
            after = write(local)
        except StatecliError as exc:  # name the URL, not the temp folder nobody will find
            raise _renamed(exc, tmp, local, url) from exc
        if folder:
            _put_folder(fs, local, root, url)
        else:
            _put_file(fs, local, root, url, before)
    source.clear_cache()  # sizes and blocks cached for this URL (an --in-place input) are stale now
    return _relocated(after, local, url)


def _filesystem(url: str) -> tuple[Any, str]:
    # source's resolver: the one place a URL (with the credentials register() kept) becomes a file system
    return source._filesystem(url)


def _check_target(fs: Any, root: str, url: str, folder: bool) -> None:
    """Refuse before writing: a missing bucket, or a folder output over a non-empty remote folder."""
    try:
        fs.invalidate_cache(root)  # fsspec caches listings per process: ask the server, not an old answer
        if hasattr(fs, "split_path"):  # s3fs: the bucket must exist (a prefix need not)
            bucket = fs.split_path(root)[0]
            if bucket and not fs.exists(bucket):
                raise BadInput(url, f"bucket {bucket!r} not found (404)", "create it first, or check the URL")
        if folder and fs.isdir(root) and fs.ls(root, detail=False):
            raise BadInput(url, "output exists and is not an empty folder; choose another URL")
        if not folder and fs.isdir(root):
            raise BadInput(url, "is a folder; give a file name ending in .safetensors or .pt")
    except StatecliError:
        raise
    except Exception as exc:  # noqa: BLE001 - every backend has its own error types
        raise fail(url, exc, "checking the output") from None


def _etag(fs: Any, path: str) -> str | None:
    """The object's ETag (or size+mtime) before the upload, to tell later whether this run changed it."""
    try:
        fs.invalidate_cache(path)
        info = fs.info(path)
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - unknown: treat as absent, the upload will say what is wrong
        return None
    return str(info.get("ETag") or info.get("etag") or (info.get("size"), info.get("LastModified")))


def _put(fs: Any, local: str, remote: str) -> None:
    kwargs = {"chunksize": PART_SIZE} if PART_SIZE and hasattr(fs, "split_path") else {}
    fs.put_file(local, remote, **kwargs)


def _put_file(fs: Any, local: str, root: str, url: str, before: str | None) -> None:
    try:
        _put(fs, local, root)
    except BaseException as exc:
        _clean_file(fs, root, before)
        if isinstance(exc, Exception):
            raise _upload_failed(url, exc) from None
        raise


def _put_folder(fs: Any, local: str, root: str, url: str) -> None:
    names = sorted((os.path.relpath(os.path.join(d, n), local) for d, _, ns in os.walk(local) for n in ns),
                   key=lambda n: (n.endswith(_INDEX_NAMES), n))  # the index (or DCP's .metadata) last
    sent: list[str] = []
    try:
        for name in names:
            remote = posixpath.join(root.rstrip("/"), *name.split(os.sep))
            sent.append(remote)
            _put(fs, os.path.join(local, name), remote)
    except BaseException as exc:
        for remote in reversed(sent):  # the folder did not exist before (see _check_target): all ours
            _clean_file(fs, remote, None)
        if isinstance(exc, Exception):
            raise _upload_failed(url, exc) from None
        raise


def _clean_file(fs: Any, remote: str, before: str | None) -> None:
    """After a failed upload: abort a pending multipart upload of this key (an interrupt may have cut
    s3fs short of its own abort) and delete an object this run left (one that was not there before,
    or that changed); an older object this run did not replace is kept."""
    try:
        _abort_multipart(fs, remote)
        now = _etag(fs, remote)
        if now is not None and now != before:
            fs.rm_file(remote)
    except Exception:  # noqa: BLE001 - best effort: the upload's own error is the one to report
        pass


def _abort_multipart(fs: Any, remote: str) -> None:
    if not hasattr(fs, "split_path") or not hasattr(fs, "call_s3"):
        return
    bucket, key, _ = fs.split_path(remote)
    listing = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
    for up in listing.get("Uploads", []):
        if up.get("Key") == key:
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=up["UploadId"])


def _upload_failed(url: str, exc: Exception) -> BadInput:
    err = fail(url, exc, "upload")
    return BadInput(err.path, err.problem + "; nothing was left at the URL", err.hint)


def _renamed(exc: StatecliError, tmp: str, local: str, url: str) -> StatecliError:
    if exc.path is None or not exc.path.startswith(tmp):
        return exc
    rest = exc.path[len(local):] if exc.path.startswith(local) else ""
    return type(exc)(url.rstrip("/") + rest, exc.problem, exc.hint)


def _relocated(after: Checkpoint, local: str, url: str) -> Checkpoint:
    def at_url(p: str) -> str:
        return url.rstrip("/") + p[len(local):] if p.startswith(local) else p

    return dataclasses.replace(after, path=at_url(after.path), files=tuple(at_url(f) for f in after.files))
