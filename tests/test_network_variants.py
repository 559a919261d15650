"""Variant configs against the real-size manifests, sequence lengths, RoPE and stretch tables."""

from __future__ import annotations

import math

import pytest
import torch

from golden import load_manifest, load_tables
from nag_core.errors import ConfigError
from nag_core.mmaudio.network import MMAudioNetwork
from nag_core.mmaudio.network_loading import detect_network_config
from nag_core.mmaudio.rope import apply_rope, nearest_exact_indices, rope_table
from nag_core.mmaudio.variants import (MODES, VARIANTS, NetworkConfig, sequence_lengths,
                                       tiny_config)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_matches_manifest(name):
    """Built at real size on the meta device: exact key set, shapes, parameter/buffer split."""
    manifest = load_manifest(f"network_{name}")
    cfg = VARIANTS[name]
    hp = manifest["hparams"]
    assert (cfg.latent_dim, cfg.hidden_dim, cfg.num_heads, cfg.depth, cfg.fused_depth,
            cfg.joint_depth, cfg.v2, cfg.mode) == (
        hp["latent_dim"], hp["hidden_dim"], hp["num_heads"], hp["depth"], hp["fused_depth"],
        hp["num_joint_blocks"], hp["v2"], manifest["mode"])
    with torch.device("meta"):
        net = MMAudioNetwork(cfg, duration=8.0)
    assert (net.latent_seq_len, net.clip_seq_len, net.sync_seq_len) == (
        hp["latent_seq_len_8s"], hp["clip_seq_len_8s"], hp["sync_seq_len_8s"])

    expected = manifest["state_dict"]
    sd = net.state_dict()
    assert set(sd) == set(expected), (sorted(set(sd) - set(expected))[:5],
                                      sorted(set(expected) - set(sd))[:5])
    params = dict(net.named_parameters())
    for key, spec in expected.items():
        assert list(sd[key].shape) == spec["shape"], key
        assert (key in params) == (spec["kind"] == "parameter"), key
        if key in params:
            assert params[key].requires_grad == spec.get("requires_grad", True), key
    assert sum(v.numel() for v in sd.values()) == manifest["num_state_dict_elements"]

    buffers = dict(net.named_buffers())
    for key, spec in manifest["non_persistent_buffers_not_in_state_dict"].items():
        assert list(buffers[key].shape) == spec["shape"], key
        assert buffers[key].dtype == torch.float32

    # detection from key names and shapes alone (medium_44k must not pass for large)
    assert detect_network_config(sd) == (name, cfg)


def test_variant_table():
    assert VARIANTS["medium_44k"].hidden_dim == 896 and VARIANTS["medium_44k"].depth == 12
    assert VARIANTS["small_16k"].mode == "16k" and VARIANTS["small_16k"].latent_dim == 20
    assert MODES["44k"].sample_rate == 44100 and MODES["44k"].latent_dim == 40
    assert VARIANTS["large_44k_v2"].v2 and not VARIANTS["large_44k"].v2


@pytest.mark.parametrize("mode", sorted(MODES))
def test_sequence_lengths_table(mode):
    rows = [r for r in load_tables()["sequence_lengths"] if r["mode"] == mode]
    assert len(rows) == 13
    for r in rows:
        s = sequence_lengths(mode, r["duration"])
        assert (s.latent, s.clip, s.sync, s.sync_segments) == (
            r["latent_seq_len"], r["clip_seq_len"], r["sync_seq_len"], r["sync_segments"]), r


@pytest.mark.parametrize("duration", [0.5, 0.63, 0.0, -1.0, math.nan])
def test_too_short_duration(duration):
    with pytest.raises(ConfigError, match="0.64|positive"):
        sequence_lengths("16k", duration)


def test_too_short_duration_message_and_network():
    with pytest.raises(ConfigError, match=r"at least 0\.64 s"):
        sequence_lengths("44k", 0.5)
    net = MMAudioNetwork(tiny_config("16k"), duration=1.0)
    with pytest.raises(ConfigError, match=r"0\.64"):
        net.set_duration(0.5)
    assert net.latent_seq_len == 32  # unchanged by the failed switch


def test_nearest_exact_maps():
    maps = load_tables()["nearest_exact_index_maps"]["maps"]
    for key, expected in maps.items():
        n_in, n_out = map(int, key.split("->"))
        idx = nearest_exact_indices(n_in, n_out)
        assert idx.tolist() == expected, key
        # and PyTorch's own kernel agrees
        src = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in)
        ref = torch.nn.functional.interpolate(src, size=n_out, mode="nearest-exact")
        assert ref.view(-1).long().tolist() == expected, key


def test_rope_example_and_pairs():
    ex = load_tables()["rope_example"]
    table = rope_table(4, 8, theta=10000, freq_scaling=2.5)
    expected = torch.tensor(ex["values"], dtype=torch.float32)
    assert list(table.shape) == ex["shape"]
    assert torch.allclose(table, expected, atol=1e-6, rtol=0)
    # adjacent pairs (2k, 2k+1) rotate together: position 1, frequency 0 angle 2.5 rad
    x = torch.zeros(1, 1, 4, 8)
    x[0, 0, 1, 0] = 1.0
    y = apply_rope(x, table)
    assert torch.allclose(y[0, 0, 1, :2], torch.tensor([math.cos(2.5), math.sin(2.5)]), atol=1e-6)
    assert torch.count_nonzero(y[0, 0, 1, 2:]) == 0


def test_tiny_config():
    for mode in MODES:
        for v2 in (False, True):
            cfg = tiny_config(mode, v2=v2)
            assert cfg.text_seq_len == 77 and cfg.latent_dim == MODES[mode].latent_dim
            assert cfg.joint_depth == 2 and cfg.v2 == v2 and cfg.mode == mode
    with pytest.raises(ConfigError):
        NetworkConfig(latent_dim=20, hidden_dim=64, num_heads=3, depth=3, fused_depth=1)


def test_tables_stay_float32_under_dtype_casts():
    net = MMAudioNetwork(tiny_config("44k"), duration=2.0).to(torch.bfloat16)
    assert net.latent_mean.dtype == torch.bfloat16
    for name in ("latent_rot", "clip_rot", "t_embed.freqs"):
        assert net.get_buffer(name).dtype == torch.float32, name
    assert torch.equal(net.latent_rot, rope_table(net.latent_seq_len, 32))


def test_features_on_another_device_are_moved_to_the_network():
    # CLIP/Synchformer may run on the CPU while the network sits on CUDA; the meta device
    # stands in for the accelerator here (no GPU in CI).
    net = MMAudioNetwork(tiny_config("16k"), duration=1.0).to("meta")
    c = net.config
    clip = torch.randn(1, net.clip_seq_len, c.clip_dim)
    sync = torch.randn(1, net.sync_seq_len, c.sync_dim)
    text = torch.randn(2, c.text_seq_len, c.text_dim)
    cond = net.preprocess_conditions(clip, sync, text[:1])
    assert cond.sync_f.device.type == "meta" and cond.text_f_c.device.type == "meta"
    empty = net.get_empty_conditions(2, negative_text_features=text)
    assert empty.text_f.device.type == "meta" and empty.text_f.shape[0] == 2
