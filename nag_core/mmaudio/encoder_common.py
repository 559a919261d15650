"""Pieces shared by the CLIP and Synchformer encoders: a packed self-attention with
nn.MultiheadAttention's parameter names, head-count inference, strict loading, and the seeded
initialisation used by the tiny test models."""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import WeightsError
from .state_dict import check_finite, check_keys

# Head counts cannot be read from weights (q, k and v are packed into one matrix). The released
# models use 64-channel heads everywhere except the CLIP ViT-H vision tower (80-channel heads);
# unknown widths fall back to 64-channel heads, and callers may always pass the count explicitly.
DEFAULT_HEAD_DIM = 64


def infer_heads(width: int, explicit: int | None, known: Mapping[int, int], what: str) -> int:
    """Number of attention heads for a tower of this width."""
    heads = explicit if explicit is not None else known.get(width)
    if heads is None:
        if width % DEFAULT_HEAD_DIM:
            raise WeightsError(
                f"{what}: width {width} is not a multiple of {DEFAULT_HEAD_DIM}, so the head count "
                "cannot be guessed; pass the number of heads explicitly")
        heads = width // DEFAULT_HEAD_DIM
    if heads <= 0 or width % heads:
        raise WeightsError(f"{what}: {heads} heads do not divide the width {width}")
    return heads


class PackedSelfAttention(nn.Module):
    """Self-attention stored like nn.MultiheadAttention (``in_proj_weight`` holding [q|k|v]
    blocks, ``in_proj_bias``, ``out_proj``), so open_clip and nn.TransformerEncoderLayer state
    dicts load unchanged. Inputs are batch-first (B, L, D)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


def count_indexed(sd: Mapping[str, Tensor], prefix: str) -> int:
    """How many numbered sub-modules ``prefix<i>.`` the state dict holds (0..n-1)."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in sd):
        n += 1
    return n


def load_strict(model: nn.Module, sd: Mapping[str, Tensor], *, what: str, source,
                dtype) -> nn.Module:
    """Strict load (``what``: the model, for messages; ``source``: where ``sd`` came from);
    ``assign`` lets a meta-device model take the file's tensors without a second copy."""
    check_keys(sd, model.state_dict(), what=what, source=source)
    check_finite(sd, source=source)
    if dtype is None:  # keep the file's precision (the released files are float32)
        dtype = next((v.dtype for v in sd.values() if v.is_floating_point()), torch.float32)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.requires_grad_(False).eval()


@torch.no_grad()
def seeded_init(model: nn.Module, seed: int) -> nn.Module:
    """Deterministic random weights for the tiny test models: matrices ~ N(0, 1/sqrt(fan_in)),
    vectors ~ N(0, 0.02), LayerNorm weights 1 + N(0, 0.02) so every term contributes but the
    activations stay tame."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            fan_in = p[0].numel() if p.shape[0] > 1 else p.shape[-1]
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(1, fan_in)))
        elif name.endswith("weight") and ("ln" in name or "norm" in name):
            p.copy_(1 + 0.02 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return model.requires_grad_(False).eval()
