import math

import pytest
import torch

from nag_core.errors import ConfigError
from nag_core.mmaudio.mel import (MelConverter, hz_to_mel_slaney, mel_converter,
                                  mel_to_hz_slaney, slaney_mel_filterbank)
from tests.golden import Golden, assert_close, golden_params


def _mode(g: Golden) -> str:
    return "16k" if g.meta["params"]["sampling_rate"] == 16000 else "44k"


@pytest.mark.parametrize("path", golden_params("mel_"))
def test_mel_filterbank_matches_golden(path):
    g = Golden(path)
    conv = MelConverter(_mode(g))
    assert conv.mel_basis.dtype == torch.float32
    assert_close(conv.mel_basis, g["const.mel_basis"], 1e-6, "mel_basis")
    assert_close(conv.window, g["const.hann_window"], 1e-7, "hann window")


@pytest.mark.parametrize("path", golden_params("mel_"))
def test_mel_matches_golden(path):
    g = Golden(path)
    conv = mel_converter(_mode(g))
    out = conv(g["in.wave"])
    ref = g["out.mel"]
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) < 1e-4
    # single-wave form agrees with the batched one
    assert torch.allclose(conv(g["in.wave"][-1]), out[-1], atol=1e-5)


def test_slaney_scale_hand_values():
    hz = torch.tensor([0.0, 200.0 / 3, 1000.0, 6400.0])
    mel = hz_to_mel_slaney(hz)
    assert torch.allclose(mel, torch.tensor([0.0, 1.0, 15.0, 42.0], dtype=torch.float64))
    assert torch.allclose(mel_to_hz_slaney(mel), hz.double())


def test_filters_have_unit_area_in_hz():
    fb = slaney_mel_filterbank(16000, 1024, 80, 0.0, 8000.0).double()
    # Slaney norm: each triangle of height 2/width integrates to 1 over Hz (FFT bin = 15.625 Hz)
    area = fb.sum(1) * (16000 / 1024)
    assert torch.allclose(area[5:], torch.ones(75, dtype=torch.float64), atol=0.05)


@pytest.mark.parametrize("mode,level", [("16k", -5.0), ("44k", math.log(1e-5))])
def test_silence_and_frame_count(mode, level):
    conv = mel_converter(mode)
    hop = conv.hop_size
    out = conv(torch.zeros(2, hop * 7))
    assert out.shape == (2, conv.n_mels, 7) and conv.num_frames(hop * 7) == 7
    assert torch.allclose(out, torch.full_like(out, level), atol=1e-5)


def test_unknown_mode():
    with pytest.raises(ConfigError, match="16k"):
        MelConverter("22k")
