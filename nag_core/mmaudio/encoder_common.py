"""Pieces shared by the CLIP and Synchformer encoders: a packed self-attention with
nn.MultiheadAttention's parameter names, head-count inference, state-dict clean-up, strict
loading with readable errors, and the seeded initialisation used by the tiny test models."""

from __future__ import annotations

import math
import os
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import read_state_dict
from ..errors import WeightsError

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


def as_state_dict(source, what: str, unwrap: tuple[str, ...] = ("state_dict",)) -> dict[str, Tensor]:
    """A flat state dict from a path or an in-memory mapping; unwraps ``unwrap`` keys and strips
    a DataParallel ``module.`` prefix carried by every key."""
    if isinstance(source, (str, os.PathLike)):
        sd = read_state_dict(source, unwrap=unwrap)
    elif isinstance(source, Mapping):
        sd = dict(source)
        for key in unwrap:
            if key in sd and isinstance(sd[key], Mapping):
                sd = dict(sd[key])
    else:
        raise WeightsError(f"{what}: expected a weight-file path or a state dict, "
                           f"got {type(source).__name__}")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def require_keys(sd: Mapping[str, Tensor], keys: tuple[str, ...], what: str, expected: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        some = ", ".join(sorted(sd)[:5]) or "nothing"
        raise WeightsError(f"this is not a {what} state dict: it lacks {', '.join(missing[:4])} "
                           f"(it holds {some}{', ...' if len(sd) > 5 else ''}); "
                           f"expected {expected}")


def count_indexed(sd: Mapping[str, Tensor], prefix: str) -> int:
    """How many numbered sub-modules ``prefix<i>.`` the state dict holds (0..n-1)."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in sd):
        n += 1
    return n


def load_strict(model: nn.Module, sd: Mapping[str, Tensor], what: str, dtype) -> nn.Module:
    """Strict load with a readable error; ``assign`` lets a meta-device model take the file's
    tensors without a second copy in memory."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if extra:
            parts.append(f"{len(extra)} unexpected keys (e.g. {', '.join(extra[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:2])})")
        raise WeightsError(f"{what} weights do not match the model: {'; '.join(parts)}. "
                           "The file is probably a different model or damaged; download it again")
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
