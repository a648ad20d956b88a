"""Which initializer of an ONNX export is which tensor of a checkpoint, for `diff model.onnx model.pt`.
Exporters keep a parameter's name where the graph uses it as is, and rename it (`onnx::MatMul_123`) where
they rewrote it: a Linear weight stored transposed for MatMul, a convolution with the BatchNorm after it
folded in (eval-mode exports). So names are matched exactly first, then each renamed initializer by shape
(a 2-D one transposed too) — the candidate whose values are equal first, else the first free one in the
checkpoint's order — and BatchNorm modules left with no initializer are folded by the exporter, not removed.
Each pair says how it was matched."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, replace

from ..io.values import ValueReader, numpy_readable, value_reader
from ..state import Checkpoint, Entry, Format, TensorInfo

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")
BN_MEMBERS = ("weight", "bias") + BN_STATS


@dataclass(frozen=True)
class Pairing:
    """The two checkpoints with the ONNX side's renamed initializers under their partners' names."""

    a: Checkpoint
    b: Checkpoint
    how: dict[str, str]  # the pair's name -> how it was matched ("by shape, transposed, from onnx::MatMul_12")
    folded: frozenset[str]  # names of the checkpoint the exporter folded into other weights


def pair(a: Checkpoint, b: Checkpoint) -> Pairing | None:
    """None unless exactly one side is an ONNX model."""
    if (a.format is Format.ONNX) == (b.format is Format.ONNX):
        return None
    onnx_ck, other = (a, b) if a.format is Format.ONNX else (b, a)
    mine = {e.name: e for e in onnx_ck.entries if e.group == "" and e.tensor is not None}
    theirs = {e.name: e for e in other.entries if e.group == "" and e.tensor is not None}
    how = {n: "exact name" for n in mine if n in theirs}
    free = [n for n in theirs if n not in mine]
    renamed: dict[str, Entry] = {}
    with _Values(onnx_ck, other) as values:
        for name, e in mine.items():
            if name in theirs:
                continue
            found = _partner(e, [theirs[n] for n in free], values)
            if found is None:
                continue
            partner, transposed, by_value = found
            free.remove(partner.name)
            renamed[name] = _as_partner(e, partner, transposed)
            how[partner.name] = ("by shape and values" if by_value else "by shape") + (
                ", transposed" if transposed else "") + f", from {name}"
    entries = [renamed.get(e.name, _with_kind(e, theirs.get(e.name))) if e.group == "" and e.tensor is not None else e
               for e in onnx_ck.entries]
    onnx_ck = replace(onnx_ck, entries=tuple(entries))
    folded = frozenset(_folded(set(free), theirs))
    a, b = (onnx_ck, other) if a.format is Format.ONNX else (other, onnx_ck)
    return Pairing(a, b, how, folded)


def _partner(e: Entry, free: list[Entry], values: _Values) -> tuple[Entry, bool, bool] | None:
    t = e.tensor
    assert t is not None
    cands = [(f, False) for f in free if f.tensor is not None and f.tensor.shape == t.shape]
    if len(t.shape) == 2 and t.shape[0] != t.shape[1]:
        cands += [(f, True) for f in free if f.tensor is not None and f.tensor.shape == t.shape[::-1]]
    for f, transposed in cands:
        if values.equal(t, f.tensor, transposed):
            return f, transposed, True
    return (cands[0][0], cands[0][1], False) if cands else None


def _as_partner(e: Entry, partner: Entry, transposed: bool) -> Entry:
    """`e` under its partner's name and kind; a transposed initializer as the view that undoes it."""
    t = e.tensor
    assert t is not None and partner.tensor is not None
    if transposed:
        rows, cols = t.shape
        t = replace(t, shape=(cols, rows), stride=(1, cols))
    return replace(e, name=partner.name, tensor=t, kind=partner.kind, evidence=partner.evidence)


def _with_kind(e: Entry, partner: Entry | None) -> Entry:
    """An initializer matched by name shows the checkpoint's kind (ONNX has no parameter/buffer split)."""
    return e if partner is None else replace(e, kind=partner.kind, evidence=partner.evidence)


def _folded(free: set[str], theirs: dict[str, Entry]) -> list[str]:
    """BatchNorm modules (a running_mean with no initializer) whose every tensor is unmatched."""
    out = []
    for n in sorted(free):
        if n.endswith(".running_mean") or n == "running_mean":
            module = n[:-len("running_mean")]
            members = [module + m for m in BN_MEMBERS if module + m in theirs]
            if all(m in free for m in members):
                out += members
    return out


class _Values:
    """Values of both sides, read only to choose between same-shaped candidates (numpy, no torch)."""

    def __init__(self, a: Checkpoint, b: Checkpoint) -> None:
        self.cks = (a, b)
        self.stack = ExitStack()
        self.readers: list[ValueReader] = []

    def __enter__(self) -> _Values:
        self.readers = [self.stack.enter_context(value_reader(ck)) for ck in self.cks]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def equal(self, x: TensorInfo, y: TensorInfo | None, transposed: bool) -> bool:
        import numpy as np

        if y is None or not (numpy_readable(x) and numpy_readable(y)) or x.dtype != y.dtype:
            return False
        ax, ay = self.readers[0].array(x), self.readers[1].array(y)
        return bool(np.array_equal(ax.T if transposed else ax, ay))
