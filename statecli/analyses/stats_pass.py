"""The block passes of `inspect --stats` and `check --no-nan/--no-inf`: many tensors' values read in blocks
that span tensors (io/blocks.py), each block's pieces reduced by the numpy kernels on both cores, the
per-tensor results merged in file order. Tensors that are not plain bytes of a local file are read one at
a time through the reader's `read_flat`/`array` (the FormatHandler's `values` hook decides which)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..io import blocks
from ..io.values import np_dtype
from ..state import Checkpoint, Entry, Stats
from .stats import (
    BINS,
    EXACT,
    SAMPLE,
    Part,
    chunk_part,
    not_summarised,
    one_tensor,
    sample_positions,
    stats_in_order,
    stats_of_parts,
)

if TYPE_CHECKING:
    from ..io.values import ValueReader
    from ..state import TensorInfo


def stats_for(ck: Checkpoint, entries: list[Entry], exact: bool = False) -> dict[str, Stats]:
    """Statistics for every tensor entry, in the entries' order. Tensors stored as plain bytes are read in
    blocks that span tensors, in file order; the others one at a time. `exact`: percentiles and histograms
    from every value (each tensor's finite values are then held in memory, one tensor at a time)."""
    from ..formats.registry import values_of

    sample = EXACT if exact else SAMPLE
    out: dict[str, Stats] = {}
    todo: list[Entry] = []
    with values_of(ck) as reader:
        for e in entries:
            t = e.tensor
            if t is None:
                continue
            why = None if reader.reads_numpy(t) else not_summarised(t.dtype, t.layout, t.device)
            if why or t.numel == 0:
                out[e.name] = Stats(None, None, None, None, 0, 0, why or "empty")
            else:
                todo.append(e)
        done = summarise(reader, [e.tensor for e in todo if e.tensor is not None], [e.name for e in todo], sample, BINS)
        out.update((e.name, s) for e, s in zip(todo, done))
    return {e.name: out[e.name] for e in entries if e.name in out}


def summarise(reader: ValueReader, infos: Sequence[TensorInfo], names: Sequence[str], sample: int,
              bins: int) -> list[Stats]:
    """Stats of every tensor (each non-empty and readable by `reader`), in the order given."""
    plan, rest = blocks.plan(reader, infos)
    dtypes = [np_dtype(t.dtype) for t in infos]

    def one(block: blocks.Block, data: memoryview) -> list[tuple[int, Part | Stats]]:
        out: list[tuple[int, Part | Stats]] = []
        for p in block.pieces:
            t = infos[p.index]
            part = _kernel(t, names[p.index], blocks.piece_array(data, p, dtypes[p.index]), p.lo, sample)
            whole = p.lo == 0 and p.hi == t.numel  # finished here, on the worker, not on the merging thread
            out.append((p.index, stats_of_parts([part], t.numel, bins, sample_positions(t.numel, sample) is None)
                        if whole else part))
        return out

    done = stats_in_order(infos, blocks.run(reader, plan, one), sample, bins)
    for i in rest:
        done[i] = one_tensor(reader, infos[i], names[i], sample, bins)
    return [done[i] for i in range(len(infos))]


def _kernel(t: TensorInfo, name: str, raw: Any, lo: int, sample: int) -> Part:
    try:
        return chunk_part(raw, lo, sample_positions(t.numel, sample))
    except (ValueError, TypeError) as exc:
        raise BadInput(t.source, f"cannot read values of {name!r}: {exc}") from exc


def non_finite(reader: ValueReader, infos: Sequence[TensorInfo], names: Sequence[str]) -> list[tuple[int, int]]:
    """(NaN count, Inf count) of every floating tensor: one scan, no moments (`count_non_finite`)."""
    plan, rest = blocks.plan(reader, infos)
    dtypes = [np_dtype(t.dtype) for t in infos]
    counts = [(0, 0)] * len(infos)

    def one(block: blocks.Block, data: memoryview) -> list[tuple[int, int, int]]:
        return [(p.index, *count_non_finite(blocks.piece_array(data, p, dtypes[p.index]))) for p in block.pieces]

    for found in blocks.run(reader, plan, one):
        for i, nan, inf in found:
            if nan or inf:
                counts[i] = (counts[i][0] + nan, counts[i][1] + inf)
    for i in rest:
        t = infos[i]
        try:
            counts[i] = count_non_finite(reader.array(t).reshape(-1))
        except (ValueError, RuntimeError, TypeError) as exc:
            raise BadInput(t.source, f"cannot read values of {names[i]!r}: {exc}") from exc
        finally:
            reader.release(t)
    return counts


def count_non_finite(raw: Any) -> tuple[int, int]:
    """(NaN, Inf) counts of a flat float array. One pass that allocates nothing decides whether any is
    there (`_maybe_non_finite`); only then are they counted element by element."""
    import numpy as np

    if raw.size == 0 or not _maybe_non_finite(raw):
        return 0, 0
    x = raw.astype(np.float32) if raw.dtype.kind == "V" else raw  # bfloat16/float8: numpy's float32 loops
    if x.dtype.kind != "f":
        return 0, 0
    return int(np.count_nonzero(np.isnan(x))), int(np.count_nonzero(np.isinf(x)))


# 16-bit floats by their bits: |x| (the sign bit cleared) reaches the all-ones exponent only for NaN/Inf.
_EXPONENT_BITS = {"float16": 0x7C00, "bfloat16": 0x7F80}
_STEP = 1 << 16  # elements per masked step: the scratch stays in the core's cache
_SCRATCH = threading.local()


def _maybe_non_finite(x: Any) -> bool:
    """False only when `x` holds no NaN/Inf. float32/64: the sum (NaN and Inf propagate; a sum that
    overflows says True, and the exact count then finds nothing); float16/bfloat16: the exponent bits;
    other floats (float8) and integers: as the exact count decides."""
    import numpy as np

    if x.dtype.kind == "f" and x.dtype.itemsize >= 4:
        with np.errstate(all="ignore"):
            return not np.isfinite(np.add.reduce(x))
    top = _EXPONENT_BITS.get(x.dtype.name)
    if top is None:
        return x.dtype.kind in "fV"
    bits = x.view(np.uint16)
    scratch = getattr(_SCRATCH, "buf", None)
    if scratch is None:
        scratch = _SCRATCH.buf = np.empty(_STEP, np.uint16)
    for lo in range(0, bits.size, _STEP):
        part = bits[lo:lo + _STEP]
        masked = np.bitwise_and(part, 0x7FFF, out=scratch[:part.size])
        if masked.max() >= top:
            return True
    return False
