"""The smoke-test model set: tiny, seeded, random weight files in the real layouts and names.

``python -m nag_core smoke-models DIR`` writes one complete 16k set (and optionally 44k) so the
tests, the demo and a user checking an install can run every workflow without downloading
gigabytes. The output is noise: the weights are random. Files are never written over existing
ones; the folder gets a SMOKE_TEST_MODELS.txt marker so nobody mistakes it for real weights.
The marker lists each file written with its size and sha256 (``file: <sha256> <size> <path>``):
:func:`smoke_files` tells which files of a folder are still smoke-test files, so
``python -m nag_core download`` replaces them with the real ones and loading them warns.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from .atomic import write_text

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
            cfg = write_text(root / BIGVGAN_44K_DIR / "config.json",
                             json.dumps(voc.config.to_dict(), indent=2))
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
    lines = [f"file: {_sha256(p)} {p.stat().st_size} {p.relative_to(root).as_posix()}"
             for p in written]
    write_text(root / MARKER,
               "Tiny random-weight MMAudio files written by `python -m nag_core smoke-models`.\n"
               "They exercise every code path; what they generate is noise. Not real weights.\n"
               "`python -m nag_core download` replaces the files listed here by the real ones.\n"
               + "".join(line + "\n" for line in lines))
    return written


# A smoke file is a few MB at most; the real parts are hundreds of MB (config.json aside). A
# marker written before the marker listed its files says only "smoke"; then a file in the
# smoke layout smaller than this counts as a smoke file.
_LEGACY_SMOKE_MAX_BYTES = 64 << 20


def smoke_files(folder) -> set[Path]:
    """The files of ``folder`` that are still the smoke-test files its marker lists (same size
    and sha256): not real weights. Empty when the folder has no marker."""
    root = Path(os.fspath(folder))
    try:
        text = (root / MARKER).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    listed = []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] == "file:" and parts[2].isdigit():
            listed.append((parts[1], int(parts[2]), parts[3]))
    if not listed:
        return _legacy_smoke_files(root)
    out = set()
    for sha, size, rel in listed:
        p = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            continue  # a name that leads outside the folder is never ours
        try:
            if p.is_file() and p.stat().st_size == size and _sha256(p) == sha:
                out.add(p)
        except OSError:
            continue
    return out


def _legacy_smoke_files(root: Path) -> set[Path]:
    layout = [SYNCHFORMER_FILE.relpath, CLIP_FILE.relpath, "bpe_simple_vocab_16e6.txt.gz",
              f"{BIGVGAN_44K_DIR}/config.json"]
    for mode, variant in SMOKE_VARIANT.items():
        layout += [NETWORK_FILES[variant].relpath, VAE_FILES[mode].relpath,
                   VOCODER_FILES[mode].relpath]
    return {root / rel for rel in layout
            if (root / rel).is_file() and (root / rel).stat().st_size < _LEGACY_SMOKE_MAX_BYTES}


def is_smoke_file(path) -> bool:
    """Whether ``path`` is a smoke-test file of the folder it lies in or any folder above it
    that carries the marker."""
    p = Path(os.fspath(path)).resolve()
    for folder in p.parents:
        if (folder / MARKER).is_file():
            return p in {q.resolve() for q in smoke_files(folder)}
    return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
