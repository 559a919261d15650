"""MMAudio network variants, audio modes and the duration -> sequence-length relations.

Everything here is configuration: no tensors. The numbers come from the released checkpoints
and the official sequence lengths (docs/MMAUDIO.md, Variants and sequence lengths).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..defaults import (CLIP_FPS, MIN_DURATION, SYNC_FPS, SYNC_SEGMENT_FRAMES,
                        SYNC_SEGMENT_STRIDE, SYNC_TOKENS_PER_SEGMENT)
from ..errors import ConfigError

__all__ = ["MIN_DURATION", "MODES", "VARIANTS", "AudioMode", "NetworkConfig", "SequenceLengths",
           "sequence_lengths", "tiny_config", "variant_name"]


@dataclass(frozen=True)
class AudioMode:
    """Audio format of a mode: the VAE latent rate is sample_rate / hop / 2 latents per second."""
    sample_rate: int
    hop: int
    n_mels: int
    latent_dim: int


MODES: dict[str, AudioMode] = {
    "16k": AudioMode(sample_rate=16000, hop=256, n_mels=80, latent_dim=20),
    "44k": AudioMode(sample_rate=44100, hop=512, n_mels=128, latent_dim=40),
}


@dataclass(frozen=True)
class NetworkConfig:
    """Constructor arguments of the flow network. ``depth`` counts all blocks; the first
    ``depth - fused_depth`` are joint (latent/clip/text) blocks, the rest single-stream."""
    latent_dim: int
    hidden_dim: int
    num_heads: int
    depth: int
    fused_depth: int
    clip_dim: int = 1024
    sync_dim: int = 768
    text_dim: int = 1024
    text_seq_len: int = 77
    mlp_ratio: float = 4.0
    v2: bool = False
    mode: str = "16k"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"unknown audio mode {self.mode!r}; use one of {sorted(MODES)}")
        if self.hidden_dim % self.num_heads:
            raise ConfigError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads "
                              f"{self.num_heads}")
        if (self.hidden_dim // self.num_heads) % 2:
            raise ConfigError("the head dimension must be even (RoPE rotates channel pairs)")
        if not 0 <= self.fused_depth < self.depth:
            raise ConfigError(f"need 0 <= fused_depth < depth (at least one joint block), got "
                              f"depth {self.depth}, fused_depth {self.fused_depth}")

    @property
    def joint_depth(self) -> int:
        return self.depth - self.fused_depth

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def audio_mode(self) -> AudioMode:
        return MODES[self.mode]


def _released(mode: str, hidden: int, depth: int, fused: int, v2: bool = False) -> NetworkConfig:
    return NetworkConfig(latent_dim=MODES[mode].latent_dim, hidden_dim=hidden,
                         num_heads=hidden // 64, depth=depth, fused_depth=fused, v2=v2, mode=mode)


VARIANTS: dict[str, NetworkConfig] = {
    "small_16k": _released("16k", 448, 12, 8),
    "small_44k": _released("44k", 448, 12, 8),
    "medium_44k": _released("44k", 896, 12, 8),
    "large_44k": _released("44k", 896, 21, 14),
    "large_44k_v2": _released("44k", 896, 21, 14, v2=True),
}


def variant_name(config: NetworkConfig) -> str:
    """The released variant whose config equals ``config``, else "custom"."""
    for name, cfg in VARIANTS.items():
        if cfg == config:
            return name
    return "custom"


def tiny_config(mode: str = "16k", v2: bool = False) -> NetworkConfig:
    """A network small enough for seeded CPU tests (a few ms per call) with the real structure:
    3 blocks (2 joint, the last pre-only, 1 fused), RoPE head dim 32 and the real 77 text tokens."""
    if mode not in MODES:
        raise ConfigError(f"unknown audio mode {mode!r}; use one of {sorted(MODES)}")
    return NetworkConfig(latent_dim=MODES[mode].latent_dim, hidden_dim=64, num_heads=2, depth=3,
                         fused_depth=1, clip_dim=32, sync_dim=24, text_dim=40, text_seq_len=77,
                         v2=v2, mode=mode)


@dataclass(frozen=True)
class SequenceLengths:
    duration: float
    latent: int
    clip: int
    sync: int

    @property
    def sync_segments(self) -> int:
        return self.sync // SYNC_TOKENS_PER_SEGMENT


def sequence_lengths(mode: str | AudioMode, duration: float) -> SequenceLengths:
    """Token counts for ``duration`` seconds, with the official float arithmetic (docs/MMAUDIO.md)."""
    m = MODES[mode] if isinstance(mode, str) and mode in MODES else mode
    if not isinstance(m, AudioMode):
        raise ConfigError(f"unknown audio mode {mode!r}; use one of {sorted(MODES)}")
    duration = float(duration)
    if not math.isfinite(duration) or duration <= 0:
        raise ConfigError(f"duration must be a positive number of seconds, got {duration}")
    latent = math.ceil(duration * m.sample_rate / m.hop / 2)
    clip = int(duration * CLIP_FPS)
    # Synchformer tokens per segment x overlapping segments (official float floor division).
    segments = (duration * SYNC_FPS - SYNC_SEGMENT_FRAMES) // SYNC_SEGMENT_STRIDE + 1
    sync = int(segments * SYNC_TOKENS_PER_SEGMENT)
    if sync <= 0:
        raise ConfigError(f"duration {duration:g} s is too short: MMAudio needs at least "
                          f"{MIN_DURATION} s (one {SYNC_SEGMENT_FRAMES}-frame Synchformer segment "
                          f"at {SYNC_FPS} fps)")
    return SequenceLengths(duration=duration, latent=latent, clip=clip, sync=sync)
