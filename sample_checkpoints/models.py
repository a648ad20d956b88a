"""Tiny model definitions behind the sample checkpoints (depends on torch only).

Importable as a plain file, e.g.::

    statecli inspect sample_checkpoints/cnn.pt --model sample_checkpoints/models.py:SmallCNN
    statecli inspect sample_checkpoints/transformer.pt --model sample_checkpoints/models.py:TinyTransformer

- ``SmallCNN``: two conv+BatchNorm blocks and a linear head (BN running stats and an int64
  ``num_batches_tracked`` buffer per BN layer).
- ``TinyTransformer``: a 2-layer pre-norm transformer in the style of current Hugging Face models:
  a non-persistent ``embeddings.position_ids`` buffer, non-persistent rotary ``inv_freq`` buffers,
  a persistent bool ``causal_mask`` buffer and an ``lm_head`` whose weight is the same Parameter
  as ``embeddings.word_embeddings.weight``.
- ``ScaledLinear``: a Linear with a plain tensor attribute (``scale``) that is neither a
  parameter nor a buffer, so it never appears in ``state_dict()``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SmallCNN", "TinyTransformer", "ScaledLinear"]


class SmallCNN(nn.Module):
    """conv1/bn1 -> conv2/bn2 -> global average pool -> fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.pool(x).flatten(1)
        return self.fc(x)


class ScaledLinear(nn.Module):
    """Linear layer times a fixed scale held as a plain tensor attribute (not registered)."""

    def __init__(self, in_features: int = 4, out_features: int = 4, scale: float = 2.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        # Deliberately NOT a buffer: invisible to state_dict(), only kept by a full pickle.
        self.scale = torch.tensor(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


class Embeddings(nn.Module):
    """Word + learned position embeddings; ``position_ids`` is a non-persistent buffer."""

    def __init__(self, vocab_size: int, dim: int, max_positions: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)
        self.position_embeddings = nn.Embedding(max_positions, dim)
        # As in current transformers BERT: not saved; older versions saved it (persistent).
        self.register_buffer("position_ids", torch.arange(max_positions).unsqueeze(0), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        positions = self.position_ids[:, :seq_len]
        return self.word_embeddings(input_ids) + self.position_embeddings(positions)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding; ``inv_freq`` is recomputed at init, so it is non-persistent."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [batch, heads, seq, head_dim]
        seq_len = x.shape[-2]
        t = torch.arange(seq_len, dtype=self.inv_freq.dtype, device=x.device)
        freqs = torch.outer(t, self.inv_freq)
        cos, sin = freqs.cos(), freqs.sin()
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.flatten(-2)


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim)
        self.rotary = RotaryEmbedding(self.head_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.n_heads, self.head_dim).transpose(1, 2)

        q = self.rotary(heads(self.q_proj(x)))
        k = self.rotary(heads(self.k_proj(x)))
        v = heads(self.v_proj(x))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask[:s, :s], float("-inf"))
        out = scores.softmax(-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, s, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.up_proj = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.down_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attention = Attention(dim, n_heads)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = MLP(dim, 2 * dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attn_norm(x), mask)
        return x + self.mlp(self.mlp_norm(x))


class TinyTransformer(nn.Module):
    """Causal LM: embeddings -> layers.N -> final_norm -> lm_head (tied to word embeddings)."""

    def __init__(
        self,
        vocab_size: int = 64,
        dim: int = 32,
        n_layers: int = 2,
        n_heads: int = 2,
        max_positions: int = 16,
    ) -> None:
        super().__init__()
        self.embeddings = Embeddings(vocab_size, dim, max_positions)
        self.layers = nn.ModuleList(Block(dim, n_heads) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        # Tie: one Parameter object reachable under two names.
        self.lm_head.weight = self.embeddings.word_embeddings.weight
        # Persistent bool buffer (saved in state_dict()).
        self.register_buffer("causal_mask", torch.ones(max_positions, max_positions, dtype=torch.bool).tril())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, self.causal_mask)
        return self.lm_head(self.final_norm(x))
