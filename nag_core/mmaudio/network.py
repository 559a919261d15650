"""The MMAudio flow network (checkpoint compatible with the five released variants).

Split as MMAudio splits it: :meth:`MMAudioNetwork.preprocess_conditions` once per generation,
:meth:`MMAudioNetwork.predict_flow` once per Euler step. ``predict_flow`` also takes an optional
ControlNet hook (``control``) that adds residuals to selected batch rows of the latent stream.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..defaults import SYNC_TOKENS_PER_SEGMENT
from ..errors import ConfigError
from .blocks import (MLP, ChannelLastConv1d, ConvMLP, FinalBlock, JointBlock, SingleBlock,
                     TimestepEmbedder)
from .rope import build_table, nearest_exact_indices, rope_table
from .variants import NetworkConfig, SequenceLengths, sequence_lengths

# Non-persistent tables that old files may still carry; the official loader deletes them.
STALE_KEYS = ("t_embed.freqs", "latent_rot", "clip_rot")


@dataclass
class Conditions:
    """Preprocessed conditions (output of ``preprocess_conditions``), reusable over all steps.

    clip_f (B, Nc, D), sync_f (B, N, D) already stretched to the latent length, text_f (B, 77, D),
    clip_f_c and text_f_c (B, D) the pooled projections.
    """
    clip_f: Tensor
    sync_f: Tensor
    text_f: Tensor
    clip_f_c: Tensor
    text_f_c: Tensor

    @property
    def batch_size(self) -> int:
        return self.clip_f.shape[0]

    def _map(self, fn) -> "Conditions":
        return Conditions(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def expand(self, batch: int) -> "Conditions":
        """Broadcast batch-1 conditions to ``batch`` rows (views, no copy)."""
        if self.batch_size not in (1, batch):
            raise ValueError(f"cannot expand conditions of batch {self.batch_size} to {batch}")
        return self._map(lambda x: x.expand(batch, *x.shape[1:]))

    def select(self, rows: slice) -> "Conditions":
        return self._map(lambda x: x[rows])

    @staticmethod
    def cat(items: Sequence["Conditions"]) -> "Conditions":
        """Stack condition sets along the batch (branch order = list order), so guidance
        branches run in ONE network call."""
        items = list(items)
        if not items:
            raise ValueError("Conditions.cat needs at least one Conditions")
        return Conditions(**{f.name: torch.cat([getattr(c, f.name) for c in items], dim=0)
                             for f in fields(Conditions)})


@dataclass
class ControlResiduals:
    """What a ControlNet hook returns. ``rows`` selects the batch rows it applies to.

    input_residual (b, N, D) is added to the projected latent before block 0;
    block_residuals[i] (b, N, D) or None is added to the latent stream after base block i
    (joint blocks first, then fused blocks); its length must equal ``config.depth``.
    """
    rows: slice
    input_residual: Optional[Tensor]
    block_residuals: list


ControlHook = Callable[[Tensor, Tensor, Tensor, Tensor], ControlResiduals]
"""``control(h0, extended_c, global_c, latent_rot) -> ControlResiduals``."""


def _repeat_rows(x: Tensor, rows: int) -> Tensor:
    """x (b, ...) tiled along the batch to ``rows`` (a multiple of b) rows: [x, x, ...]."""
    k = rows // x.shape[0]
    return x if k == 1 else x.repeat(k, *([1] * (x.dim() - 1)))


def _add_rows(x: Tensor, rows: slice, residual: Optional[Tensor]) -> Tensor:
    if residual is None:
        return x
    if rows == slice(None):
        return x + residual
    x = x.clone()  # out of place for autograd through the residual (ControlNet training)
    x[rows] = x[rows] + residual
    return x


class MMAudioNetwork(nn.Module):
    """MMAudio's flow network. Sub-module and parameter names equal the checkpoint keys.

    Parts a ControlNet may copy or call: ``audio_input_proj``, ``joint_blocks[i].latent_block``
    and ``fused_blocks[i]`` (both :class:`SingleBlock`, same shapes, callable as
    ``block(x, extended_c, latent_rot)``), ``t_embed``, ``latent_rot`` (RoPE table buffer).
    """

    def __init__(self, config: NetworkConfig, duration: float = 8.0):
        super().__init__()
        self._config = config
        c = config
        d = c.hidden_dim
        hidden = int(d * c.mlp_ratio)
        act = nn.SiLU if c.v2 else nn.SELU

        # Parameter registration order follows the released state_dict.
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, SYNC_TOKENS_PER_SEGMENT, c.sync_dim))
        self.latent_mean = nn.Parameter(torch.zeros(1, 1, c.latent_dim), requires_grad=False)
        self.latent_std = nn.Parameter(torch.ones(1, 1, c.latent_dim), requires_grad=False)
        self.empty_string_feat = nn.Parameter(torch.zeros(c.text_seq_len, c.text_dim),
                                              requires_grad=False)
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, c.clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, c.sync_dim))

        self.audio_input_proj = nn.Sequential(
            ChannelLastConv1d(c.latent_dim, d, kernel_size=7, padding=3), act(),
            ConvMLP(d, hidden, kernel_size=7, padding=3))
        # v2 inserts an activation after the first Linear of clip/text, shifting the index.
        clip_proj = [nn.Linear(c.clip_dim, d)] + ([nn.SiLU()] if c.v2 else [])
        self.clip_input_proj = nn.Sequential(*clip_proj, ConvMLP(d, hidden, kernel_size=3, padding=1))
        self.sync_input_proj = nn.Sequential(
            ChannelLastConv1d(c.sync_dim, d, kernel_size=7, padding=3), act(),
            ConvMLP(d, hidden, kernel_size=3, padding=1))
        text_proj = [nn.Linear(c.text_dim, d)] + ([nn.SiLU()] if c.v2 else [])
        self.text_input_proj = nn.Sequential(*text_proj, MLP(d, hidden))

        self.clip_cond_proj = nn.Linear(d, d)
        self.text_cond_proj = nn.Linear(d, d)
        self.global_cond_mlp = MLP(d, hidden)
        self.final_layer = FinalBlock(d, c.latent_dim)
        if c.v2:
            self.t_embed = TimestepEmbedder(d, frequency_embedding_size=d, max_period=1)
        else:
            self.t_embed = TimestepEmbedder(d, frequency_embedding_size=256, max_period=10000)

        self.joint_blocks = nn.ModuleList(
            JointBlock(d, c.num_heads, c.mlp_ratio, pre_only=(i == c.joint_depth - 1))
            for i in range(c.joint_depth))
        self.fused_blocks = nn.ModuleList(
            SingleBlock(d, c.num_heads, c.mlp_ratio, kernel_size=3, padding=1)
            for _ in range(c.fused_depth))

        self.set_duration(duration)

    # ----------------------------------------------------------------- configuration
    @property
    def config(self) -> NetworkConfig:
        return self._config

    @property
    def lengths(self) -> SequenceLengths:
        return self._lengths

    @property
    def duration(self) -> float:
        return self._lengths.duration

    @property
    def latent_seq_len(self) -> int:
        return self._lengths.latent

    @property
    def clip_seq_len(self) -> int:
        return self._lengths.clip

    @property
    def sync_seq_len(self) -> int:
        return self._lengths.sync

    @property
    def dtype(self) -> torch.dtype:
        return self.latent_mean.dtype

    @property
    def device(self) -> torch.device:
        return self.latent_mean.device

    def set_duration(self, duration: float) -> None:
        """Switch to the sequence lengths of ``duration`` seconds and rebuild the RoPE tables and
        the sync stretch map. No weight depends on the duration."""
        self._lengths = sequence_lengths(self._config.mode, duration)
        self._build_tables()

    def _build_tables(self) -> None:
        # Always float32 on the parameters' device, whatever dtype the weights have.
        dev = self.latent_mean.device
        n, nc, ns = self._lengths.latent, self._lengths.clip, self._lengths.sync
        hd = self._config.head_dim
        self.register_buffer("latent_rot", build_table(lambda d: rope_table(n, hd, device=d), dev),
                             persistent=False)
        self.register_buffer(
            "clip_rot", build_table(lambda d: rope_table(nc, hd, freq_scaling=n / nc, device=d),
                                    dev), persistent=False)
        self.register_buffer("sync_index", nearest_exact_indices(ns, n, device=dev),
                             persistent=False)
        self.t_embed.register_buffer("freqs", self.t_embed.frequencies(device=dev),
                                     persistent=False)

    def _apply(self, fn, recurse=True):
        # .to(bf16) would round the RoPE/timestep tables; rebuild them in float32 instead.
        super()._apply(fn, recurse)
        if hasattr(self, "_lengths"):
            self._build_tables()
        return self

    # ----------------------------------------------------------------- latent normalization
    def normalize(self, x: Tensor) -> Tensor:
        """(x - latent_mean) / latent_std (out of place, unlike the official in-place version)."""
        return (x - self.latent_mean) / self.latent_std

    def unnormalize(self, x: Tensor) -> Tensor:
        """x * latent_std + latent_mean: what the VAE decoder takes."""
        return x * self.latent_std + self.latent_mean

    # ----------------------------------------------------------------- conditions
    def _check_len(self, name: str, x: Tensor, length: int, width: int) -> None:
        if x.dim() != 3 or x.shape[1] != length or x.shape[2] != width:
            raise ConfigError(
                f"{name} features have shape {tuple(x.shape)}, but the network is set to "
                f"{self.duration:g} s and expects (B, {length}, {width}); compute the features "
                "for the same duration or call set_duration()")

    def preprocess_conditions(self, clip_f: Tensor, sync_f: Tensor, text_f: Tensor) -> Conditions:
        """Project the features once per generation: clip (B, Nc, clip_dim), sync (B, Ns,
        sync_dim), text (B, 77, text_dim)."""
        c = self._config
        self._check_len("clip", clip_f, self.clip_seq_len, c.clip_dim)
        self._check_len("sync", sync_f, self.sync_seq_len, c.sync_dim)
        self._check_len("text", text_f, c.text_seq_len, c.text_dim)
        # Features may come from encoders on another device (e.g. CLIP kept on the CPU).
        to = dict(device=self.device, dtype=self.dtype)
        clip = self.clip_input_proj(clip_f.to(**to))
        sync = self._project_sync(sync_f.to(**to))
        text = self.text_input_proj(text_f.to(**to))
        return Conditions(clip_f=clip, sync_f=sync, text_f=text,
                          clip_f_c=self.clip_cond_proj(clip.mean(dim=1)),
                          text_f_c=self.text_cond_proj(text.mean(dim=1)))

    def _project_sync(self, sync_f: Tensor) -> Tensor:
        b, ns, ch = sync_f.shape
        # The same learned position vectors are added to every Synchformer segment's tokens.
        per = SYNC_TOKENS_PER_SEGMENT
        sync_f = (sync_f.view(b, ns // per, per, ch) + self.sync_pos_emb).flatten(1, 2)
        sync = self.sync_input_proj(sync_f)
        # nearest-exact stretch from Ns to N tokens (precomputed float32 index map)
        return sync.index_select(1, self.sync_index)

    def get_empty_clip_sequence(self, batch: int) -> Tensor:
        return self.empty_clip_feat.unsqueeze(0).expand(batch, self.clip_seq_len, -1)

    def get_empty_sync_sequence(self, batch: int) -> Tensor:
        return self.empty_sync_feat.unsqueeze(0).expand(batch, self.sync_seq_len, -1)

    def get_empty_string_sequence(self, batch: int) -> Tensor:
        return self.empty_string_feat.unsqueeze(0).expand(batch, -1, -1)

    def get_empty_conditions(self, batch: int,
                             negative_text_features: Optional[Tensor] = None) -> Conditions:
        """The unconditional branch: learned empty clip and sync sequences plus either the
        stored empty-string text features or ``negative_text_features`` (1 or B, 77, text_dim).
        Computed at batch 1 (or the negative text's batch) and expanded to ``batch``."""
        if negative_text_features is not None:
            text = negative_text_features
            if text.shape[0] not in (1, batch):
                raise ConfigError(f"negative text features have batch {text.shape[0]}, "
                                  f"expected 1 or {batch}")
        else:
            text = self.get_empty_string_sequence(1)
        video = self.preprocess_conditions(self.get_empty_clip_sequence(1),
                                           self.get_empty_sync_sequence(1), text[:1])
        if text.shape[0] == 1:
            return video.expand(batch)
        # text[:1] passed preprocess_conditions' shape check, so all rows have the right shape
        text_p = self.text_input_proj(text.to(device=self.device, dtype=self.dtype))
        v = video.expand(batch)
        return Conditions(clip_f=v.clip_f, sync_f=v.sync_f, text_f=text_p,
                          clip_f_c=v.clip_f_c, text_f_c=self.text_cond_proj(text_p.mean(dim=1)))

    # ----------------------------------------------------------------- flow
    def conditioning_vectors(self, t: Tensor, conditions: Conditions) -> tuple[Tensor, Tensor]:
        """global_c (B, 1, D) = t_embed(t) + global_cond_mlp(clip_f_c + text_f_c);
        extended_c (B, N, D) = global_c + sync_f. ``t`` is (B,), or (B / k,) when the batch is
        k branches of the same rows (embedded once, repeated), or a single time (1,)."""
        global_c = self.global_cond_mlp(conditions.clip_f_c + conditions.text_f_c)
        t_emb = self.t_embed(torch.as_tensor(t, device=global_c.device).reshape(-1))
        global_c = (_repeat_rows(t_emb, global_c.shape[0]) + global_c).unsqueeze(1)
        return global_c, global_c + conditions.sync_f

    def predict_flow(self, latent: Tensor, t: Tensor, conditions: Conditions,
                     control: Optional[ControlHook] = None) -> Tensor:
        """Velocity (k·B, N, latent_dim) at x_t = ``latent`` (B, N, latent_dim, normalized space),
        time t (B,) or scalar, for conditions of batch k·B: with k > 1 the latent is shared by k
        stacked branches (row j·B + i of the output is branch j on latent row i), as the
        guidance branches share x_t. What depends only on x_t and t (the audio input projection,
        the timestep embedding) is then computed once per latent row, not once per branch.
        ``control`` is an optional ControlNet hook (see :class:`ControlResiduals`)."""
        b, n = latent.shape[0], latent.shape[1]
        if n != self.latent_seq_len:
            raise ConfigError(f"latent has {n} tokens but the network is set to "
                              f"{self.duration:g} s ({self.latent_seq_len} tokens)")
        rows = conditions.batch_size
        if rows % b:
            raise ConfigError(f"conditions have batch {rows}, latent has {b}: the conditions "
                              "must be the latent's batch or k stacked branches of it")
        t = torch.as_tensor(t, device=latent.device).reshape(-1)
        if t.numel() not in (1, b, rows):
            raise ConfigError(f"t has {t.numel()} values for a latent of batch {b}")

        x = _repeat_rows(self.audio_input_proj(latent.to(self.dtype)), rows)
        global_c, extended_c = self.conditioning_vectors(t, conditions)
        residuals = None
        if control is not None:
            residuals = control(x, extended_c, global_c, self.latent_rot)
            if len(residuals.block_residuals) != self._config.depth:
                raise ValueError(f"control returned {len(residuals.block_residuals)} block "
                                 f"residuals, the network has {self._config.depth} blocks")
            x = _add_rows(x, residuals.rows, residuals.input_residual)

        clip_f, text_f = conditions.clip_f, conditions.text_f
        for i, block in enumerate(self.joint_blocks):
            x, clip_f, text_f = block(x, clip_f, text_f, global_c, extended_c,
                                      self.latent_rot, self.clip_rot)
            if residuals is not None:
                x = _add_rows(x, residuals.rows, residuals.block_residuals[i])
        offset = len(self.joint_blocks)
        for i, block in enumerate(self.fused_blocks):
            x = block(x, extended_c, self.latent_rot)
            if residuals is not None:
                x = _add_rows(x, residuals.rows, residuals.block_residuals[offset + i])
        # Conditioned on global_c, not extended_c: a known quirk of the released model.
        return self.final_layer(x, global_c)

    def forward(self, latent: Tensor, clip_f: Tensor, sync_f: Tensor, text_f: Tensor,
                t: Tensor) -> Tensor:
        """MMAudio's argument order (t last): preprocess_conditions + predict_flow."""
        return self.predict_flow(latent, t, self.preprocess_conditions(clip_f, sync_f, text_f))


@torch.no_grad()
def randomize_parameters_(network: MMAudioNetwork, seed: int = 0) -> MMAudioNetwork:
    """Re-draw every parameter so that every term matters (the golden files' recipe): matrices
    N(0, 1/sqrt(fan_in)), vectors N(0, 0.2), RMSNorm weights 1 + N(0, 0.2), latent_mean
    N(0, 0.5), latent_std U(0.5, 1.5), empty features N(0, 1), sync_pos_emb N(0, 0.5).
    For tests and smoke-test models; real use loads a checkpoint."""
    g = torch.Generator().manual_seed(seed)
    for name, p in network.named_parameters():
        shape = p.shape
        if name == "latent_mean":
            v = torch.randn(shape, generator=g) * 0.5
        elif name == "latent_std":
            v = torch.rand(shape, generator=g) + 0.5
        elif name in ("empty_string_feat", "empty_clip_feat", "empty_sync_feat"):
            v = torch.randn(shape, generator=g)
        elif name == "sync_pos_emb":
            v = torch.randn(shape, generator=g) * 0.5
        elif name.endswith("_norm.weight"):
            v = 1 + torch.randn(shape, generator=g) * 0.2
        elif p.dim() >= 2:
            fan_in = p[0].numel()
            v = torch.randn(shape, generator=g) / fan_in ** 0.5
        else:
            v = torch.randn(shape, generator=g) * 0.2
        p.copy_(v.to(p.dtype))
    return network
