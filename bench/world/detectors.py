"""Signature detectors for world audio: no learned model, only band energies of the 16 kHz log-mel
(the same mel MMAudio's 16k VAE works on, 80 bands, hop 256 = 62.5 frames/s).

* ``share_db(mel, obj)``: the share of the track's energy inside the object's band, in dB
  (gain-independent: a track twice as loud has the same shares);
* ``lamp_sync_db(mel, clip)``: mean lamp-band power while the lamp is lit over while it is dark
  (dB);
* ``ball_sync_db(mel, clip)``: mean ball-band power while the ball's sound plays (BALL_SECONDS
  from each floor contact) over the power away from it (dB): bounces at the right times, not
  just a tone;
* ``aa_similarity(mel_a, mel_b)``: cosine of the band-energy envelopes of two tracks (all four
  object bands over time, 60 dB range), in the spirit of CLAP audio-audio similarity.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from nag_core.mmaudio.mel import mel_converter, mel_params
from nag_core.world.scene import BANDS, OBJECTS, SAMPLE_RATE, interval_mask

LIT_MARGIN = 0.06  # s around lamp switches left out (VAE/mel smear edges)
# s around the ball's sound left out: about one latent frame (32 ms), so that a bounce's tone
# (scene.BALL_SECONDS) keeps most of its "on" frames and the gaps between bounces keep "off" ones
BALL_MARGIN = 0.03
PRESENT_DB = 6.0  # sync contrast above which a signature counts as present
# ... and the object's band must hold at least this share of the track's energy while the object
# sounds: a band that follows the events only through another object's spill (the ball's tone
# leaks into the lamp's neighbouring band at -48 dB in the true track and at -15 to -18 dB through
# the VAE + vocoder, where the object itself is at -3 to -6 dB) is not that object, even when
# its spill happens to line up with the lit intervals (seen: a true ball track "beeping" at
# 13 dB of lamp contrast, a true lamp track "bouncing" at 7 dB)
PRESENT_SHARE_DB = -12.0
RANGE_DB = 60.0


def log_mel(wave) -> np.ndarray:
    """(samples,) waveform at 16 kHz -> (80, T) log10-magnitude mel, as MMAudio's 16k mel."""
    w = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    with torch.no_grad():
        return mel_converter("16k")(w).numpy()


def frame_times(n_frames: int) -> np.ndarray:
    """Centre time (s) of each mel frame: the front end pads (n_fft - hop) / 2 on the left."""
    p = mel_params("16k")
    return (np.arange(n_frames) * p.hop_size + p.n_fft / 2 - p.pad) / SAMPLE_RATE


@lru_cache(maxsize=1)
def mel_centres() -> np.ndarray:
    """Centre frequency (Hz) of each of the 80 mel filters (weighted mean of its FFT bins)."""
    conv = mel_converter("16k")
    basis = conv.mel_basis.numpy()
    freqs = np.linspace(0, SAMPLE_RATE / 2, basis.shape[1])
    return (basis * freqs).sum(1) / np.maximum(basis.sum(1), 1e-12)


def band_rows(obj: str) -> np.ndarray:
    lo, hi = BANDS[obj]
    c = mel_centres()
    rows = np.nonzero((c >= lo) & (c <= hi))[0]
    if len(rows) == 0:  # a band narrower than one filter: the filter nearest its centre
        rows = np.array([int(np.argmin(np.abs(c - (lo + hi) / 2)))])
    return rows


def band_power(mel: np.ndarray, obj: str) -> np.ndarray:
    """(T,) power of the object's band per frame (linear)."""
    mag = 10.0 ** mel[band_rows(obj)]
    return (mag ** 2).sum(0)


def band_db(mel: np.ndarray, obj: str) -> np.ndarray:
    return 10.0 * np.log10(band_power(mel, obj) + 1e-20)


def share_db(mel: np.ndarray, obj: str) -> float:
    """10 log10(band energy / total energy) over the whole track."""
    total = ((10.0 ** mel) ** 2).sum()
    return float(10.0 * np.log10(band_power(mel, obj).sum() / (total + 1e-20) + 1e-20))


def interval_frames(intervals, times: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(on, off) frame masks of [(start, end)] intervals, ``margin`` s left out around every
    edge (the mel and the VAE smear edges)."""
    on = interval_mask(intervals, times)
    near = np.zeros(len(times), dtype=bool)
    for a, b in intervals:
        near |= (np.abs(times - a) < margin) | (np.abs(times - b) < margin)
    return on & ~near, ~on & ~near


def lit_frames(clip, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lit, dark) frame masks with LIT_MARGIN left out around every switch."""
    return interval_frames(clip.lit, times, LIT_MARGIN)


def _contrast_db(power: np.ndarray, on: np.ndarray, off: np.ndarray) -> float:
    if not on.any() or not off.any():
        return float("nan")
    return _ratio_db(power[on].mean(), power[off].mean())


def lamp_sync_db(mel: np.ndarray, clip) -> float:
    """Mean lamp-band power while lit over while dark, in dB (nan without lit or dark)."""
    return _contrast_db(band_power(mel, "lamp"), *lit_frames(clip, frame_times(mel.shape[1])))


def on_share_db(mel: np.ndarray, obj: str, on: np.ndarray) -> float:
    """10 log10(the object's band energy / the track's energy) over the ``on`` frames."""
    if not on.any():
        return float("nan")
    total = ((10.0 ** mel[:, on]) ** 2).sum()
    return float(10.0 * np.log10(band_power(mel, obj)[on].sum() / (total + 1e-20) + 1e-20))


def sounding_frames(clip, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sounding, silent) frame masks of the ball with BALL_MARGIN left out around every edge."""
    return interval_frames(clip.sounding, times, BALL_MARGIN)


def ball_sync_db(mel: np.ndarray, clip) -> float:
    """Mean ball-band power while the ball sounds over while it does not, in dB (nan without
    either)."""
    return _contrast_db(band_power(mel, "ball"), *sounding_frames(clip, frame_times(mel.shape[1])))


def _ratio_db(a: float, b: float) -> float:
    """10 log10(a / b) with a floor at the mel's own floor (-100 dB magnitude), capped at
    +-60 dB so silent stretches do not give infinite contrasts."""
    floor = 1e-10
    return float(np.clip(10.0 * np.log10((a + floor) / (b + floor)), -60.0, 60.0))


def envelopes(mel: np.ndarray) -> np.ndarray:
    """(4, T) band levels in dB above (track max - RANGE_DB), clipped at 0."""
    db = np.stack([band_db(mel, o) for o in OBJECTS])
    return np.clip(db - (db.max() - RANGE_DB), 0.0, None)


def aa_similarity(mel_a: np.ndarray, mel_b: np.ndarray) -> float:
    """Cosine similarity of the two tracks' band envelopes (1 = same sounds at the same times)."""
    n = min(mel_a.shape[1], mel_b.shape[1])
    a, b = envelopes(mel_a[:, :n]).ravel(), envelopes(mel_b[:, :n]).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def signature_report(mel: np.ndarray, clip) -> dict:
    """Every detector on one track: shares per object, lamp/ball sync contrasts, their bands'
    shares while they sound, presence flags (nan contrasts and shares without events)."""
    out = {f"share_{o}": share_db(mel, o) for o in OBJECTS}
    times = frame_times(mel.shape[1])
    nan = float("nan")
    for o, has_events, frames in (("lamp", bool(clip.lit), lit_frames),
                                  ("ball", len(clip.contacts) > 0, sounding_frames)):
        on, off = frames(clip, times) if has_events else (None, None)
        out[f"{o}_sync"] = _contrast_db(band_power(mel, o), on, off) if has_events else nan
        out[f"{o}_on_share"] = on_share_db(mel, o, on) if has_events else nan
    for o in ("lamp", "ball"):  # nan compares False: absent without events
        out[f"{o}_present"] = bool(out[f"{o}_sync"] > PRESENT_DB
                                   and out[f"{o}_on_share"] > PRESENT_SHARE_DB)
    return out
