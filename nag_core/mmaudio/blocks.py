"""Building blocks of the MMAudio flow network (docs/MMAUDIO.md).

Attribute names are the checkpoint's key names (``attn.qkv``, ``adaLN_modulation.1``, ``ffn.w1``,
...), so ``load_state_dict`` takes the released files as they are.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import winograd
from .rope import apply_rope, build_table

LN_EPS = 1e-5  # nn.LayerNorm's default, no affine parameters in this network


def swiglu_width(dim: int, hidden: int, multiple_of: int = 256) -> int:
    """Inner width of the SwiGLU MLPs: 2/3 of ``hidden`` rounded up to a multiple of 256."""
    inner = int(2 * hidden / 3)
    return multiple_of * ((inner + multiple_of - 1) // multiple_of)


class ChannelLastConv1d(nn.Conv1d):
    """A Conv1d over (B, L, C) tensors (the checkpoint holds a plain Conv1d weight). The
    kernel-3 ones run as Winograd F(2, 3) where ``winograd.applies`` says so (inference on the
    CPU in float32): the same convolution with a third fewer multiplies."""

    def forward(self, x: Tensor) -> Tensor:
        if self._plain_k3 and winograd.applies(x, self.weight):
            u = winograd.cached_weights(self, self.weight)
            if u is not None:
                return winograd.conv1d_k3(x, u, self.bias, channels_last=True)
        return super().forward(x.transpose(1, 2)).transpose(1, 2)

    @property
    def _plain_k3(self) -> bool:
        return (self.kernel_size == (3,) and self.padding == (1,) and self.stride == (1,)
                and self.dilation == (1,) and self.groups == 1 and self.padding_mode == "zeros")


class MLP(nn.Module):
    """Bias-free SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        inner = swiglu_width(dim, hidden)
        self.w1 = nn.Linear(dim, inner, bias=False)
        self.w2 = nn.Linear(inner, dim, bias=False)
        self.w3 = nn.Linear(dim, inner, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ConvMLP(nn.Module):
    """SwiGLU whose three projections are bias-free channel-last convolutions."""

    def __init__(self, dim: int, hidden: int, kernel_size: int, padding: int):
        super().__init__()
        inner = swiglu_width(dim, hidden)
        self.w1 = ChannelLastConv1d(dim, inner, kernel_size, padding=padding, bias=False)
        self.w2 = ChannelLastConv1d(inner, dim, kernel_size, padding=padding, bias=False)
        self.w3 = ChannelLastConv1d(dim, inner, kernel_size, padding=padding, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def layer_norm(x: Tensor) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=LN_EPS)


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Unmasked SDPA over (B, H, L, d); returns (B, L, H*d)."""
    # The fused SDPA kernels need unit stride on the channel dim. v comes out of the
    # interleaved qkv with stride 3 (fused blocks), which silently selects the unfused math
    # path (about 1.5x slower per call on CPU at small_16k): copy it once instead.
    q, k, v = (u if u.stride(-1) == 1 else u.contiguous() for u in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


class SelfAttention(nn.Module):
    """The q/k/v projection of a block (attention itself is shared across streams)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        head_dim = dim // num_heads
        # eps None: float machine epsilon of the input dtype, as in the released model.
        self.q_norm = nn.RMSNorm(head_dim)
        self.k_norm = nn.RMSNorm(head_dim)

    def qkv_heads(self, x: Tensor, rot: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        # The qkv output channels are laid out (head, channel, j) with j = q/k/v INNERMOST:
        # q, k and v are interleaved channel by channel, not stored as three blocks.
        qkv = self.qkv(x).view(b, n, self.num_heads, -1, 3).permute(4, 0, 2, 1, 3)
        q, k, v = qkv.unbind(0)  # each (B, H, N, d)
        q = self.q_norm(q)
        k = self.k_norm(k)
        if rot is not None:
            q = apply_rope(q, rot)
            k = apply_rope(k, rot)
        return q, k, v


class SingleBlock(nn.Module):
    """MMDiT single-stream block with adaLN modulation (MMAudio's MMDitSingleBlock).

    Used alone as a fused block and as each stream of a joint block. ``kernel_size`` 3 gives a
    conv projection/FFN (latent, clip and fused blocks); 1 gives linear ones (text). A pre-only
    block only produces q/k/v and leaves its stream unchanged.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, pre_only: bool = False,
                 kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.pre_only = pre_only
        self.attn = SelfAttention(dim, num_heads)
        hidden = int(dim * mlp_ratio)
        if pre_only:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=True))
            return
        if kernel_size == 1:
            self.linear1 = nn.Linear(dim, dim)
            self.ffn = MLP(dim, hidden)
        else:
            self.linear1 = ChannelLastConv1d(dim, dim, kernel_size, padding=padding)
            self.ffn = ConvMLP(dim, hidden, kernel_size, padding)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, bias=True))

    def pre_attention(self, x: Tensor, c: Tensor, rot: Optional[Tensor]):
        """Returns ((q, k, v), modulation chunks). c is (B, 1, D) or per token (B, N, D)."""
        mods = self.adaLN_modulation(c).chunk(2 if self.pre_only else 6, dim=-1)
        shift_msa, scale_msa = mods[0], mods[1]
        h = modulate(layer_norm(x), shift_msa, scale_msa)
        return self.attn.qkv_heads(h, rot), mods

    def post_attention(self, x: Tensor, attn_out: Tensor, mods) -> Tensor:
        if self.pre_only:
            return x
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + self.linear1(attn_out) * gate_msa
        h = modulate(layer_norm(x), shift_mlp, scale_mlp)
        return x + self.ffn(h) * gate_mlp

    def forward(self, x: Tensor, c: Tensor, rot: Optional[Tensor] = None) -> Tensor:
        """Self-attention over x alone (a fused block)."""
        (q, k, v), mods = self.pre_attention(x, c, rot)
        return self.post_attention(x, attention(q, k, v), mods)


class JointBlock(nn.Module):
    """Latent, clip and text streams attending jointly over the concatenation [latent|clip|text].

    The latent stream is modulated per token by extended_c, clip and text by global_c. In the
    last joint block clip and text are pre-only (their outputs would never be used again).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, pre_only: bool = False):
        super().__init__()
        self.pre_only = pre_only
        self.latent_block = SingleBlock(dim, num_heads, mlp_ratio, pre_only=False,
                                        kernel_size=3, padding=1)
        self.clip_block = SingleBlock(dim, num_heads, mlp_ratio, pre_only=pre_only,
                                      kernel_size=3, padding=1)
        self.text_block = SingleBlock(dim, num_heads, mlp_ratio, pre_only=pre_only,
                                      kernel_size=1, padding=0)

    def forward(self, latent: Tensor, clip_f: Tensor, text_f: Tensor, global_c: Tensor,
                extended_c: Tensor, latent_rot: Tensor, clip_rot: Tensor):
        (lq, lk, lv), lmod = self.latent_block.pre_attention(latent, extended_c, latent_rot)
        (cq, ck, cv), cmod = self.clip_block.pre_attention(clip_f, global_c, clip_rot)
        (tq, tk, tv), tmod = self.text_block.pre_attention(text_f, global_c, None)
        n_l, n_c = latent.shape[1], clip_f.shape[1]
        out = attention(torch.cat([lq, cq, tq], dim=2), torch.cat([lk, ck, tk], dim=2),
                        torch.cat([lv, cv, tv], dim=2))
        l_out, c_out, t_out = out[:, :n_l], out[:, n_l:n_l + n_c], out[:, n_l + n_c:]
        latent = self.latent_block.post_attention(latent, l_out, lmod)
        clip_f = self.clip_block.post_attention(clip_f, c_out, cmod)
        text_f = self.text_block.post_attention(text_f, t_out, tmod)
        return latent, clip_f, text_f


class FinalBlock(nn.Module):
    """adaLN (shift, scale) + LayerNorm + k7 conv to latent_dim channels."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=True))
        self.conv = ChannelLastConv1d(dim, out_dim, kernel_size=7, padding=3)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.conv(modulate(layer_norm(x), shift, scale))


class TimestepEmbedder(nn.Module):
    """[cos(t f), sin(t f)] (cos first) -> Linear -> SiLU -> Linear.

    v1: 256 sinusoid features, f_k = 1 / 10000^(2k/256). v2: ``dim`` features and frequencies
    multiplied by 10000 (max_period 1). t in [0, 1] is used as is. The frequency table is a
    non-persistent float32 buffer.
    """

    def __init__(self, dim: int, frequency_embedding_size: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.dim = dim
        self.frequency_embedding_size = frequency_embedding_size
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, dim), nn.SiLU(),
                                 nn.Linear(dim, dim))
        self.register_buffer("freqs", self.frequencies(), persistent=False)

    def frequencies(self, device=None) -> Tensor:
        return build_table(self._frequencies, device)

    def _frequencies(self, device: torch.device) -> Tensor:
        size = self.frequency_embedding_size
        exponent = torch.arange(0, size, 2, dtype=torch.float32, device=device) / size
        return (10000.0 / self.max_period) / (10000.0 ** exponent)

    def forward(self, t: Tensor) -> Tensor:
        args = t.float()[:, None] * self.freqs.float()[None, :]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
