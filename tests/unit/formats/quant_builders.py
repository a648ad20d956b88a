"""Quantized layouts built the way each format's reference packing code builds them, from known
integer codes and scales, so the expected dequantized values are known exactly (float64 math of
small integers times float16 scales is exact in float32). Each builder cites the code it follows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def save(path: Path, tensors: dict[str, Any], config: dict[str, Any] | None = None) -> Path:
    """`tensors` (torch tensors) as safetensors at `path`, with config.json {"quantization_config": config}."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    if config is not None:
        (path.parent / "config.json").write_text(json.dumps({"quantization_config": config}))
    return path


def gptq(prefix: str, out: int, inn: int, group: int, rng: np.random.Generator, act_order: bool = False,
         bits: int = 4) -> tuple[dict[str, Any], np.ndarray]:
    """AutoGPTQ QuantLinear.pack (auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py; the same in
    GPTQModel and optimum's gptq exporter): qweight[r, o] holds rows r*pack..r*pack+pack-1 of the
    codes [in, out], lowest bits first; qzeros packs (zeros - 1) along out; scales [groups, out];
    g_idx[i] = the group of input channel i (a permutation of i // group under act-order)."""
    import torch

    pack, mask = 32 // bits, (1 << bits) - 1
    q = rng.integers(0, mask + 1, size=(inn, out), dtype=np.int64)
    z = rng.integers(1, mask + 1, size=(inn // group, out), dtype=np.int64)
    s = (rng.random((inn // group, out)) * 0.02 + 0.001).astype(np.float16)
    g = np.arange(inn) // group
    if act_order:
        g = rng.permutation(g)
    qweight = np.zeros((inn // pack, out), dtype=np.uint32)
    for j in range(pack):
        qweight |= (q[j::pack].astype(np.uint32) << np.uint32(bits * j))
    zm = (z - 1).astype(np.uint32)
    qzeros = np.zeros((inn // group, out // pack), dtype=np.uint32)
    for j in range(pack):
        qzeros |= zm[:, j::pack] << np.uint32(bits * j)
    w = (s[g].astype(np.float64) * (q - z[g])).T  # [out, in]
    tensors = {f"{prefix}.qweight": torch.from_numpy(qweight.view(np.int32)),
               f"{prefix}.qzeros": torch.from_numpy(qzeros.view(np.int32)),
               f"{prefix}.scales": torch.from_numpy(s), f"{prefix}.g_idx": torch.from_numpy(g.astype(np.int32))}
    return tensors, w


AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def awq(prefix: str, out: int, inn: int, group: int, rng: np.random.Generator) -> tuple[dict[str, Any], np.ndarray]:
    """AutoAWQ WQLinear_GEMM.from_linear (awq/modules/linear/gemm.py): codes [in, out]; word col of
    qweight holds columns col*8 + AWQ_ORDER[i] in nibble i; qzeros [groups, out/8] alike; scales
    [groups, out]; w = (q - z) * s."""
    import torch

    q = rng.integers(0, 16, size=(inn, out), dtype=np.int64)
    z = rng.integers(0, 16, size=(inn // group, out), dtype=np.int64)
    s = (rng.random((inn // group, out)) * 0.02 + 0.001).astype(np.float16)

    def pack(a: np.ndarray) -> np.ndarray:
        words = np.zeros((a.shape[0], a.shape[1] // 8), dtype=np.uint32)
        for col in range(a.shape[1] // 8):
            for i in range(8):
                words[:, col] |= a[:, col * 8 + AWQ_ORDER[i]].astype(np.uint32) << np.uint32(4 * i)
        return words.view(np.int32)

    g = np.arange(inn) // group
    w = ((q - z[g]) * s[g].astype(np.float64)).T
    return {f"{prefix}.qweight": torch.from_numpy(pack(q)), f"{prefix}.qzeros": torch.from_numpy(pack(z)),
            f"{prefix}.scales": torch.from_numpy(s)}, w


def fp8_block(prefix: str, out: int, inn: int, rng: np.random.Generator,
              block: int = 128) -> tuple[dict[str, Any], np.ndarray]:
    """DeepSeek-V3's FP8 layout (inference/kernel.py weight_dequant; transformers' FineGrainedFP8):
    weight float8_e4m3fn [out, in], weight_scale_inv float32 [ceil(out/128), ceil(in/128)],
    w = weight * scale_inv of its 128x128 block."""
    import torch

    w8 = torch.from_numpy(rng.standard_normal((out, inn)).astype(np.float32)).to(torch.float8_e4m3fn)
    s = torch.from_numpy((rng.random((-(-out // block), -(-inn // block))) + 0.5).astype(np.float32))
    full = s.repeat_interleave(block, 0)[:out].repeat_interleave(block, 1)[:, :inn]
    w = (w8.to(torch.float64) * full.to(torch.float64)).numpy()
    return {f"{prefix}.weight": w8, f"{prefix}.weight_scale_inv": s}, w


def mxfp4(prefix: str, experts: int, rows: int, cols: int, rng: np.random.Generator) -> dict[str, Any]:
    """gpt-oss MXFP4 experts (transformers' integrations/mxfp4.py layout): X_blocks uint8
    [E, rows, cols/32, 16], X_scales uint8 [E, rows, cols/32] (e8m0, bias 127)."""
    import torch

    blocks = rng.integers(0, 256, size=(experts, rows, cols // 32, 16), dtype=np.uint8)
    scales = rng.integers(120, 134, size=(experts, rows, cols // 32), dtype=np.uint8)
    return {f"{prefix}_blocks": torch.from_numpy(blocks), f"{prefix}_scales": torch.from_numpy(scales)}


def bnb4(prefix: str, out: int, inn: int, rng: np.random.Generator, blocksize: int = 64) -> dict[str, Any]:
    """bitsandbytes Params4bit as transformers' save_pretrained writes it with double quantization
    (QuantState.as_dict(packed=True)): weight uint8 [out*inn/2, 1] (high nibble first), absmax uint8
    codes into nested_quant_map [256] scaled by nested_absmax per 256 blocks plus nested_offset,
    quant_map [16], and the JSON blob weight.quant_state.bitsandbytes__nf4."""
    import torch

    n = out * inn
    codes = rng.integers(0, 16, size=n, dtype=np.uint8)
    blocks = -(-n // blocksize)
    state = {"quant_type": "nf4", "blocksize": blocksize, "dtype": "float16", "shape": [out, inn],
             "nested_blocksize": 256, "nested_offset": 0.01}
    blob = bytearray(json.dumps(state).encode())
    return {f"{prefix}.weight": torch.from_numpy(((codes[0::2] << 4) | codes[1::2]).reshape(-1, 1)),
            f"{prefix}.weight.absmax": torch.from_numpy(rng.integers(0, 256, size=blocks, dtype=np.uint8)),
            f"{prefix}.weight.quant_map": torch.linspace(-1, 1, 16),
            f"{prefix}.weight.nested_absmax": torch.rand(-(-blocks // 256)),
            f"{prefix}.weight.nested_quant_map": torch.linspace(-1, 1, 256),
            f"{prefix}.weight.quant_state.bitsandbytes__nf4": torch.frombuffer(blob, dtype=torch.uint8)}
