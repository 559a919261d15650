"""Checkpoint loading: released layout round trip, fp16/bf16 files, detection and errors."""

from __future__ import annotations

import pytest
import torch

from nag_core.errors import ConfigError, WeightsError
from nag_core.checkpoint import write_safetensors, write_torch
from nag_core.generation import noise, sample_cfg
from nag_core.mmaudio.network import MMAudioNetwork, randomize_parameters_
from nag_core.mmaudio.network_loading import (detect_network_config, load_network,
                                              save_network_checkpoint)
from nag_core.mmaudio.variants import tiny_config


def _net(mode="16k", v2=False, seed=3):
    net = randomize_parameters_(MMAudioNetwork(tiny_config(mode, v2), duration=1.0), seed)
    return net.eval().requires_grad_(False)


def _inputs(net, batch=2, seed=5):
    g = torch.Generator().manual_seed(seed)
    c = net.config
    return (torch.randn(batch, net.latent_seq_len, c.latent_dim, generator=g),
            torch.randn(batch, net.clip_seq_len, c.clip_dim, generator=g),
            torch.randn(batch, net.sync_seq_len, c.sync_dim, generator=g),
            torch.randn(batch, c.text_seq_len, c.text_dim, generator=g),
            torch.rand(batch, generator=g))


@pytest.mark.parametrize("mode,v2", [("16k", False), ("44k", True)])
def test_released_layout_round_trip(tmp_path, mode, v2):
    net = _net(mode, v2)
    path = tmp_path / "mmaudio_tiny.pth"
    save_network_checkpoint(net, path, stale_keys=True)
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict) and {"t_embed.freqs", "latent_rot", "clip_rot"} <= set(raw)

    loaded, name = load_network(path, duration=1.0)
    assert name == "custom" and loaded.config == net.config
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    x = _inputs(net)
    with torch.no_grad():
        assert torch.equal(loaded(*x), net(*x))
    assert loaded.latent_seq_len == net.latent_seq_len

    loaded8, _ = load_network(path)  # default 8 s
    assert loaded8.latent_seq_len == (250 if mode == "16k" else 345)


def test_sampling_round_trip(tmp_path):
    net = _net()
    save_network_checkpoint(net, tmp_path / "n.safetensors", stale_keys=False)
    loaded, _ = load_network(tmp_path / "n.safetensors", duration=1.0)
    _, clip, sync, text, _ = _inputs(net)
    gen = torch.Generator().manual_seed(42)
    x0 = noise(2, net, gen)
    assert x0.shape == (2, 32, 20)
    assert torch.equal(x0, noise(2, net, torch.Generator().manual_seed(42)))
    calls = []
    with torch.no_grad():
        outs = []
        for m in (net, loaded):
            cond = m.preprocess_conditions(clip, sync, text)
            outs.append(sample_cfg(m, cond, m.get_empty_conditions(2), x0, 3, 4.5,
                                   callback=lambda i, n, x: calls.append((i, n))))
    assert torch.equal(outs[0], outs[1])
    assert calls == [(1, 3), (2, 3), (3, 3)] * 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_files(tmp_path, dtype):
    net = _net("44k")
    half = MMAudioNetwork(net.config, duration=1.0)
    half.load_state_dict(net.state_dict())
    half = half.to(dtype)
    path = tmp_path / f"tiny_{dtype}.safetensors"
    save_network_checkpoint(half, path)
    pth = tmp_path / f"tiny_{dtype}.pth"
    save_network_checkpoint(half, pth)

    # reference: the fp32 network with the rounded weights
    ref = MMAudioNetwork(net.config, duration=1.0)
    ref.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    x = _inputs(net)
    for p in (path, pth):
        loaded, _ = load_network(p, duration=1.0)
        assert loaded.latent_mean.dtype == torch.float32
        with torch.no_grad():
            assert torch.equal(loaded(*x), ref(*x))
    kept, _ = load_network(path, dtype=dtype, duration=1.0)
    assert kept.latent_mean.dtype == dtype and kept.latent_rot.dtype == torch.float32
    with torch.no_grad():
        out = kept(*x)
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_prefixed_keys_are_accepted():
    net = _net()
    sd = {"model." + k: v for k, v in net.state_dict().items()}
    loaded, _ = load_network(sd, duration=1.0)
    assert torch.equal(loaded.latent_std, net.latent_std)


def test_unrelated_tensors_fail(tmp_path):
    path = tmp_path / "other.pth"
    write_torch({"foo.weight": torch.zeros(3, 3), "bar.bias": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="not an MMAudio flow network"):
        load_network(path)


def test_vae_file_is_named(tmp_path):
    path = tmp_path / "v1-16.safetensors"
    write_safetensors({"data_mean": torch.zeros(1, 80, 1), "data_std": torch.ones(1, 80, 1),
                       "encoder.conv.weight": torch.zeros(2, 2, 1),
                       "decoder.conv.weight": torch.zeros(2, 2, 1)}, path)
    with pytest.raises(WeightsError, match="not an MMAudio flow network.*VAE"):
        load_network(path)


def test_vocoder_file_is_named():
    with pytest.raises(WeightsError, match="vocoder"):
        load_network({"conv_pre.weight": torch.zeros(4, 80, 7), "ups.0.weight": torch.zeros(1)})


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_fails(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    save_network_checkpoint(_net(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_network(path)


def test_missing_and_unexpected_keys():
    sd = _net().state_dict()
    broken = dict(sd)
    del broken["final_layer.conv.bias"]
    with pytest.raises(WeightsError, match=r"1 missing .*final_layer\.conv\.bias"):
        load_network(broken)
    extra = dict(sd, **{"something.else": torch.zeros(2)})
    with pytest.raises(WeightsError, match=r"1 unexpected .*something\.else"):
        load_network(extra)
    wrong = dict(sd, **{"final_layer.conv.bias": torch.zeros(7)})
    with pytest.raises(WeightsError, match="unexpected shapes.*final_layer.conv.bias"):
        load_network(wrong)


def test_mode_and_variant_mismatch(tmp_path):
    path = tmp_path / "tiny16.pth"
    save_network_checkpoint(_net("16k"), path)
    with pytest.raises(ConfigError, match=r"16k network .*44k mode"):
        load_network(path, expect_mode="44k")
    with pytest.raises(ConfigError, match=r"'custom'.*'small_16k'"):
        load_network(path, expect_variant="small_16k")
    net, name = load_network(path, expect_mode="16k", duration=1.0)
    assert name == "custom"


def test_detect_v1_v2_and_modes():
    for mode in ("16k", "44k"):
        for v2 in (False, True):
            name, cfg = detect_network_config(_net(mode, v2).state_dict())
            assert name == "custom" and cfg == tiny_config(mode, v2)
