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
    from .hfview import HfView


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

    def __init__(self, inner: ValueReader, view: HfView | None = None) -> None:
        self.inner = inner
        self._sources: dict[str, Source] = {}
        # In HF layout (a convert to a Hugging Face folder, a diff against one) the tensors transformers'
        # processor builds (hfview.py) are built from their GGUF tensors read whole; the last one is held
        # for the next range of it. The others are read range by range as ever.
        self.view = view
        self._built = view.by_key() if view is not None else {}
        self._held: tuple[str, dict[str, np.ndarray]] | None = None

    def _undone(self, info: TensorInfo) -> np.ndarray | None:
        import numpy as np

        tensor = self._built.get(info.storage_key or "")
        if tensor is None or self.view is None:
            return None
        if self._held is None or self._held[0] != tensor.whole:
            self._held = None
            values = {g: self._whole(self.view.stored[g]) for g in tensor.sources}
            try:
                made = self.view.build(tensor, values)
            except ValueError as exc:
                raise BadInput(info.source, f"transformers' GGUF loading cannot build it: {exc}") from None
            self._held = (tensor.whole, {k: np.ascontiguousarray(v, dtype=info.dtype) for k, v in made.items()})
        got = self._held[1].get(tensor.name)
        if got is None or got.shape != info.shape:
            raise BadInput(info.source, f"transformers built {tensor.name} as {getattr(got, 'shape', None)}, "
                                        f"its model has {info.shape}")
        return got.reshape(-1)

    def _whole(self, info: TensorInfo) -> np.ndarray:
        """A stored tensor whole, torch-order shape: dequantized to float32, a plain type as stored."""
        import numpy as np

        raw = self._stored(info, 0, info.numel) if self.dequantizes(info) else self.inner.read_flat(info, 0, info.numel)
        return np.asarray(raw).reshape(info.shape)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def dequantizes(self, info: TensorInfo) -> bool:
        return info.layout == Layout.QUANTIZED and info.quant is not None and info.quant.method == GGUF_METHOD

    def _mine(self, info: TensorInfo) -> bool:
        return self.dequantizes(info) or (info.storage_key or "") in self._built

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
    """The checkpoint's values; with `hf`, also the tensors transformers' loading builds (hfview.py)."""
    from ...io.values import value_reader
    from .hfview import hf_view

    view = hf_view(ck.path) if hf else None
    with value_reader(ck) as inner:
        reader = Dequantizing(inner, view)
        try:
            yield cast("ValueReader", reader)
        finally:
            reader.close()


__all__ = ["Dequantizing", "dequantize", "gguf_reader"]
