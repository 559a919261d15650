"""MMAudio's 1-D mel VAE (docs/MMAUDIO.md, Mel, VAE and vocoders): EDM2-style magnitude-preserving convolutions over mel frames.

Checkpoints (v1-16.pth, v1-44.pth) are flat state dicts with the RAW MPConv1D weights; at load
every weight is re-normalised once per output row (``normalize_weights_``), as the official
``remove_weight_norm`` does. Encoder: (B, n_mels, T) -> posterior over (B, E, T/2); decoder:
(B, E, N) -> (B, n_mels, 2N). Both work in the log-mel domain of ``mel.py``.
"""

from __future__ import annotations

import math
import os
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import read_state_dict, source_name, write_safetensors, write_torch
from ..errors import WeightsError
from . import winograd
from .state_dict import check_finite, check_keys, describe

CH_MULT = (1, 2, 4)
NUM_RES_BLOCKS = 2
CLIP_ACT = 256.0
MP_SUM_T = 0.3
MODE_DIMS = {"16k": (80, 20, 384), "44k": (128, 40, 512)}  # data_dim, embed_dim, hidden_dim
MODE_OF_DATA_DIM = {80: "16k", 128: "44k"}


# ---------------------------------------------------------------------------------------------
# Magnitude-preserving pieces
# ---------------------------------------------------------------------------------------------

def mp_normalize(x: Tensor, dim, eps: float = 1e-4) -> Tensor:
    """x / (eps + ||x||_dim / sqrt(#elements in dim)): unit RMS over ``dim`` (norm in float32)."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = eps + norm * math.sqrt(norm.numel() / x.numel())
    return x / norm.to(x.dtype)


def mp_silu(x: Tensor) -> Tensor:
    return F.silu(x) / 0.596  # 0.596 = std of silu(N(0,1)): keeps unit magnitude


def mp_sum(a: Tensor, b: Tensor, t: float = MP_SUM_T) -> Tensor:
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t ** 2)


def normalized_mp_weight(w: Tensor) -> Tensor:
    """The load-time fold of a raw MPConv1D weight [out, in, k] (float32 math)."""
    w32 = w.to(torch.float32)
    fan_in = w32[0].numel()
    w32 = mp_normalize(w32, dim=list(range(1, w32.ndim))) / math.sqrt(fan_in)
    return w32.to(w.dtype)


class MPConv1D(nn.Module):
    """Bias-free conv with "same" padding; ``weight`` holds the raw value until the VAE's
    ``normalize_weights_`` folds it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        weight = torch.empty(out_channels, in_channels, kernel_size)
        # randn's values (the same as normal_ on empty), skipped on the meta device where torch's
        # Python reference would import torch._dynamo and sympy; a loaded file replaces them.
        if weight.device.type != "meta":
            weight.normal_()
        self.weight = nn.Parameter(weight)

    def forward(self, x: Tensor, gain: Tensor | None = None) -> Tensor:
        if gain is None and winograd.applies(x, self.weight):  # kernel 3, CPU inference
            u = winograd.cached_weights(self, self.weight)
            if u is not None:
                return winograd.conv1d_k3(x, u)
        w = self.weight if gain is None else self.weight * gain
        return F.conv1d(x, w.to(x.dtype), padding=w.shape[-1] // 2)


class ResnetBlock1D(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 3):
        super().__init__()
        self.conv1 = MPConv1D(in_dim, out_dim, kernel_size)
        self.conv2 = MPConv1D(out_dim, out_dim, kernel_size)
        if in_dim != out_dim:
            self.nin_shortcut = MPConv1D(in_dim, out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = mp_normalize(x, dim=1)  # pixel norm; also the skip path
        h = self.conv2(mp_silu(self.conv1(mp_silu(x))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return mp_sum(x, h)


class AttnBlock1D(nn.Module):
    """Single-head self-attention over time; qkv channels are interleaved (3c + j)."""

    def __init__(self, channels: int):
        super().__init__()
        self.qkv = MPConv1D(channels, channels * 3, 1)
        self.proj_out = MPConv1D(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, n = x.shape
        y = self.qkv(x).reshape(b, c, 3, n)
        y = mp_normalize(y, dim=1)  # each of q, k, v to unit RMS over channels
        q, k, v = (y[:, :, j].transpose(1, 2)[:, None] for j in range(3))  # (B, 1, N, C)
        h = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2)
        return mp_sum(x, self.proj_out(h))


class Downsample1D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = MPConv1D(channels, channels, 1)
        self.conv2 = MPConv1D(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))


class Upsample1D(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = MPConv1D(channels, channels, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        # nearest-exact x2 == each frame repeated twice
        return self.conv(torch.repeat_interleave(x, 2, dim=-1))


class _Mid(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock1D(channels, channels)
        self.attn_1 = AttnBlock1D(channels)
        self.block_2 = ResnetBlock1D(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: res blocks (``block``), optional resampler."""

    def __init__(self, dims: list[tuple[int, int]], down: int = 0, up: int = 0):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock1D(i, o) for i, o in dims)
        if down:
            self.downsample = Downsample1D(down)
        if up:
            self.upsample = Upsample1D(up)

    def run_blocks(self, h: Tensor) -> Tensor:
        for blk in self.block:
            h = blk(h).clamp(-CLIP_ACT, CLIP_ACT)
        return h


class Encoder1D(nn.Module):
    def __init__(self, data_dim: int, embed_dim: int, hidden_dim: int):
        super().__init__()
        self.learnable_gain = nn.Parameter(torch.zeros([]))
        self.conv_in = MPConv1D(data_dim, hidden_dim, 3)
        levels, c_in = [], hidden_dim
        for i, mult in enumerate(CH_MULT):
            c_out = hidden_dim * mult
            dims = [(c_in if b == 0 else c_out, c_out) for b in range(NUM_RES_BLOCKS)]
            levels.append(_Level(dims, down=c_out if i == 0 else 0))  # time /2 at level 0 only
            c_in = c_out
        self.down = nn.ModuleList(levels)
        self.mid = _Mid(c_in)
        self.conv_out = MPConv1D(c_in, 2 * embed_dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level.run_blocks(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h).clamp(-CLIP_ACT, CLIP_ACT)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class Decoder1D(nn.Module):
    def __init__(self, data_dim: int, embed_dim: int, hidden_dim: int):
        super().__init__()
        self.learnable_gain = nn.Parameter(torch.zeros([]))
        c_in = hidden_dim * CH_MULT[-1]
        self.conv_in = MPConv1D(embed_dim, c_in, 3)
        self.mid = _Mid(c_in)
        levels = [None] * len(CH_MULT)
        for i in reversed(range(len(CH_MULT))):
            c_out = hidden_dim * CH_MULT[i]
            dims = [(c_in if b == 0 else c_out, c_out) for b in range(NUM_RES_BLOCKS + 1)]
            # the encoder halves time after level 0, so the decoder doubles it after level 1
            levels[i] = _Level(dims, up=c_out if i == 1 else 0)
            c_in = c_out
        self.up = nn.ModuleList(levels)  # indexed by level, run from the deepest
        self.conv_out = MPConv1D(c_in, data_dim, 3)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z)).clamp(-CLIP_ACT, CLIP_ACT)
        for level in reversed(self.up):
            h = level.run_blocks(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class DiagonalGaussian:
    """The encoder's posterior: mean and log-variance (clamped to [-30, 20]) per latent value."""

    def __init__(self, moments: Tensor):
        self.moments = moments
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype,
                          device=self.mean.device)
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        return self.mean


class VAE(nn.Module):
    """Mel VAE. Build with real dims from ``MODE_DIMS`` or reduced ones; load with ``load_vae``."""

    def __init__(self, data_dim: int, embed_dim: int, hidden_dim: int, *, with_encoder: bool = True):
        super().__init__()
        self.data_dim, self.embed_dim, self.hidden_dim = data_dim, embed_dim, hidden_dim
        self.register_buffer("data_mean", torch.zeros(1, data_dim, 1))
        self.register_buffer("data_std", torch.ones(1, data_dim, 1))
        self.encoder = Encoder1D(data_dim, embed_dim, hidden_dim) if with_encoder else None
        self.decoder = Decoder1D(data_dim, embed_dim, hidden_dim)
        self.weights_normalized = False
        self._raw_weights: dict[str, Tensor] | None = None

    @property
    def mode(self) -> str | None:
        """'16k' / '44k' from the mel count (None for an unusual data_dim)."""
        return MODE_OF_DATA_DIM.get(self.data_dim)

    @property
    def has_encoder(self) -> bool:
        return self.encoder is not None

    def mp_conv_names(self) -> list[str]:
        return [n + ".weight" for n, m in self.named_modules() if isinstance(m, MPConv1D)]

    @torch.no_grad()
    def normalize_weights_(self, keep_raw: bool = False) -> "VAE":
        """Fold every raw MPConv1D weight once (idempotent: a second call does nothing).
        ``keep_raw`` keeps a copy of the raw weights so save_vae_checkpoint can write them."""
        if self.weights_normalized:
            return self
        params = dict(self.named_parameters())
        if keep_raw:
            self._raw_weights = {n: params[n].detach().clone() for n in self.mp_conv_names()}
        for n in self.mp_conv_names():
            params[n].copy_(normalized_mp_weight(params[n]))
        self.weights_normalized = True
        return self

    def drop_encoder(self) -> "VAE":
        """Free the encoder (decode-only use)."""
        self.encoder = None
        if self._raw_weights is not None:
            self._raw_weights = {k: v for k, v in self._raw_weights.items()
                                 if not k.startswith("encoder.")}
        return self

    def _require_ready(self):
        if not self.weights_normalized:
            raise RuntimeError("VAE weights are still raw: call vae.normalize_weights_() first "
                               "(load_vae does this)")

    def normalize(self, mel: Tensor) -> Tensor:
        return (mel - self.data_mean) / self.data_std

    def unnormalize(self, x: Tensor) -> Tensor:
        return x * self.data_std + self.data_mean

    def encode(self, mel: Tensor, normalize: bool = True) -> DiagonalGaussian:
        """(B, n_mels, T) log-mel -> posterior over (B, E, T/2)."""
        self._require_ready()
        if self.encoder is None:
            raise RuntimeError("this VAE was loaded without its encoder (need_encoder=False)")
        if mel.ndim != 3 or mel.shape[1] != self.data_dim:
            raise ValueError(f"VAE.encode expects (B, {self.data_dim}, T); got {tuple(mel.shape)}")
        x = mel.to(self.data_mean.dtype)
        if normalize:
            x = self.normalize(x)
        return DiagonalGaussian(self.encoder(x))

    def decode(self, z: Tensor, unnormalize: bool = True) -> Tensor:
        """(B, E, N) channel-first latent -> (B, n_mels, 2N) log-mel."""
        self._require_ready()
        if z.ndim != 3 or z.shape[1] != self.embed_dim:
            raise ValueError(f"VAE.decode expects (B, {self.embed_dim}, N) (channel-first); "
                             f"got {tuple(z.shape)}")
        x = self.decoder(z.to(self.data_mean.dtype))
        return self.unnormalize(x) if unnormalize else x


# ---------------------------------------------------------------------------------------------
# Loading and saving
# ---------------------------------------------------------------------------------------------

def infer_vae_dims(sd: Mapping[str, Tensor], source="the state dict") -> tuple[int, int, int]:
    """(data_dim, embed_dim, hidden_dim) from tensor shapes."""
    try:
        data_dim = sd["data_mean"].shape[1]
        four_hd, embed_dim = sd["decoder.conv_in.weight"].shape[:2]
    except (KeyError, IndexError, ValueError):  # ValueError: a tensor of the wrong rank
        raise WeightsError(f"{source_name(source)} is not an MMAudio VAE: it looks like "
                           f"{describe(sd)}") from None
    return int(data_dim), int(embed_dim), int(four_hd) // CH_MULT[-1]


def load_vae(source, *, expect_mode: str | None = None, need_encoder: bool = True,
             dtype: torch.dtype | None = None) -> VAE:
    """Load v1-16.pth / v1-44.pth (or a state dict, or a reduced/tiny file of the same layout),
    re-normalise the MPConv1D weights, and return an eval-mode VAE without gradients.
    ``need_encoder=False`` drops the encoder (decode only). ``expect_mode`` ('16k'/'44k') rejects
    a VAE of the other mode."""
    # unwrap "generator" so that a vocoder file given here is named as such
    sd = read_state_dict(source, unwrap=("generator",))
    data_dim, embed_dim, hidden_dim = infer_vae_dims(sd, source)
    mode = MODE_OF_DATA_DIM.get(data_dim)
    if expect_mode is not None and mode != expect_mode:
        raise WeightsError(f"{source_name(source)} is a VAE for {mode or f'{data_dim} mels'}, "
                           f"but the {expect_mode} model needs the {expect_mode} VAE "
                           f"({'v1-16.pth' if expect_mode == '16k' else 'v1-44.pth'})")
    has_encoder = any(k.startswith("encoder.") for k in sd)
    if need_encoder and not has_encoder:
        raise WeightsError(f"{source_name(source)} holds no VAE encoder, which is needed to "
                           "encode audio; use the released file, which has both halves")
    if not need_encoder:
        sd = {k: v for k, v in sd.items() if not k.startswith("encoder.")}
    with torch.device("meta"):
        vae = VAE(data_dim, embed_dim, hidden_dim, with_encoder=need_encoder)
    expected = {k: v.shape for k, v in vae.state_dict().items()}
    check_keys(sd, expected, what=f"the MMAudio VAE ({data_dim} mels, hidden {hidden_dim})",
               source=source)
    check_finite(sd, source=source)
    mp = set(vae.mp_conv_names())
    # New tensors only: never write into the caller's dict or a memory-mapped file.
    ready = {k: (normalized_mp_weight(v.float()) if k in mp else v.float().clone())
             for k, v in sd.items()}
    vae.load_state_dict(ready, strict=True, assign=True)
    vae.weights_normalized = True
    if dtype is not None:
        vae.to(dtype)
    return vae.eval().requires_grad_(False)


def vae_checkpoint_state(vae: VAE) -> dict[str, Tensor]:
    """The released layout: flat dict, raw MPConv1D weights, data_mean/data_std."""
    sd = {k: v.detach() for k, v in vae.state_dict().items()}
    if vae.weights_normalized:
        if vae._raw_weights is None:
            raise ValueError("this VAE's weights were already re-normalised and its raw weights "
                             "were not kept; a checkpoint needs the raw ones")
        sd.update(vae._raw_weights)
    return sd


def save_vae_checkpoint(vae: VAE, path: str | os.PathLike) -> None:
    """Write a VAE in the released layout (.safetensors, else torch.save for .pth/.pt)."""
    sd = {k: v.contiguous().cpu() for k, v in vae_checkpoint_state(vae).items()}
    if str(path).endswith((".safetensors", ".sft")):
        write_safetensors(sd, path)
    else:
        write_torch(sd, path)


def tiny_vae(mode: str, seed: int = 0, hidden_dim: int = 8) -> VAE:
    """A small seeded VAE with the real mel/latent widths of ``mode`` (16k: 80/20, 44k: 128/40).
    Returned ready to use (normalised) with its raw weights kept for save_vae_checkpoint."""
    if mode not in MODE_DIMS:
        raise ValueError(f"unknown mode {mode!r}: use '16k' or '44k'")
    data_dim, embed_dim, _ = MODE_DIMS[mode]
    gen = torch.Generator().manual_seed(seed)
    vae = VAE(data_dim, embed_dim, hidden_dim)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("learnable_gain"):
                p.copy_(0.5 * torch.randn((), generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 + torch.rand((), generator=gen)))
        # plausible log-mel statistics (log10 levels around -4 for 16k, ln around -9 for 44k)
        centre, spread = (-4.0, 1.0) if mode == "16k" else (-9.0, 2.5)
        vae.data_mean.copy_(centre + 0.5 * torch.randn(vae.data_mean.shape, generator=gen))
        vae.data_std.copy_(spread * (0.5 + torch.rand(vae.data_std.shape, generator=gen)))
    return vae.normalize_weights_(keep_raw=True).eval().requires_grad_(False)
