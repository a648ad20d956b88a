"""Streaming writers: a torch.save-compatible zip and safetensors, written one tensor at a time into a
temp file beside the target, fsynced and renamed only after it re-reads correctly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from ..errors import BadInput

ALIGN = 64  # torch aligns every data/ record to 64 bytes (.storage_alignment)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def atomic_file(target: str) -> Iterator[str]:
    """Yield a temp path in the target's directory; on success fsync and rename it over `target`,
    on any error or interrupt remove it, so no partial output ever exists under the final name."""
    folder = os.path.dirname(os.path.abspath(target)) or "."
    if not os.path.isdir(folder):
        raise BadInput(target, "output directory does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".statecli-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with _sigterm_as_interrupt():
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        _fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_dir(target: str, replace: bool = False) -> Iterator[str]:
    """The directory counterpart of atomic_file, for sharded and DCP outputs."""
    parent = os.path.dirname(os.path.abspath(target.rstrip("/"))) or "."
    if os.path.exists(target) and not replace and (not os.path.isdir(target) or os.listdir(target)):
        raise BadInput(target, "output exists and is not an empty directory; choose another path")
    tmp = tempfile.mkdtemp(prefix=".statecli-", dir=parent)
    try:
        with _sigterm_as_interrupt():
            yield tmp
            for name in os.listdir(tmp):
                with open(os.path.join(tmp, name), "rb+") as f:
                    os.fsync(f.fileno())
            backup = None
            if os.path.exists(target):
                backup = tempfile.mkdtemp(prefix=".statecli-old-", dir=parent)
                os.rmdir(backup)
                os.rename(target, backup)
            os.rename(tmp, target)
            if backup:
                shutil.rmtree(backup, ignore_errors=True)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ZipWriter:
    """A minimal streaming, 64-byte-aligned, zip64-capable STORED zip writer in torch's layout."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.entries: list[tuple[bytes, int, int, int]] = []  # name, crc, size, header offset

    def _local_header(self, name: bytes, size: int, offset: int) -> bytes:
        zip64 = size >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, size) if zip64 else b""
        base = 30 + len(name) + len(extra)
        pad = (-(offset + base + 4)) % ALIGN  # a padding field (id 'FB', as torch writes) aligns the data
        extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        sz = 0xFFFFFFFF if zip64 else size
        return struct.pack("<4s5H3L2H", b"PK\x03\x04", 45 if zip64 else 20, 0x800, 0, 0, 0, 0, sz, sz,
                           len(name), len(extra)) + name + extra

    def write(self, name: str, chunks: Iterator[bytes | memoryview] | bytes, size: int) -> None:
        bname = name.encode("utf-8")
        offset = self.f.tell()
        header = self._local_header(bname, size, offset)
        self.f.write(header)
        crc, written = 0, 0
        for chunk in ([chunks] if isinstance(chunks, bytes) else chunks):
            crc = zlib.crc32(chunk, crc)
            written += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
            self.f.write(chunk)
        if written != size:
            raise RuntimeError(f"{name}: wrote {written} bytes, expected {size}")
        end = self.f.tell()
        self.f.seek(offset + 14)
        self.f.write(struct.pack("<L", crc))
        self.f.seek(end)
        self.entries.append((bname, crc, size, offset))

    def close(self) -> None:
        cd_start = self.f.tell()
        for name, crc, size, offset in self.entries:
            need64 = size >= 0xFFFFFFFF or offset >= 0xFFFFFFFF
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset) if need64 else b""
            sz = 0xFFFFFFFF if need64 else size
            off = 0xFFFFFFFF if need64 else offset
            self.f.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45 if need64 else 20, 45 if need64 else 20,
                                     0x800, 0, 0, 0, crc, sz, sz, len(name), len(extra), 0, 0, 0, 0, off)
                         + name + extra)
        cd_end = self.f.tell()
        n, cd_size = len(self.entries), cd_end - cd_start
        if n >= 0xFFFF or cd_start >= 0xFFFFFFFF or cd_size >= 0xFFFFFFFF:
            self.f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size, cd_start))
            self.f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, cd_end, 1))
            self.f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
        else:
            self.f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, cd_size, cd_start, 0))


def safetensors_header(items: list[tuple[str, str, tuple[int, ...], int]], metadata: dict[str, str]) -> bytes:
    """Header bytes (length prefix included) for (name, safetensors dtype, shape, nbytes) in write order."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    pos = 0
    for name, dtype, shape, nbytes in items:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)  # the safetensors library pads the header to 8 bytes
    return struct.pack("<Q", len(text)) + text
