import pytest
import torch

from nag_core.errors import WeightsError
from nag_core.mmaudio.vae import (MODE_DIMS, VAE, load_vae, normalized_mp_weight,
                                  save_vae_checkpoint, tiny_vae)
from tests.golden import Golden, assert_close, golden_params, load_manifest


@pytest.fixture(scope="module", params=golden_params("vae_"))
def golden(request):
    g = Golden(request.param)
    return g, load_vae(g.group("weights."))


def test_vae_normalized_weights(golden):
    g, vae = golden
    sd = vae.state_dict()
    dbg = g.group("dbg.normalized_weights.")
    assert dbg
    for name, ref in dbg.items():
        assert_close(sd[name], ref, 1e-6, name)
        assert_close(normalized_mp_weight(g["weights." + name]), ref, 1e-6, name)


def test_vae_encode(golden):
    g, vae = golden
    post = vae.encode(g["in.mel"])
    assert_close(post.moments, g["out.encode.moments"], 1e-5, "moments")
    assert_close(post.mean, g["out.encode.mean"], 1e-5, "mean")
    assert_close(post.logvar, g["out.encode.logvar_clamped"], 1e-5, "logvar")
    assert_close(post.std, g["out.encode.std"], 1e-5, "std")
    assert_close(vae.encode(g["in.mel"], normalize=False).moments,
                 g["out.encode_no_normalize.moments"], 1e-5, "moments (no normalize)")
    s1 = post.sample(torch.Generator().manual_seed(3))
    s2 = post.sample(torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2) and s1.shape == post.mean.shape


def test_vae_decode(golden):
    g, vae = golden
    assert_close(vae.decode(g["in.z"]), g["out.decode"], 1e-5, "decode")
    assert_close(vae.decode(g["in.z_channel_last"].transpose(1, 2)), g["out.decode"], 1e-5,
                 "decode (channel-last input transposed)")
    assert_close(vae.decode(g["in.z"], unnormalize=False), g["out.decode_no_unnormalize"], 1e-5,
                 "decode no unnormalize")
    assert_close(vae.decode(g["out.encode.mean"]), g["out.decode_of_encode_mean"], 1e-5,
                 "decode(encode mean)")


def test_vae_decode_only_load(golden):
    g, _ = golden
    vae = load_vae(g.group("weights."), need_encoder=False)
    assert vae.encoder is None and not any(k.startswith("encoder.") for k in vae.state_dict())
    assert_close(vae.decode(g["in.z"]), g["out.decode"], 1e-5, "decode")
    with pytest.raises(RuntimeError, match="without its encoder"):
        vae.encode(g["in.mel"])


def test_load_does_not_touch_callers_dict(golden):
    g, _ = golden
    sd = g.group("weights.")
    before = sd["encoder.conv_in.weight"].clone()
    load_vae(sd)
    assert torch.equal(sd["encoder.conv_in.weight"], before)


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_real_size_vae_matches_manifest(mode):
    man = load_manifest(f"vae_{mode}")
    with torch.device("meta"):
        vae = VAE(*MODE_DIMS[mode])
    got = {k: list(v.shape) for k, v in vae.state_dict().items()}
    assert got == {k: v["shape"] for k, v in man["state_dict"].items()}
    assert sum(v.numel() for v in vae.state_dict().values()) == man["num_state_dict_elements"]
    assert sum(v.numel() for v in vae.encoder.state_dict().values()) == man["num_encoder_elements"]
    # the loader accepts the real layout (meta tensors stand in for the file) and infers the mode
    fake = {k: torch.empty(v["shape"], device="meta") for k, v in man["state_dict"].items()}
    loaded = load_vae(fake, expect_mode=mode, need_encoder=False)
    assert (loaded.data_dim, loaded.embed_dim, loaded.hidden_dim) == MODE_DIMS[mode]
    assert loaded.mode == mode and loaded.encoder is None


def test_wrong_and_damaged_files(tmp_path):
    sd = tiny_vae("16k", 0).state_dict()
    with pytest.raises(WeightsError, match="44k"):
        load_vae(tiny_vae("16k", 0).state_dict(), expect_mode="44k")
    with pytest.raises(WeightsError, match="not an MMAudio VAE.*BigVGAN"):
        load_vae({"conv_pre.bias": torch.zeros(3)})
    broken = dict(sd)
    del broken["decoder.conv_out.weight"]
    with pytest.raises(WeightsError, match="1 missing"):
        load_vae(broken)
    broken = dict(sd)
    broken["decoder.conv_in.weight"] = torch.full_like(sd["decoder.conv_in.weight"], float("nan"))
    with pytest.raises(WeightsError, match="NaN"):
        load_vae(broken)
    no_enc = {k: v for k, v in sd.items() if not k.startswith("encoder.")}
    with pytest.raises(WeightsError, match="no VAE encoder"):
        load_vae(no_enc)
    assert load_vae(no_enc, need_encoder=False).encoder is None
    bad = tmp_path / "v1-16.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError):
        load_vae(bad)


@pytest.mark.parametrize("mode", ["16k", "44k"])
@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_tiny_vae_round_trip(tmp_path, mode, ext):
    vae = tiny_vae(mode, seed=5)
    path = tmp_path / f"vae{ext}"
    save_vae_checkpoint(vae, path)
    again = load_vae(path, expect_mode=mode)
    for k, v in vae.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    data_dim, embed_dim, _ = MODE_DIMS[mode]
    z = torch.randn(2, embed_dim, 6, generator=torch.Generator().manual_seed(0))
    mel = again.decode(z)
    assert mel.shape == (2, data_dim, 12) and torch.isfinite(mel).all()
    assert again.encode(mel).mean.shape == (2, embed_dim, 6)
    # seeded: same seed, same weights; different seed, different weights
    assert torch.equal(tiny_vae(mode, 5).state_dict()["decoder.conv_in.weight"],
                       vae.state_dict()["decoder.conv_in.weight"])
    assert not torch.equal(tiny_vae(mode, 6).state_dict()["decoder.conv_in.weight"],
                           vae.state_dict()["decoder.conv_in.weight"])
