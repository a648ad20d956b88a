"""GGUF tensor values: plain types (F32, F16, BF16, F64, I8-I64) are read in place by io/values' reader;
block-quantized types are dequantized by gguf-py (`gguf.quants.dequantize`, the lazy `gguf` extra),
block range by block range, so a value pass holds a chunk's floats at a time, never a whole tensor's.
The adapter wraps whatever reader io/values gives the checkpoint (local or ranged remote) and answers
only for the quantized tensors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from ...errors import BadInput
from ...extras import missing_extra
from ...io.source import Source, open_source
from ...qtensor import GGUF_METHOD
from ...state import Checkpoint, TensorInfo
from ...vocab import Layout
from .types import by_name

if TYPE_CHECKING:
    import numpy as np

    from ...io.values import ValueReader
    from .hf import HfLayout


def dequantize(raw: bytes | bytearray, type_name: str) -> np.ndarray:
    """Whole blocks of one GGML type as float32, through gguf-py (a missing extra named, exit 2)."""
    import numpy as np

    try:
        import gguf.quants
        from gguf import GGMLQuantizationType
    except ModuleNotFoundError as exc:
        raise (missing_extra(exc) or exc) from None
    data = np.frombuffer(raw, dtype=np.uint8)
    try:
        out = gguf.quants.dequantize(data, GGMLQuantizationType[type_name])
    except NotImplementedError as exc:
        raise BadInput(None, f"gguf-py cannot dequantize {type_name} ({exc})") from None
    return np.asarray(out, dtype=np.float32).reshape(-1)


class Dequantizing:
    """A ValueReader for a GGUF checkpoint: quantized tensors dequantized here, the rest to `inner`."""

    def __init__(self, inner: ValueReader, layout: HfLayout | None = None, names: dict[Any, str] | None = None) -> None:
        self.inner = inner
        self._sources: dict[str, Source] = {}
        # In HF layout (a GGUF beside its safetensors) the tensors transformers' processor changes (`names`)
        # go through it whole: its permutations move rows, so such a tensor is held (the last one, kept for
        # the next range of the same tensor); the others are read range by range as ever.
        self.layout, self._names = layout, names or {}
        self._held: tuple[Any, np.ndarray] | None = None

    def _undone(self, info: TensorInfo) -> np.ndarray | None:
        name = self._names.get((info.source, info.data_offset))
        if self.layout is None or name is None:
            return None
        key = (info.source, info.data_offset)
        if self._held is None or self._held[0] != key:
            import numpy as np

            self._held = None
            # dequantized: float32; a plain type keeps its own dtype (a F16 tensor is written as F16)
            raw = self._stored(info, 0, info.numel) if self.dequantizes(info) else self.inner.read_flat(info, 0, info.numel)
            values = np.asarray(raw).reshape(info.shape)
            self._held = (key, np.ascontiguousarray(self.layout.undo(name, values)).reshape(-1))
        return self._held[1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def dequantizes(self, info: TensorInfo) -> bool:
        return info.layout == Layout.QUANTIZED and info.quant is not None and info.quant.method == GGUF_METHOD

    def _mine(self, info: TensorInfo) -> bool:
        return self.dequantizes(info) or (self.layout is not None and (info.source, info.data_offset) in self._names)

    def reads_numpy(self, info: TensorInfo) -> bool:
        return self._mine(info) or self.inner.reads_numpy(info)

    def flat_span(self, info: TensorInfo, lo: int, hi: int) -> tuple[str, int, int] | None:
        """No byte span for a block-quantized tensor (or one in HF layout): the passes call read_flat."""
        return None if self._mine(info) else self.inner.flat_span(info, lo, hi)

    def read_flat(self, info: TensorInfo, lo: int, hi: int, slot: int | None = None) -> np.ndarray:
        """Elements lo..hi (row-major, torch order) as float32: GGUF rows are whole blocks, so the flat
        element order is the blocks' order and a range needs only the blocks that cover it."""
        undone = self._undone(info)
        if undone is not None:
            return undone[lo:hi]
        if not self.dequantizes(info):
            return self.inner.read_flat(info, lo, hi, slot)
        return self._stored(info, lo, hi)

    def _stored(self, info: TensorInfo, lo: int, hi: int) -> np.ndarray:
        gt = by_name(info.dtype)
        if gt is None or info.source is None or info.data_offset is None:
            raise BadInput(info.source, f"no stored blocks for a {info.dtype} tensor")
        first, last = lo // gt.block, -(-hi // gt.block)
        raw = self._bytes(info.source, info.data_offset + first * gt.type_size, (last - first) * gt.type_size)
        start = lo - first * gt.block
        return dequantize(raw, gt.name)[start:start + hi - lo]

    def array(self, info: TensorInfo) -> np.ndarray:
        if not self._mine(info):
            return self.inner.array(info)
        return self.read_flat(info, 0, info.numel).reshape(info.shape)

    def tensor(self, info: TensorInfo) -> Any:
        if not self._mine(info):
            return self.inner.tensor(info)
        import torch

        return torch.from_numpy(self.array(info).copy())

    def release(self, info: TensorInfo) -> None:
        if not self._mine(info):
            self.inner.release(info)

    def _bytes(self, path: str, offset: int, n: int) -> bytearray:
        src = self._sources.get(path)
        if src is None:
            src = self._sources[path] = open_source(path)
        return src.span(offset, n, "tensor data")

    def close(self) -> None:
        for src in self._sources.values():
            src.close()
        self._sources.clear()


@contextmanager
def gguf_reader(ck: Checkpoint, hf: bool = False) -> Iterator[ValueReader]:
    """The checkpoint's values; with `hf`, as transformers loads them (hf.py) where it can."""
    from ...io.values import value_reader
    from .hf import hf_layout

    layout = hf_layout(ck.path) if hf and "://" not in ck.path else None
    names = {(e.tensor.source, e.tensor.data_offset): e.name for e in ck.entries
             if e.tensor is not None and layout is not None and layout.changes(e.name, e.tensor.shape)}
    with value_reader(ck) as inner:
        reader = Dequantizing(inner, layout, names if layout is not None else None)
        try:
            yield cast("ValueReader", reader)
        finally:
            reader.close()


__all__ = ["Dequantizing", "dequantize", "gguf_reader"]
