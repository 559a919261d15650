"""Summing tracks and loudness normalisation, checked with an independent pyloudnorm meter."""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest
import torch

from nag_core import mix
from nag_core.errors import ConfigError, MediaError
from nag_core.mix import Track
from nag_core.resample import resample


def sine(freq, rate, seconds, amp=0.5, channels=1):
    n = int(round(seconds * rate))
    t = torch.arange(n, dtype=torch.float64) / rate
    return (amp * torch.sin(2 * math.pi * freq * t)).float()[None].repeat(channels, 1)


def meter(wave, rate):
    """pyloudnorm called directly, not through nag_core."""
    return pyloudnorm.Meter(rate).integrated_loudness(wave.double().numpy().T.copy())


def noise(seconds, rate, amp, seed):
    gen = torch.Generator().manual_seed(seed)
    return amp * torch.randn(1, int(seconds * rate), generator=gen)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_sine_normalised_to_minus_20_lufs(rate):
    raw = sine(1000, rate, 1.0)
    out = mix.loudness_normalize(Track(raw, rate))
    assert meter(out.wave, rate) == pytest.approx(-20.0, abs=0.1)  # measured −20.0000
    # BS.1770: a full-scale 1 kHz sine reads −3.01 LKFS; at amplitude 0.5 that is −9.03.
    # Measured −9.097 (16k) / −9.066 (44.1k): K-weighting is ≈ 0 dB at 1 kHz.
    assert out.measured_lufs == pytest.approx(-9.03, abs=0.1)
    assert out.measured_lufs == pytest.approx(meter(raw, rate), abs=1e-9)
    # The reported gain is the one applied.
    assert out.gain_db == pytest.approx(-20.0 - out.measured_lufs, abs=1e-9)
    assert torch.allclose(out.wave, raw * 10 ** (out.gain_db / 20), rtol=1e-6, atol=0)
    assert out.note == "" and out.sample_rate == rate


def test_other_targets_and_stereo():
    raw = sine(440, 44100, 1.0, channels=2)
    out = mix.loudness_normalize(Track(raw, 44100), target_lufs=-14.0)
    assert out.wave.shape == (2, 44100)
    assert meter(out.wave, 44100) == pytest.approx(-14.0, abs=0.1)


@pytest.mark.parametrize("wave", [torch.zeros(2, 16000), torch.zeros(1, 100), torch.zeros(1, 0),
                                  1e-6 * sine(1000, 16000, 1.0)],  # −129 LUFS: below the −70 gate
                         ids=["stereo_1s", "100_samples", "empty", "below_absolute_gate"])
def test_silence_stays_silence(wave):
    out = mix.loudness_normalize(Track(wave, 16000))
    assert torch.isfinite(out.wave).all()
    assert torch.equal(out.wave, wave)
    assert out.gain_db == 0.0
    assert out.measured_lufs == -math.inf
    assert "silent" in out.note


@pytest.mark.parametrize("rate", [16000, 44100])
def test_audio_shorter_than_a_gating_block_is_measured_looped(rate):
    # Policy: audio shorter than the 400 ms block is measured looped to one block, i.e. as that
    # sound held steady. A 100 ms 1 kHz sine then reads like a 1 s one (measured |diff| 0.0003 LU).
    long = mix.measure_lufs(sine(1000, rate, 1.0), rate)
    for seconds in (0.1, 0.013):
        short = mix.measure_lufs(sine(1000, rate, seconds), rate)
        assert math.isfinite(short)
        assert short == pytest.approx(long, abs=0.5)
    # And normalising it lands on the target when measured the same way.
    out = mix.loudness_normalize(Track(sine(1000, rate, 0.1), rate))
    looped = out.wave.repeat(1, 10)  # 100 ms × 10 = 1 s, long enough for the meter itself
    assert meter(looped, rate) == pytest.approx(-20.0, abs=0.1)


def test_peaks_above_full_scale_are_kept_and_reported():
    click = torch.zeros(1, 16000)
    click[0, 8000] = 0.5
    out = mix.loudness_normalize(Track(click, 16000))
    assert float(out.wave.abs().max()) > 1.0  # float audio is not clipped here
    assert "above full scale" in out.note


def test_broken_audio_is_an_error_not_silence():
    nan = torch.zeros(1, 16000)
    nan[0, 5] = float("nan")
    with pytest.raises(MediaError, match="NaN"):
        mix.loudness_normalize(Track(nan, 16000))
    with pytest.raises(MediaError, match="channels"):
        mix.measure_lufs(torch.zeros(6, 16000), 16000)


def test_tracks_of_different_lengths_are_padded_at_the_end():
    a = Track(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), 16000)
    b = Track(torch.tensor([[10.0, 20.0]]), 16000)
    out = mix.sum_tracks([a, b])
    assert out.sample_rate == 16000
    assert torch.equal(out.wave, torch.tensor([[11.0, 22.0, 3.0, 4.0]]))
    assert torch.equal(mix.sum_tracks([b, a]).wave, out.wave)


def test_mono_tracks_are_copied_to_every_channel():
    mono = Track(torch.tensor([[1.0, 2.0, 3.0]]), 16000)
    stereo = Track(torch.tensor([[10.0, 20.0, 30.0], [-10.0, -20.0, -30.0]]), 16000)
    out = mix.sum_tracks([mono, stereo])
    assert torch.equal(out.wave, torch.tensor([[11.0, 22.0, 33.0], [-9.0, -18.0, -27.0]]))
    assert mix.sum_tracks([mono, mono]).wave.shape == (1, 3)


def test_two_and_three_channels_cannot_be_mixed():
    with pytest.raises(MediaError, match=r"channel counts \[2, 3\].*down-mix"):
        mix.sum_tracks([Track(torch.zeros(2, 10), 16000), Track(torch.zeros(3, 10), 16000)])
    # A mono track beside them does not make it work (mono broadcasts to one common count only).
    with pytest.raises(MediaError, match=r"channel counts \[1, 2, 3\]"):
        mix.sum_tracks([Track(torch.zeros(2, 10), 16000), Track(torch.zeros(1, 10), 16000),
                        Track(torch.zeros(3, 10), 16000)])


def test_sample_rates_are_brought_to_the_highest():
    low = Track(sine(1000, 16000, 0.5), 16000)
    high = Track(0.1 * torch.ones(1, 22050), 44100)
    out = mix.sum_tracks([low, high])
    assert out.sample_rate == 44100
    assert out.wave.shape == (1, 22050)
    expected = resample(low.wave, 16000, 44100) + 0.1
    assert torch.allclose(out.wave, expected, atol=1e-6)


def test_gains_in_db_scale_each_track():
    a = Track(torch.tensor([[1.0, 1.0]]), 16000)
    b = Track(torch.tensor([[1.0, -1.0]]), 16000)
    out = mix.sum_tracks([a, b], gains_db=[0.0, 20 * math.log10(0.5)])
    assert torch.allclose(out.wave, torch.tensor([[1.5, 0.5]]), atol=1e-6)
    with pytest.raises(ConfigError, match="2 gains for 1 tracks"):
        mix.sum_tracks([a], gains_db=[0.0, 1.0])
    with pytest.raises(ConfigError, match="no tracks"):
        mix.sum_tracks([])


def test_bad_tracks_are_rejected():
    with pytest.raises(MediaError, match=r"\(channels, samples\)"):
        Track(torch.zeros(16000), 16000)
    with pytest.raises(MediaError, match="sample rate"):
        Track(torch.zeros(1, 10), 0)


def test_sum_does_not_modify_its_inputs():
    a = Track(torch.ones(1, 4), 16000)
    mix.sum_tracks([a, Track(torch.ones(2, 4), 16000)])
    assert torch.equal(a.wave, torch.ones(1, 4))


def three_tracks():
    rate = 16000
    return [Track(sine(440, rate, 1.0, amp=0.8), rate),
            Track(noise(0.6, rate, 0.3, seed=0), rate),  # shorter: padded
            Track(sine(2500, rate, 1.0, amp=0.1), rate)]  # quiet: the running mix inflates it


def test_composite_is_normalise_of_the_raw_sum():
    tracks = three_tracks()
    out = mix.composite(tracks)
    # Direct formula, independent of sum_tracks / loudness_normalize.
    raw = tracks[0].wave.clone()
    raw[:, :tracks[1].wave.shape[1]] += tracks[1].wave
    raw += tracks[2].wave
    gain_db = -20.0 - meter(raw, 16000)
    assert out.gain_db == pytest.approx(gain_db, abs=1e-9)
    assert torch.allclose(out.wave, raw * 10 ** (gain_db / 20), rtol=1e-5, atol=1e-7)
    assert meter(out.wave, 16000) == pytest.approx(-20.0, abs=0.1)
    # Order does not matter (up to float summation order).
    reordered = mix.composite([tracks[2], tracks[0], tracks[1]])
    assert torch.allclose(reordered.wave, out.wave, atol=1e-6)


def test_composite_is_not_a_renormalised_running_mix():
    t1, t2, t3 = three_tracks()
    direct = mix.composite([t1, t2, t3])
    first_two = mix.composite([t1, t2])
    running = mix.composite([Track(first_two.wave, first_two.sample_rate), t3])
    # The running mix scales t1 + t2 by the first normalisation's gain (measured −15.8 dB) before
    # adding t3, so t3 ends up ~6× louder relative to t1 than in the direct composite.
    # Measured: max |running − direct| 0.135 with a peak of 0.30.
    assert first_two.gain_db < -10
    assert float((running.wave - direct.wave).abs().max()) > 0.3 * float(direct.wave.abs().max())
    # ...and it is exactly that wrong formula, while composite is the direct one.
    t1_t2 = mix.sum_tracks([t1, t2]).wave
    wrong = 10 ** (running.gain_db / 20) * (10 ** (first_two.gain_db / 20) * t1_t2 + t3.wave)
    assert torch.allclose(running.wave, wrong, atol=1e-6)
    right = 10 ** (direct.gain_db / 20) * (t1_t2 + t3.wave)
    assert torch.allclose(direct.wave, right, atol=1e-6)
    assert meter(running.wave, 16000) == pytest.approx(-20.0, abs=0.1)  # both are at −20 LUFS...
    assert meter(direct.wave, 16000) == pytest.approx(-20.0, abs=0.1)   # ...but differ in balance


# --------------------------------------------------------------------------- true-peak ceiling
def clicks(rate, seconds=2.0, level=1e-3, every=0.25):
    """Quiet noise with single-sample clicks: at −20 LUFS the clicks would go far above full
    scale (like the demo's −60 LUFS tracks with clicks)."""
    wave = noise(seconds, rate, level, seed=3)
    for i in range(int(seconds / every)):
        wave[0, int((i + 0.5) * every * rate)] = 0.5
    return wave


@pytest.mark.parametrize("rate", [16000, 44100])
def test_the_composite_keeps_its_true_peak_under_the_ceiling_and_says_so(rate):
    track = Track(clicks(rate), rate)
    free = mix.loudness_normalize(track)  # no ceiling: what a conditioning mix is
    assert float(free.wave.abs().max()) > 1.0 and free.target_met
    out = mix.composite([track])
    ceiling = mix.TRUE_PEAK_CEILING_DB
    # Independent true peak: 8x oversampling (finer than the 4x the module uses).
    up = resample(out.wave, rate, 8 * rate)
    measured_tp = 20 * math.log10(max(float(up.abs().max()), float(out.wave.abs().max())))
    assert measured_tp <= ceiling + 0.1
    assert out.true_peak_db == pytest.approx(ceiling, abs=1e-6)
    assert not out.target_met and out.ceiling_db == ceiling
    reached = meter(out.wave, rate)
    assert reached < -20.0 - 1.0  # the loudness given up for the peak...
    assert out.ceiling_reduction_db == pytest.approx(-20.0 - reached, abs=0.1)  # ...recorded
    assert "LUFS not reached" in out.note and f"{ceiling:g} dBTP" in out.note
    # A linear gain: the shape of the sound is untouched (no limiter).
    assert torch.allclose(out.wave, track.wave * 10 ** (out.gain_db / 20), rtol=1e-5, atol=1e-9)


def test_a_mix_with_headroom_meets_the_target_exactly():
    rate = 16000
    out = mix.composite(three_tracks())
    assert out.target_met and out.note == "" and out.ceiling_reduction_db == 0.0
    assert out.true_peak_db <= mix.TRUE_PEAK_CEILING_DB
    assert meter(out.wave, rate) == pytest.approx(-20.0, abs=0.1)


def test_true_peak_sees_an_inter_sample_peak():
    """A full-scale sine at a quarter of the rate sampled at 45°: every sample is at 0.707,
    the waveform between them reaches 1.0 (+3 dB over the sample peak)."""
    rate = 16000
    n = torch.arange(rate, dtype=torch.float64)
    wave = torch.sin(2 * math.pi * n / 4 + math.pi / 4)[None].float()
    assert float(wave.abs().max()) == pytest.approx(math.sqrt(0.5), abs=1e-6)
    assert mix.true_peak_db(wave, rate) == pytest.approx(0.0, abs=0.2)


def test_float_wav_is_written_unclamped_and_pcm16_clipped(tmp_path):
    import av
    from nag_core.media.audio import write_audio
    wave = torch.tensor([[0.0, 1.5, -2.0, 0.25]]).repeat(1, 400)

    def read(path):
        with av.open(str(path)) as f:
            return np.concatenate([fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)])
    flt = read(write_audio(tmp_path / "f.wav", wave, 16000, encoding="float"))
    assert flt.max() == pytest.approx(1.5) and flt.min() == pytest.approx(-2.0)
    pcm = read(write_audio(tmp_path / "p.wav", wave, 16000, encoding="pcm16"))
    assert pcm.max() == 32767 and pcm.min() == -32767
