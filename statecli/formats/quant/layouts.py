"""Quantized weights as logical tensors: the storage entries of one quantized weight (GPTQ/AWQ's
qweight+qzeros+scales+g_idx, compressed-tensors' weight_packed+weight_scale+..., FP8's
weight+weight_scale_inv, MXFP4's *_blocks+*_scales, bitsandbytes' weight+absmax+quant_map+
quant_state) become one TensorInfo with the logical name, shape and type, layout "quantized" and a
QuantInfo naming its parts. Each layout is one function of (prefix, the names present) that
claims its parts or declines; shapes that do not fit a layout leave the entries as stored.
Metadata only, except two tiny values the logical shape is stored in (compressed-tensors'
weight_shape, bitsandbytes' quant_state JSON), read with a bounded pread."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial

from ...errors import BadInput
from ...qtensor import QuantInfo
from ...state import TensorInfo
from ...units import itemsize
from .._common import open_regular, read_exact
from .config import Method, QuantConfig

__all__ = ["Grouped", "group_tensors"]

_SMALL = 4096  # the most bytes read of a value a logical shape is stored in
_PACKED_INT = ("int32", "uint32")


@dataclass(frozen=True)
class Grouped:
    """A state dict with its quantized weights as logical tensors; `inferred`: no config said so."""

    root: dict[str, object]
    logical: int
    methods: tuple[str, ...]
    inferred: bool


_Claim = tuple[str, TensorInfo, tuple[str, ...]]  # logical name, logical TensorInfo, part names claimed
_Layout = Callable[[str, Mapping[str, TensorInfo], QuantConfig | None], _Claim | None]


def group_tensors(root: Mapping[str, object], cfg: QuantConfig | None) -> Grouped | None:
    """`root` with every recognised quantized weight as one logical entry at its first part's place,
    or None where none is found. Non-tensor values and tensors of no layout are kept as they are."""
    tensors = {k: v for k, v in root.items() if isinstance(v, TensorInfo)}
    claims: dict[str, _Claim] = {}
    claimed: set[str] = set()
    for name in tensors:
        if not name.endswith(_SUFFIXES):  # most entries (scales, zeros, norms): one C call, no loop
            continue
        for suffix, layout in _ANCHORS:
            if not name.endswith(suffix):
                continue
            claim = layout(name[: -len(suffix)], tensors, cfg)
            if claim is not None and not claimed.intersection(claim[2]):
                claims[claim[2][0]] = claim
                claimed.update(claim[2])
            break
    ready = [v for v in tensors.values() if v.quant is not None]  # logical already (a torchao subclass)
    if not claims and not ready:
        return None
    out: dict[str, object] = {}
    for name, value in root.items():
        if name in claims:
            logical, info, _ = claims[name]
            out[logical] = info
        elif name not in claimed:
            out[name] = value
    infos = [c[1].quant for c in claims.values()] + [v.quant for v in ready]
    methods = tuple(dict.fromkeys(q.method for q in infos if q is not None))
    return Grouped(out, len(claims) + len(ready), methods, any(q.inferred for q in infos if q is not None))


def _logical(name: str, shape: tuple[int, ...], dtype: str, parts: tuple[tuple[str, str], ...],
             tensors: Mapping[str, TensorInfo], quant: QuantInfo) -> _Claim:
    infos = tuple([tensors[n] for _, n in parts])
    head = infos[0]
    info = TensorInfo(dtype, shape, head.device, layout="quantized", source=head.source,
                      stored_nbytes=sum([t.storage_size for t in infos]),
                      quant=replace(quant, parts=parts, tensors=infos))
    return name, info, tuple(n for _, n in parts)


def _parts(prefix: str, tensors: Mapping[str, TensorInfo], required: tuple[str, ...],
           optional: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...] | None:
    """(role, name) of each part present, or None where a required one is missing."""
    out = []
    for role in required:
        if prefix + role not in tensors:
            return None
        out.append((role.lstrip("._"), prefix + role))
    out += [(role.lstrip("._"), prefix + role) for role in optional if prefix + role in tensors]
    return tuple(out)


def _label(method: str, body: str, inferred: bool) -> str:
    return f"{method} {body}" + (" (inferred)" if inferred else "")


def _compute(*infos: TensorInfo) -> str:
    floats = [t.dtype for t in infos if t.dtype in ("float16", "bfloat16", "float32")]
    return floats[0] if floats else "float32"


# -- GPTQ and AWQ ----------------------------------------------------------------------------------

def _gptq_awq(prefix: str, t: Mapping[str, TensorInfo], cfg: QuantConfig | None) -> _Claim | None:
    """GPTQ: qweight int32 [in*bits/32, out] packed along in, qzeros [groups, out*bits/32], scales
    [groups, out], g_idx [in]. AWQ (GEMM): qweight [in, out*bits/32] packed along out in AWQ's
    interleaved order, qzeros alike, scales [groups, out]; no g_idx."""
    parts = _parts(prefix, t, (".qweight", ".qzeros", ".scales"), (".g_idx",))
    if parts is None:
        return None
    qw, qz, sc = t[prefix + ".qweight"], t[prefix + ".qzeros"], t[prefix + ".scales"]
    if qw.dtype not in _PACKED_INT or len(qw.shape) != 2 or len(sc.shape) != 2 or len(qz.shape) != 2:
        return None
    g_idx = t.get(prefix + ".g_idx")
    known = cfg is not None and cfg.method in (Method.GPTQ, Method.AWQ)
    if sc.shape[1] == qw.shape[1] and qw.shape[1] != 0:  # GPTQ's layout: out along dim 1 of both
        out = qw.shape[1]
        bits = (cfg.bits if known and cfg and cfg.bits else None) or (
            qw.shape[0] * 32 // g_idx.shape[0] if g_idx is not None and g_idx.shape and g_idx.shape[0] else 4)
        if bits not in (2, 4, 8) or qz.shape[1] * 32 // bits != out:
            return None
        inn, method, codec = qw.shape[0] * 32 // bits, Method.GPTQ, "gptq"
    elif qw.shape[1] and sc.shape[1] and sc.shape[1] % qw.shape[1] == 0 and g_idx is None:  # AWQ: packed along out
        bits = 32 * qw.shape[1] // sc.shape[1]
        if bits not in (2, 4, 8) or qz.shape[1] != qw.shape[1]:
            return None
        inn, out, method, codec = qw.shape[0], sc.shape[1], Method.AWQ, "awq"
    else:
        return None
    if not sc.shape[0] or inn % sc.shape[0]:
        return None
    group = inn // sc.shape[0]
    zero_offset = 1 if codec == "gptq" and (not known or cfg is None or cfg.checkpoint_format != "gptq_v2") else 0
    sym = cfg.sym if known and cfg else None
    desc = known and cfg is not None and cfg.desc_act
    body = (f"int{bits}{'' if sym is None else ' sym' if sym else ' asym'}, group {group}"
            f"{', act-order' if desc else ''}")
    quant = QuantInfo(_label(method.value.upper(), body, not known), method.value, _compute(sc), group_size=group,
                      inferred=not known, bits=bits, codec=codec, settings=(("zero_offset", zero_offset),))
    return _logical(prefix + ".weight", (out, inn), f"int{bits}", parts, t, quant)


# -- compressed-tensors ----------------------------------------------------------------------------

def _ct_packed(prefix: str, t: Mapping[str, TensorInfo], cfg: QuantConfig | None) -> _Claim | None:
    """pack-quantized: weight_packed int32 [out, ceil(in/pack)] (values + 2^(bits-1), little end
    first), weight_scale [out, groups], weight_zero_point, weight_shape int [2]. nvfp4-pack-quantized:
    weight_packed uint8 [out, in/2] (two e2m1 codes a byte), weight_scale fp8 [out, in/16],
    weight_global_scale [1]."""
    parts = _parts(prefix, t, (".weight_packed", ".weight_scale"),
                   (".weight_zero_point", ".weight_shape", ".weight_g_idx", ".weight_global_scale"))
    if parts is None:
        return None
    wp, sc = t[prefix + ".weight_packed"], t[prefix + ".weight_scale"]
    if len(wp.shape) != 2:
        return None
    known = cfg is not None and cfg.method is Method.COMPRESSED_TENSORS
    grp = cfg.group_for(prefix) if known and cfg else None
    shape = _stored_shape(t.get(prefix + ".weight_shape"))
    if wp.dtype == "uint8" and prefix + ".weight_global_scale" in t:
        shape = shape or (wp.shape[0], wp.shape[1] * 2)
        quant = QuantInfo(_label("compressed-tensors", "nvfp4 e2m1, group 16, fp8 scales", not known),
                          Method.COMPRESSED_TENSORS.value, _compute(t[prefix + ".weight_global_scale"], sc),
                          group_size=16, inferred=not known, bits=4, codec="nvfp4")
        return _logical(prefix + ".weight", shape, "nvfp4", parts, t, quant)
    if wp.dtype not in _PACKED_INT:
        return None
    bits = grp.num_bits if grp else 4
    if bits not in (2, 4, 8):
        return None
    shape = shape or (wp.shape[0], wp.shape[1] * (32 // bits))
    if len(shape) != 2 or shape[0] != wp.shape[0] or math.ceil(shape[1] * bits / 32) != wp.shape[1]:
        return None
    group = shape[1] // sc.shape[1] if len(sc.shape) == 2 and sc.shape[1] and sc.shape[1] > 1 else None
    body = grp.label() if grp else f"int{bits} {'asym' if prefix + '.weight_zero_point' in t else 'sym'}" + (
        f", group {group}" if group else ", per-channel")
    quant = QuantInfo(_label("compressed-tensors", body, not known), Method.COMPRESSED_TENSORS.value, _compute(sc),
                      group_size=group, inferred=not known, bits=bits, codec="ct-packed")
    return _logical(prefix + ".weight", shape, f"int{bits}", parts, t, quant)


def _scaled(prefix: str, t: Mapping[str, TensorInfo], cfg: QuantConfig | None) -> _Claim | None:
    """A weight stored as fp8 or int8 with a scale beside it: compressed-tensors' float-/int-quantized
    (weight_scale per tensor, channel or group) and transformers' fp8 (weight_scale_inv per block,
    DeepSeek-V3's layout)."""
    w = t.get(prefix + ".weight")
    inv = prefix + ".weight_scale_inv" in t
    parts = _parts(prefix, t, (".weight", ".weight_scale_inv" if inv else ".weight_scale"),
                   () if inv else (".weight_zero_point",))
    if w is None or parts is None or prefix + ".weight_packed" in t or len(w.shape) != 2:
        return None
    sc = t[parts[1][1]]
    fp8 = w.dtype.startswith("float8_e4m3") or w.dtype.startswith("float8_e5m2")
    if not fp8 and w.dtype != "int8":
        return None
    method = Method.FP8 if inv else Method.COMPRESSED_TENSORS
    known = cfg is not None and cfg.method is method
    rows, cols = w.shape[-2], w.shape[-1]
    if len(sc.shape) >= 2 and sc.shape[-2] and sc.shape[-1] and (sc.shape[-2] > 1 or inv):
        block: tuple[int, ...] = (_block(rows, sc.shape[-2]), _block(cols, sc.shape[-1]))
        if known and cfg is not None and cfg.block:
            block = cfg.block
        gran = f"block {block[0]}x{block[1]}" if block[0] > 1 else f"group {block[1]}" if block[1] > 1 else "per-channel"
    else:
        block, gran = (rows, cols), "per-tensor" if math.prod(sc.shape) == 1 else "per-channel"
        if math.prod(sc.shape) == rows:
            block = (1, cols)
    kind = "fp8_e4m3" if w.dtype.startswith("float8_e4m3") else "fp8_e5m2" if fp8 else "int8"
    name = "FP8" if method is Method.FP8 else "compressed-tensors"
    quant = QuantInfo(_label(name, f"{kind.replace('_', ' ')}, {gran}", not known), method.value,
                      _compute(sc) if sc.dtype != "float32" or not inv else "bfloat16", block=block,
                      inferred=not known, bits=8, codec="scaled")
    return _logical(prefix + ".weight", w.shape, kind, parts, t, quant)


def _block(n: int, scales: int) -> int:
    """The block edge along a dimension of `n` values with `scales` scales: 128 (DeepSeek-V3's and
    every FP8 block config seen) where it gives that count, else the even split."""
    return 128 if math.ceil(n / 128) == scales and scales > 1 else math.ceil(n / scales)


# -- MXFP4 (gpt-oss) ------------------------------------------------------------------------------

def _mxfp4(prefix: str, t: Mapping[str, TensorInfo], cfg: QuantConfig | None) -> _Claim | None:
    """gpt-oss experts: X_blocks uint8 [E, R, G, 16] (two e2m1 codes a byte, low nibble first) and
    X_scales uint8 [E, R, G] (e8m0 exponents, bias 127), one scale per 32 values. transformers'
    convert_moe_packed_tensors gives [E, R, G*32] transposed to the parameter's [E, G*32, R]."""
    parts = _parts(prefix, t, ("_blocks", "_scales"))
    if parts is None:
        return None
    b, s = t[prefix + "_blocks"], t[prefix + "_scales"]
    if b.dtype != "uint8" or s.dtype != "uint8" or len(b.shape) < 2 or b.shape[-1] != 16 or b.shape[:-1] != s.shape:
        return None
    known = cfg is not None and cfg.method is Method.MXFP4
    flat = (*b.shape[:-2], b.shape[-2] * 32)
    shape = (flat[0], flat[2], flat[1]) if len(flat) == 3 else flat
    quant = QuantInfo(_label("MXFP4", "e2m1, block 32, e8m0 scales", not known), Method.MXFP4.value, "bfloat16",
                      group_size=32, inferred=not known, bits=4, codec="mxfp4",
                      settings=(("transposed", len(flat) == 3),))
    return _logical(prefix, shape, "mxfp4", parts, t, quant)


# -- bitsandbytes ---------------------------------------------------------------------------------

def _bnb4(qtype: str, stem: str, t: Mapping[str, TensorInfo], cfg: QuantConfig | None) -> _Claim | None:
    """Params4bit as transformers saves it: weight uint8 [n/2, 1] (two codes a byte, high nibble
    first), weight.absmax, weight.quant_map [16], with double quantization weight.nested_absmax and
    weight.nested_quant_map, and weight.quant_state.bitsandbytes__<type>: a uint8 JSON blob with the
    logical shape, dtype, blocksize and nested settings."""
    parts = _parts(stem, t, (".weight", ".weight.absmax", ".weight.quant_map", f".weight.quant_state.bitsandbytes__{qtype}"),
                   (".weight.nested_absmax", ".weight.nested_quant_map"))
    if parts is None or t[stem + ".weight"].dtype != "uint8":
        return None
    parts = tuple((role.removeprefix("weight."), name) for role, name in parts)
    state = _quant_state(t[parts[3][1]])
    if state is None:
        return None
    shape, dtype, blocksize = state
    if math.prod(shape) > 2 * t[stem + ".weight"].numel:
        return None
    nested = stem + ".weight.nested_absmax" in t
    known = cfg is not None and cfg.method is Method.BITSANDBYTES
    quant = QuantInfo(_label("bitsandbytes", f"{qtype}, block {blocksize}{', double quant' if nested else ''}",
                             not known), Method.BITSANDBYTES.value, dtype, group_size=blocksize, inferred=not known,
                      bits=4, codec="bnb4", settings=(("quant_type", qtype),))
    return _logical(stem + ".weight", shape, qtype, parts, t, quant)


def _bnb8(prefix: str, t: Mapping[str, TensorInfo], cfg: QuantConfig | None) -> _Claim | None:
    """Int8Params (LLM.int8): weight int8 [out, in], SCB float32 [out] (row absmax), weight_format."""
    parts = _parts(prefix, t, (".weight", ".SCB"), (".weight_format",))
    if parts is None:
        return None
    w, scb = t[prefix + ".weight"], t[prefix + ".SCB"]
    if w.dtype != "int8" or len(w.shape) != 2 or scb.shape != (w.shape[0],):
        return None
    known = cfg is not None and cfg.method is Method.BITSANDBYTES
    quant = QuantInfo(_label("bitsandbytes", "int8 (LLM.int8), per-row absmax", not known),
                      Method.BITSANDBYTES.value, "float16", inferred=not known, bits=8, codec="bnb8", block=(1, w.shape[1]))
    return _logical(prefix + ".weight", w.shape, "int8", parts, t, quant)


def _quant_state(info: TensorInfo) -> tuple[tuple[int, ...], str, int] | None:
    """(shape, dtype, blocksize) from a bitsandbytes quant_state blob, None where unreadable."""
    raw = _small_bytes(info)
    try:
        state = json.loads(raw.decode("utf-8")) if raw is not None else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(state, dict):
        return None
    shape, dtype, blocksize = state.get("shape"), state.get("dtype"), state.get("blocksize")
    if (not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape) or type(blocksize) is not int
            or blocksize <= 0 or dtype not in ("float16", "bfloat16", "float32")):
        return None
    return tuple(shape), dtype, blocksize


def _stored_shape(info: TensorInfo | None) -> tuple[int, ...] | None:
    """compressed-tensors' weight_shape: the logical shape as an int tensor of 2 values."""
    if info is None or info.dtype not in ("int64", "int32") or info.numel != 2:
        return None
    raw = _small_bytes(info)
    if raw is None:
        return None
    vals = tuple(int.from_bytes(raw[i:i + len(raw) // 2], "little", signed=True) for i in (0, len(raw) // 2))
    return vals if all(v > 0 for v in vals) else None


def _small_bytes(info: TensorInfo) -> bytes | None:
    """The bytes of a small contiguous tensor, read from its file; None where they cannot be."""
    if info.source is None or info.data_offset is None or info.nbytes > _SMALL or not info.is_contiguous:
        return None
    start = info.data_offset + info.storage_offset * itemsize(info.storage_dtype or info.dtype)
    try:
        with open_regular(info.source) as f:
            return read_exact(f, start, info.nbytes, info.source, "quantization metadata")
    except (OSError, BadInput):
        return None


# -- optimum-quanto -------------------------------------------------------------------------------

def _quanto(prefix: str, t: Mapping[str, TensorInfo], cfg: QuantConfig | None) -> _Claim | None:
    """optimum-quanto's frozen weights as its state_dict (and safetensors) holds them. qint8/qfloat8
    (WeightQBytesTensor): weight._data int8/float8 [out, in], weight._scale [out, 1]. qint4/qint2
    (WeightQBitsTensor): weight._data._data uint8 [ceil(n/per), c] packing rows i, i+n/per, ... of
    the codes [n, c] (PackedTensor.pack_weights), weight._scale and weight._shift [n, 1]. Grouped (in
    > 128: group c), [n, c] is the weight [out, in] reshaped row-major; the file does not store the
    split (quanto takes it from the model), so [out, in] is used where a bias [out] says out, else
    the stored [n, c] (numel, bytes and values stay right)."""
    qbits = prefix + ".weight._data._data" in t
    parts = _parts(prefix, t, (".weight._data._data" if qbits else ".weight._data", ".weight._scale"),
                   (".weight._shift",) if qbits else ())
    if parts is None:
        return None
    d, sc = t[parts[0][1]], t[parts[1][1]]
    if len(d.shape) != 2 or len(sc.shape) != 2 or sc.shape[1] != 1 or sc.dtype not in ("float16", "bfloat16", "float32"):
        return None
    parts = tuple((role.removeprefix("weight."), name) for role, name in parts)
    known = cfg is not None and cfg.method is Method.QUANTO
    rows, cols = sc.shape[0], d.shape[1]
    if qbits:
        shift = t.get(prefix + ".weight._shift")
        bits = 4 if d.shape[0] == -(-rows // 2) else 2 if d.shape[0] == -(-rows // 4) else 0  # codes a byte
        if known and cfg is not None and cfg.quant_type in ("int2", "int4"):
            bits = int(cfg.quant_type[3:]) if d.shape[0] == -(-rows // (8 // int(cfg.quant_type[3:]))) else 0
        if not bits or d.dtype != "uint8" or shift is None or shift.shape != sc.shape:
            return None
        bias = t.get(prefix + ".bias")
        out = bias.shape[0] if bias is not None and len(bias.shape) == 1 and bias.shape[0] else rows
        shape = (out, rows * cols // out) if (rows * cols) % out == 0 and (rows * cols // out) % cols == 0 else (rows, cols)
        kind, gran = f"int{bits}", "per-channel" if shape == (rows, cols) and out == rows else f"group {cols}"
    else:
        kind = {"int8": "int8", "float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}.get(d.dtype, "")
        if not kind or rows != d.shape[0]:
            return None
        bits, shape, gran = 8, (rows, cols), "per-channel"
    quant = QuantInfo(_label("quanto", f"{kind.replace('_', ' ')}, {gran}", not known), Method.QUANTO.value,
                      sc.dtype, group_size=cols if qbits else None, inferred=not known, bits=bits, codec="quanto",
                      block=(1, cols))
    return _logical(prefix + ".weight", shape, kind, parts, t, quant)


# Anchors, by the suffix of the part that names a layout; the first matching suffix decides.
_ANCHORS: tuple[tuple[str, _Layout], ...] = (
    (".qweight", _gptq_awq),
    (".weight_packed", _ct_packed),
    (".weight_scale_inv", _scaled),
    (".weight_scale", _scaled),
    ("_blocks", _mxfp4),
    (".weight.quant_state.bitsandbytes__nf4", partial(_bnb4, "nf4")),
    (".weight.quant_state.bitsandbytes__fp4", partial(_bnb4, "fp4")),
    (".SCB", _bnb8),
    (".weight._scale", _quanto),
)
_SUFFIXES = tuple(suffix for suffix, _ in _ANCHORS)
