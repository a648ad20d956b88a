"""The per-module view of `diff`: float64 sums gathered tensor by tensor during the value pass,
added up by module into ||b-a||/||a||, cosine similarity, max |d| and the share over tolerance."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..state import ROOT, DiffStatus
from ..vocab import SortOrder

ROW = 4096  # elements dotted in float32 before the float64 sum (see square_sum)


class _Compared(Protocol):
    """What the aggregation reads of a key's comparison (diff.KeyDiff)."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> DiffStatus: ...
    @property
    def numel(self) -> int | None: ...
    @property
    def mismatched(self) -> int | None: ...
    @property
    def max_abs(self) -> float | None: ...
    @property
    def sums(self) -> Sums | None: ...


@dataclass(frozen=True)
class Sums:
    """sum(a^2), sum(b^2), sum(a*b), sum((b-a)^2) in float64 over elements finite in both: enough
    for ||b-a||/||a|| and the cosine of a tensor, and of a module by adding its tensors' sums."""

    aa: float = 0.0
    bb: float = 0.0
    ab: float = 0.0
    dd: float = 0.0

    def __add__(self, o: Sums) -> Sums:
        return Sums(self.aa + o.aa, self.bb + o.bb, self.ab + o.ab, self.dd + o.dd)

    @property
    def rel_change(self) -> float:
        """||b-a|| / ||a||; inf when A is all zeros and B is not."""
        if self.aa > 0:
            return (self.dd / self.aa) ** 0.5
        return 0.0 if self.dd == 0 else float("inf")

    @property
    def nmse(self) -> float:
        """||b-a||^2 / ||a||^2: the error's energy against A's (a quantized B against its source A)."""
        return self.rel_change ** 2

    @property
    def snr_db(self) -> float:
        """10 log10(||a||^2 / ||b-a||^2): A's energy over the error's, in dB; inf where B equals A."""
        import math

        nmse = self.nmse
        return float("inf") if nmse == 0 else -float("inf") if nmse == float("inf") else -10 * math.log10(nmse)

    @property
    def cosine(self) -> float | None:
        """The cosine similarity of A and B as flat vectors; None when either is all zeros."""
        if self.aa <= 0 or self.bb <= 0:
            return None
        return max(-1.0, min(1.0, self.ab / (self.aa * self.bb) ** 0.5))


class ChangeFigures:
    """||b-a||/||a|| and the cosine of whatever carries `sums` (one key, or a module's keys added up)."""

    sums: Sums | None

    @property
    def rel_change(self) -> float | None:
        return self.sums.rel_change if self.sums else None

    @property
    def cosine(self) -> float | None:
        return self.sums.cosine if self.sums else None

    @property
    def nmse(self) -> float | None:
        return self.sums.nmse if self.sums else None

    @property
    def snr_db(self) -> float | None:
        return self.sums.snr_db if self.sums else None


@dataclass(frozen=True)
class ModuleChange(ChangeFigures):
    """The values of one module (a dotted prefix at the chosen depth) compared as a whole."""

    module: str
    keys: int
    changed: int
    added: int
    removed: int
    compared: int  # tensors whose values were compared
    numel: int  # elements compared
    mismatched: int
    max_abs: float | None
    sums: Sums | None

    @property
    def over_tol(self) -> float | None:
        """The share of compared elements over tolerance."""
        return self.mismatched / self.numel if self.numel else None

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "keys": self.keys, "changed": self.changed, "added": self.added,
                "removed": self.removed, "compared": self.compared, "numel": self.numel,
                "rel_change": jsonable(self.rel_change), "cosine": self.cosine, "nmse": jsonable(self.nmse),
                "snr_db": jsonable(self.snr_db),
                "max_abs": jsonable(self.max_abs), "mismatched": self.mismatched, "over_tol": self.over_tol}


MODULE_COLUMNS = ("module", "keys", "changed", "added", "removed", "compared", "numel", "rel_change", "cosine", "nmse", "snr_db",
                  "max_abs", "mismatched", "over_tol")
SORTS = tuple(SortOrder)


def jsonable(v: Any) -> Any:
    """JSON has no NaN/Inf: they become strings; tuples become lists."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)
    if isinstance(v, tuple):
        return [jsonable(x) for x in v]
    return v


AUTO = -1  # diff --depth 0: one row per numbered block


def module_prefix(name: str, depth: int) -> str:
    """The module a key belongs to at `depth` name components (as `size --depth`): its first
    `depth` components, or its parent when the name is shorter; ROOT for a top-level key.
    Depth 0 is the root (every key); AUTO picks it per key: through the first numbered block, so a
    stack of layers is one row each."""
    parts = name.split(".")
    if depth == AUTO:  # down to the first block number (blocks.4, model.layers.12), else the top module
        depth = next((i + 1 for i, p in enumerate(parts[:4]) if p.isdigit() and i < len(parts) - 1), 1)
    return ".".join(parts[:depth]) if len(parts) > depth else ".".join(parts[:-1]) or ROOT


def module_changes(keys: Sequence[_Compared], depth: int) -> tuple[ModuleChange, ...]:
    """Key comparisons added up by module, in the order the modules first appear (model order)."""
    groups: dict[str, list[_Compared]] = {}
    for k in keys:
        groups.setdefault(module_prefix(k.name, depth), []).append(k)
    out = []
    for m, ks in groups.items():
        compared = [k for k in ks if k.max_abs is not None]
        floats = [k.sums for k in compared if k.sums is not None]
        sums = sum(floats, Sums()) if floats else None
        maxes = [k.max_abs for k in compared if k.max_abs is not None]
        out.append(ModuleChange(
            m, len(ks), sum(1 for k in ks if k.status == DiffStatus.CHANGED), sum(1 for k in ks if k.status == DiffStatus.ADDED),
            sum(1 for k in ks if k.status == DiffStatus.REMOVED), len(compared), sum(k.numel or 0 for k in compared),
            sum(k.mismatched or 0 for k in compared), max(maxes) if maxes else None, sums))
    return tuple(out)


def sort_modules(mods: tuple[ModuleChange, ...], by: SortOrder) -> tuple[ModuleChange, ...]:
    """Modules in model order, or largest first by a figure (least similar first for cosine);
    modules without the figure go last, in model order."""
    if by is SortOrder.ORDER:
        return mods
    if by is SortOrder.NAME:
        return tuple(sorted(mods, key=lambda m: m.module))
    figure = _FIGURES[by]
    have = [(f, m) for m in mods if (f := figure(m)) is not None]
    return tuple(m for _, m in sorted(have, key=lambda fm: -fm[0])) + tuple(m for m in mods if figure(m) is None)


# The figure each numeric --sort orders by, largest first (cosine negated: least similar first).
_FIGURES: dict[SortOrder, Callable[[ModuleChange], float | int | None]] = {
    SortOrder.CHANGE: lambda m: m.rel_change, SortOrder.MAX_ABS: lambda m: m.max_abs,
    SortOrder.OVER_TOL: lambda m: m.over_tol, SortOrder.COSINE: lambda m: None if m.cosine is None else -m.cosine}


def as_float64(t: Any, torch: Any) -> Any:
    """A chunk as flat float64 (a complex chunk as its real and imaginary parts, so the sums below
    give |a|^2 and Re(conj(a)*b))."""
    if t.dtype.is_complex:
        return torch.view_as_real(t.to(torch.complex128)).reshape(-1)
    if t.dtype.itemsize == 1 and t.dtype.is_floating_point:  # float8: no direct path to float64 on every build
        t = t.to(torch.float32)
    return t.to(torch.float64)


def square_sum(c: Any, torch: Any) -> float:
    """sum(c^2) over the finite elements of a flat chunk, as a float64. This is the only arithmetic
    on a byte-identical chunk, so a float32 one avoids the float64 copy: rows of ROW elements are
    dotted in float32 (relative error ~1e-8) and the row sums added in float64; a non-finite
    result falls back to the masked float64 sum."""
    if c.dtype == torch.float32:
        k = c.numel() // ROW * ROW
        rows = c[:k].reshape(-1, ROW)
        tail = c[k:].to(torch.float64)
        s = float(torch.linalg.vecdot(rows, rows).sum(dtype=torch.float64)) + float(torch.dot(tail, tail))
        if s == s and s != float("inf"):
            return s
    a = as_float64(c, torch)
    if not bool(torch.isfinite(a).all()):
        a = a[torch.isfinite(a)]
    return float(torch.dot(a, a))


def pair_sums(a: Any, b: Any, finite: bool, torch: Any) -> Sums:
    """sum(a^2), sum(b^2), sum(a*b), sum((b-a)^2) of two float64 vectors, over the elements finite
    in both (`finite`: the caller knows every element is)."""
    if not finite:
        keep = torch.isfinite(a) & torch.isfinite(b)
        a, b = a[keep], b[keep]
    d = b - a
    return Sums(float(torch.dot(a, a)), float(torch.dot(b, b)), float(torch.dot(a, b)), float(torch.dot(d, d)))
