"""The smoke-test model set: tiny, seeded, random weight files in the real layouts and names.

``python -m nag_core smoke-models DIR`` writes one complete 16k set (and optionally 44k) so the
tests, the demo and a user checking an install can run every workflow without downloading
gigabytes. The output is noise: the weights are random. Files are never written over existing
ones; the folder gets a SMOKE_TEST_MODELS.txt marker so nobody mistakes it for real weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ConfigError
from .weights import (BIGVGAN_44K_DIR, CLIP_FILE, NETWORK_FILES, SYNCHFORMER_FILE, VAE_FILES,
                      VOCODER_FILES)

MARKER = "SMOKE_TEST_MODELS.txt"
SMOKE_VARIANT = {"16k": "small_16k", "44k": "large_44k_v2"}
# Widths of the tiny encoders (nag_core.mmaudio.clip.tiny_clip / synchformer.tiny_synchformer):
# the tiny network's clip/text/sync widths must equal them.
TINY_CLIP_EMBED, TINY_TEXT_WIDTH, TINY_SYNC_WIDTH = 48, 128, 128


def tiny_network_config(mode: str):
    from .mmaudio.variants import NetworkConfig, MODES
    return NetworkConfig(latent_dim=MODES[mode].latent_dim, hidden_dim=64, num_heads=1, depth=4,
                         fused_depth=2, clip_dim=TINY_CLIP_EMBED, sync_dim=TINY_SYNC_WIDTH,
                         text_dim=TINY_TEXT_WIDTH, v2=(mode == "44k"), mode=mode)


def write_smoke_models(folder, modes=("16k",), seed: int = 0) -> list[Path]:
    """Write the tiny model set into ``folder``; returns the paths written."""
    from .mmaudio.bigvgan import save_vocoder_checkpoint, tiny_vocoder
    from .mmaudio.clip import save_clip, tiny_clip
    from .mmaudio.network import MMAudioNetwork, randomize_parameters_
    from .mmaudio.network_loading import save_network_checkpoint
    from .mmaudio.synchformer import save_synchformer, tiny_synchformer
    from .mmaudio.tokenizer import write_tiny_bpe_vocab
    from .mmaudio.vae import save_vae_checkpoint, tiny_vae

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    planned = [root / SYNCHFORMER_FILE.relpath, root / CLIP_FILE.relpath,
               root / "bpe_simple_vocab_16e6.txt.gz"]
    for mode in modes:
        if mode not in SMOKE_VARIANT:
            raise ConfigError(f"unknown mode {mode!r}: use 16k and/or 44k")
        planned += [root / NETWORK_FILES[SMOKE_VARIANT[mode]].relpath,
                    root / VAE_FILES[mode].relpath, root / VOCODER_FILES[mode].relpath]
    existing = [p for p in planned if p.exists()]
    if existing and not (root / MARKER).exists():
        raise ConfigError(f"{root} already holds weight files ({existing[0].name}, ...) that are "
                          "not a smoke-test set; choose an empty folder (real weights are never "
                          "overwritten)")

    written = []
    torch.manual_seed(seed)
    for mode in modes:
        net = MMAudioNetwork(tiny_network_config(mode), duration=8.0)
        randomize_parameters_(net, seed=seed + 1)
        p = root / NETWORK_FILES[SMOKE_VARIANT[mode]].relpath
        save_network_checkpoint(net, p)
        written.append(p)
        p = root / VAE_FILES[mode].relpath
        save_vae_checkpoint(tiny_vae(mode, seed=seed + 2), p)
        written.append(p)
        p = root / VOCODER_FILES[mode].relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        voc = tiny_vocoder(mode, seed=seed + 3)
        save_vocoder_checkpoint(voc, p)
        written.append(p)
        if mode == "44k":
            import json
            cfg = root / BIGVGAN_44K_DIR / "config.json"
            cfg.write_text(json.dumps(voc.config.to_dict(), indent=2))
            written.append(cfg)
    p = root / SYNCHFORMER_FILE.relpath
    save_synchformer(tiny_synchformer(seed=seed + 4, width=TINY_SYNC_WIDTH), p)
    written.append(p)
    vocab = write_tiny_bpe_vocab(root / "bpe_simple_vocab_16e6.txt.gz")
    written.append(vocab)
    p = root / CLIP_FILE.relpath
    p.parent.mkdir(parents=True, exist_ok=True)
    save_clip(tiny_clip(seed=seed + 5, embed_dim=TINY_CLIP_EMBED, width=TINY_TEXT_WIDTH), p)
    written.append(p)
    (root / MARKER).write_text(
        "Tiny random-weight MMAudio files written by `python -m nag_core smoke-models`.\n"
        "They exercise every code path; what they generate is noise. Not real weights.\n")
    return written
