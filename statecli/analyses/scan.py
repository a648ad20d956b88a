"""`statecli scan`: list every global a pickle references and every call it makes, statically (a
stack simulation with memo tracking over pickletools.genops), in every pickle of a checkpoint and in
nested byte strings; nothing is executed."""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickletools
import struct
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import BadInput
from ..formats import resolve_path
from ..formats._common import open_regular
from ..formats.unpickler import DCP_TRUSTED_PREFIXES, RestrictedUnpickler, dangerous_reason
from ..state import Verdict

SAFE, NEEDS_TRUST, DANGEROUS, MALFORMED = Verdict.SAFE, Verdict.NEEDS_TRUST, Verdict.DANGEROUS, Verdict.MALFORMED
MAX_NESTING = 16
MIN_NESTED = 4  # bytes/str constants at least this long are tried as nested pickles


@dataclass
class GlobalRef:
    name: str
    where: str  # "archive/data.pkl", "pickle 4 of 5", "nested bytes in ..."
    opcode: str
    verdict: Verdict  # safe, needs-trust or dangerous


@dataclass
class ScanResult:
    path: str
    format: str
    globals: list[GlobalRef] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (opcode, callee, where)
    problems: list[str] = field(default_factory=list)  # malformed container/pickle findings
    pickles: int = 0

    @property
    def verdict(self) -> Verdict:
        v = MALFORMED if self.problems else SAFE
        for g in self.globals:
            if g.verdict.rank > v.rank:
                v = g.verdict
        return v


class _Mark:
    pass


_MARK = _Mark()


@dataclass(frozen=True)
class _Global:
    name: str


def _classify(module: str, name: str, trusted: tuple[str, ...]) -> Verdict:
    # Python 2 names, mapped as the unpickler (and torch's weights-only loader) maps them.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    full = f"{module}.{name}"
    probe = RestrictedUnpickler(b".", lambda pid: None)
    if probe._allowed(module, name) is not None:
        return SAFE
    if dangerous_reason(module, name):
        return DANGEROUS
    if full.startswith(trusted):
        return SAFE
    return NEEDS_TRUST


def scan_pickle(data: bytes | IO[bytes], where: str, result: ScanResult, trusted: tuple[str, ...] = (),
                depth: int = 0) -> int:
    """Simulate the pickle machine's stack (strings, memo, globals) without building any object.
    Reads `data` as a stream (a zip member of any size). Returns the offset just past STOP (0 when
    the stream ended before it). Records globals, calls on them and nested pickles."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    proto = 0
    end = 0
    result.pickles += 1
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        base = stream.tell()
    except (OSError, AttributeError):
        base = 0
    try:
        for op, arg, pos in pickletools.genops(stream):
            pos = (pos or base) - base
            name = op.name
            end = pos + 1
            if name == "PROTO":
                proto = int(arg or 0)
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                g = _record(result, module, attr, where, name, proto, trusted)
                if name == "INST":
                    _pop_to_mark(stack)
                    result.calls.append(("INST", g.name, where))
                    stack.append(None)
                else:
                    stack.append(g)
                continue
            if name == "STACK_GLOBAL":
                attr_v = stack.pop() if stack else None
                module_v = stack.pop() if stack else None
                if isinstance(module_v, str) and isinstance(attr_v, str):
                    stack.append(_record(result, module_v, attr_v, where, name, proto, trusted))
                else:
                    result.problems.append(f"{where}: STACK_GLOBAL at byte {pos} with operands that are not strings")
                    stack.append(None)
                continue
            if name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "OBJ"):
                callee = _callee(stack, name)
                module, _, attr = callee.name.rpartition(".") if isinstance(callee, _Global) else ("", "", "")
                if isinstance(callee, _Global) and _classify(module, attr, trusted) != SAFE:
                    result.calls.append((name, callee.name, where))
            if name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg or 0)] = stack[-1] if stack else None
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(arg or 0)))
                continue
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                        "SHORT_BINSTRING"):
                text = arg if isinstance(arg, str) else str(arg)
                if len(text) >= MIN_NESTED:  # protocol 2 writes bytes as _codecs.encode(latin-1 str)
                    try:
                        _scan_nested(text.encode("latin-1"), f"{where} > string at {pos}", result, trusted, depth)
                    except UnicodeEncodeError:
                        pass
                stack.append(text)
                continue
            if name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8") and isinstance(arg, (bytes, bytearray)):
                _scan_nested(bytes(arg), f"{where} > bytes at {pos}", result, trusted, depth)
                stack.append(None)
                continue
            if name in ("EXT1", "EXT2", "EXT4"):
                # A copyreg extension code names a global through the loader's registry: unknowable here.
                ext = GlobalRef(f"<copyreg extension {arg}>", where, name, NEEDS_TRUST)
                result.globals.append(ext)
                stack.append(_Global(ext.name))
                continue
            if name == "DUP":
                stack.append(stack[-1] if stack else None)
                continue
            _generic(stack, op)
            if name == "STOP":
                break
    except Exception as exc:  # noqa: BLE001 - genops raises ValueError and others on broken streams
        result.problems.append(f"{where}: truncated or malformed pickle stream ({exc})")
    return end


def _record(result: ScanResult, module: str, attr: str, where: str, opcode: str, proto: int,
            trusted: tuple[str, ...]) -> _Global:
    verdict = _classify(module, attr, trusted)
    g = GlobalRef(f"{module}.{attr}", where, opcode, verdict)
    result.globals.append(g)
    return _Global(g.name)


def _callee(stack: list[Any], name: str) -> Any:
    if name == "OBJ":
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is _MARK:
                return stack[i + 1] if i + 1 < len(stack) else None
        return None
    back = {"REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3, "BUILD": 2}[name]
    return stack[-back] if len(stack) >= back else None


def _pop_to_mark(stack: list[Any]) -> None:
    while stack:
        if stack.pop() is _MARK:
            return


def _generic(stack: list[Any], op: Any) -> None:
    before = op.stack_before
    if pickletools.markobject in before:
        _pop_to_mark(stack)
        for _ in range(before.index(pickletools.markobject)):
            if stack:
                stack.pop()
    else:
        for _ in before:
            if stack:
                stack.pop()
    for item in op.stack_after:
        stack.append(_MARK if item is pickletools.markobject else None)


def _scan_nested(data: bytes, where: str, result: ScanResult, trusted: tuple[str, ...], depth: int) -> None:
    """A byte string that is a torch archive or a pickle (any protocol, whole or cut short) is scanned
    too: torch.storage._load_from_bytes and pickle.loads would load it."""
    if len(data) < MIN_NESTED:
        return
    if depth >= MAX_NESTING:
        result.problems.append(f"{where}: pickles nested more than {MAX_NESTING} deep")
        return
    if data[:4] == b"PK\x03\x04":
        _scan_zip_bytes(data, where, result, trusted, depth + 1)
        return
    sub = ScanResult(result.path, "")
    scan_pickle(data, where, sub, trusted, depth + 1)
    # Random bytes rarely parse as opcodes that name a global; a string that does is a pickle, even a
    # truncated one, and its globals count. Its own parse problems do not: it may be plain data.
    if sub.globals:
        result.globals += sub.globals
        result.calls += sub.calls
        result.pickles += sub.pickles
        result.problems += [p for p in sub.problems if "nested more than" in p]


def _scan_zip_bytes(data: bytes, where: str, result: ScanResult, trusted: tuple[str, ...], depth: int) -> None:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return
    for info in zf.infolist():
        try:
            member = zf.read(info)
        except Exception:  # noqa: BLE001
            continue
        if info.filename.endswith(".pkl") or member[:1] == b"\x80":
            scan_pickle(member, f"{where} > {info.filename}", result, trusted, depth)
        elif "/data/" not in info.filename:
            _scan_nested(member, f"{where} > {info.filename}", result, trusted, depth)


def _check_zip(path: str, f: Any, result: ScanResult) -> zipfile.ZipFile | None:
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        result.problems.append(f"corrupt zip archive: {exc}")
        return None
    names = [i.filename for i in zf.infolist()]
    for n in sorted({n for n in names if names.count(n) > 1}):
        result.problems.append(f"duplicate zip member {n!r}")
    for info in zf.infolist():
        if info.flag_bits & 0x1:
            result.problems.append(f"zip member {info.filename!r} has the encryption flag")
        if info.header_offset < 0:
            result.problems.append(f"zip member {info.filename!r} has an impossible header offset")
            continue
        f.seek(info.header_offset)
        head = f.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            result.problems.append(f"zip member {info.filename!r} has no local header")
            continue
        nlen = struct.unpack("<H", head[26:28])[0]
        local = f.read(nlen).decode("utf-8", "replace")
        if local != info.filename:
            result.problems.append(f"zip local header name {local!r} differs from central directory {info.filename!r}")
    return zf


def scan(path: str, verify_crc: bool = True) -> ScanResult:
    """Scan one checkpoint (file, sharded folder or DCP directory). `verify_crc` reads every zip
    member to check its CRC (the whole file); without it only the pickles are read."""
    target = resolve_path(path)
    if os.path.isdir(target):
        meta = os.path.join(target, ".metadata")
        result = ScanResult(path, "torch.distributed.checkpoint")
        scan_pickle(_read_all(meta), ".metadata", result, DCP_TRUSTED_PREFIXES + ("pathlib.PosixPath",))
        return result
    if target.endswith(".index.json"):
        from ..formats.sharded import read_index

        wmap, _ = read_index(target)
        result = ScanResult(path, "sharded")
        folder = os.path.dirname(os.path.abspath(target))
        for shard in sorted(set(wmap.values())):
            if "/" in shard or "\\" in shard or shard.startswith(".."):
                result.problems.append(f"index names shard {shard!r} outside its folder")
                continue
            sub = scan(os.path.join(folder, shard), verify_crc)
            for g in sub.globals:
                g.where = f"{shard}: {g.where}"
            result.globals += sub.globals
            result.calls += sub.calls
            result.problems += [f"{shard}: {p}" for p in sub.problems]
            result.pickles += sub.pickles
        return result
    with open_regular(target) as f:
        head = f.read(512)
        f.seek(0)
        if head[:4] == b"PK\x03\x04":
            return _scan_zip(path, f, verify_crc)
        from ..formats import safetensors as st

        if st.detect(head):
            result = ScanResult(path, "safetensors")
            try:
                st.read(target)
            except BadInput as exc:
                result.problems.append(exc.problem)
            return result
        if len(head) > 262 and head[257:262] == b"ustar":
            return _scan_tar(path, target)
        return _scan_pickles(path, f)


def _scan_zip(path: str, f: Any, verify_crc: bool = True) -> ScanResult:
    result = ScanResult(path, "torch zip")
    zf = _check_zip(path, f, result)
    if zf is None:
        return result
    bad = _testzip(zf) if verify_crc else None
    if bad:
        result.problems.append(f"CRC error in zip member {bad!r}")
    for info in zf.infolist():
        is_data = "/data/" in info.filename and not info.filename.endswith(".pkl")
        try:
            with zf.open(info) as member:
                head = member.read(2)
            if info.filename.endswith(".pkl") or (not is_data and head[:1] == b"\x80"):
                with zf.open(info) as member:  # streamed: a member of any size is scanned whole
                    scan_pickle(member, info.filename, result)
            elif not is_data and info.file_size <= 64 << 20:
                _scan_nested(zf.read(info), info.filename, result, (), 0)
        except Exception as exc:  # noqa: BLE001 - zipfile raises many kinds on broken members
            result.problems.append(f"cannot read zip member {info.filename!r}: {exc}")
    return result


def _scan_pickles(path: str, f: Any) -> ScanResult:
    """A legacy torch file (magic-number pickle first, in any protocol) or a bare pickle."""
    first = ScanResult(path, "")
    scan_pickle(f, "pickle 1", first)
    f.seek(0)
    legacy = _is_legacy_magic(f)
    f.seek(0)
    result = ScanResult(path, "torch legacy" if legacy else "pickle")
    # torch.load reads five pickles in a legacy file (magic, protocol, sys_info, object, storage
    # keys) before the raw storages; any of them may carry a payload.
    for n in range(5 if legacy else 1):
        start = f.tell()
        end = scan_pickle(f, f"pickle {n + 1}", result)
        if end <= 0 or result.problems:
            break
        f.seek(start + end)
    return result


def _is_legacy_magic(f: Any) -> bool:
    from ..formats.torchlegacy import MAGIC_NUMBER

    try:
        for op, arg, _ in pickletools.genops(f):
            if op.name in ("PROTO", "FRAME"):
                continue
            return op.name in ("LONG1", "LONG4", "LONG", "INT") and arg == MAGIC_NUMBER
    except Exception:  # noqa: BLE001
        return False
    return False


def _scan_tar(path: str, target: str) -> ScanResult:
    """Pre-0.4 tar checkpoints: torch.load unpickles the 'sys_info', 'pickle', 'storages' and 'tensors'
    members; every member is scanned as a sequence of pickles."""
    import tarfile

    result = ScanResult(path, "torch tar (pre-0.4)")
    try:
        with tarfile.open(target, "r:") as tf:
            for member in tf.getmembers():
                if not member.isfile():
                    continue
                fobj = tf.extractfile(member)
                if fobj is None:
                    continue
                data = fobj.read()
                pos = 0
                while pos < len(data):
                    sub = ScanResult(path, "")
                    end = scan_pickle(data[pos:], f"{member.name} @ {pos}", sub)
                    result.globals += sub.globals
                    result.calls += sub.calls
                    result.pickles += sub.pickles
                    if end <= 0 or sub.problems:
                        break
                    pos += end
    except (tarfile.TarError, OSError) as exc:
        result.problems.append(f"corrupt tar archive: {exc}")
    return result


def _testzip(zf: zipfile.ZipFile) -> str | None:
    try:
        return zf.testzip()
    except Exception as exc:  # noqa: BLE001
        return str(exc)


def _read_all(path: str) -> bytes:
    with open_regular(path) as f:
        data = f.read(1 << 30)
    return data
