"""Every pickle in a byte stream, read the way CPython reads it: the C unpickler (our restricted
subclass, lenient, inert stubs) names each global it resolves, and a static opcode walk over the same
bytes names the opcodes, the calls and any nested pickle in a string. A global the C unpickler
resolves that the static walk misses is reported as such: that gap is how scanners are steered.
Shared by `scan` and the readers, so both see the same globals with the same verdicts."""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..state import Verdict
from .frames import FrameCheck
from .unpickler import RestrictedUnpickler, StorageRef, StubObject, storage_from_pid
from .verdict import normalize, verdict

MAX_NESTING = 16
# The name a STACK_GLOBAL gets when its operands are not constant strings of the stream (or memo).
COMPUTED_GLOBAL = "<global whose module or name is computed while loading>"
MIN_NESTED = 4  # bytes/str constants at least this long are tried as nested pickles
MAX_NESTED_BYTES = 64 << 20


@dataclass(frozen=True)
class GlobalRef:
    name: str
    where: str  # "archive/data.pkl", "pickle 4", "... > bytes at 120"
    opcode: str  # GLOBAL, STACK_GLOBAL, INST, EXT1..4, or "?" when only the C unpickler saw it
    verdict: Verdict
    detail: str = ""


@dataclass
class Findings:
    """What reading a file's pickles found. `problems` are findings (exit 3: a payload could hide
    there); `errors` make the input unreadable (exit 2)."""

    globals: list[GlobalRef] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (opcode, callee, where)
    problems: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)  # chat-template routes to code (GGUF): exit 3, dangerous
    errors: list[str] = field(default_factory=list)
    pickles: int = 0
    storage_keys: set[str] = field(default_factory=set)  # persistent ids the pickles named
    code: list[str] = field(default_factory=list)  # TorchScript sources torch.jit.load would compile
    # The problems that are pickles nested past MAX_NESTING, kept apart too: a nested scan's other
    # problems (bytes that only parse as a pickle) are dropped, these never are.
    too_deep: list[str] = field(default_factory=list)

    @property
    def dangerous(self) -> list[str]:
        return list(dict.fromkeys(g.name for g in self.globals if g.verdict is Verdict.DANGEROUS))

    def merge(self, other: Findings) -> None:
        self.globals += other.globals
        self.calls += other.calls
        self.problems += other.problems
        self.templates += other.templates
        self.errors += other.errors
        self.pickles += other.pickles
        self.storage_keys |= other.storage_keys
        self.code += other.code
        self.too_deep += other.too_deep


@dataclass(frozen=True)
class Context:
    trusted: frozenset[str] = frozenset()
    torchscript: bool = False
    depth: int = 0


def scan_stream(data: bytes | BinaryIO, where: str, acc: Findings, ctx: Context = Context(), start: int = 0,
                max_pickles: int | None = None) -> int:
    """Read pickles from data[start:] until EOF (or `max_pickles`); returns the offset reading stopped
    at. A stretch that is not a pickle ends reading and is left to the caller (offset < size).
    `data` is bytes or a seekable binary file (a legacy file is read in place, never whole)."""
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    size = f.seek(0, 2)
    pos, n = start, 0
    while pos < size and (max_pickles is None or n < max_pickles):
        label = f"pickle {n + 1}" if where == "pickle" else where if n == 0 else f"{where} (pickle {n + 1})"
        end, ok = scan_one(f, pos, label, acc, ctx, first=n == 0)
        n += 1
        if not ok or end <= pos:
            return pos if n > 1 else max(end, pos)
        pos = end
    return pos


def scan_one(bio: BinaryIO, pos: int, where: str, acc: Findings, ctx: Context, first: bool = True) -> tuple[int, bool]:
    """One pickle at offset `pos` of `bio`: (offset just past its STOP, read cleanly)."""
    bio.seek(pos)
    keys: set[str] = set()
    up = RestrictedUnpickler(bio, _recording_resolver(keys), ctx.trusted, ctx.torchscript, lenient=True)
    error: Exception | None = None
    try:
        up.load_value()
    except Exception as exc:  # noqa: BLE001 - any failure of a hostile stream ends this pickle
        error = exc
    dyn_end = bio.tell()
    static = _static(bio, pos, where, ctx)
    if error is not None and not up.refs and not static.globals and not first:
        return pos, False  # not a pickle at all: the caller reports the stretch
    acc.pickles += 1
    acc.storage_keys |= keys
    _merge_globals(up, static, where, acc, ctx)
    acc.calls += [(o, c, w) for o, c, w in static.calls if _callee_verdict(c, acc) is not Verdict.SAFE]
    acc.globals += static.nested.globals
    acc.calls += static.nested.calls
    acc.problems += static.nested.problems
    acc.too_deep += static.nested.too_deep
    acc.problems += static.framing
    acc.pickles += static.nested.pickles
    if error is not None:
        acc.errors.append(f"{where}: truncated or malformed pickle ({error})".replace(" ()", ""))
        return max(dyn_end, static.end), False
    acc.errors += [f"{where}: {p}" for p in up.problems]
    if static.end and static.end != dyn_end and static.end < dyn_end:
        acc.problems.append(f"{where}: {dyn_end - static.end} byte(s) inside the last frame after STOP")
    return dyn_end, True


def _merge_globals(up: RestrictedUnpickler, static: _Static, where: str, acc: Findings, ctx: Context) -> None:
    pending = list(static.globals)  # (name, opcode) in stream order
    for ref in up.refs:
        match = next((i for i, (name, _) in enumerate(pending) if name == ref.name), None)
        computed = next((i for i, (name, _) in enumerate(pending) if name == COMPUTED_GLOBAL), None)
        if match is None and computed is not None:
            # What the C unpickler resolved from operands computed while loading (str('os')...).
            pending.pop(computed)
            acc.globals.append(GlobalRef(ref.name, where, "STACK_GLOBAL", Verdict.DANGEROUS, _COMPUTED_DETAIL))
            continue
        if match is None:
            acc.globals.append(GlobalRef(ref.name, where, "?", ref.verdict, ref.detail))
            acc.problems.append(f"{where}: the C unpickler resolves {ref.name} where a static opcode walk sees "
                                "none (frame or opcode confusion)")
            continue
        _, opcode = pending.pop(match)
        acc.globals.append(GlobalRef(ref.name, where, opcode, ref.verdict, ref.detail))
    for name, opcode in pending:  # seen statically only: after an error, or steered the other way
        module, _, attr = name.rpartition(".")
        if name == COMPUTED_GLOBAL:
            acc.globals.append(GlobalRef(name, where, opcode, Verdict.DANGEROUS, _COMPUTED_DETAIL))
            continue
        if opcode.startswith("EXT"):
            v = Verdict.NEEDS_TRUST
        else:
            v = verdict(module, attr, ctx.trusted, ctx.torchscript)
        acc.globals.append(GlobalRef(name, where, opcode, v))


_COMPUTED_DETAIL = "a global chosen at load time: STACK_GLOBAL's module or name is not a constant string"


def _callee_verdict(callee: str, acc: Findings) -> Verdict:
    for g in reversed(acc.globals):
        if g.name == callee:
            return g.verdict
    return Verdict.NEEDS_TRUST


def _recording_resolver(keys: set[str]) -> Any:
    def resolve(pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) > 1 and pid[0] == "module":
            # A legacy full-model save records each module class with its source text: the loader
            # gets the class (already a stub from find_class) back; the source is data, never read.
            return pid[1]
        try:
            stype, key, location, numel, _ = storage_from_pid(pid)
        except pickle.UnpicklingError:
            return _PID_STUB()
        keys.add(key)
        return StorageRef(key, stype.dtype, location, numel, stype.typed)

    return resolve


_PID_STUB = type("PersistentId", (StubObject,), {"__stub_name__": "<persistent id>"})


# -- the static walk ------------------------------------------------------------------------------

class _Mark:
    pass


_MARK = _Mark()


@dataclass(frozen=True)
class _G:
    name: str


@dataclass
class _Static:
    globals: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    nested: Findings = field(default_factory=Findings)
    end: int = 0
    framing: list[str] = field(default_factory=list)


def _static(stream: BinaryIO, pos: int, where: str, ctx: Context) -> _Static:
    """A stack simulation over pickletools.genops: globals with their opcode, calls on globals and
    byte/str constants that are themselves pickles. Builds no object."""
    walk = _Walk(where, ctx)
    frames = FrameCheck(where)
    stream.seek(pos)
    try:
        for op, arg, at in pickletools.genops(stream):
            at = at or pos
            frames.op(op.name, arg, at, stream.tell())  # the position after genops yields: this opcode's end
            if walk.step(op, arg, at - pos):
                walk.out.end = at + 1
                break
    except Exception:  # noqa: BLE001 - genops raises ValueError and others on broken streams
        pass
    walk.out.framing = frames.problems
    return walk.out


class _Walk:
    """The static walk's state over one pickle: its findings, the simulated stack and memo. Each
    opcode that names, calls or nests something has a handler (_HANDLERS); the rest only move the
    stack (_generic)."""

    def __init__(self, where: str, ctx: Context) -> None:
        self.where, self.ctx = where, ctx
        self.out = _Static()
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}

    def step(self, op: pickletools.OpcodeInfo, arg: Any, at: int) -> bool:
        """One opcode at offset `at` of the pickle; True at STOP."""
        name: str = op.name
        handler = _HANDLERS.get(name)
        if handler is not None and handler(self, name, arg, at):
            return False
        _generic(self.stack, op)
        return name == "STOP"

    def record(self, module: str, attr: str, opcode: str) -> _G:
        m, a = normalize(module, attr)
        self.out.globals.append((f"{m}.{a}", opcode))
        return _G(f"{m}.{a}")

    def top(self) -> Any:
        return self.stack[-1] if self.stack else None

    # Handlers: True when the opcode is fully simulated, False to let _generic move the stack too.

    def global_(self, name: str, arg: Any, at: int) -> bool:
        module, _, attr = str(arg).partition(" ")
        g = self.record(module, attr, name)
        if name == "INST":
            _pop_to_mark(self.stack)
            self.out.calls.append(("INST", g.name, self.where))
            self.stack.append(None)
        else:
            self.stack.append(g)
        return True

    def stack_global(self, name: str, arg: Any, at: int) -> bool:
        attr_v = self.stack.pop() if self.stack else None
        module_v = self.stack.pop() if self.stack else None
        if isinstance(module_v, str) and isinstance(attr_v, str):
            self.stack.append(self.record(module_v, attr_v, name))
        else:
            # Module or name built while loading (min(), format(), str.strip, dict.get, a
            # persistent id...): the global is chosen at load time, whatever it turns out to be.
            self.out.globals.append((COMPUTED_GLOBAL, name))
            self.stack.append(_G(COMPUTED_GLOBAL))
        return True

    def call(self, name: str, arg: Any, at: int) -> bool:
        callee = _callee(self.stack, name)
        if isinstance(callee, _G):
            self.out.calls.append((name, callee.name, self.where))
        return False

    def put(self, name: str, arg: Any, at: int) -> bool:
        self.memo[int(arg or 0)] = self.top()
        return True

    def memoize(self, name: str, arg: Any, at: int) -> bool:
        self.memo[len(self.memo)] = self.top()
        return True

    def get(self, name: str, arg: Any, at: int) -> bool:
        self.stack.append(self.memo.get(int(arg or 0)))
        return True

    def text(self, name: str, arg: Any, at: int) -> bool:
        text = arg if isinstance(arg, str) else str(arg)
        if len(text) >= MIN_NESTED:  # protocol 2 writes bytes as _codecs.encode(latin-1 str)
            try:
                _nested(text.encode("latin-1"), f"{self.where} > string at {at}", self.out.nested, self.ctx)
            except UnicodeEncodeError:
                pass
        self.stack.append(text)
        return True

    def data(self, name: str, arg: Any, at: int) -> bool:
        if not isinstance(arg, (bytes, bytearray)):
            return False
        _nested(bytes(arg), f"{self.where} > bytes at {at}", self.out.nested, self.ctx)
        self.stack.append(None)
        return True

    def ext(self, name: str, arg: Any, at: int) -> bool:
        # A copyreg extension code names a global through the loader's registry: unknowable here.
        ext = f"<copyreg extension {arg}>"
        self.out.globals.append((ext, name))
        self.stack.append(_G(ext))
        return True

    def dup(self, name: str, arg: Any, at: int) -> bool:
        self.stack.append(self.top())
        return True


def _handlers() -> dict[str, Callable[[_Walk, str, Any, int], bool]]:
    by_op: dict[str, Callable[[_Walk, str, Any, int], bool]] = {"STACK_GLOBAL": _Walk.stack_global,
                                                                "MEMOIZE": _Walk.memoize, "DUP": _Walk.dup}
    for names, handler in ((("GLOBAL", "INST"), _Walk.global_), (("REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "OBJ"), _Walk.call),
                           (("PUT", "BINPUT", "LONG_BINPUT"), _Walk.put), (("GET", "BINGET", "LONG_BINGET"), _Walk.get),
                           (("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                             "SHORT_BINSTRING"), _Walk.text),
                           (("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"), _Walk.data),
                           (("EXT1", "EXT2", "EXT4"), _Walk.ext)):
        by_op.update(dict.fromkeys(names, handler))
    return by_op


_HANDLERS = _handlers()


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


def _is_name(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def scan_nested(data: bytes, where: str, acc: Findings, ctx: Context = Context()) -> None:
    """Bytes that may hold a pickle or a zip of pickles (a member torch never reads)."""
    _nested(data, where, acc, Context(ctx.trusted, ctx.torchscript, ctx.depth - 1))


def _nested(data: bytes, where: str, acc: Findings, ctx: Context) -> None:
    """A byte string that is a torch archive or a pickle (any protocol, whole or cut short) is scanned
    too: torch.storage._load_from_bytes and pickle.loads would load it. Source text and random bytes
    that only parse as globals with impossible names (a module 'lass Net(nn.Module):') are data."""
    if len(data) < MIN_NESTED or len(data) > MAX_NESTED_BYTES:
        return
    if ctx.depth >= MAX_NESTING:
        problem = f"{where}: pickles nested more than {MAX_NESTING} deep"
        acc.problems.append(problem)
        acc.too_deep.append(problem)
        return
    inner = Context(ctx.trusted, ctx.torchscript, ctx.depth + 1)
    if data[:4] == b"PK\x03\x04":
        _nested_zip(data, where, acc, inner)
        return
    if not _may_name_a_global(data):
        return  # a tensor name, a dtype string: no opcode in it could resolve a global
    sub = Findings()
    scan_stream(data, where, sub, inner)
    real = [g for g in sub.globals if _is_name(g.name) or g.opcode.startswith("EXT")]
    if real:
        acc.globals += real
        acc.calls += sub.calls
        acc.pickles += sub.pickles
        acc.problems += sub.too_deep
        acc.too_deep += sub.too_deep


def _may_name_a_global(data: bytes) -> bool:
    """Whether a pickle read from these bytes could resolve a global: only GLOBAL and INST (text, so a
    newline too), STACK_GLOBAL and EXT1/2/4 do, and a pickle nested deeper is a substring of these bytes
    (or needs a global to decode it). Most strings in a state dict's pickle fail this at C speed."""
    return (b"\n" in data and (b"c" in data or b"i" in data)) or any(op in data for op in (b"\x93", b"\x82",
                                                                                            b"\x83", b"\x84"))


def _nested_zip(data: bytes, where: str, acc: Findings, ctx: Context) -> None:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    for info in infos:
        if info.file_size > MAX_NESTED_BYTES:
            acc.problems.append(f"{where} > {info.filename}: nested member of {info.file_size} bytes not scanned")
            continue
        if info.compress_type != zipfile.ZIP_STORED:
            # torch writes every member stored; inflating here would let each nesting level multiply
            # the work (a zip in a zip in a zip), so a compressed nested member is a finding, unread.
            acc.problems.append(f"{where} > {info.filename}: a compressed member of a nested archive (not scanned)")
            continue
        try:
            member = zf.read(info)
        except Exception:  # noqa: BLE001
            continue
        if info.filename.endswith(".pkl") or member[:1] == b"\x80":
            scan_stream(member, f"{where} > {info.filename}", acc, ctx)
        elif "/data/" not in info.filename:
            _nested(member, f"{where} > {info.filename}", acc, ctx)
