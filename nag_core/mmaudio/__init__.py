"""Checkpoint-compatible re-implementation of MMAudio (plain PyTorch): network, variants and
sequence lengths, CLIP, tokenizer, Synchformer, VAE, vocoders, mel converters, weight loading.

Never imports open_clip, timm or torchvision: on a CPU-only torch they fail to import."""

from .variants import (MODES, VARIANTS, AudioMode, NetworkConfig, SequenceLengths,
                       sequence_lengths, tiny_config)

__all__ = ["MODES", "VARIANTS", "AudioMode", "NetworkConfig", "SequenceLengths",
           "sequence_lengths", "tiny_config"]
