"""`statecli show CKPT KEY`: one tensor in full: its statistics, an exact histogram, its first and
extreme values, and where it sits in the module tree. Reads that one tensor's values only."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput, ExitCode, UsageError
from ..io.stdin import shown_path
from ..state import ROOT, SCHEMA_VERSION, Checkpoint, Entry, Stats
from .module_tree import build_tree, tree_path
from .stats import not_summarised, tensor_stats


@dataclass(frozen=True)
class Level:
    """A module on the path to the tensor, with the totals of everything below it."""

    path: str
    tensors: int
    numel: int
    nbytes: int  # distinct storage

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.path, "tensors": self.tensors, "numel": self.numel, "nbytes": self.nbytes}


@dataclass(frozen=True)
class Extreme:
    index: tuple[int, ...]
    value: float


@dataclass(frozen=True)
class ShowResult:
    checkpoint: Checkpoint
    entry: Entry
    stats: Stats | None
    first: tuple[Any, ...]
    smallest: tuple[Extreme, ...]
    largest: tuple[Extreme, ...]
    path: tuple[Level, ...]  # (root) first, the tensor's own module last
    siblings: tuple[Entry, ...]  # the tensors directly in the same module, this one included

    exit_code = ExitCode.OK
    columns = ("bin", "lo", "hi", "count")

    def edges(self) -> list[float]:
        """The histogram's bin edges: numpy.histogram's for the same range and bin count."""
        s = self.stats
        if s is None or s.finite_min is None or s.finite_max is None or not s.hist:
            return []
        lo, hi = (s.finite_min - 0.5, s.finite_max + 0.5) if s.finite_min == s.finite_max else (s.finite_min, s.finite_max)
        n = len(s.hist)
        return [lo + i * ((hi - lo) / n) for i in range(n)] + [hi]

    def rows(self) -> list[dict[str, Any]]:
        e = self.edges()
        return [{"bin": i, "lo": e[i], "hi": e[i + 1], "count": c} for i, c in enumerate(self.stats.hist)] \
            if self.stats and e else []

    @property
    def md_title(self) -> str:
        return f"# {shown_path(self.checkpoint)}: {self.entry.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "path": shown_path(self.checkpoint), "format": str(self.checkpoint.format),
            "entry": self.entry.to_dict(self.stats), "histogram_edges": self.edges(),
            "first": list(self.first),
            "smallest": [{"index": list(x.index), "value": x.value} for x in self.smallest],
            "largest": [{"index": list(x.index), "value": x.value} for x in self.largest],
            "module_path": [lv.to_dict() for lv in self.path],
            "siblings": [s.name for s in self.siblings],
        }


def find_entry(ck: Checkpoint, key: str) -> Entry:
    """The entry named `key` (model state first, then other containers); a miss names close keys."""
    for e in sorted(ck.entries, key=lambda e: e.group != ""):
        if e.name == key or (e.group and f"{e.group}.{e.name}" == key):
            return e
    close = difflib.get_close_matches(key, [e.name for e in ck.entries], n=3)
    raise UsageError(shown_path(ck), f"no entry named {key!r}",
                     f"did you mean: {', '.join(close)}" if close else "list the keys with: statecli inspect " + shown_path(ck))


def module_path(ck: Checkpoint, e: Entry) -> tuple[tuple[Level, ...], tuple[Entry, ...]]:
    """The modules from the root to `e` with their totals, and the tensors beside `e` in its module."""
    same = [x for x in ck.entries if x.group == e.group and x.tensor is not None]
    tree = build_tree(same)
    base = tree_path(e)[:-len(e.name)]  # "group." for an entry of another container named without it
    parts = e.name.split(".")
    levels = []
    for i in range(len(parts)):
        prefix = ".".join(parts[:i])
        node = tree.nodes.get(base + prefix if prefix else base[:-1])  # none: no tensor below (a value's path)
        levels.append(Level(prefix or ROOT, *((node.tensors, node.numel, node.nbytes) if node else (0, 0, 0))))
    parent = ".".join(parts[:-1])
    siblings = tuple(x for x in same if ".".join(x.name.split(".")[:-1]) == parent)
    return tuple(levels), siblings


def _unravel(i: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for s in reversed(shape):
        i, r = divmod(i, s) if s else (i, 0)
        out.append(r)
    return tuple(reversed(out))


def extremes(t: Any, k: int, chunk: int = 1 << 22) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """The k smallest and k largest finite values with their flat indices, chunk by chunk; ties go to
    the lower index."""
    import numpy as np

    from .stats import as_array

    flat = as_array(t).reshape(-1)
    small: list[tuple[int, float]] = []
    large: list[tuple[int, float]] = []
    for start in range(0, flat.size, chunk):
        c = flat[start:start + chunk]
        c = (c.astype(np.float32) if c.dtype.itemsize == 1 and c.dtype.kind == "V" else c).astype(np.float64)
        idx = np.flatnonzero(np.isfinite(c))
        vals = c[idx]
        for into, sign in ((large, -1.0), (small, 1.0)):
            m = min(k, vals.size)
            if not m:
                continue
            key = vals * sign
            part = np.argpartition(key, m - 1)[:m] if m < vals.size else np.arange(vals.size)
            cut = key[part].max()  # the k-th smallest key: every element below it, then ties by index
            pick = np.concatenate([np.flatnonzero(key < cut), np.flatnonzero(key == cut)])[:m]
            into += [(start + int(idx[i]), float(vals[i])) for i in pick]
    small = sorted(small, key=lambda x: (x[1], x[0]))[:k]
    large = sorted(large, key=lambda x: (-x[1], x[0]))[:k]
    return small, large


def first_values(t: Any, n: int) -> tuple[Any, ...]:
    """The first n values in row-major order, as Python numbers (narrow floats widened to float)."""
    import numpy as np

    from .stats import as_array

    head = as_array(t).reshape(-1)[:n]
    if head.dtype.kind == "V" or head.dtype == np.float16:  # bfloat16/float8 (ml_dtypes) and float16
        head = head.astype(np.float32)
    if head.dtype.kind == "c":
        return tuple(complex(x) for x in head.tolist())
    return tuple(head.tolist())


def show(ck: Checkpoint, key: str, bins: int = 40, first: int = 10, extreme: int = 5) -> ShowResult:
    """Everything statecli can say about one entry; a tensor's values are read once for the
    statistics, exact percentiles and an exact histogram (that tensor's finite values are held in memory)."""
    if bins < 1:
        raise UsageError(None, "--bins must be at least 1")
    e = find_entry(ck, key)
    path, siblings = module_path(ck, e)
    t = e.tensor
    if t is None:
        return ShowResult(ck, e, None, (), (), (), path, siblings)
    from ..formats.registry import values_of

    with values_of(ck) as reader:
        why = None if reader.reads_numpy(t) else not_summarised(t.dtype, t.layout, t.device)
        if why:
            return ShowResult(ck, e, Stats(None, None, None, None, 0, 0, why), (), (), (), path, siblings)
        try:
            values = reader.array(t)
            stats = tensor_stats(values, bins=bins)  # exact: one tensor's values, every one counted
            head = first_values(values, first)
            small, large = extremes(values, extreme) if extreme and stats.finite else ([], [])
        except (ValueError, RuntimeError, TypeError) as exc:
            raise BadInput(t.source or ck.path, f"cannot read values of {e.name!r}: {exc}") from exc
        finally:
            reader.release(t)
    return ShowResult(ck, e, stats, head, tuple(Extreme(_unravel(i, t.shape), v) for i, v in small),
                      tuple(Extreme(_unravel(i, t.shape), v) for i, v in large), path, siblings)
