"""CLIP as MMAudio uses it (apple/DFN5B-CLIP-ViT-H-14-384 through open_clip), written without
open_clip. Parameter names follow open_clip's layout, so ``open_clip_pytorch_model.bin`` loads
strictly. Sizes are read from the state dict; head counts (not recoverable from weights) come
from the released configuration or 64-channel heads unless given explicitly.

* ``encode_image``: OpenAI mean/std normalisation, ViT with class token, ln_post on the class
  token, ``@ proj``, L2 normalisation -> (B, embed_dim).
* ``encode_text``: MMAudio's patched behaviour: the ln_final state of all context positions,
  each L2-normalised, no EOT pooling and no text_projection -> (B, 77, text_width).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import read_state_dict, write_torch
from ..errors import ConfigError, MediaError, WeightsError
from .encoder_common import (PackedSelfAttention, count_indexed, infer_heads, load_strict,
                             seeded_init)
from .state_dict import require_keys

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 384  # MMAudio feeds 384x384 frames; stride 14 then ignores the last 6 rows/columns

# DFN5B ViT-H/14: 80-channel vision heads (16 of them); its text tower uses 64-channel heads.
KNOWN_VISION_HEADS = {1280: 16}
KNOWN_TEXT_HEADS = {1024: 16}
EXPECTED_FILE = ("open_clip_pytorch_model.bin from the Hugging Face repo "
                 "apple/DFN5B-CLIP-ViT-H-14-384")


@dataclass(frozen=True)
class ClipConfig:
    embed_dim: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    patch_size: int
    grid: int
    text_width: int
    text_layers: int
    text_heads: int
    context_length: int
    vocab_size: int

    @property
    def image_size(self) -> int:
        """The frame size MMAudio feeds (384) when it yields this grid, else the exact cover."""
        fits = self.grid * self.patch_size <= IMAGE_SIZE < (self.grid + 1) * self.patch_size
        return IMAGE_SIZE if fits else self.grid * self.patch_size

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Tensor], vision_heads: int | None = None,
                        text_heads: int | None = None, *, source=None) -> "ClipConfig":
        """``source``: where ``sd`` came from, for error messages."""
        require_keys(sd, ("visual.conv1.weight", "visual.positional_embedding", "visual.proj",
                          "token_embedding.weight", "positional_embedding"),
                     what="a open_clip CLIP state dict", source=sd if source is None else source,
                     expected=EXPECTED_FILE)
        v_width, _, patch, _ = sd["visual.conv1.weight"].shape
        positions = sd["visual.positional_embedding"].shape[0] - 1
        grid = int(round(positions ** 0.5))
        if grid * grid != positions:
            raise WeightsError(f"CLIP visual.positional_embedding has {positions + 1} rows, "
                               "which is not a square grid plus a class token")
        vocab, t_width = sd["token_embedding.weight"].shape
        return cls(embed_dim=sd["visual.proj"].shape[1], vision_width=v_width,
                   vision_layers=count_indexed(sd, "visual.transformer.resblocks."),
                   vision_heads=infer_heads(v_width, vision_heads, KNOWN_VISION_HEADS,
                                            "CLIP vision tower"),
                   patch_size=patch, grid=grid, text_width=t_width,
                   text_layers=count_indexed(sd, "transformer.resblocks."),
                   text_heads=infer_heads(t_width, text_heads, KNOWN_TEXT_HEADS,
                                          "CLIP text tower"),
                   context_length=sd["positional_embedding"].shape[0], vocab_size=vocab)


def quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


class _Mlp(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(quick_gelu(self.c_fc(x)))


class _Embedding(nn.Module):
    """nn.Embedding's key layout without its init: normal_() on the meta device pulls in torch's
    decomposition machinery, which costs seconds on first use."""

    def __init__(self, rows: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, width))

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = PackedSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = _Mlp(width)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x, self.causal)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ClipConfig):
        super().__init__()
        w = cfg.vision_width
        self.conv1 = nn.Conv2d(3, w, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty(cfg.grid * cfg.grid + 1, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Transformer(w, cfg.vision_layers, cfg.vision_heads, causal=False)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.empty(w, cfg.embed_dim))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        # ln_post is per token, so normalising the pooled class token alone is the same result
        return self.ln_post(x[:, 0]) @ self.proj


class ClipModel(nn.Module):
    """open_clip CLIP layout. ``text_projection`` and ``logit_scale`` are kept (the checkpoint
    has them) but MMAudio never uses them."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = VisionTransformer(cfg)
        self.token_embedding = _Embedding(cfg.vocab_size, cfg.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.text_width))
        self.transformer = Transformer(cfg.text_width, cfg.text_layers, cfg.text_heads, causal=True)
        self.ln_final = nn.LayerNorm(cfg.text_width)
        self.text_projection = nn.Parameter(torch.empty(cfg.text_width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.empty(()))
        mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @torch.no_grad()
    def encode_image(self, frames: Tensor, normalize: bool = True) -> Tensor:
        """frames: float (B, 3, 384, 384) in [0, 1] (``u8 * (1/255)``) -> (B, embed_dim)."""
        size = self.cfg.image_size
        if frames.ndim != 4 or frames.shape[1] != 3 or not frames.is_floating_point():
            raise MediaError(f"CLIP expects float frames (B, 3, {size}, {size}) in [0, 1]; "
                             f"got {tuple(frames.shape)} {frames.dtype}")
        grid = (frames.shape[-2] // self.cfg.patch_size, frames.shape[-1] // self.cfg.patch_size)
        if grid != (self.cfg.grid, self.cfg.grid):
            raise MediaError(f"CLIP expects {size}x{size} frames; got "
                             f"{frames.shape[-2]}x{frames.shape[-1]}: resize them first")
        # Normalise in float32 (MMAudio normalises before any cast), then run in model precision.
        x = frames.to(self.mean.device).float()
        x = (x - self.mean.float()) / self.std.float()
        x = self.visual(x.to(self.dtype))
        return F.normalize(x, dim=-1) if normalize else x

    @torch.no_grad()
    def encode_video(self, frames: Tensor, chunk: int = 16) -> Tensor:
        """(B, T, 3, 384, 384) float in [0, 1] -> (B, T, embed_dim), run ``chunk`` frames at a
        time to bound memory (ViT-H attention over 730 tokens is large). The frames may stay on
        the CPU: each chunk is moved to the model's device on its own."""
        if frames.ndim != 5:
            raise MediaError(f"CLIP video input must be (B, T, 3, H, W); got {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        flat = frames.reshape(b * t, *frames.shape[2:])
        out = [self.encode_image(flat[i:i + chunk]) for i in range(0, b * t, max(1, chunk))]
        return torch.cat(out).view(b, t, -1)

    @torch.no_grad()
    def encode_text(self, tokens: Tensor, normalize: bool = True) -> Tensor:
        """token ids (B, context_length) -> (B, context_length, text_width): the ln_final state
        of every position, each L2-normalised (MMAudio's patched ``encode_text``)."""
        if tokens.ndim != 2 or tokens.shape[1] != self.cfg.context_length:
            raise ConfigError(f"CLIP text input must be token ids (B, {self.cfg.context_length}); "
                              f"got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.max()) >= self.cfg.vocab_size or int(tokens.min()) < 0):
            raise ConfigError(f"token id {int(tokens.max())} is outside this CLIP's vocabulary of "
                              f"{self.cfg.vocab_size}: the tokenizer's BPE vocabulary does not "
                              "belong to this CLIP model")
        x = self.token_embedding(tokens.to(self.positional_embedding.device))
        x = self.transformer(x + self.positional_embedding)
        x = self.ln_final(x)
        return F.normalize(x, dim=-1) if normalize else x


def load_clip(source, dtype: torch.dtype | None = None, *, vision_heads: int | None = None,
              text_heads: int | None = None, device: torch.device | str = "cpu") -> ClipModel:
    """CLIP from ``open_clip_pytorch_model.bin`` (or .pth/.safetensors, or a state dict) in
    open_clip's layout; a ``state_dict`` wrapper and a ``module.`` prefix are accepted. ``dtype``
    None keeps the file's precision. Raises WeightsError for anything else."""
    sd = read_state_dict(source, unwrap=("state_dict",))
    cfg = ClipConfig.from_state_dict(sd, vision_heads, text_heads, source=source)
    with torch.device("meta"):
        model = ClipModel(cfg)
    model = load_strict(model, sd, what="the CLIP model it describes", source=source, dtype=dtype)
    # the normalisation constants were created on meta; rebuild them for real
    model.mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    model.std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return model.to(device)


def tiny_clip(seed: int = 0, vocab_size: int = 1024, *, embed_dim: int = 48, width: int = 128,
              layers: int = 2, context_length: int = 77, patch_size: int = 14,
              grid: int = 27) -> ClipModel:
    """A small CLIP with the real geometry (384 px frames, patch 14, 77 text positions) and
    seeded random weights, for tests and the smoke-test model set. Both towers have
    ``width // 64`` heads so ``load_clip`` infers them back from a saved file."""
    heads = infer_heads(width, None, {}, "tiny CLIP")
    cfg = ClipConfig(embed_dim=embed_dim, vision_width=width, vision_layers=layers,
                     vision_heads=heads, patch_size=patch_size, grid=grid, text_width=width,
                     text_layers=layers, text_heads=heads, context_length=context_length,
                     vocab_size=vocab_size)
    model = seeded_init(ClipModel(cfg), seed)
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)  # ln(100), open_clip's trained value; unused here
    return model


def save_clip(model: ClipModel, path: str | os.PathLike) -> None:
    """Write the released layout: a flat open_clip state dict (``open_clip_pytorch_model.bin``
    style, torch.save). A ``.safetensors`` path writes the same keys as safetensors."""
    from ..checkpoint import write_safetensors
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if str(path).lower().endswith(".safetensors"):
        write_safetensors(sd, path)
    else:
        write_torch(sd, path)
