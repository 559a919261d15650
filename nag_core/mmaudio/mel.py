"""Log-mel spectrograms exactly as MMAudio computes them (docs/MMAUDIO.md, Mel, VAE and vocoders).

16k: 1024-point STFT, hop 256, 80 Slaney mels up to 8 kHz, log10.
44k: 2048-point STFT, hop 512, 128 Slaney mels up to 22.05 kHz, natural log.
The filterbank is computed here (no librosa): the Slaney mel scale with Slaney area
normalisation, which is what ``librosa.filters.mel`` does by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError


@dataclass(frozen=True)
class MelParams:
    mode: str
    sampling_rate: int
    n_fft: int
    win_size: int
    hop_size: int
    n_mels: int
    fmin: float
    fmax: float
    log10: bool  # 16k uses log10, 44k the natural log

    @property
    def pad(self) -> int:
        # MMAudio pads so that frames == samples / hop when samples is a multiple of hop.
        return (self.n_fft - self.hop_size) // 2

    @property
    def silence_level(self) -> float:
        """The log value of a fully silent frame (the 1e-5 floor)."""
        return math.log10(1e-5) if self.log10 else math.log(1e-5)


MEL_PARAMS = {
    "16k": MelParams("16k", 16000, 1024, 1024, 256, 80, 0.0, 8000.0, True),
    "44k": MelParams("44k", 44100, 2048, 2048, 512, 128, 0.0, 22050.0, False),
}


def mel_params(mode: str) -> MelParams:
    try:
        return MEL_PARAMS[mode]
    except KeyError:
        raise ConfigError(f"unknown audio mode {mode!r}: use '16k' or '44k'") from None


# --- Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above. ---
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mels
_LOGSTEP = math.log(6.4) / 27.0  # 27 mels per factor 6.4 in frequency


def hz_to_mel_slaney(hz: Tensor) -> Tensor:
    hz = hz.to(torch.float64)
    linear = hz / _F_SP
    log_part = _MIN_LOG_MEL + torch.log(hz.clamp(min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(hz >= _MIN_LOG_HZ, log_part, linear)


def mel_to_hz_slaney(mel: Tensor) -> Tensor:
    mel = mel.to(torch.float64)
    linear = mel * _F_SP
    log_part = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log_part, linear)


def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> Tensor:
    """(n_mels, n_fft//2 + 1) float32 triangular filters on the Slaney scale, each scaled to unit
    area (2 / bandwidth in Hz). Computed in float64 and rounded once, like librosa."""
    fft_freqs = torch.linspace(0.0, sr / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    mel_lo, mel_hi = hz_to_mel_slaney(torch.tensor([fmin, fmax], dtype=torch.float64))
    edges = mel_to_hz_slaney(torch.linspace(float(mel_lo), float(mel_hi), n_mels + 2,
                                            dtype=torch.float64))
    widths = edges[1:] - edges[:-1]
    ramps = edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freqs)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    area_norm = 2.0 / (edges[2:] - edges[:-2])
    return (weights * area_norm[:, None]).to(torch.float32)


class MelConverter(nn.Module):
    """wave (B, T) or (T,) or (B, 1, T) in [-1, 1] -> log-mel (B, n_mels, T // hop)."""

    def __init__(self, mode: str):
        super().__init__()
        self.params = p = mel_params(mode)
        self.mode = mode
        # Tables are derived, never loaded: non-persistent so state_dict() stays empty.
        self.register_buffer("mel_basis", _cached_basis(mode).clone(), persistent=False)
        self.register_buffer("window", torch.hann_window(p.win_size, periodic=True),
                             persistent=False)

    @property
    def sampling_rate(self) -> int:
        return self.params.sampling_rate

    @property
    def hop_size(self) -> int:
        return self.params.hop_size

    @property
    def n_mels(self) -> int:
        return self.params.n_mels

    def num_frames(self, num_samples: int) -> int:
        p = self.params
        return (num_samples + 2 * p.pad - p.n_fft) // p.hop_size + 1

    def forward(self, wave: Tensor) -> Tensor:
        p = self.params
        if wave.ndim == 3 and wave.shape[1] == 1:
            wave = wave[:, 0]
        squeeze = wave.ndim == 1
        if squeeze:
            wave = wave[None]
        if wave.ndim != 2:
            raise ValueError(f"MelConverter expects a wave of shape (T,), (B, T) or (B, 1, T); "
                             f"got {tuple(wave.shape)}")
        if wave.shape[-1] <= p.pad:
            raise ValueError(f"audio too short for the {self.mode} mel: {wave.shape[-1]} samples, "
                             f"need more than {p.pad}")
        x = wave.to(torch.float32).clamp(-1.0, 1.0)
        x = F.pad(x[:, None], (p.pad, p.pad), mode="reflect")[:, 0]
        spec = torch.stft(x, p.n_fft, hop_length=p.hop_size, win_length=p.win_size,
                          window=self.window.to(x.device), center=False, normalized=False,
                          onesided=True, return_complex=True)
        spec = torch.view_as_real(spec)
        mag = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)
        mel = torch.matmul(self.mel_basis.to(x.device), mag)
        mel = mel.clamp(min=1e-5)
        out = torch.log10(mel) if p.log10 else torch.log(mel)
        return out[0] if squeeze else out


@lru_cache(maxsize=4)
def _cached_basis(mode: str) -> Tensor:
    p = mel_params(mode)
    return slaney_mel_filterbank(p.sampling_rate, p.n_fft, p.n_mels, p.fmin, p.fmax)


def mel_converter(mode: str) -> MelConverter:
    """A new converter for '16k' or '44k' (the filterbank itself is computed once per mode)."""
    return MelConverter(mode)
