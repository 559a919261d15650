import json

import pytest
import torch

from nag_core.errors import ConfigError, WeightsError
from nag_core.mmaudio.bigvgan import (CONFIGS, BigVGAN, VocoderConfig, fold_weight_norm,
                                      kaiser_sinc_filter, load_vocoder, save_vocoder_checkpoint,
                                      tiny_vocoder, vocoder_checkpoint_state)
from tests.golden import Golden, assert_close, golden_params, load_manifest


def _legacy(sd):
    return {k.replace(".parametrizations.weight.original0", ".weight_g")
             .replace(".parametrizations.weight.original1", ".weight_v"): v for k, v in sd.items()}


def _golden_config(g):
    return VocoderConfig.from_dict(g.meta["config_h"])


@pytest.fixture(scope="module", params=golden_params("bigvgan_"))
def golden(request):
    return Golden(request.param)


def test_filters_equal_stored_buffers(golden):
    mine = kaiser_sinc_filter(0.25, 0.3, 12)
    filters = {k: v for k, v in golden.group("weights.").items() if k.endswith(".filter")}
    assert filters
    for k, v in filters.items():
        assert torch.allclose(mine, v, atol=1e-8, rtol=0), k


@pytest.mark.parametrize("naming", ["parametrizations", "legacy", "plain"])
def test_vocoder_golden(golden, naming):
    sd = golden.group("weights.")
    if naming == "legacy":
        sd = _legacy(sd)
        assert any(k.endswith(".weight_g") for k in sd)
    elif naming == "plain":
        sd = fold_weight_norm(sd)
    voc = load_vocoder({"generator": sd})
    assert voc.config == _golden_config(golden)  # inferred from the tensors alone
    out = voc(golden["in.mel"])
    assert_close(out, golden["out.wave"], 1e-5, "wave")
    if "out.wave_weight_norm_active" in golden:
        assert_close(out, golden["out.wave_weight_norm_active"], 1e-5, "wave (weight norm on)")
    assert out.abs().max() <= 1.0
    # Only some goldens store the folded weights (the v2 one does not); where they are absent the
    # output waves above are the check, so an empty group here is expected, not a silent skip.
    for name, ref in golden.group("dbg.after_remove_weight_norm.").items():
        assert_close(voc.state_dict()[name], ref, 1e-6, name)


def test_vocoder_golden_with_config_dict_and_file(golden, tmp_path):
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(golden.meta["config_h"]))
    for cfg in (golden.meta["config_h"], cfg_path):
        voc = load_vocoder(golden.group("weights."), cfg)
        assert_close(voc(golden["in.mel"]), golden["out.wave"], 1e-5, "wave")


@pytest.mark.parametrize("mode,name", [("16k", "bigvgan_16k"), ("44k", "bigvgan_v2_44k")])
def test_real_size_vocoder_matches_manifest(mode, name):
    man = load_manifest(name)
    with torch.device("meta"):
        voc = BigVGAN(CONFIGS[mode])
    for naming, table in (("parametrizations", man["state_dict"]),
                          ("legacy", man["state_dict_legacy_weight_norm_names"])):
        shapes = {k: (v["shape"] if isinstance(v, dict) else v) for k, v in table.items()}
        got = {k: list(v.shape) for k, v in vocoder_checkpoint_state(voc, naming).items()}
        assert got == shapes, naming
    assert sum(v.numel() for v in voc.state_dict().values()) + \
        sum(p.shape[0] for n, p in voc.named_parameters() if n.endswith("weight")) \
        == man["num_state_dict_elements"]
    # the loader infers the real config from the real shapes (meta tensors stand in for the file)
    fake = {k: torch.empty(v["shape"], device="meta") for k, v in man["state_dict"].items()}
    loaded = load_vocoder({"generator": fake}, expect_mode=mode)
    assert loaded.config == CONFIGS[mode] and loaded.hop == {"16k": 256, "44k": 512}[mode]


def test_manifest_config_fields_agree():
    real16 = load_manifest("bigvgan_16k")["config_used"]
    real44 = load_manifest("bigvgan_v2_44k")["config_used_here"]
    assert VocoderConfig.from_dict(real16) == CONFIGS["16k"]
    assert VocoderConfig.from_dict(real44) == CONFIGS["44k"]


def test_wrong_and_damaged_files(golden, tmp_path):
    sd = golden.group("weights.")
    with pytest.raises(WeightsError, match="not a BigVGAN vocoder.*VAE"):
        load_vocoder({"data_mean": torch.zeros(1, 80, 1), "decoder.conv_in.weight": torch.zeros(1)})
    half = {k: v for k, v in sd.items() if not k.endswith("conv_pre.parametrizations.weight.original0")}
    with pytest.raises(WeightsError, match="half of its weight-norm pair"):
        load_vocoder(half)
    extra = dict(sd, **{"bogus.weight": torch.zeros(2)})
    with pytest.raises(WeightsError, match="1 unexpected"):
        load_vocoder(extra)
    with pytest.raises(WeightsError, match="needs"):
        load_vocoder(sd, expect_mode="16k")  # reduced hop 8 is not the 16k hop 256
    nan = dict(sd)
    key = "resblocks.0.convs1.0.bias"
    nan[key] = torch.full_like(sd[key], float("nan"))
    with pytest.raises(WeightsError, match="NaN"):
        load_vocoder(nan)
    with pytest.raises(ConfigError):
        load_vocoder(sd, tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="snakebeta"):
        VocoderConfig.from_dict(dict(golden.meta["config_h"], activation="snake"))
    # files saved without the filter buffers still load (they are derived tables)
    no_filters = {k: v for k, v in sd.items() if not k.endswith(".filter")}
    voc = load_vocoder(no_filters)
    assert_close(voc(golden["in.mel"]), golden["out.wave"], 1e-5, "wave")


@pytest.mark.parametrize("mode", ["16k", "44k"])
@pytest.mark.parametrize("file,naming", [("best_netG.pt", "parametrizations"),
                                         ("gen.pt", "legacy"), ("gen.safetensors", "plain")])
def test_tiny_vocoder_round_trip(tmp_path, mode, file, naming):
    voc = tiny_vocoder(mode, seed=3)
    assert voc.hop == {"16k": 256, "44k": 512}[mode]
    path = tmp_path / file
    save_vocoder_checkpoint(voc, path, naming)
    again = load_vocoder(path, expect_mode=mode)
    assert again.config == voc.config
    mel = torch.randn(1, voc.config.num_mels, 5, generator=torch.Generator().manual_seed(0)) - 4
    ref = voc(mel)
    assert ref.shape == (1, 1, 5 * voc.hop)
    assert_close(again(mel), ref, 1e-5, "tiny round trip")
    raw = torch.load(path, weights_only=True) if file.endswith(".pt") else None
    if raw is not None:
        assert set(raw) == {"generator"}


# ---------------------------------------------------------------------------------------------
# The fused anti-aliased activation (inference) against the reference modules
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [1, 2, 5, 16])
def test_fused_activation_equals_reference(length):
    from nag_core.mmaudio.bigvgan import Activation1d
    g = torch.Generator().manual_seed(length)
    act = Activation1d(3).eval()
    with torch.no_grad():
        act.act.alpha.copy_(torch.randn(3, generator=g) * 2)
        act.act.beta.copy_(torch.randn(3, generator=g))
        x = torch.randn(2, 3, length, generator=g) * 3
        ref, fused = act(x), act(x, fused=True)
    assert fused.shape == ref.shape == x.shape
    assert_close(fused, ref, 1e-6, "fused activation")


def _count_fused(monkeypatch) -> list[int]:
    from nag_core.mmaudio.bigvgan import Activation1d
    calls, original = [0], Activation1d._fused

    def counted(self, x):
        calls[0] += 1
        return original(self, x)

    monkeypatch.setattr(Activation1d, "_fused", counted)
    return calls


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_vocoder_inference_takes_the_fused_path(mode, monkeypatch):
    voc = tiny_vocoder(mode, 3)
    mel = torch.randn(2, voc.config.num_mels, 7, generator=torch.Generator().manual_seed(1))
    calls = _count_fused(monkeypatch)
    with torch.no_grad():
        fused = voc(mel)
    n_act = sum(len(b.activations) for b in voc.resblocks) + 1
    assert calls[0] == n_act
    monkeypatch.setattr(BigVGAN, "_use_fused", lambda self, mel: False)
    with torch.no_grad():
        ref = voc(mel)
    assert calls[0] == n_act
    assert_close(fused, ref, 1e-6, "wave")


def test_vocoder_keeps_the_reference_where_the_fold_does_not_hold(monkeypatch):
    calls = _count_fused(monkeypatch)
    mel = torch.randn(1, 80, 4)
    voc = tiny_vocoder("16k", 0)
    voc.requires_grad_(True)  # training: autograd sees the reference modules
    voc(mel).sum().backward()
    assert voc.resblocks[0].activations[0].act.alpha.grad is not None
    voc = tiny_vocoder("16k", 0)
    with torch.no_grad():
        voc.resblocks[1].activations[2].act.alpha[0] = 40.0  # exp(-40) would underflow the fold
        voc(mel)
        assert not voc.half()._use_fused(mel.half())  # float16 taps could overflow
        assert tiny_vocoder("16k", 0)._use_fused(mel)
    assert calls[0] == 0
