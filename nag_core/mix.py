"""Summing tracks and loudness normalisation (ITU-R BS.1770 via pyloudnorm).

The composite after step k is ``normalize(sum of the raw tracks 1..k)`` at −20 LUFS (the paper's
value), and the conditioning mix of step k is the same thing over tracks 1..k−1. Mixing the raw
tracks, never a previously normalised mix, keeps that exact whatever order steps are redone in.

The composite is never clipped: after the loudness gain its true peak (BS.1770-4 Annex 2: the
peak of the signal oversampled 4x, which catches the inter-sample peaks a converter makes) must
stay at or below TRUE_PEAK_CEILING_DB (−1 dBTP). Where the target loudness would put it above,
the gain is lowered until the true peak sits at the ceiling (no limiter: a linear gain keeps the
sound as generated) and the result says so: ``Normalized.note`` names the loudness reached and
the dB given up, ``ceiling_reduction_db`` holds them. Conditioning mixes (what NAG steers
away from) are normalised without a ceiling, as in training: they are never written.

Policies for tracks that do not line up (documented, never a crash):
* sample rates differ: every track is resampled to the highest rate among them;
* lengths differ: shorter tracks are padded with silence at the end to the longest;
* channels differ: mono tracks are copied to every channel; any other mismatch is an error.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyloudnorm
import torch
from torch import Tensor

from .errors import ConfigError, MediaError
from .resample import resample

TARGET_LUFS = -20.0
TRUE_PEAK_CEILING_DB = -1.0  # dBTP; the usual delivery ceiling (EBU R128 / streaming specs)
TRUE_PEAK_OVERSAMPLING = 4  # BS.1770-4 Annex 2
GATE_BLOCK_S = 0.4  # BS.1770 gating block: shorter audio cannot be measured directly
MAX_METER_CHANNELS = 5  # pyloudnorm's channel weights cover L, R, C, Ls, Rs only


@dataclass(frozen=True)
class Track:
    """A waveform (channels, samples), float in [-1, 1] nominal, with its sample rate."""

    wave: Tensor
    sample_rate: int

    def __post_init__(self):
        if self.wave.dim() != 2:
            raise MediaError(f"a track is (channels, samples); got shape {tuple(self.wave.shape)}: "
                             "add a channel axis to mono audio (wave[None])")
        if self.sample_rate <= 0:
            raise MediaError(f"a track needs a positive sample rate, got {self.sample_rate}")


@dataclass(frozen=True)
class Normalized:
    wave: Tensor  # (channels, samples)
    sample_rate: int
    gain_db: float  # gain applied (0.0 when nothing was done)
    measured_lufs: float  # loudness before the gain (-inf for silence)
    note: str  # empty when normalised as usual; otherwise what was done instead and why
    true_peak_db: float = math.nan  # dBTP of ``wave`` (nan: not measured)
    ceiling_db: float | None = None  # the true-peak ceiling that applied (None: none)
    ceiling_reduction_db: float = 0.0  # dB taken off the target gain to respect the ceiling

    @property
    def target_met(self) -> bool:
        """Whether ``wave`` is at the target loudness (False for silence or a lowered gain)."""
        return math.isfinite(self.measured_lufs) and self.ceiling_reduction_db == 0.0


def sum_tracks(tracks: Sequence[Track], gains_db: Sequence[float] | None = None) -> Track:
    """Sum tracks into one, after bringing them to a common rate, length and channel count."""
    if not tracks:
        raise ConfigError("nothing to mix: no tracks given; generate or load at least one track")
    if gains_db is not None and len(gains_db) != len(tracks):
        raise ConfigError(f"{len(gains_db)} gains for {len(tracks)} tracks: give one gain (dB) per "
                          "track, or none")
    rate = max(t.sample_rate for t in tracks)
    waves = [resample(t.wave.float(), t.sample_rate, rate) for t in tracks]
    channels = {w.shape[0] for w in waves}
    wide = channels - {1}
    if len(wide) > 1:
        raise MediaError(f"cannot mix tracks with channel counts {sorted(channels)}: down-mix them "
                         "to mono or to one common channel count first")
    n_ch = wide.pop() if wide else 1
    length = max(w.shape[1] for w in waves)
    total = torch.zeros(n_ch, length)
    for i, w in enumerate(waves):
        gain = 10.0 ** (gains_db[i] / 20.0) if gains_db is not None else 1.0
        total[:, : w.shape[1]] += gain * w.cpu()
    return Track(total, rate)


def measure_lufs(wave: Tensor, sample_rate: int) -> float:
    """Integrated loudness (LUFS) of (channels, samples). Audio shorter than the 400 ms gating block
    is measured looped to one block, which gives the loudness of that sound held steady."""
    if wave.dim() != 2:
        raise MediaError(f"loudness is measured on (channels, samples); got shape {tuple(wave.shape)}")
    if wave.shape[0] > MAX_METER_CHANNELS:
        raise MediaError(f"cannot measure the loudness of {wave.shape[0]} channels (BS.1770 meter: at "
                         f"most {MAX_METER_CHANNELS}): down-mix to mono or stereo first")
    if not bool(torch.isfinite(wave).all()):
        # pyloudnorm would turn NaN into "-inf LUFS", i.e. report broken audio as silence.
        raise MediaError("audio contains NaN or infinite samples: the generation diverged or the "
                         "file is damaged; generate again (or try full precision) or re-export it")
    data = wave.detach().float().cpu().numpy().T.astype(np.float64)  # (samples, channels)
    n = data.shape[0]
    if n == 0:
        return -math.inf
    block = int(math.ceil(GATE_BLOCK_S * sample_rate)) + 1
    if n < block:
        data = np.tile(data, (int(math.ceil(block / n)), 1))[:block]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyloudnorm warns about clipping; we report peaks ourselves
        return float(pyloudnorm.Meter(sample_rate).integrated_loudness(data))


def true_peak_db(wave: Tensor, sample_rate: int) -> float:
    """True peak (dBTP) of (channels, samples): the largest magnitude of the signal and of its
    4x band-limited oversampling (BS.1770-4 Annex 2); -inf for silence."""
    w = wave.detach().float().cpu()
    if w.numel() == 0:
        return -math.inf
    up = resample(w, int(sample_rate), int(sample_rate) * TRUE_PEAK_OVERSAMPLING)
    peak = max(float(w.abs().max()), float(up.abs().max()))
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def loudness_normalize(track: Track, target_lufs: float = TARGET_LUFS,
                       ceiling_db: float | None = None) -> Normalized:
    """Scale a track to ``target_lufs`` integrated loudness, keeping its true peak at or below
    ``ceiling_db`` dBTP when one is given (by lowering the gain: see the module docstring).

    Silence (or audio below BS.1770's absolute gate, which has no measurable loudness) is
    returned unchanged with gain 0 and a note, never NaN or inf. Without a ceiling, peaks above
    full scale are kept (float audio) and reported in the note.
    """
    wave = track.wave.float()
    lufs = measure_lufs(wave, track.sample_rate)
    if not math.isfinite(lufs):
        return Normalized(wave, track.sample_rate, 0.0, lufs,
                          "silent (no measurable loudness): returned unchanged",
                          true_peak_db=true_peak_db(wave, track.sample_rate),
                          ceiling_db=ceiling_db)
    gain_db = target_lufs - lufs
    peak_db = true_peak_db(wave, track.sample_rate) + gain_db
    note, reduction = "", 0.0
    if ceiling_db is not None and peak_db > ceiling_db:
        reduction = peak_db - ceiling_db
        gain_db -= reduction
        note = (f"{target_lufs:g} LUFS not reached: {lufs + gain_db:.1f} LUFS, the gain lowered "
                f"by {reduction:.1f} dB to keep the true peak at {ceiling_db:g} dBTP (at "
                f"{target_lufs:g} LUFS it would be {peak_db:+.1f} dBTP)")
        peak_db = ceiling_db
    elif peak_db > 0.0:
        note = f"true peak {peak_db:+.1f} dBTP after normalisation (above full scale)"
    out = wave * (10.0 ** (gain_db / 20.0))
    return Normalized(out, track.sample_rate, gain_db, lufs, note, true_peak_db=peak_db,
                      ceiling_db=ceiling_db, ceiling_reduction_db=reduction)


def composite(tracks: Sequence[Track], gains_db: Sequence[float] | None = None,
              target_lufs: float = TARGET_LUFS,
              ceiling_db: float | None = TRUE_PEAK_CEILING_DB) -> Normalized:
    """normalize(Σ tracks) with the true-peak ceiling: the composite. Step k's conditioning mix
    is the same over tracks < k with ``ceiling_db=None`` (as in training)."""
    return loudness_normalize(sum_tracks(tracks, gains_db), target_lufs, ceiling_db)
