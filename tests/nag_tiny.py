"""Seeded tiny MMAudio networks, conditions and ControlNets for the ControlNet and NAG tests."""

from __future__ import annotations

import torch

from nag_core.controlnet import ControlNetConfig, NAGControlNet
from nag_core.mmaudio.network import MMAudioNetwork, randomize_parameters_
from nag_core.mmaudio.variants import tiny_config

DURATION = 1.0  # 32 latent tokens at 16k: fast, still the real structure


def tiny_network(mode: str = "16k", v2: bool = False, seed: int = 0) -> MMAudioNetwork:
    net = MMAudioNetwork(tiny_config(mode, v2), duration=DURATION)
    randomize_parameters_(net, seed)
    return net.eval()


def features(net: MMAudioNetwork, batch: int, seed: int = 1):
    """Random (clip, sync, text) features of the network's lengths."""
    g = torch.Generator().manual_seed(seed)
    c = net.config
    clip = torch.randn(batch, net.clip_seq_len, c.clip_dim, generator=g)
    sync = torch.randn(batch, net.sync_seq_len, c.sync_dim, generator=g)
    text = torch.randn(batch, c.text_seq_len, c.text_dim, generator=g)
    return clip, sync, text


def all_conditions(net: MMAudioNetwork, batch: int, seed: int = 1):
    """(conditions (V, C), empty conditions (∅, ∅), control conditions (V, ∅-text))."""
    clip, sync, text = features(net, batch, seed)
    with torch.no_grad():
        cond = net.preprocess_conditions(clip, sync, text)
        empty = net.get_empty_conditions(batch)
        ctrl = net.preprocess_conditions(clip, sync, net.get_empty_string_sequence(batch))
    return cond, empty, ctrl


def latent(net: MMAudioNetwork, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, net.latent_seq_len, net.config.latent_dim, generator=g)


def controlnet(net: MMAudioNetwork, num_blocks: int = 2, nonzero: bool = False,
               seed: int = 5, init_source: str = "first_blocks") -> NAGControlNet:
    """A ControlNet on ``net``; ``nonzero`` re-draws all its parameters (zero projections
    included) so that it really changes the ctrl branch."""
    cn = NAGControlNet.from_base(net, ControlNetConfig(num_blocks=num_blocks,
                                                       init_source=init_source))
    if nonzero:
        randomize_parameters_(cn, seed)  # duck-typed: any module's named_parameters
    return cn.eval()
