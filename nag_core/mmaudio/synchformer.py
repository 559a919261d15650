"""Synchformer visual encoder as MMAudio uses it (the ``vfeat_extractor`` MotionFormer of
``synchformer_state_dict.pth``), written without timm.

Per 16-frame segment: a 3-D patch embedding (2x16x16) gives 8x14x14 tokens plus a CLS token;
blocks of divided space-time attention (time attention, then space attention, then MLP); the
final LayerNorm; then, per temporal token, a learned CLS attends over its 14x14 patches through
one pre-norm transformer encoder layer, keeping 8 vectors per segment. ``encode`` cuts a 25 fps
video into segments of 16 frames at stride 8 -> (B, 8*S, width).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import read_state_dict, write_torch
from ..errors import MediaError, WeightsError
from .encoder_common import (PackedSelfAttention, count_indexed, infer_heads, load_strict,
                             seeded_init)
from .state_dict import require_keys

PREFIX = "vfeat_extractor."
SEGMENT_STRIDE = 8  # MMAudio: 16-frame segments overlapping by half
LN_EPS = 1e-6
KNOWN_HEADS = {768: 12}
EXPECTED_FILE = ("synchformer_state_dict.pth from "
                 "https://github.com/hkchengrex/MMAudio/releases/download/v0.1/")


@dataclass(frozen=True)
class SynchformerConfig:
    width: int
    depth: int
    heads: int
    mlp_hidden: int
    agg_hidden: int
    patch_size: int
    temporal_patch: int
    temporal_tokens: int
    grid: int

    @property
    def frames_per_segment(self) -> int:
        return self.temporal_patch * self.temporal_tokens

    @property
    def image_size(self) -> int:
        return self.grid * self.patch_size

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Tensor], heads: int | None = None, *,
                        source=None) -> "SynchformerConfig":
        """``source``: where ``sd`` came from, for error messages."""
        require_keys(sd, ("patch_embed_3d.proj.weight", "pos_embed", "temp_embed",
                          "blocks.0.mlp.fc1.weight", "spatial_attn_agg.linear1.weight"),
                     what="a Synchformer (vfeat_extractor) state dict",
                     source=sd if source is None else source, expected=EXPECTED_FILE)
        width, _, t_patch, patch, _ = sd["patch_embed_3d.proj.weight"].shape
        patches = sd["pos_embed"].shape[1] - 1
        grid = int(round(patches ** 0.5))
        if grid * grid != patches:
            raise WeightsError(f"Synchformer pos_embed has {patches + 1} rows, which is not a "
                               "square grid plus a CLS token")
        return cls(width=width, depth=count_indexed(sd, "blocks."),
                   heads=infer_heads(width, heads, KNOWN_HEADS, "Synchformer"),
                   mlp_hidden=sd["blocks.0.mlp.fc1.weight"].shape[0],
                   agg_hidden=sd["spatial_attn_agg.linear1.weight"].shape[0],
                   patch_size=patch, temporal_patch=t_patch,
                   temporal_tokens=sd["temp_embed"].shape[1], grid=grid)


class DividedAttention(nn.Module):
    """MotionFormer attention: ``qkv`` holds [q|k|v] blocks; q is pre-scaled by d^-0.5. The CLS
    query attends to every token; each patch query attends to its group (same spatial position
    across time, or same frame across space) plus the CLS key."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, frames: int, over_time: bool) -> Tensor:
        b, n, d = x.shape
        h, hd = self.heads, d // self.heads
        patches = (n - 1) // frames
        q, k, v = self.qkv(x).view(b, n, 3, h, hd).permute(2, 0, 3, 1, 4)  # each (b, h, n, hd)
        q = q * hd ** -0.5
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v, scale=1.0)

        def groups(t: Tensor) -> Tensor:  # (b, h, T*P, hd) -> (b*h, groups, members, hd)
            t = t.reshape(b * h, frames, patches, hd)
            return t.transpose(1, 2) if over_time else t

        q_, k_, v_ = (groups(t[:, :, 1:]) for t in (q, k, v))
        g = q_.shape[1]
        k_ = torch.cat([k[:, :, :1].reshape(b * h, 1, 1, hd).expand(-1, g, -1, -1), k_], dim=2)
        v_ = torch.cat([v[:, :, :1].reshape(b * h, 1, 1, hd).expand(-1, g, -1, -1), v_], dim=2)
        out = F.scaled_dot_product_attention(q_, k_, v_, scale=1.0)
        if over_time:
            out = out.transpose(1, 2)
        out = torch.cat([cls_out, out.reshape(b, h, frames * patches, hd)], dim=2)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DividedSpaceTimeBlock(nn.Module):
    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        w = cfg.width
        self.norm1 = nn.LayerNorm(w, eps=LN_EPS)
        self.attn = DividedAttention(w, cfg.heads)
        self.timeattn = DividedAttention(w, cfg.heads)
        self.norm2 = nn.LayerNorm(w, eps=LN_EPS)
        self.mlp = _Mlp(w, cfg.mlp_hidden)
        self.norm3 = nn.LayerNorm(w, eps=LN_EPS)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        x = x + self.timeattn(self.norm3(x), frames, over_time=True)
        x = x + self.attn(self.norm1(x), frames, over_time=False)
        return x + self.mlp(self.norm2(x))


class SpatialAggregator(nn.Module):
    """Equivalent of MMAudio's spatial TransformerEncoderLayer (pre-norm, GELU, no dropout) with
    its own ``cls_token``; returns the CLS row for each temporal token."""

    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.cls_token = nn.Parameter(torch.empty(1, 1, width))
        self.self_attn = PackedSelfAttention(width, heads)
        self.linear1 = nn.Linear(width, hidden)
        self.linear2 = nn.Linear(hidden, width)
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)

    def forward(self, x: Tensor) -> Tensor:  # (N, P, D) -> (N, D)
        x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.self_attn(self.norm1(x))
        x = x[:, 0]  # the feed-forward is per token and only the CLS row is kept
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class _PatchEmbed(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.proj = conv


class Synchformer(nn.Module):
    """The MotionFormer visual encoder; its state dict is the released ``vfeat_extractor.*``
    entries with that prefix stripped."""

    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        self.cfg = cfg
        w, p = cfg.width, cfg.patch_size
        self.cls_token = nn.Parameter(torch.empty(1, 1, w))
        self.pos_embed = nn.Parameter(torch.empty(1, cfg.grid * cfg.grid + 1, w))
        self.temp_embed = nn.Parameter(torch.empty(1, cfg.temporal_tokens, w))
        # The 2-D patch embedding is in the checkpoint but never used in forward.
        self.patch_embed = _PatchEmbed(nn.Conv2d(3, w, p, stride=p))
        self.patch_embed_3d = _PatchEmbed(nn.Conv3d(3, w, (cfg.temporal_patch, p, p),
                                                    stride=(cfg.temporal_patch, p, p)))
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(w, eps=LN_EPS)
        self.spatial_attn_agg = SpatialAggregator(w, cfg.heads, cfg.agg_hidden)

    @property
    def dtype(self) -> torch.dtype:
        return self.cls_token.dtype

    def forward_features(self, x: Tensor) -> Tensor:
        """Segments (N, 3, 16, H, W) -> tokens (N, 1 + T*P, D) after the blocks, CLS first,
        before the final norm."""
        x = self.patch_embed_3d.proj(x).flatten(2).transpose(1, 2)  # (t, h, w) order
        frames = self.cfg.temporal_tokens
        pos = self.pos_embed[:, 1:].repeat(1, frames, 1)
        pos = pos + self.temp_embed.repeat_interleave(self.cfg.grid * self.cfg.grid, dim=1)
        x = x + pos.to(x.dtype)
        cls = (self.cls_token + self.pos_embed[:, :1]).to(x.dtype).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x, frames)
        return x

    def forward(self, segments: Tensor) -> Tensor:
        """Segments (N, 3, 16, H, W) -> (N, 8, D)."""
        x = self.norm(self.forward_features(segments)[:, 1:])
        n, frames = x.shape[0], self.cfg.temporal_tokens
        x = self.spatial_attn_agg(x.reshape(n * frames, -1, x.shape[-1]))
        return x.view(n, frames, -1)  # temporal aggregation is the identity

    @torch.no_grad()
    def encode(self, frames: Tensor, chunk: int = 8) -> Tensor:
        """25 fps frames (B, T, 3, 224, 224) in [-1, 1] -> (B, 8*S, D) with
        S = (T - 16)//8 + 1 segments of 16 frames at stride 8; token 8*s + t belongs to segment s.
        ``chunk`` segments run per forward pass to bound memory; the frames may stay on the CPU
        (each chunk is moved to the model's device on its own)."""
        cfg = self.cfg
        size, seg = cfg.image_size, cfg.frames_per_segment
        if frames.ndim != 5 or frames.shape[2] != 3 or frames.shape[-2:] != (size, size):
            raise MediaError(f"Synchformer expects frames (B, T, 3, {size}, {size}); got "
                             f"{tuple(frames.shape)}: resize and centre-crop them first")
        b, t = frames.shape[:2]
        if t < seg:
            raise MediaError(f"Synchformer needs at least {seg} frames at 25 fps (0.64 s) of "
                             f"video; got {t}: use a longer clip")
        starts = list(range(0, t - seg + 1, SEGMENT_STRIDE))
        # Segment (batch i, start s) in batch-major order, gathered a chunk at a time so the
        # overlapping copies never exist for the whole video at once.
        pairs = [(i, s) for i in range(b) for s in starts]
        out = []
        for j in range(0, len(pairs), max(1, chunk)):
            batch = torch.stack([frames[i, s:s + seg] for i, s in pairs[j:j + chunk]])
            batch = batch.to(self.cls_token.device, self.dtype).permute(0, 2, 1, 3, 4)
            out.append(self(batch))
        return torch.cat(out).reshape(b, len(starts) * cfg.temporal_tokens, -1)


def _strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keep only the visual encoder of a full Synchformer file (as MMAudio does); an already
    stripped dict passes through."""
    if any(k.startswith(PREFIX) for k in sd):
        return {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}
    return sd


def load_synchformer(source, dtype: torch.dtype | None = None, *, heads: int | None = None,
                     device: torch.device | str = "cpu") -> Synchformer:
    """The visual encoder from ``synchformer_state_dict.pth`` (the whole released Synchformer:
    only ``vfeat_extractor.*`` is kept), a stripped state dict, or a path to either. Loaded
    strictly; ``dtype`` None keeps the file's precision."""
    sd = _strip_prefix(read_state_dict(source, unwrap=("state_dict",)))
    cfg = SynchformerConfig.from_state_dict(sd, heads, source=source)
    with torch.device("meta"):
        model = Synchformer(cfg)
    return load_strict(model, sd, what="the Synchformer it describes", source=source,
                       dtype=dtype).to(device)


def tiny_synchformer(seed: int = 0, *, width: int = 128, depth: int = 2) -> Synchformer:
    """A small Synchformer with the real geometry (224 px, patch 16, 16-frame segments,
    8 tokens per segment) and seeded random weights; ``width // 64`` heads, so ``load_synchformer``
    infers them back from a saved file."""
    cfg = SynchformerConfig(width=width, depth=depth, heads=infer_heads(width, None, {}, "tiny"),
                            mlp_hidden=4 * width, agg_hidden=4 * width, patch_size=16,
                            temporal_patch=2, temporal_tokens=8, grid=14)
    return seeded_init(Synchformer(cfg), seed)


def save_synchformer(model: Synchformer, path: str | os.PathLike,
                     extra: Mapping[str, Tensor] | None = None) -> None:
    """Write the released layout: a flat torch.save dict with every key under
    ``vfeat_extractor.``; ``extra`` adds keys of the other Synchformer parts (which loaders
    must ignore)."""
    sd = {PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    sd.update(extra or {})
    write_torch(sd, path)
