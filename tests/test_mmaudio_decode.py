import pytest
import torch

from nag_core.errors import ConfigError
from nag_core.mmaudio.bigvgan import load_vocoder, tiny_vocoder
from nag_core.mmaudio.decode import decode_latents, encode_audio
from nag_core.mmaudio.mel import mel_converter
from nag_core.mmaudio.vae import load_vae, tiny_vae
from tests.golden import Golden, assert_close, golden_params


@pytest.mark.parametrize("path", golden_params("pipeline_"))
def test_pipeline_decode_golden(path):
    # the sidecar names the component goldens this pipeline golden chains, and the latent's key
    g = Golden(path)
    net, latent_key = g.input_file("latent")
    (vae_file, _), (voc_file, _) = g.input_file("vae"), g.input_file("vocoder")
    latent = net[latent_key]
    vae = load_vae(vae_file.group("weights."), need_encoder=False)
    voc = load_vocoder(voc_file.group("weights."))
    wave = decode_latents(vae, voc, latent)
    assert wave.shape == g["out.wave"].shape == (latent.shape[0], 1, 2 * latent.shape[1] * voc.hop)
    assert float((wave - g["out.wave"]).abs().max()) < 1e-5
    assert_close(vae.decode(latent.transpose(1, 2)), g["out.mel"], 1e-5, "mel")


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_encode_then_decode_shapes(mode):
    conv = mel_converter(mode)
    vae, voc = tiny_vae(mode, 1), tiny_vocoder(mode, 2)
    frames = 8
    wave = 0.1 * torch.randn(2, frames * conv.hop_size, generator=torch.Generator().manual_seed(0))
    post = encode_audio(conv, vae, wave)
    assert post.mean.shape == (2, vae.embed_dim, frames // 2)
    assert encode_audio(conv, vae, wave[0]).mean.shape == (1, vae.embed_dim, frames // 2)
    out = decode_latents(vae, voc, post.mean.transpose(1, 2))
    assert out.shape == (2, 1, frames * conv.hop_size) and out.dtype == torch.float32
    assert out.abs().max() <= 1.0


def test_mismatched_modes_are_rejected():
    with pytest.raises(ConfigError, match="same mode"):
        decode_latents(tiny_vae("16k", 0), tiny_vocoder("44k", 0), torch.zeros(1, 4, 20))
    with pytest.raises(ConfigError, match="same mode"):
        encode_audio(mel_converter("44k"), tiny_vae("16k", 0), torch.zeros(1, 4096))


def test_files_in_the_wrong_slot_are_named(tmp_path):
    from nag_core.errors import WeightsError
    from nag_core.mmaudio.bigvgan import save_vocoder_checkpoint
    from nag_core.mmaudio.vae import save_vae_checkpoint
    save_vocoder_checkpoint(tiny_vocoder("16k", 0), tmp_path / "best_netG.pt")
    save_vae_checkpoint(tiny_vae("16k", 0), tmp_path / "v1-16.pth")
    with pytest.raises(WeightsError, match="not an MMAudio VAE.*BigVGAN vocoder"):
        load_vae(tmp_path / "best_netG.pt")
    with pytest.raises(WeightsError, match="not a BigVGAN vocoder.*VAE"):
        load_vocoder(tmp_path / "v1-16.pth")
    with pytest.raises(WeightsError, match="44k model needs"):
        load_vocoder(tmp_path / "best_netG.pt", expect_mode="44k")


def test_reduced_precision_loading(tmp_path):
    from nag_core.mmaudio.bigvgan import save_vocoder_checkpoint
    from nag_core.mmaudio.vae import save_vae_checkpoint
    save_vocoder_checkpoint(tiny_vocoder("44k", 0), tmp_path / "voc.pt")
    save_vae_checkpoint(tiny_vae("44k", 0), tmp_path / "vae.safetensors")
    vae = load_vae(tmp_path / "vae.safetensors", dtype=torch.bfloat16)
    voc = load_vocoder(tmp_path / "voc.pt", dtype=torch.bfloat16)
    wave = decode_latents(vae, voc, torch.randn(1, 3, vae.embed_dim))
    assert wave.dtype == torch.float32 and wave.shape == (1, 1, 6 * 512)
    assert torch.isfinite(wave).all()
