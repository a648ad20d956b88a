"""ONNX initializers stored in TensorProto's typed repeated fields (int32_data, int64_data, uint64_data:
packed varints, one per element): decoded here when a value pass asks for them, never at metadata time.
int32_data also carries float16/bfloat16 (their bit patterns), float8, int8/16, uint8/16 and bool, as the
ONNX spec says. Everything else is read in place by io/values' reader, which this adapter wraps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..errors import BadInput
from ..io.source import Source, open_source
from ..state import Checkpoint, TensorInfo

if TYPE_CHECKING:
    import numpy as np

    from ..io.values import ValueReader

VARINT_FIELDS = frozenset({5, 7, 11})  # int32_data, int64_data, uint64_data
# dtypes int32_data holds as bit patterns of a narrower width: the width's unsigned type, then a view
_BITS = {"float16": "uint16", "bfloat16": "uint16", "float8_e4m3fn": "uint8", "float8_e4m3fnuz": "uint8",
         "float8_e5m2": "uint8", "float8_e5m2fnuz": "uint8"}


@dataclass(frozen=True)
class Packed:
    """Where an initializer's varint-packed values are: the file, the payload's first byte and length."""

    source: str
    offset: int
    length: int


def decode_varints(raw: bytes | bytearray | memoryview, count: int, where: str) -> np.ndarray:
    """`count` protobuf varints as uint64 (an int32/int64 field's two's complement), vectorised; a
    payload with another number of values or a varint over 10 bytes is a BadInput."""
    import numpy as np

    b = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(b < 0x80)
    if len(ends) != count or (count and ends[-1] != len(b) - 1) or (count == 0 and len(b)):
        raise BadInput(where, f"packed values hold {len(ends)} varints, the shape needs {count}")
    if count == 0:
        return np.zeros(0, np.uint64)
    starts = np.concatenate(([0], ends[:-1] + 1))
    if int((ends - starts).max()) > 9:
        raise BadInput(where, "a packed varint is longer than 10 bytes")
    pos = np.arange(len(b)) - np.repeat(starts, ends - starts + 1)
    parts = (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts)


def as_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """Decoded varints as the initializer's dtype (bit patterns viewed, integers narrowed)."""
    from ..io.values import np_dtype

    want = np_dtype(dtype)
    if want is None:
        raise BadInput(None, f"no numpy dtype for {dtype}")
    if dtype in _BITS:
        return values.astype(_BITS[dtype]).view(want)
    if dtype == "bool":
        flags: np.ndarray = values != 0
        return flags
    out: np.ndarray = values.view("int64").astype(want) if dtype.startswith("int") else values.astype(want)
    return out


class Decoding:
    """A ValueReader for an ONNX model: varint-packed initializers decoded here, the rest to `inner`."""

    def __init__(self, inner: ValueReader, packed: dict[str, Packed]) -> None:
        self.inner, self.packed = inner, packed
        self._sources: dict[str, Source] = {}
        self._last: tuple[TensorInfo, np.ndarray] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _spec(self, info: TensorInfo) -> Packed | None:
        spec = self.packed.get(info.storage_key or "")
        return spec if spec is not None and info.data_offset is None and spec.source == info.source else None

    def reads_numpy(self, info: TensorInfo) -> bool:
        return self._spec(info) is not None or self.inner.reads_numpy(info)

    def flat_span(self, info: TensorInfo, lo: int, hi: int) -> tuple[str, int, int] | None:
        return None if self._spec(info) is not None else self.inner.flat_span(info, lo, hi)

    def array(self, info: TensorInfo) -> np.ndarray:
        spec = self._spec(info)
        if spec is None:
            return self.inner.array(info)
        if self._last is None or self._last[0] is not info:  # chunked passes ask once per chunk
            raw = self._bytes(spec)
            arr = as_dtype(decode_varints(raw, info.numel, spec.source), info.dtype).reshape(info.shape)
            self._last = (info, arr)
        return self._last[1]

    def read_flat(self, info: TensorInfo, lo: int, hi: int, slot: int | None = None) -> np.ndarray:
        if self._spec(info) is None:
            return self.inner.read_flat(info, lo, hi, slot)
        return self.array(info).reshape(-1)[lo:hi].copy()

    def tensor(self, info: TensorInfo) -> Any:
        if self._spec(info) is None:
            return self.inner.tensor(info)
        import torch

        return torch.from_numpy(self.array(info).copy())

    def release(self, info: TensorInfo) -> None:
        if self._spec(info) is None:
            self.inner.release(info)
        elif self._last is not None and self._last[0] is info:
            self._last = None

    def _bytes(self, spec: Packed) -> bytearray:
        src = self._sources.get(spec.source)
        if src is None:
            src = self._sources[spec.source] = open_source(spec.source)
        return src.span(spec.offset, spec.length, "packed values")

    def close(self) -> None:
        for src in self._sources.values():
            src.close()
        self._sources.clear()


@contextmanager
def onnx_reader(ck: Checkpoint, packed: dict[str, Packed]) -> Iterator[ValueReader]:
    from ..io.values import value_reader

    with value_reader(ck) as inner:
        reader = Decoding(inner, packed)
        try:
            yield cast("ValueReader", reader)
        finally:
            reader.close()
