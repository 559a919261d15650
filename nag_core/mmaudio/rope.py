"""Rotary position embedding as MMAudio applies it: rotation of ADJACENT channel pairs
(2k, 2k+1) of each head, tables kept in float32 (docs/MMAUDIO.md)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def build_table(build: Callable[[torch.device], Tensor],
                device: torch.device | str | None = None) -> Tensor:
    """``build(device)`` on ``device`` (None: the current default device), except that a table
    for the meta device is built on the CPU and then moved: torch's meta ``arange`` runs its
    Python reference, which imports torch._dynamo and sympy (800 modules, ~1 s, ~67 MiB) into
    every process that builds a network on meta before loading its weights."""
    target = torch.empty(0, device=device).device
    if target.type != "meta":
        return build(target)
    return build(torch.device("cpu")).to(target)


def rope_table(length: int, dim: int, theta: float = 10000.0, freq_scaling: float = 1.0,
               device: torch.device | str | None = None) -> Tensor:
    """Rotation matrices [1, length, dim/2, 2, 2] = [[cos, -sin], [sin, cos]] in float32.

    Frequency k is ``freq_scaling / theta^(2k/dim)``; position p rotates by ``p * f_k``.
    ``freq_scaling = N / Nc`` places clip token j at latent time j * N / Nc.
    """
    if dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {dim}")
    # Same float32 operation order as the reference so the table matches it bit for bit.
    exponent = torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim
    freqs = 1.0 / (theta ** exponent)
    freqs = freqs * freq_scaling
    angles = torch.arange(length, dtype=torch.float32, device=device)[:, None] * freqs[None, :]
    cos, sin = torch.cos(angles), torch.sin(angles)
    table = torch.stack([cos, -sin, sin, cos], dim=-1)
    return table.view(1, length, dim // 2, 2, 2)


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate x (B, H, L, d) with a table [1, L, d/2, 2, 2]; computed in float32, cast back."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)  # (B, H, L, d/2, 1, 2): (x0, x1)
    # out[..., i] = table[i, 0] * x0 + table[i, 1] * x1
    out = table[..., 0] * pairs[..., 0] + table[..., 1] * pairs[..., 1]
    return out.reshape(x.shape).to(x.dtype)


def nearest_exact_indices(n_in: int, n_out: int, device: torch.device | str | None = None) -> Tensor:
    """Source index of each output position for PyTorch's ``nearest-exact`` resize n_in -> n_out.

    ``min(floor(float32(i + 0.5) * float32(n_in / n_out)), n_in - 1)``. The float32 product is
    what the checkpoints were trained with; the exact rational formula differs in a few places
    (192 -> 345 at i = 57 and 172). Computing the map once also makes it device independent.
    """
    cpu = torch.device("cpu")  # explicit: also under a default-device context
    scale = (torch.tensor(n_in, dtype=torch.float32, device=cpu)
             / torch.tensor(n_out, dtype=torch.float32, device=cpu))
    pos = torch.arange(n_out, dtype=torch.float32, device=cpu) + 0.5
    idx = torch.floor(pos * scale).to(torch.int64).clamp_(max=n_in - 1)
    return build_table(lambda d: idx.to(d), device)
