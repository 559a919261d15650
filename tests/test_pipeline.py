"""The integration layer: weight-file discovery, the model bundle and the Foley session, on the
smoke-test model set (tiny seeded weights in the real file layouts and names)."""

from __future__ import annotations

import shutil

import pyloudnorm
import pytest
import torch

from nag_core.controlnet import NAGControlNet
from nag_core.errors import ConfigError, WeightsError
from nag_core.media import frames_from_images
from nag_core.pipeline import FoleySession, StepSettings, generate_track
from nag_core.smoke import MARKER, write_smoke_models
from nag_core.weights import (classify, find_model_files, list_weight_files, load_model_files)

DURATION = 1.0


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_smoke_models(root, modes=("16k", "44k"))
    return root


@pytest.fixture(scope="module")
def model16(smoke_dir):
    return load_model_files(find_model_files(smoke_dir, "small_16k"))


@pytest.fixture(scope="module")
def clip():
    g = torch.Generator().manual_seed(0)
    return frames_from_images(torch.rand(30, 40, 56, 3, generator=g), fps=25, duration=DURATION)


def _noisy_controlnet(network, seed=0):
    cn = NAGControlNet.from_base(network)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return cn


# ------------------------------------------------------------------ weight files
def test_smoke_set_is_marked_and_never_overwrites_real_weights(tmp_path):
    (tmp_path / "mmaudio_small_16k.pth").write_bytes(b"real weights")
    with pytest.raises(ConfigError, match="never overwritten"):
        write_smoke_models(tmp_path)
    assert (tmp_path / "mmaudio_small_16k.pth").read_bytes() == b"real weights"
    assert not (tmp_path / MARKER).exists()


def test_missing_files_are_listed_with_where_to_put_them_and_where_to_get_them(smoke_dir, tmp_path):
    shutil.copy(smoke_dir / "mmaudio_small_16k.pth", tmp_path / "mmaudio_small_16k.pth")
    with pytest.raises(WeightsError) as e:
        find_model_files(tmp_path, "small_16k")
    msg = str(e.value)
    for name in ("v1-16.pth", "best_netG.pt", "synchformer_state_dict.pth",
                 "open_clip_pytorch_model.bin"):
        assert str(tmp_path / name) in msg or name in msg, name
    assert "mmaudio_small_16k.pth" not in msg.split("missing", 1)[1]  # present: not listed
    assert "https://" in msg


def test_kijai_file_names_are_found(smoke_dir, tmp_path):
    """kijai's pack keeps fp16 safetensors under other names in the same folder."""
    from nag_core.checkpoint import read_state_dict, write_safetensors
    names = {
        "mmaudio_large_44k_v2.pth": "mmaudio_large_44k_v2_fp16.safetensors",
        "v1-44.pth": "mmaudio_vae_44k_fp16.safetensors",
        "synchformer_state_dict.pth": "mmaudio_synchformer_fp16.safetensors",
        "apple/DFN5B-CLIP-ViT-H-14-384/open_clip_pytorch_model.bin":
            "apple_DFN5B-CLIP-ViT-H-14-384_fp16.safetensors",
    }
    for src, dst in names.items():
        sd = {k: (v.half() if v.is_floating_point() else v)
              for k, v in read_state_dict(smoke_dir / src).items()}
        write_safetensors(sd, tmp_path / dst)
    shutil.copytree(smoke_dir / "nvidia", tmp_path / "nvidia")
    shutil.copy(smoke_dir / "bpe_simple_vocab_16e6.txt.gz", tmp_path)
    files = find_model_files(tmp_path, "large_44k_v2")
    assert files.network.name == "mmaudio_large_44k_v2_fp16.safetensors"
    assert files.vae.name == "mmaudio_vae_44k_fp16.safetensors"
    assert files.vocoder_config is not None
    model = load_model_files(files)
    assert model.mode == "44k" and model.sample_rate == 44100
    assert {classify(f) for f in list_weight_files(tmp_path)} == {
        "network", "vae", "vocoder", "synchformer", "clip"}


def test_parts_of_different_modes_are_refused_with_both_named(smoke_dir, tmp_path):
    from nag_core.mmaudio.vae import load_vae
    model_files = find_model_files(smoke_dir, "small_16k")
    model_files.vae = smoke_dir / "v1-44.pth"
    with pytest.raises(WeightsError, match="16k|44k"):
        load_model_files(model_files)
    with pytest.raises(WeightsError):
        load_vae(smoke_dir / "v1-44.pth", expect_mode="16k")


# ------------------------------------------------------------------ generation
def test_track_has_the_true_rate_and_the_clip_length(model16, clip):
    session = FoleySession(model16, clip)
    r = session.add_step("ball bounces", seed=1, steps=2)
    assert model16.sample_rate == 16000
    assert r.wave.shape == (int(round(clip.duration * 16000)),)
    assert r.method_used == "cfg" and torch.isfinite(r.wave).all()


def test_same_seed_same_audio_other_seed_other_audio(model16, clip):
    session = FoleySession(model16, clip)
    features = session.features
    a = generate_track(model16, features, StepSettings("rain", seed=3, steps=2)).wave
    b = generate_track(model16, features, StepSettings("rain", seed=3, steps=2)).wave
    c = generate_track(model16, features, StepSettings("rain", seed=4, steps=2)).wave
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_video_is_encoded_once_per_session(model16, clip, monkeypatch):
    calls = []
    original = type(model16).encode_video
    monkeypatch.setattr(type(model16), "encode_video",
                        lambda self, v: calls.append(1) or original(self, v))
    cn = _noisy_controlnet(model16.network)
    session = FoleySession(model16, clip, controlnet=cn)
    for k in range(3):
        session.add_step(f"sound {k}", seed=k, steps=1)
    session.redo_step(2, seed=9)
    assert len(calls) == 1


def test_redo_keeps_earlier_tracks_byte_identical_and_regenerates_later(model16, clip):
    cn = _noisy_controlnet(model16.network)
    session = FoleySession(model16, clip, controlnet=cn)
    for k, prompt in enumerate(["ball bounces", "lamp beeps", "rain falls"]):
        session.add_step(prompt, seed=k, steps=2)
    before = [t.clone() for t in session.tracks]
    assert [r.method_used for r in session.results] == ["cfg", "nag", "nag"]
    redone = session.redo_step(2, prompt="lamp hums")
    assert len(redone) == 2 and session.results[1].settings.prompt == "lamp hums"
    assert torch.equal(session.tracks[0], before[0])
    assert not torch.equal(session.tracks[1], before[1])
    # step 3 keeps its own settings but is conditioned on the new mix
    assert session.results[2].settings.prompt == "rain falls"
    assert not torch.equal(session.tracks[2], before[2])


def test_conditioning_mix_is_the_normalised_sum_of_earlier_raw_tracks(model16, clip):
    from nag_core.mix import Track, composite
    session = FoleySession(model16, clip)
    for k in range(3):
        session.add_step(f"s{k}", seed=k, steps=1, method="independent", gain_db=-3.0 * k)
    assert session.conditioning_mix(1) is None
    mix3 = session.conditioning_mix(3)
    direct = composite([Track(t[None], 16000) for t in session.tracks[:2]], [0.0, -3.0])
    assert torch.equal(mix3.wave, direct.wave)
    comp = session.composite()
    meter = pyloudnorm.Meter(16000)
    assert abs(meter.integrated_loudness(comp.wave[0].double().numpy()) + 20.0) < 0.1


def test_beta_zero_is_independent_generation_bit_for_bit(model16, clip):
    cn = _noisy_controlnet(model16.network)
    s1 = FoleySession(model16, clip, controlnet=cn)
    s2 = FoleySession(model16, clip)
    for s, kwargs in ((s1, {"beta": 0.0}), (s2, {"method": "independent"})):
        s.add_step("a", seed=1, steps=2)
        s.add_step("b", seed=2, steps=2, **kwargs)
    assert s1.results[1].method_used == "independent"
    assert torch.equal(s1.tracks[1], s2.tracks[1])


def test_nag_without_controlnet_says_what_to_do(model16, clip):
    session = FoleySession(model16, clip)
    session.add_step("a", seed=1, steps=1)
    with pytest.raises(ConfigError, match="ControlNet"):
        session.add_step("b", seed=2, steps=1, method="nag")


def test_negative_prompt_method_changes_step_two_only(model16, clip):
    s1, s2 = FoleySession(model16, clip), FoleySession(model16, clip)
    for s, method in ((s1, "negative_prompt"), (s2, "independent")):
        s.add_step("ball bounces", seed=1, steps=2, method=method)
        s.add_step("lamp beeps", seed=2, steps=2, method=method)
    assert torch.equal(s1.tracks[0], s2.tracks[0])  # step 1 is plain CFG either way
    assert not torch.equal(s1.tracks[1], s2.tracks[1])
    assert s1.results[1].method_used == "negative_prompt"


def test_text_to_audio_session_needs_a_duration(model16):
    with pytest.raises(ConfigError, match="duration"):
        FoleySession(model16, None)
    s = FoleySession(model16, None, duration=0.8)
    assert s.add_step("wind", seed=0, steps=1).wave.shape == (12800,)


def test_progress_reports_each_euler_step_and_can_cancel(model16, clip):
    seen = []
    session = FoleySession(model16, clip, progress=lambda i, n: seen.append((i, n)))
    session.add_step("a", seed=0, steps=3)
    assert seen == [(1, 3), (2, 3), (3, 3)]

    class Cancelled(Exception):
        pass

    def cancel(i, n):
        raise Cancelled

    session.progress = cancel
    with pytest.raises(Cancelled):
        session.add_step("b", seed=0, steps=3, method="independent")
    assert len(session.results) == 1  # a cancelled step leaves the session as it was
    session.progress = None
    session.add_step("b", seed=0, steps=1, method="independent")
    assert len(session.results) == 2


def test_auto_method_is_nag_with_a_controlnet_and_the_training_free_default_without(model16,
                                                                                   clip):
    from nag_core.defaults import AUTO_WITHOUT_CONTROLNET
    with_cn = FoleySession(model16, clip, controlnet=_noisy_controlnet(model16.network))
    without = FoleySession(model16, clip)
    for s in (with_cn, without):
        s.add_step("a", seed=1, steps=1)
        s.add_step("b", seed=2, steps=1)
    assert with_cn.results[1].method_used == "nag"
    assert without.results[1].method_used == AUTO_WITHOUT_CONTROLNET


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="method"):
        StepSettings("x", method="magic")
    with pytest.raises(ConfigError, match="steps"):
        StepSettings("x", steps=0)


def test_a_failed_redo_keeps_every_step_of_the_session(model16, clip):
    session = FoleySession(model16, clip)
    for k in range(3):
        session.add_step(f"s{k}", seed=k, steps=1, method="independent")
    before = list(session.results)
    with pytest.raises(ConfigError, match="ControlNet"):  # step 2 as NAG, with no ControlNet
        session.redo_step(2, method="nag")
    assert session.results == before

    class Cancelled(Exception):
        pass

    def cancel_third(i, n, calls=[]):
        calls.append(i)
        if len(calls) > 1:  # step 2 done, cancelled during step 3
            raise Cancelled

    session.progress = cancel_third
    with pytest.raises(Cancelled):
        session.redo_step(2, seed=7)
    assert session.results == before


def test_a_bf16_model_keeps_the_exact_float32_mel_filterbank(smoke_dir):
    from nag_core.mmaudio.mel import mel_converter
    model = load_model_files(find_model_files(smoke_dir, "small_16k"), dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.vae.data_mean.dtype == torch.bfloat16
    fresh = mel_converter("16k")
    assert model.mel.mel_basis.dtype == torch.float32
    assert torch.equal(model.mel.mel_basis, fresh.mel_basis)  # not bf16-rounded
    assert torch.equal(model.mel.window, fresh.window)
    wave = torch.sin(torch.arange(16000) * 0.05)[None] * 0.5
    x = model.encode_mix(wave, 16000)  # float32 mel into a bf16 VAE: no dtype error
    assert x.dtype == torch.bfloat16 and torch.isfinite(x.float()).all()
