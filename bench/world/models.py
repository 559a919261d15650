"""The tiny model set of the world: sizes, construction, and writing/reading it in the real file
layout (so nag_core.weights.find_model_files / load_model_files load it like real weights).

Frozen seeded encoders: CLIP with 48 px patches (8x8 grid at 384 px: the 64 px world frames are
upscaled 6x, so a patch covers 8x8 source pixels) and a Synchformer with 32 px patches (7x7 at
224 px). Coarse patches keep CPU feature extraction cheap; random frozen projections of 8x8-pixel
patches still carry which quadrant is lit, where the ball is and so on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nag_core.mmaudio.bigvgan import BigVGAN, VocoderConfig
from nag_core.mmaudio.clip import ClipConfig, ClipModel
from nag_core.mmaudio.encoder_common import seeded_init
from nag_core.mmaudio.network import MMAudioNetwork
from nag_core.mmaudio.synchformer import Synchformer, SynchformerConfig
from nag_core.mmaudio.variants import NetworkConfig
from nag_core.mmaudio.vae import VAE
from nag_core.world.assets import WORLD_DURATION
from nag_core.world.scene import CAPTIONS

WORDS = " ".join(CAPTIONS.values()) + " and"
CLIP_EMBED, TEXT_WIDTH, SYNC_WIDTH = 32, 64, 64
VAE_HIDDEN = 16
VOCAB_SIZE = 600  # >= 512 byte symbols + merges + 2 of the world vocabulary
DURATION = WORLD_DURATION  # the length the world's models are trained and shipped for
SEED = 1234


def network_config(hidden: int = 64, depth: int = 4, fused: int = 2) -> NetworkConfig:
    return NetworkConfig(latent_dim=20, hidden_dim=hidden, num_heads=hidden // 64, depth=depth,
                         fused_depth=fused, clip_dim=CLIP_EMBED, sync_dim=SYNC_WIDTH,
                         text_dim=TEXT_WIDTH, mode="16k")


def build_clip(seed: int = SEED) -> ClipModel:
    cfg = ClipConfig(embed_dim=CLIP_EMBED, vision_width=64, vision_layers=1, vision_heads=1,
                     patch_size=48, grid=8, text_width=TEXT_WIDTH, text_layers=1, text_heads=1,
                     context_length=77, vocab_size=VOCAB_SIZE)
    return seeded_init(ClipModel(cfg), seed).eval().requires_grad_(False)


def build_synchformer(seed: int = SEED + 1) -> Synchformer:
    cfg = SynchformerConfig(width=SYNC_WIDTH, depth=1, heads=1, mlp_hidden=2 * SYNC_WIDTH,
                            agg_hidden=2 * SYNC_WIDTH, patch_size=32, temporal_patch=2,
                            temporal_tokens=8, grid=7)
    return seeded_init(Synchformer(cfg), seed).eval().requires_grad_(False)


def build_vae(seed: int = SEED + 2) -> VAE:
    torch.manual_seed(seed)
    return VAE(80, 20, VAE_HIDDEN)


def vocoder_config() -> VocoderConfig:
    # hop 256 = 4*4*4*4 as the real 16k vocoder; narrow channels for CPU. Channels halve at
    # every upsampling: 128 leaves 8 at 16 kHz (32 left 2, and that generator collapsed to one
    # output whatever the mel)
    return VocoderConfig(80, (4, 4, 4, 4), (8, 8, 8, 8), 128, (3, 7), ((1, 3, 5),) * 2,
                         use_tanh_at_final=True, use_bias_at_final=True)


def build_vocoder(seed: int = SEED + 3) -> BigVGAN:
    torch.manual_seed(seed)
    return BigVGAN(vocoder_config())


def build_network(config: NetworkConfig | None = None, seed: int = SEED + 4) -> MMAudioNetwork:
    torch.manual_seed(seed)
    return MMAudioNetwork(config or network_config(), duration=DURATION)


def write_vocab(path) -> Path:
    from nag_core.mmaudio.tokenizer import write_tiny_bpe_vocab
    return write_tiny_bpe_vocab(path, words=WORDS, num_merges=60)
