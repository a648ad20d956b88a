"""Dequantized values of the logical tensors layouts.py builds, in numpy (no torch, no quantization
library): each codec decodes rows r0..r1 of the tensor seen as 2-D [prod(shape[:-1]), shape[-1]]
into float32, reading its parts through the value reader's mapping, so a pass over a quantized
tensor holds one chunk of rows, never the whole float tensor. The math follows each owning
library's reference dequantizer (named per codec); the tests check each against that library."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import BadInput
from ...io import values
from ...state import TensorInfo

if TYPE_CHECKING:
    import numpy as np

    from ...io.values import ValueReader

__all__ = ["CODECS", "decode_rows"]

# e2m1 (fp4) codes: sign bit 3, two exponent bits, one mantissa bit (MXFP4, NVFP4, bnb's fp4 differs).
E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
# AWQ packs the 8 nibbles of a word in the order [0, 2, 4, 6, 1, 3, 5, 7]: column c is nibble _AWQ[c].
_AWQ = (0, 4, 1, 5, 2, 6, 3, 7)


def _part(reader: ValueReader, info: TensorInfo, role: str) -> Any:
    """The stored array of a part by its role (a view into the mapping), or None where absent."""
    assert info.quant is not None
    for (r, _), t in zip(info.quant.parts, info.quant.tensors):
        if r == role:
            return reader.array(t)
    return None


def _unpack(words: Any, bits: int) -> Any:
    """[..., n] int32 words -> [..., n * 32/bits] unsigned codes, the lowest bits first."""
    import numpy as np

    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    u = np.ascontiguousarray(words).view(np.uint32)
    return ((u[..., None] >> shifts) & np.uint32((1 << bits) - 1)).reshape(*u.shape[:-1], -1)


def _f32(a: Any) -> Any:
    import numpy as np

    return np.asarray(a).astype(np.float32)


def _gptq(reader: ValueReader, info: TensorInfo, r0: int, r1: int) -> Any:
    """AutoGPTQ/GPTQModel's dequantize (v1 checkpoints store zero - 1):
    w[o, i] = scales[g, o] * (q[i, o] - (qzeros[g, o] + zero_offset)), g = g_idx[i]."""
    import numpy as np

    q_ = info.quant
    assert q_ is not None and q_.bits is not None
    bits, inn = q_.bits, info.shape[1]
    pack = 32 // bits
    q = _unpack(np.ascontiguousarray(_part(reader, info, "qweight")[:, r0:r1]).T, bits)  # [n, in]
    w0, w1 = r0 // pack, -(-r1 // pack)
    z = _unpack(_part(reader, info, "qzeros")[:, w0:w1], bits)[:, r0 - w0 * pack:r1 - w0 * pack]  # [groups, n]
    z = z.astype(np.int64) + int(q_.setting("zero_offset", 0))
    s = _f32(_part(reader, info, "scales")[:, r0:r1])
    g_idx = _part(reader, info, "g_idx")
    g = np.asarray(g_idx, dtype=np.int64) if g_idx is not None else np.arange(inn) // (q_.group_size or inn)
    if g.shape != (inn,) or (g.size and (g.min() < 0 or g.max() >= s.shape[0])):
        raise BadInput(info.source, "g_idx names groups the scales do not have")
    return ((q.astype(np.float32) - z[g].T.astype(np.float32)) * s[g].T).astype(np.float32)


def _awq(reader: ValueReader, info: TensorInfo, r0: int, r1: int) -> Any:
    """AutoAWQ's GEMM layout (transformers' awq integration unpack + reverse_awq_order):
    w[o, i] = (q[i, o] - z[g, o]) * s[g, o], g = i // group, codes in AWQ's nibble order."""
    import numpy as np

    q_ = info.quant
    assert q_ is not None and q_.bits is not None and q_.group_size
    bits = q_.bits
    pack = 32 // bits
    order = np.array(_AWQ if pack == 8 else range(pack))
    w0, w1 = r0 // pack, -(-r1 // pack)
    lo, hi = r0 - w0 * pack, r1 - w0 * pack

    def cols(a: Any) -> Any:
        u = _unpack(a[:, w0:w1], bits).reshape(a.shape[0], w1 - w0, pack)[:, :, order]
        return u.reshape(a.shape[0], -1)[:, lo:hi].astype(np.float32)

    q, z = cols(_part(reader, info, "qweight")), cols(_part(reader, info, "qzeros"))
    s = _f32(_part(reader, info, "scales")[:, r0:r1])
    g = np.arange(info.shape[1]) // q_.group_size
    return ((q - z[g]) * s[g]).T.astype(np.float32)


def _expand(scale: Any, rows: int, cols: int, r0: int, r1: int, block: tuple[int, ...] | None = None) -> Any:
    """A scale (or zero point) of shape [sr, sc] spread over rows r0..r1 of a [rows, cols] tensor:
    each covers a `block` (default ceil(rows/sr) x ceil(cols/sc)): per-tensor, channel, group, block."""
    import numpy as np

    s = np.asarray(scale).reshape(1, 1) if np.asarray(scale).size == 1 else np.asarray(scale)
    if s.ndim == 1:
        s = s.reshape(-1, 1) if s.shape[0] == rows else s.reshape(1, -1)
    br, bc = block if block is not None and len(block) == 2 else (-(-rows // s.shape[0]), -(-cols // s.shape[1]))
    if -(-rows // br) != s.shape[0] or -(-cols // bc) != s.shape[1]:
        raise ValueError(f"scales {list(s.shape)} do not tile {[rows, cols]} in blocks of {[br, bc]}")
    sub = _f32(s[r0 // br:-(-r1 // br)])
    full = np.repeat(np.repeat(sub, br, axis=0), bc, axis=1)
    return full[r0 - (r0 // br) * br:r1 - (r0 // br) * br, :cols]


def _ct_packed(reader: ValueReader, info: TensorInfo, r0: int, r1: int) -> Any:
    """compressed-tensors pack-quantized: unpack_from_int32 (codes - 2^(bits-1)), then
    dequantize: (q - zero_point) * scale, per group of columns (weight_g_idx where saved)."""
    import numpy as np

    q_ = info.quant
    assert q_ is not None and q_.bits is not None
    rows, cols = info.shape
    q = _unpack(_part(reader, info, "weight_packed")[r0:r1], q_.bits)[:, :cols].astype(np.float32)
    q -= float(1 << (q_.bits - 1))
    scale = _part(reader, info, "weight_scale")
    zp = _part(reader, info, "weight_zero_point")
    if zp is not None and np.asarray(zp).dtype == np.int32:  # pack_to_int32(zp, bits, packed_dim=0)
        groups = np.asarray(scale).shape[-1] if np.asarray(scale).ndim == 2 else 1
        zp = _unpack(np.ascontiguousarray(np.asarray(zp).T), q_.bits)[:, :rows].T.astype(np.int32)
        zp = zp.reshape(rows, groups) - (1 << (q_.bits - 1))
    g_idx = _part(reader, info, "weight_g_idx")
    if g_idx is not None:
        g = np.asarray(g_idx, dtype=np.int64)
        s = _f32(np.asarray(scale)[r0:r1])[:, g]
        z = _f32(np.asarray(zp)[r0:r1])[:, g] if zp is not None else 0.0
    else:
        s = _expand(scale, rows, cols, r0, r1)
        z = _expand(zp, rows, cols, r0, r1) if zp is not None else 0.0
    return ((q - z) * s).astype(np.float32)


def _nvfp4(reader: ValueReader, info: TensorInfo, r0: int, r1: int) -> Any:
    """compressed-tensors nvfp4-pack-quantized: unpack_fp4_from_uint8 (low nibble first, e2m1),
    then x * (weight_scale / weight_global_scale), one fp8 scale per 16 values."""
    import numpy as np

    rows, cols = info.shape
    b = np.asarray(_part(reader, info, "weight_packed")[r0:r1])
    codes = np.stack([b & 0xF, b >> 4], axis=-1).reshape(b.shape[0], -1)[:, :cols]
    x = np.array(E2M1, dtype=np.float32)[codes]
    gs = _f32(_part(reader, info, "weight_global_scale")).reshape(-1)[0]
    return (x * (_expand(_part(reader, info, "weight_scale"), rows, cols, r0, r1) / gs)).astype(np.float32)


def _scaled(reader: ValueReader, info: TensorInfo, r0: int, r1: int) -> Any:
    """fp8/int8 weight times its scale: transformers' FP8 (weight * weight_scale_inv per block, as
    DeepSeek-V3's weight_dequant) and compressed-tensors' float-/int-quantized ((q - zp) * scale)."""
    rows, cols = info.shape
    q = _f32(_part(reader, info, "weight")[r0:r1])
    scale = _part(reader, info, "weight_scale_inv")
    if scale is None:
        scale = _part(reader, info, "weight_scale")
    zp = _part(reader, info, "weight_zero_point")
    block = info.quant.block if info.quant is not None else None
    if zp is not None:
        q = q - _expand(zp, rows, cols, r0, r1, block)
    return q * _expand(scale, rows, cols, r0, r1, block)


def _mxfp4(reader: ValueReader, info: TensorInfo, r0: int, r1: int) -> Any:
    """transformers' convert_moe_packed_tensors: e2m1 codes (low nibble first) times 2^(scale - 127),
    [E, R, G*32] transposed to [E, G*32, R] where the experts are 3-D."""
    import numpy as np

    blocks, scales = _part(reader, info, "blocks"), _part(reader, info, "scales")
    lut = np.array(E2M1, dtype=np.float32)

    def decode(b: Any, s: Any) -> Any:  # [..., G, 16], [..., G] -> [..., G*32]
        b = np.asarray(b)
        x = lut[np.stack([b & 0xF, b >> 4], axis=-1).reshape(*b.shape[:-1], 32)]
        x = np.ldexp(x, (np.asarray(s).astype(np.int32) - 127)[..., None])
        return x.reshape(*x.shape[:-2], -1)

    assert info.quant is not None
    if not info.quant.setting("transposed", False):
        return decode(blocks.reshape(-1, *blocks.shape[-2:])[r0:r1], scales.reshape(-1, scales.shape[-1])[r0:r1])
    _, width, _ = info.shape  # logical [E, G*32, R]: a row is (expert, column of the stored [R, G*32])
    out = []
    r = r0
    while r < r1:
        e, c = divmod(r, width)
        c_end = min(width, c + (r1 - r))
        g0, g1 = c // 32, -(-c_end // 32)
        part = decode(blocks[e, :, g0:g1], scales[e, :, g0:g1])  # [R, (g1-g0)*32]
        out.append(part[:, c - g0 * 32:c_end - g0 * 32].T)
        r += c_end - c
    return np.concatenate(out, axis=0).astype(np.float32)


def _bnb4(reader: ValueReader, info: TensorInfo, r0: int, r1: int) -> Any:
    """bitsandbytes dequantize_4bit: code = high nibble first, value = quant_map[code] * absmax of its
    block; with double quantization absmax = nested_quant_map[code] * nested_absmax + offset."""
    import json

    import numpy as np

    q_ = info.quant
    assert q_ is not None and q_.group_size
    cols = info.shape[-1] if info.shape else 1
    e0, e1 = r0 * cols, r1 * cols
    b = np.asarray(_part(reader, info, "weight")).reshape(-1)[e0 // 2:-(-e1 // 2)]
    codes = np.stack([b >> 4, b & 0xF], axis=-1).reshape(-1)[e0 % 2:e0 % 2 + e1 - e0]
    x = _f32(_part(reader, info, "quant_map"))[codes]
    blk = q_.group_size
    absmax = np.asarray(_part(reader, info, "absmax")).reshape(-1)
    a0, a1 = e0 // blk, -(-e1 // blk)
    nested = _part(reader, info, "nested_absmax")
    if nested is not None:
        state = json.loads(bytes(np.asarray(_part(reader, info, f"quant_state.bitsandbytes__{q_.setting('quant_type')}"))))
        nb, off = int(state.get("nested_blocksize", 256)), float(state.get("nested_offset", 0.0))
        idx = np.arange(a0, a1)
        am = _f32(_part(reader, info, "nested_quant_map"))[absmax[a0:a1]] * _f32(nested).reshape(-1)[idx // nb] + off
    else:
        am = _f32(absmax[a0:a1])
    scale = np.repeat(am, blk)[e0 - a0 * blk:e1 - a0 * blk]
    return (x * scale).reshape(r1 - r0, cols).astype(np.float32)


def _bnb8(reader: ValueReader, info: TensorInfo, r0: int, r1: int) -> Any:
    """bitsandbytes int8_vectorwise_dequant: w * SCB[row] * (1/127), in that order (float32)."""
    import numpy as np

    q = _f32(_part(reader, info, "weight")[r0:r1])
    return (q * _f32(_part(reader, info, "SCB")[r0:r1])[:, None]) * np.float32(7.874015718698502e-3)


def _quanto(reader: ValueReader, info: TensorInfo, r0: int, r1: int) -> Any:
    """optimum-quanto's dequantize in its compute dtype (the scale's). qint8/qfloat8: data * scale.
    qint4/qint2 (QBitsDequantizer): codes unpacked (row i of n is packed[i % rd] >> bits * (i // rd)),
    then scale * q - shift with a float shift (each step rounded to the compute dtype, as torch does
    in bfloat16/float16) or (q - shift) * scale with an integer one; grouped rows reshape row-major."""
    import numpy as np

    from ...io.values import np_dtype

    q_ = info.quant
    assert q_ is not None and q_.bits is not None
    data, scale, shift = _part(reader, info, "_data._data"), _part(reader, info, "_scale"), _part(reader, info, "_shift")
    cols = info.shape[-1]
    if data is None:  # qint8 / qfloat8: one code a value
        return _f32(_part(reader, info, "_data")[r0:r1]) * _f32(scale[r0:r1])
    per_row = cols // data.shape[1]  # stored rows of [n, c] in one logical row
    a, b = r0 * per_row, r1 * per_row
    n, bits = scale.shape[0], q_.bits
    rd = -(-n // (8 // bits))
    idx = np.arange(a, b)
    codes = (data[idx % rd] >> (bits * (idx // rd))[:, None].astype(np.uint8)) & np.uint8((1 << bits) - 1)
    dt = np_dtype(q_.compute_dtype)

    def rnd(x: Any) -> Any:  # torch computes in the scale's dtype: round each step to it
        return x.astype(dt).astype(np.float32) if dt is not None and q_.compute_dtype != "float32" else x

    s, z = _f32(scale[a:b]), shift[a:b]
    if np.issubdtype(z.dtype, np.integer):
        w = rnd((codes.astype(np.float32) - z.astype(np.float32)) * s)
    else:
        w = rnd(rnd(s * codes.astype(np.float32)) - _f32(z))
    return w.reshape(r1 - r0, cols)


CODECS: dict[str, Callable[[ValueReader, TensorInfo, int, int], Any]] = {  # float32 [r1-r0, cols]
    "gptq": _gptq, "awq": _awq, "ct-packed": _ct_packed, "nvfp4": _nvfp4, "scaled": _scaled, "mxfp4": _mxfp4,
    "bnb4": _bnb4, "bnb8": _bnb8, "quanto": _quanto,
}


def decode_rows(reader: ValueReader, info: TensorInfo, r0: int, r1: int) -> np.ndarray:
    """Rows r0..r1 of `info` as float32 [r1-r0, shape[-1]]; BadInput where the parts do not fit."""
    assert info.quant is not None
    fn = CODECS[info.quant.codec]
    try:
        out: np.ndarray = fn(reader, info, r0, r1)
    except (ValueError, IndexError, TypeError, KeyError) as exc:
        raise BadInput(info.source, f"cannot dequantize {info.quant.scheme}: {exc}") from exc
    cols = info.shape[-1] if info.shape else 1
    if out.shape != (r1 - r0, cols):
        raise BadInput(info.source, f"{info.quant.scheme}: parts decode to {list(out.shape)}, "
                                    f"expected {[r1 - r0, cols]}")
    return out


for _codec in CODECS:
    values.DEQUANTIZERS[_codec] = decode_rows
