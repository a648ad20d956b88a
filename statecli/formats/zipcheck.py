"""The container checks of a torch.save zip, done once for the reader and for `scan`: every byte of
the file belongs to a member, the central directory or the end record; names are unique, under one
folder, equal in the local and central headers; no encryption; members read with the CRC checked by
us (torch ignores CRCs, so a mismatch is a finding, not a reason to stop reading)."""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections import Counter
from typing import BinaryIO

from ..errors import BadInput
from ._common import open_regular, read_exact

MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_EOCD = b"PK\x05\x06"
# Members torch.save writes besides data/<key> records (torch 1.6 - 2.x).
TORCH_MEMBERS = frozenset({"data.pkl", "byteorder", "version", ".format_version", ".storage_alignment",
                           ".data/version", ".data/serialization_id"})
TORCHSCRIPT_MEMBERS = TORCH_MEMBERS | {"constants.pkl"}
TORCHSCRIPT_FOLDERS = ("code/", "constants/", "extra/", ".data/", "data/")


class Archive:
    """A zip archive opened for reading. Unreadable input raises BadInput; parser-confusion
    findings (duplicates, name mismatch, encryption flag, bytes outside every record, a CRC
    mismatch) are collected in `problems` for the caller: the reader refuses, `scan` reports."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[str] = []
        self.f = open_regular(path)
        try:
            self.zf = zipfile.ZipFile(self.f)
            self._check()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error) as exc:
            hint = _truncation(self.f) if isinstance(exc, zipfile.BadZipFile) else None
            self.close()
            raise BadInput(path, hint or f"corrupt zip archive: {exc}",
                           "copy or download it again" if hint else None) from exc
        except BaseException:
            self.close()
            raise

    def _check(self) -> None:
        infos = self.zf.infolist()
        names = [i.filename for i in infos]
        if not infos:
            raise BadInput(self.path, "not a checkpoint: an empty zip archive")
        pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkls:
            npy = sum(n.endswith(".npy") for n in names)
            what = "a numpy .npz archive" if npy and npy == len(names) else "a zip archive with no data.pkl"
            raise BadInput(self.path, f"not a checkpoint ({what}; not a torch.save file)")
        for n in sorted(n for n, k in Counter(names).items() if k > 1):
            self.problems.append(f"duplicate zip member {n!r} (an ambiguous file)")
        # torch.load reads the folder of the first entry.
        self.prefix = names[0].split("/", 1)[0] + "/" if "/" in names[0] else pkls[0].split("/", 1)[0] + "/"
        outside = sorted({n for n in names if not n.startswith(self.prefix)})
        if outside:
            self.problems.append(f"zip members are not under one archive folder: {outside[0]!r} is outside "
                                 f"{self.prefix!r}")
        size = self.f.seek(0, 2)
        self.offsets: dict[str, int] = {}
        spans: list[tuple[int, int]] = []
        for info in infos:
            if info.flag_bits & 0x1:
                self.problems.append(f"zip member {info.filename!r} has the encryption flag")
            raw = read_exact(self.f, info.header_offset, _LOCAL_HEADER.size, self.path, "zip local header")
            fields = _LOCAL_HEADER.unpack(raw)
            if fields[0] != MAGIC:
                raise BadInput(self.path, f"zip local header of {info.filename!r} is missing")
            name_len, extra_len = fields[9], fields[10]
            local_name = read_exact(self.f, info.header_offset + _LOCAL_HEADER.size, name_len, self.path, "zip name")
            if local_name.decode("utf-8", "replace") != info.filename:
                self.problems.append(f"zip local header names {local_name!r} but the central directory names "
                                     f"{info.filename!r}")
            start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            if start + info.compress_size > size:
                raise BadInput(self.path, f"truncated file: zip member {info.filename!r} runs past the end")
            self.offsets.setdefault(info.filename, start)
            end = start + info.compress_size
            if info.flag_bits & 0x8:  # a data descriptor follows (12-24 bytes)
                end += 24 if info.compress_size >= 0xFFFFFFFF else 16
            spans.append((info.header_offset, end))
        self.infos = {i.filename: i for i in reversed(infos)}  # the first of duplicates, as torch reads
        self._account(spans, size)

    def _account(self, spans: list[tuple[int, int]], size: int) -> None:
        """Every byte outside the members belongs to the central directory and the end record."""
        tail = read_exact(self.f, max(0, size - (1 << 16) - 22), min(size, (1 << 16) + 22), self.path, "zip end")
        at = tail.rfind(_EOCD)
        if at < 0:
            raise BadInput(self.path, "corrupt zip archive: no end-of-central-directory record")
        eocd = size - len(tail) + at
        (comment_len,) = struct.unpack("<H", tail[at + 20:at + 22])
        after = size - (eocd + 22 + comment_len)
        self.tail = (eocd + 22 + comment_len, max(after, 0))  # (offset, length) of bytes after the end
        if after > 0:
            self.problems.append(f"{after} byte(s) after the zip end record (never read by torch.load)")
        if comment_len:
            self.problems.append(f"a {comment_len}-byte zip comment (torch.save writes none)")
        gaps = 0
        pos = 0
        for begin, end in sorted(spans):
            if begin > pos:
                gaps += begin - pos
            pos = max(pos, end)
        cd_start = self.zf.start_dir
        if cd_start > pos:
            gaps += cd_start - pos
        if gaps > 0:
            self.problems.append(f"{gaps} byte(s) of the archive belong to no zip member")

    def tail_bytes(self, cap: int = 64 << 20) -> bytes:
        """The bytes after the end record (scanned: a loader that reads past it would run them)."""
        offset, n = self.tail
        return read_exact(self.f, offset, min(n, cap), self.path, "bytes after the zip end record") if n else b""

    def member(self, name: str, cap: int | None = None) -> bytes:
        """A member's bytes (the first `cap`), its CRC checked here: a mismatch is a finding."""
        info = self.infos[name]
        start = self.offsets[name]
        want = info.file_size if cap is None else min(cap, info.file_size)
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                data = read_exact(self.f, start, want, self.path, f"zip member {name!r}")
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                raw = read_exact(self.f, start, info.compress_size, self.path, f"zip member {name!r}")
                data = zlib.decompressobj(-15).decompress(raw, want)
            else:
                raise BadInput(self.path, f"zip member {name!r} uses compression method {info.compress_type}")
        except zlib.error as exc:
            raise BadInput(self.path, f"cannot read zip member {name!r}: {exc}") from exc
        if len(data) != want:
            raise BadInput(self.path, f"cannot read zip member {name!r}: it holds fewer bytes than declared")
        if want == info.file_size and zlib.crc32(data) != info.CRC:
            self.problems.append(f"CRC error in zip member {name!r} (torch.load ignores CRCs)")
        return data

    @property
    def torchscript(self) -> bool:
        p = self.prefix
        return p + "constants.pkl" in self.infos and any(n.startswith(p + "code/") for n in self.infos)

    def unexpected(self, storage_keys: set[str]) -> list[str]:
        """Members torch.load never reads: a payload parked where only other tools look."""
        p, out = self.prefix, []
        ts = self.torchscript
        for name in self.infos:
            if not name.startswith(p):
                continue  # reported as outside the folder
            rel = name[len(p):]
            if rel in (TORCHSCRIPT_MEMBERS if ts else TORCH_MEMBERS) or rel.endswith("/"):
                continue
            if ts and rel.startswith(TORCHSCRIPT_FOLDERS):
                continue
            if rel.startswith("data/") and rel[5:] in storage_keys:
                continue
            out.append(name)
        return out

    def close(self) -> None:
        if hasattr(self, "zf"):
            self.zf.close()
        self.f.close()


def _truncation(f: BinaryIO) -> str | None:
    """Why a file that starts like a zip has no end record: a cut-short copy or download, most often.
    Walk the local headers that carry sizes to say where the data stops when that can be told."""
    try:
        size = os.fstat(f.fileno()).st_size
        if os.pread(f.fileno(), 4, 0) != b"PK\x03\x04":
            return None
        offset = 0
        while offset + 30 <= size:
            head = os.pread(f.fileno(), 30, offset)
            flags, = struct.unpack("<H", head[6:8])
            csize, _, name_len, extra_len = struct.unpack("<II2H", head[18:30])
            if head[:4] != b"PK\x03\x04" or flags & 0x08:
                break  # sizes follow the data (a data descriptor): the walk cannot go on
            name = os.pread(f.fileno(), name_len, offset + 30).decode("utf-8", "replace")
            end = offset + 30 + name_len + extra_len + csize
            if end > size:
                return (f"looks truncated: the file is {size:,} bytes and ends inside member {name!r}, "
                        f"which needs {end:,}")
            offset = end
    except (OSError, struct.error, ValueError):
        return None
    return (f"looks truncated: it starts as a zip (torch.save) but its end record, the central directory, "
            f"is missing ({size:,} bytes)")
