"""Checkpoint-compatible re-implementation of MMAudio (network, variants, loading)."""

from .variants import (MODES, VARIANTS, AudioMode, NetworkConfig, SequenceLengths,
                       sequence_lengths, tiny_config)

__all__ = ["MODES", "VARIANTS", "AudioMode", "NetworkConfig", "SequenceLengths",
           "sequence_lengths", "tiny_config"]
