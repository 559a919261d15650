"""Audio players on the pack's nodes: each AUDIO a node makes is written as FLAC into ComfyUI's
temp folder and listed under the ``audio`` key of the node's ``ui`` output, the entries core
PreviewAudio sends (``filename``, ``subfolder``, ``type``). The pack's web extension draws one
player per entry (the core player only serves core node types, and only its first entry)."""

from __future__ import annotations

import os
import uuid

import torch

from nag_core.media import write_audio

from . import host


def preview_entries(waves, sample_rate: int, what: str) -> list[dict]:
    """One temp FLAC per track of ``waves`` ((B, C, T) tensor or a list of (C, T) / (T,)):
    the ``ui["audio"]`` list. Names are unique, so no preview ever replaces another file."""
    folder = host.temp_directory()
    os.makedirs(folder, exist_ok=True)
    tracks = list(waves) if not isinstance(waves, torch.Tensor) or waves.dim() == 3 else [waves]
    entries = []
    for i, wave in enumerate(tracks):
        name = f"nagfoley_{what}_{uuid.uuid4().hex[:12]}_{i + 1:02}.flac"
        write_audio(os.path.join(folder, name), wave.detach().float().cpu(), sample_rate)
        entries.append({"filename": name, "subfolder": "", "type": "temp"})
    return entries
