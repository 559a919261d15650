"""Loading MMAudio flow-network checkpoints: variant detection from key names and shapes, strict
loading with clear errors, and writing checkpoints in the released layout.

Accepted files: the released ``mmaudio_*.pth`` (flat state dict, possibly with the stale tables
``t_embed.freqs``/``latent_rot``/``clip_rot``), and safetensors conversions with the same keys
(Kijai's ``mmaudio_*_fp16.safetensors`` used by ComfyUI-MMAudio keep the official names), in
float32, float16 or bfloat16. A common key prefix (e.g. ``model.``) is stripped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import Tensor

from ..checkpoint import (SAFETENSORS_EXT, read_state_dict, source_name, write_safetensors,
                          write_torch)
from ..errors import ConfigError, WeightsError
from .network import STALE_KEYS, MMAudioNetwork
from .state_dict import check_finite, check_keys, describe
from .variants import MODES, NetworkConfig, variant_name

ANCHOR = "audio_input_proj.0.weight"


def _strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    if ANCHOR in sd:
        return sd
    hits = [k for k in sd if k.endswith("." + ANCHOR)]
    if len(hits) == 1:
        prefix = hits[0][: -len(ANCHOR)]
        if all(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _block_count(keys, name: str) -> int:
    idx = {int(m.group(1)) for k in keys if (m := re.match(rf"{name}\.(\d+)\.", k))}
    if idx and idx != set(range(len(idx))):
        raise WeightsError(f"the checkpoint's {name} indices {sorted(idx)} are not contiguous; "
                           "the file is damaged or not an MMAudio network")
    return len(idx)


def detect_network_config(state_dict: Mapping[str, Tensor]) -> tuple[str, NetworkConfig]:
    """(variant name or "custom", NetworkConfig) inferred from key names and shapes alone."""
    sd = _strip_prefix(dict(state_dict))
    keys = list(sd)
    if ANCHOR not in sd:
        raise WeightsError("this file is not an MMAudio flow network (no 'audio_input_proj' "
                           f"weights): it looks like {describe(keys)}. Pick a mmaudio_*.pth "
                           "network file (e.g. mmaudio_large_44k_v2.pth)")
    try:
        hidden, latent_dim, _ = sd[ANCHOR].shape
        head_dim = sd["joint_blocks.0.latent_block.attn.q_norm.weight"].shape[0]
        clip_dim = sd["clip_input_proj.0.weight"].shape[1]
        sync_dim = sd["sync_input_proj.0.weight"].shape[1]
        text_dim = sd["text_input_proj.0.weight"].shape[1]
        text_seq_len = sd["empty_string_feat"].shape[0]
    except KeyError as e:
        raise WeightsError(f"this MMAudio network checkpoint lacks the key {e.args[0]!r}; the "
                           "file is incomplete or damaged: download it again") from None
    except ValueError:
        raise WeightsError(f"{ANCHOR} has shape {tuple(sd[ANCHOR].shape)}, expected a 3-D conv "
                           "weight: this is not an MMAudio network file") from None
    # v2 inserts a SiLU after the first Linear, moving the clip ConvMLP from index 1 to 2.
    if any(k.startswith("clip_input_proj.2.") for k in keys):
        v2 = True
    elif any(k.startswith("clip_input_proj.1.") for k in keys):
        v2 = False
    else:
        raise WeightsError("cannot tell the network version: no clip_input_proj.1/.2 weights")
    mode = next((name for name, m in MODES.items() if m.latent_dim == latent_dim), None)
    if mode is None:
        raise WeightsError(f"latent width {latent_dim} matches no MMAudio mode (20 = 16k, "
                           "40 = 44k)")
    joint = _block_count(keys, "joint_blocks")
    fused = _block_count(keys, "fused_blocks")
    if joint == 0 or head_dim == 0 or hidden % head_dim:
        raise WeightsError(f"inconsistent network shapes (hidden {hidden}, head dim {head_dim}, "
                           f"{joint} joint blocks)")
    try:
        config = NetworkConfig(latent_dim=latent_dim, hidden_dim=hidden,
                               num_heads=hidden // head_dim, depth=joint + fused,
                               fused_depth=fused, clip_dim=clip_dim, sync_dim=sync_dim,
                               text_dim=text_dim, text_seq_len=text_seq_len, v2=v2, mode=mode)
    except ConfigError as e:
        raise WeightsError(f"the checkpoint describes an impossible network: {e}") from None
    return variant_name(config), config


def _check_keys(sd: Mapping[str, Tensor], net: MMAudioNetwork, source) -> None:
    check_keys(sd, net.state_dict(), what="the MMAudio network it describes", source=source)
    nonfloat = [k for k, v in sd.items() if not v.is_floating_point()]
    if nonfloat:
        raise WeightsError(f"{source_name(source)} holds non-float tensors {nonfloat[:3]}: not a "
                           "network file")


def load_network(source, *, expect_mode: Optional[str] = None,
                 expect_variant: Optional[str] = None, dtype: Optional[torch.dtype] = None,
                 duration: float = 8.0) -> tuple[MMAudioNetwork, str]:
    """Load a flow network from a file path or a state dict; returns (network, variant name).

    The variant is detected from the weights (a custom size gives "custom"). ``expect_mode``
    ("16k"/"44k") and ``expect_variant`` make a mismatch a ConfigError naming both.
    ``dtype`` None means float32 whatever the file holds (fp16/bf16 files are upcast). The
    network is returned in eval mode on the CPU with requires_grad off.
    """
    # unwrap "generator" so that a vocoder file given here is named as such
    sd = _strip_prefix(read_state_dict(source, unwrap=("generator",)))
    what = source_name(source)
    for k in STALE_KEYS:  # stale non-persistent tables; the official loader drops them too
        sd.pop(k, None)
    try:
        name, config = detect_network_config(sd)
    except WeightsError as e:
        raise WeightsError(f"{what}: {e}") from None
    if expect_variant is not None and name != expect_variant:
        raise ConfigError(f"{what} holds the MMAudio variant '{name}' ({config.mode}), but "
                          f"'{expect_variant}' was selected; pick the matching file or variant")
    if expect_mode is not None and config.mode != expect_mode:
        raise ConfigError(f"{what} is a {config.mode} network ('{name}'), but the {expect_mode} "
                          f"mode was selected; use the {config.mode} VAE/vocoder or another file")
    with torch.device("meta"):
        net = MMAudioNetwork(config, duration=duration)
    _check_keys(sd, net, source)
    check_finite(sd, source=source)
    target = dtype or torch.float32
    net.load_state_dict({k: v.to(target) for k, v in sd.items()}, strict=True, assign=True)
    net._build_tables()  # the non-persistent tables were built on the meta device
    net.eval().requires_grad_(False)
    return net, name


def save_network_checkpoint(network: MMAudioNetwork, path: str | os.PathLike,
                            stale_keys: bool = True) -> None:
    """Write the released layout: a flat state dict (torch.save) including, when ``stale_keys``,
    the three tables old files carry; ``.safetensors`` suffix -> a safetensors file."""
    sd = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    if stale_keys:
        sd["t_embed.freqs"] = network.t_embed.freqs.detach().cpu().clone()
        sd["latent_rot"] = network.latent_rot.detach().cpu().clone()
        sd["clip_rot"] = network.clip_rot.detach().cpu().clone()
    if Path(path).suffix.lower() in SAFETENSORS_EXT:
        write_safetensors(sd, path, metadata={"format": "pt"})
    else:
        write_torch(sd, path)
