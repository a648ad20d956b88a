"""The container checks of a torch.save zip, done once for the reader and for `scan`: every byte of
the file belongs to a member, the central directory or the end record; names are unique, under one
folder, equal in the local and central headers; no encryption; members read with the CRC checked by
us (torch ignores CRCs, so a mismatch is a finding, not a reason to stop reading)."""

from __future__ import annotations

import os
import string
import struct
import zipfile
import zlib
from collections import Counter
from typing import Any, BinaryIO, NamedTuple

from ..errors import BadInput, NotACheckpoint, UnsafeContent
from ..io.limits import MAX_INFLATED, Inflation, inflate, read_zip_member
from ..io.sourcefile import SourceFile
from ._common import open_regular, read_exact

MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_EOCD = b"PK\x05\x06"
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # zipfile's structCentralDir
_EOCD_STRUCT = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
# Local headers are read in blocks covering every header closer than _GAP bytes to the one before
# (tensors smaller than a page: all of them, in a few reads); farther headers are read one by one.
# Bytes read beyond the headers are bounded by _GAP per member, whatever the file size.
_GAP = 4096
_BLOCK = 1 << 20
_NAME_ROOM = 512  # name bytes read with each header in a block; a longer name is read on its own
_IN_FLIGHT = 8  # a remote archive's local headers requested at once (`scan`: latency, not bandwidth, bounds it)
# Members torch.save writes besides data/<key> records (torch 1.6 - 2.x).
TORCH_MEMBERS = frozenset({"data.pkl", "byteorder", "version", ".format_version", ".storage_alignment",
                           ".data/version", ".data/serialization_id"})
# torch.jit.save of a traced module (torch >= 2.0, _store_inputs=True by default) adds the example
# inputs: traced_inputs.pkl (scanned like every .pkl) and its tensors under traced_inputs/.
TORCHSCRIPT_MEMBERS = TORCH_MEMBERS | {"constants.pkl", "traced_inputs.pkl"}
TORCHSCRIPT_FOLDERS = ("code/", "constants/", "extra/", ".data/", "data/", "traced_inputs/")


class Archive:
    """A zip archive opened for reading. Unreadable input raises BadInput; parser-confusion
    findings (duplicates, name mismatch, encryption flag, bytes outside every record, a CRC
    mismatch) are collected in `problems` for the caller: the reader refuses, `scan` reports."""

    def __init__(self, path: str, lazy: bool = False, anchor: str = "data.pkl") -> None:
        """`lazy` (a remote metadata read): local headers are read only for the members read here; the
        rest are checked where values are read (io/zipheaders.py) and by `scan`, which reads them all.
        `anchor`: the record that makes the zip an archive (a .pt2: archive_format)."""
        self.path, self.lazy, self.anchor = path, lazy, anchor
        self.problems: list[str] = []
        self.inflated = 0  # bytes inflated so far: all members together share MAX_INFLATED
        self.f = open_regular(path)
        try:
            self.zf: Any = _Directory.read(self.f) or zipfile.ZipFile(self.f)
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
            raise NotACheckpoint(self.path, "not a checkpoint: an empty zip archive")
        pkls = [n for n in names if fold(n).endswith("/" + self.anchor) and n.count("/") == 1]
        if not pkls and self.anchor != "data.pkl":
            raise NotACheckpoint(self.path, f"not a checkpoint (a zip archive with no {self.anchor})")
        if not pkls:
            npy = sum(n.endswith(".npy") for n in names)
            what = "a numpy .npz archive" if npy and npy == len(names) else "a zip archive with no data.pkl"
            raise NotACheckpoint(self.path, f"not a checkpoint ({what}; not a torch.save file)")
        # torch's reader (miniz) matches names case-insensitively: `DATA.PKL` beside `data.pkl` is a duplicate.
        first = {fold(n): n for n in reversed(names)}
        for n in sorted(first[f] for f, k in Counter(fold(n) for n in names).items() if k > 1):
            self.problems.append(f"duplicate zip member {n!r} (an ambiguous file)")
        self.folded = first
        # torch.load reads the folder of the first entry.
        self.prefix = names[0].split("/", 1)[0] + "/" if "/" in names[0] else pkls[0].split("/", 1)[0] + "/"
        outside = sorted({n for n in names if not n.startswith(self.prefix)})
        if outside:
            self.problems.append(f"zip members are not under one archive folder: {outside[0]!r} is outside "
                                 f"{self.prefix!r}")
        self.size = size = self.f.seek(0, 2)
        self.offsets: dict[str, int] = {}
        self.infos = {i.filename: i for i in reversed(infos)}  # the first of duplicates, as torch reads
        spans: list[tuple[int, int]] = []
        headers = {} if self.lazy else _local_headers(self.f, [i.header_offset for i in infos], size)
        for info in infos:
            if info.flag_bits & 0x1:
                self.problems.append(f"zip member {info.filename!r} has the encryption flag")
            if not self.lazy:
                spans.append(self._local(info, headers.get(info.header_offset)))
        self._refuse_encrypted(infos, pkls[0])
        self._account(None if self.lazy else spans, size)

    def _local(self, info: Member, head: bytes | None) -> tuple[int, int]:
        """Check one member's local header (`head`: its fixed part and name, when already read) against
        the central directory; record where its data starts; return the member's span."""
        fixed, filename, offset, csize = _LOCAL_HEADER.size, info.filename, info.header_offset, info.compress_size
        if head is None:  # not in a block (or past the end): read alone, failing as any read would
            head = read_exact(self.f, offset, fixed, self.path, "zip local header")
        magic, _, _, _, _, _, _, _, _, name_len, extra_len = _LOCAL_HEADER.unpack_from(head)
        if magic != MAGIC:
            raise BadInput(self.path, f"zip local header of {filename!r} is missing")
        local_name = head[fixed:fixed + name_len] if len(head) >= fixed + name_len else read_exact(
            self.f, offset + fixed, name_len, self.path, "zip name")
        if local_name.decode("utf-8", "replace") != filename:
            self.problems.append(f"zip local header names {local_name!r} but the central directory names "
                                 f"{filename!r}")
        start = offset + fixed + name_len + extra_len
        end = start + csize
        if end > self.size:
            raise BadInput(self.path, f"truncated file: zip member {filename!r} runs past the end")
        self.offsets.setdefault(filename, start)
        if info.flag_bits & 0x8:  # a data descriptor follows (12-24 bytes)
            end += 24 if csize >= 0xFFFFFFFF else 16
        return offset, end

    def start(self, name: str) -> int:
        """Where member `name`'s data starts (a lazy archive reads and checks its local header now)."""
        if name not in self.offsets:
            self._local(self.infos[name], None)
        return self.offsets[name]

    def _refuse_encrypted(self, infos: list[zipfile.ZipInfo], pkl: str) -> None:
        """Every member encrypted and data.pkl's bytes no pickle: unreadable input (torch.load cannot
        decrypt), exit 2. The flag over plain bytes, or on some members only, stays a finding: a reader
        that ignores the flag (torch) and one that honours it (zipfile) see different files."""
        files = [i for i in infos if not i.filename.endswith("/")]
        if not files or not all(i.flag_bits & 0x1 for i in files) or pkl not in self.infos or self.anchor != "data.pkl":
            return
        if read_exact(self.f, self.start(pkl), 1, self.path, "data.pkl") != b"\x80":
            raise NotACheckpoint(self.path, "not a checkpoint: an encrypted zip archive (torch.load cannot read it)")

    def _account(self, spans: list[tuple[int, int]] | None, size: int) -> None:
        """Every byte outside the members belongs to the central directory and the end record (None: a
        lazy read, whose member spans are unknown, checks the end only)."""
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
        if spans is None:
            return
        gaps = pos = 0
        for begin, end in sorted(spans):
            if begin > pos:
                gaps += begin - pos
            pos = max(pos, end)
        cd_start = self.zf.start_dir
        if cd_start > pos:
            gaps += cd_start - pos
        if gaps > 0:
            self.problems.append(f"{gaps} byte(s) of the archive belong to no zip member")

    def lookup(self, rel: str) -> str | None:
        """The member torch.load reads for record `rel` ("data.pkl", "data/0"): the archive folder plus
        `rel`, matched case-insensitively (ASCII) as torch's zip reader matches it."""
        return self.folded.get(fold(self.prefix + rel))

    def tail_bytes(self, cap: int = 64 << 20) -> bytes:
        """The bytes after the end record (scanned: a loader that reads past it would run them)."""
        offset, n = self.tail
        return read_exact(self.f, offset, min(n, cap), self.path, "bytes after the zip end record") if n else b""

    def member(self, name: str, cap: int | None = None, any_method: bool = False) -> bytes:
        """A member's bytes (the first `cap`), its CRC checked here: a mismatch is a finding. A
        compressed member is inflated under limits.inflate's running cap (size and ratio): past it,
        UnsafeContent (a compression bomb), whatever the member declares. `any_method`: bzip2 and
        LZMA too (members torch never reads, scanned for other readers)."""
        info = self.infos[name]
        start = self.start(name)
        want = info.file_size if cap is None else min(cap, info.file_size)
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                data = read_exact(self.f, start, want, self.path, f"zip member {name!r}")
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                if info.compress_size > MAX_INFLATED:
                    raise Inflation(f"zip member {name!r} holds {info.compress_size:,} compressed bytes, past "
                                    f"the {MAX_INFLATED:,}-byte cap", MAX_INFLATED)
                raw = read_exact(self.f, start, info.compress_size, self.path, f"zip member {name!r}")
                data = inflate(raw, info.file_size, want, f"zip member {name!r}", MAX_INFLATED - self.inflated)
                self.inflated += len(data)
            elif any_method and info.compress_type in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
                # torch cannot read these (scan reads them for other loaders), under the same cap
                try:
                    data = read_zip_member(self.zf, info, f"zip member {name!r}", MAX_INFLATED - self.inflated)[:want]
                except Inflation:
                    raise
                except Exception as exc:  # noqa: BLE001 - bz2/lzma/zipfile raise many kinds on broken data
                    raise BadInput(self.path, f"cannot read zip member {name!r}: {exc}") from exc
                self.inflated += len(data)
            else:
                raise BadInput(self.path, f"zip member {name!r} uses compression method {info.compress_type}")
        except zlib.error as exc:
            raise BadInput(self.path, f"cannot read zip member {name!r}: {exc}") from exc
        except Inflation as exc:
            raise UnsafeContent(self.path, str(exc), "refusing the file (statecli scan lists every finding)") from exc
        if len(data) != want:
            raise BadInput(self.path, f"cannot read zip member {name!r}: it holds fewer bytes than declared")
        if want == info.file_size and zlib.crc32(data) != info.CRC:
            self.problems.append(f"CRC error in zip member {name!r} (torch.load ignores CRCs)")
        return data

    def check_crc(self, name: str) -> None:
        """A stored member's CRC, checked in chunks (a tensor record is never held whole); a
        compressed one is read as `member` reads it."""
        info = self.infos[name]
        if info.compress_type != zipfile.ZIP_STORED:
            self.member(name)
            return
        start, left, crc = self.start(name), info.file_size, 0
        while left:
            n = min(left, 1 << 22)
            crc = zlib.crc32(read_exact(self.f, start, n, self.path, f"zip member {name!r}"), crc)
            start += n
            left -= n
        if crc != info.CRC:
            self.problems.append(f"CRC error in zip member {name!r} (torch.load ignores CRCs)")

    @property
    def torchscript(self) -> bool:
        """torch.load hands the archive to torch.jit.load when its record list (names as written, the
        folder stripped) holds constants.pkl; torch.jit.load then finds code/ case-insensitively."""
        return self.prefix + "constants.pkl" in self.infos

    def side_pickles(self) -> list[str]:
        """A TorchScript archive's pickles besides data.pkl (constants, traced inputs, debug info):
        scanned by `scan` and by the reader alike, so both refuse a payload parked there."""
        if not self.torchscript:
            return []
        p = self.prefix
        return [n for n in self.infos if n.startswith(p) and (
            fold(n[len(p):]) in ("constants.pkl", "traced_inputs.pkl") or fold(n).endswith(".debug_pkl"))]

    def unexpected(self, storage_keys: set[str]) -> list[str]:
        """Members torch.load never reads: a payload parked where only other tools look."""
        p, out = self.prefix, []
        ts = self.torchscript
        keys = {fold(k) for k in storage_keys}
        for name in self.infos:
            if not name.startswith(p):
                continue  # reported as outside the folder
            rel = fold(name[len(p):])  # as torch looks records up
            if rel in (TORCHSCRIPT_MEMBERS if ts else TORCH_MEMBERS) or rel.endswith("/"):
                continue
            if ts and rel.startswith(TORCHSCRIPT_FOLDERS):
                continue
            if rel.startswith("data/") and rel[5:] in keys:
                continue
            out.append(name)
        return out

    def close(self) -> None:
        if hasattr(self, "zf"):
            self.zf.close()
        self.f.close()


_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(name: str) -> str:
    """A member name as torch's zip reader compares it: ASCII letters lowered (miniz's MZ_TOLOWER),
    nothing else (str.lower would also fold non-ASCII letters, which miniz keeps)."""
    return name.lower() if name.isascii() else name.translate(_FOLD)


def _local_headers(f: BinaryIO, offsets: list[int], size: int) -> dict[int, bytes]:
    """offset -> that local header's fixed part and name, for the headers that block reads cover
    (one pread per _BLOCK instead of two per member). A header missing here is read on its own."""
    out: dict[int, bytes] = {}
    todo = sorted(set(o for o in offsets if 0 <= o < size))
    if isinstance(f, SourceFile):  # a remote archive: one small range per header, at most _IN_FLIGHT at once
        from concurrent.futures import ThreadPoolExecutor

        src = f.src
        with ThreadPoolExecutor(_IN_FLIGHT) as pool:
            heads = pool.map(lambda o: src.pread(o, min(_LOCAL_HEADER.size + _NAME_ROOM, size - o)), todo)
            return dict(zip(todo, heads))
    unpack = _LOCAL_HEADER.unpack_from
    i = 0
    while i < len(todo):
        start = j = todo[i]
        k = i + 1
        while k < len(todo) and todo[k] - j <= _GAP and todo[k] + _LOCAL_HEADER.size + _NAME_ROOM - start <= _BLOCK:
            j = todo[k]
            k += 1
        if k == i + 1:  # a lone header: left to the caller's two small reads
            i = k
            continue
        try:
            block = os.pread(f.fileno(), min(j + _LOCAL_HEADER.size + _NAME_ROOM, size) - start, start)
        except (AttributeError, OSError, ValueError):
            return out
        for o in todo[i:k]:
            at = o - start
            if at + _LOCAL_HEADER.size <= len(block):
                end = at + _LOCAL_HEADER.size + unpack(block, at)[9]
                if end <= len(block):
                    out[o] = block[at:end]
        i = k
    return out


class Member(NamedTuple):
    """A central directory record: the ZipInfo fields statecli reads, nothing else. Compared by
    identity where it matters (a duplicate name's shadowed copy), as ZipInfo objects are."""

    filename: str
    flag_bits: int
    compress_type: int
    CRC: int
    compress_size: int
    file_size: int
    header_offset: int


class _Directory:
    """The central directory of an archive as torch.save writes it, parsed with one struct call per
    record (zipfile builds a full ZipInfo per member: 0.4 s for 50,000 tensors). It answers what
    Archive and scan ask of a ZipFile; anything else is left to a real ZipFile, built on demand."""

    def __init__(self, f: BinaryIO, members: list[Member], start_dir: int) -> None:
        self.f, self.members, self.start_dir = f, members, start_dir
        self._zip: zipfile.ZipFile | None = None

    @classmethod
    def read(cls, f: BinaryIO) -> _Directory | None:
        """The directory, or None wherever zipfile's reading could differ from this one's (a
        comment, prepended bytes, extra fields, NUL in a name, a truncated or unusual record):
        zipfile then reads the file, and its errors are the ones reported."""
        try:
            size = os.fstat(f.fileno()).st_size
            if size < _EOCD_STRUCT.size:
                return None
            tail = os.pread(f.fileno(), min(size, _EOCD_STRUCT.size + _ZIP64_LOCATOR.size + _ZIP64_EOCD.size),
                            max(0, size - _EOCD_STRUCT.size - _ZIP64_LOCATOR.size - _ZIP64_EOCD.size))
        except (AttributeError, OSError, ValueError):
            return None
        eocd = _EOCD_STRUCT.unpack(tail[-_EOCD_STRUCT.size:])
        if eocd[0] != _EOCD or eocd[7] != 0:  # a comment: zipfile searches for the record
            return None
        cd_size, cd_offset, location = eocd[5], eocd[6], size - _EOCD_STRUCT.size
        concat = location - cd_size - cd_offset
        if len(tail) >= _EOCD_STRUCT.size + _ZIP64_LOCATOR.size:
            loc = _ZIP64_LOCATOR.unpack_from(tail, len(tail) - _EOCD_STRUCT.size - _ZIP64_LOCATOR.size)
            if loc[0] == b"PK\x06\x07":
                if loc[1] != 0 or loc[3] > 1 or len(tail) < _ZIP64_EOCD.size + _ZIP64_LOCATOR.size + _EOCD_STRUCT.size:
                    return None
                z64 = _ZIP64_EOCD.unpack_from(tail, 0)
                if z64[0] != b"PK\x06\x06":
                    return None
                cd_size, cd_offset = z64[8], z64[9]
                concat = location - cd_size - cd_offset - _ZIP64_EOCD.size - _ZIP64_LOCATOR.size
        if concat != 0 or cd_offset + cd_size > size:
            return None
        try:
            data = os.pread(f.fileno(), cd_size, cd_offset)
        except (OSError, ValueError, OverflowError):
            return None
        if len(data) != cd_size:
            return None
        members: list[Member] = []
        unpack, fixed, at, make = _CENTRAL.unpack_from, _CENTRAL.size, 0, Member._make
        while at < cd_size:
            if at + fixed > cd_size:
                return None
            rec = unpack(data, at)
            name_len, extra_len, comment_len = rec[12], rec[13], rec[14]
            if rec[0] != b"PK\x01\x02" or rec[3] > zipfile.MAX_EXTRACT_VERSION or extra_len:
                return None
            end = at + fixed + name_len
            if end + comment_len > cd_size:
                return None
            raw = data[at + fixed:end]
            try:
                name = raw.decode("utf-8") if rec[5] & 0x800 else raw.decode("cp437")
            except UnicodeDecodeError:
                return None
            if "\0" in name or (os.sep != "/" and os.sep in name):
                return None
            members.append(make((name, rec[5], rec[6], rec[9], rec[10], rec[11], rec[18])))
            at = end + comment_len
        return cls(f, members, cd_offset)

    def infolist(self) -> list[Member]:
        return list(self.members)

    def open(self, info: Member) -> Any:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.f)
        index = next(i for i, m in enumerate(self.members) if m is info)
        return self._zip.open(self._zip.infolist()[index])

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


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
