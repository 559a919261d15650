"""Band-limited resampling (windowed sinc, polyphase) in plain PyTorch.

Used for mixing tracks of different rates and for reading training audio. No torchaudio: it is not
installable beside a CPU torch from the registry, and the pack must not depend on it.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from .errors import MediaError


@lru_cache(maxsize=16)
def _kernel(orig: int, new: int, width: int, rolloff: float) -> tuple[Tensor, int]:
    """Polyphase filter bank: one row per output phase, Hann-windowed sinc low-pass."""
    base = min(orig, new) * rolloff  # cut-off below both Nyquist rates
    pad = int(math.ceil(width * orig / base))
    idx = torch.arange(-pad, pad + orig, dtype=torch.float64)[None] / orig  # input taps, in s*orig
    phases = -torch.arange(new, dtype=torch.float64)[:, None] / new  # output phase offsets
    t = (phases + idx) * base
    t = t.clamp(-width, width)
    window = torch.cos(t * math.pi / width / 2) ** 2
    t = t * math.pi
    scale = base / orig
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, 1.0, t))
    return (sinc * window * scale).float(), pad


def resample(wave: Tensor, orig_sr: int, new_sr: int, width: int = 16,
             rolloff: float = 0.945) -> Tensor:
    """Resample ``wave`` (..., T) from orig_sr to new_sr. Output length ceil(T * new / orig)."""
    if orig_sr <= 0 or new_sr <= 0:
        raise MediaError(f"sample rates must be positive, got {orig_sr} -> {new_sr}: check the "
                         "rate read from the audio file")
    if orig_sr == new_sr:
        return wave
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    length = wave.shape[-1]
    out_len = -(-new * length // orig)  # exact integer ceil(T * new / orig), no float rounding
    if wave.numel() == 0:  # reshape(-1, ...) below is ambiguous for an empty tensor
        return wave.new_zeros(*wave.shape[:-1], out_len)
    kernel, pad = _kernel(orig, new, width, rolloff)
    shape = wave.shape
    x = wave.reshape(-1, 1, length)
    x = torch.nn.functional.pad(x.float(), (pad, pad + orig))
    y = torch.nn.functional.conv1d(x, kernel.to(x.device)[:, None], stride=orig)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    return y[:, :out_len].reshape(*shape[:-1], out_len).to(wave.dtype)
