"""The NAG ControlNet: zero-init identity, structure, variants, weight file, training API."""

from __future__ import annotations

import json

import pytest
import torch

from nag_core.checkpoint import read_checkpoint, write_safetensors
from nag_core.controlnet import (ControlNetConfig, NAGControlNet, controlnet_flow,
                                 load_controlnet, save_controlnet, trainable_parameters)
from nag_core.errors import ConfigError, WeightsError
from nag_core.mmaudio.network import MMAudioNetwork
from nag_core.mmaudio.variants import VARIANTS, tiny_config

from nag_tiny import all_conditions, controlnet, latent, tiny_network


def _base_snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def _assert_same_state(net, snapshot):
    state = net.state_dict()
    assert state.keys() == snapshot.keys()
    for k, v in snapshot.items():
        assert torch.equal(state[k], v), k


# ----------------------------------------------------------------- zero-init identity
@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("init_source", ["first_blocks", "random"])
def test_zero_init_ctrl_flow_equals_base_exactly(v2, init_source):
    net = tiny_network(v2=v2)
    cn = controlnet(net, num_blocks=2, init_source=init_source)
    _, _, ctrl = all_conditions(net, 2)
    x, t = latent(net, 2, 10), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        base = net.predict_flow(x, t, ctrl)
        for seed in (11, 12):  # any x_cond
            u = controlnet_flow(net, cn, x, t, ctrl, 3 * latent(net, 2, seed))
            assert torch.equal(u, base)


def test_nonzero_controlnet_changes_flow_and_depends_on_x_cond():
    net = tiny_network()
    cn = controlnet(net, nonzero=True)
    _, _, ctrl = all_conditions(net, 1)
    x, t = latent(net, 1, 10), torch.tensor(0.5)
    with torch.no_grad():
        base = net.predict_flow(x, t, ctrl)
        u1 = controlnet_flow(net, cn, x, t, ctrl, latent(net, 1, 11))
        u2 = controlnet_flow(net, cn, x, t, ctrl, latent(net, 1, 12))
    assert (u1 - base).abs().max() > 1e-3
    assert (u1 - u2).abs().max() > 1e-3


# ----------------------------------------------------------------- structure
def test_from_base_copies_first_latent_streams_and_never_touches_base():
    net = tiny_network()  # 2 joint + 1 fused
    before = _base_snapshot(net)
    cn = controlnet(net, num_blocks=3)
    sources = [jb.latent_block for jb in net.joint_blocks] + list(net.fused_blocks)
    for block, src in zip(cn.blocks, sources):
        for (n, p), (m, q) in zip(block.state_dict().items(), src.state_dict().items()):
            assert n == m and torch.equal(p, q)
            assert p.data_ptr() != q.data_ptr()  # a copy, not shared storage
    assert torch.equal(cn.cond_embed[0].weight, net.audio_input_proj[0].weight)
    assert not cn.cond_embed[3].weight.any() and not cn.cond_embed[3].bias.any()
    assert all(not p.weight.any() and not p.bias.any() for p in cn.residual_proj)
    # The base is frozen, unchanged, and not part of the ControlNet's state.
    assert not any(p.requires_grad for p in net.parameters())
    assert all(p.requires_grad for p in cn.parameters())
    _assert_same_state(net, before)
    prefixes = {k.split(".")[0] for k in cn.state_dict()}
    assert prefixes == {"cond_embed", "blocks", "residual_proj"}
    with torch.no_grad():
        cn.blocks[0].attn.qkv.weight.add_(1.0)
    _assert_same_state(net, before)


def test_cond_embed_activation_matches_base():
    assert isinstance(controlnet(tiny_network()).cond_embed[1], torch.nn.SELU)
    assert isinstance(controlnet(tiny_network(v2=True)).cond_embed[1], torch.nn.SiLU)
    cn = NAGControlNet.from_base(tiny_network(v2=True), ControlNetConfig(2, "random"))
    assert isinstance(cn.cond_embed[1], torch.nn.SiLU)


def test_injection_plan_and_config_checks():
    def plan(depth, k):
        return ControlNetConfig(num_blocks=k, base_depth=depth)

    cfg = plan(12, 4)
    assert cfg.interval == 3
    assert [cfg.residual_index(b) for b in range(12)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    cfg = plan(21, 4)
    assert cfg.interval == 6 and cfg.residual_index(20) == 3
    with pytest.raises(ConfigError, match="never be used"):
        plan(12, 5)  # interval 3 uses only 4 residuals
    with pytest.raises(ConfigError, match="at least 4 blocks"):
        NAGControlNet.from_base(tiny_network(), ControlNetConfig(num_blocks=4))
    with pytest.raises(ConfigError, match="init_source"):
        ControlNetConfig(init_source="copy")
    cn = controlnet(tiny_network(), num_blocks=2)
    assert cn.residual_plan() == [0, 0, 1]


def test_config_json_round_trip():
    cfg = controlnet(tiny_network(mode="44k", v2=True), num_blocks=3).config
    assert cfg.is_bound and cfg.base_variant == "custom" and cfg.latent_dim == 40
    assert ControlNetConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["num_blocks"] == 3
    with pytest.raises(ConfigError, match="unknown fields"):
        ControlNetConfig.from_json(json.dumps({"num_blocks": 2, "wings": 3}))


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_released_variant_on_meta(variant):
    with torch.device("meta"):
        net = MMAudioNetwork(VARIANTS[variant])
    cn = NAGControlNet.from_base(net)
    cfg = cn.config
    assert cfg.base_variant == variant and cfg.hidden_dim == VARIANTS[variant].hidden_dim
    assert len(cn.blocks) == 4 and len(cn.residual_proj) == 4
    assert len(cn.residual_plan()) == VARIANTS[variant].depth
    assert max(cn.residual_plan()) == 3
    d = cfg.hidden_dim
    # cond_embed = audio_input_proj's form + Linear(D, D); each block = one fused block
    assert _count(cn.cond_embed) == _count(net.audio_input_proj) + d * d + d
    assert _count(cn.blocks) == 4 * _count(net.fused_blocks[0])
    assert _count(cn) == _count(cn.cond_embed) + _count(cn.blocks) + 4 * (d * d + d)


@pytest.mark.parametrize("mode,v2", [("16k", False), ("44k", False), ("44k", True)])
def test_tiny_configs(mode, v2):
    net = tiny_network(mode, v2)
    for k in (1, 2, 3):
        cn = controlnet(net, num_blocks=k)
        assert cn.config.latent_dim == tiny_config(mode, v2).latent_dim
        assert len(cn.blocks) == k


# ----------------------------------------------------------------- weight file
def test_save_load_round_trip(tmp_path):
    net = tiny_network()
    cn = controlnet(net, nonzero=True)
    path = tmp_path / "cn.safetensors"
    save_controlnet(cn, path)
    state, meta = read_checkpoint(path)
    assert meta["format"] == "nag-controlnet" and meta["format_version"] == "1"
    assert meta["base_variant"] == "custom"
    assert ControlNetConfig.from_json(meta["config"]) == cn.config
    assert set(state) == set(cn.state_dict())  # only ControlNet parameters

    loaded = load_controlnet(path, net)
    _, _, ctrl = all_conditions(net, 2)
    x, xc, t = latent(net, 2, 10), latent(net, 2, 11), torch.tensor(0.4)
    with torch.no_grad():
        assert torch.equal(controlnet_flow(net, loaded, x, t, ctrl, xc),
                           controlnet_flow(net, cn, x, t, ctrl, xc))


def test_load_rejects_foreign_file(tmp_path):
    net = tiny_network()
    path = tmp_path / "network.safetensors"
    write_safetensors(net.state_dict(), path)
    with pytest.raises(WeightsError, match="not a NAG ControlNet weight file.*nag-controlnet"):
        load_controlnet(path, net)
    write_safetensors({"x": torch.zeros(1)}, path, metadata={"format": "nag-controlnet",
                                                              "format_version": "7",
                                                              "config": "{}"})
    with pytest.raises(WeightsError, match="format version '7'"):
        load_controlnet(path, net)


def test_damaged_controlnet_file_names_what_is_wrong(tmp_path):
    net = tiny_network()
    cn = controlnet(net, nonzero=True)
    good = tmp_path / "cn.safetensors"
    save_controlnet(cn, good)
    state, meta = read_checkpoint(good)
    dropped = sorted(state)[0]
    del state[dropped]
    damaged = tmp_path / "damaged.safetensors"
    write_safetensors(state, damaged, metadata=meta)
    with pytest.raises(WeightsError, match=f"1 missing keys.*{dropped}"):
        load_controlnet(damaged, net)


def test_load_onto_other_variant_names_both(tmp_path):
    cfg = ControlNetConfig().bound_to(VARIANTS["small_16k"], "small_16k")
    path = tmp_path / "cn.safetensors"
    write_safetensors({"x": torch.zeros(1)}, path, metadata={
        "format": "nag-controlnet", "format_version": "1", "base_variant": "small_16k",
        "config": cfg.to_json()})
    with torch.device("meta"):
        large = MMAudioNetwork(VARIANTS["large_44k_v2"])
    with pytest.raises(WeightsError) as e:
        load_controlnet(path, large)
    msg = str(e.value)
    assert "trained for small_16k (hidden 448, latent 20, 16k" in msg
    assert "loaded MMAudio is large_44k_v2 (hidden 896, latent 40, 44k" in msg


def test_load_tiny_mode_mismatch(tmp_path):
    path = tmp_path / "cn.safetensors"
    save_controlnet(controlnet(tiny_network("16k")), path)
    with pytest.raises(WeightsError, match="latent 20, 16k.*latent 40, 44k"):
        load_controlnet(path, tiny_network("44k"), base_variant="tiny44")


# ----------------------------------------------------------------- training API
def test_gradients_only_reach_controlnet_and_base_stays_identical():
    net = tiny_network()
    before = _base_snapshot(net)
    cn = controlnet(net, num_blocks=2).train()
    params = trainable_parameters(cn)
    assert len(params) == len(list(cn.parameters()))
    opt = torch.optim.AdamW(params, lr=1e-3)
    _, _, ctrl = all_conditions(net, 2)
    x1, x0, xc = latent(net, 2, 10), latent(net, 2, 11), latent(net, 2, 12)
    t = torch.tensor([0.2, 0.7])
    for _ in range(2):  # the 2nd step sees nonzero projections: gradients reach every part
        xt = t[:, None, None] * x1 + (1 - t[:, None, None]) * x0
        loss = (controlnet_flow(net, cn, xt, t, ctrl, xc) - (x1 - x0)).square().mean()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in net.parameters())
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    _assert_same_state(net, before)


def test_loaded_controlnet_is_frozen_until_trained(tmp_path):
    net = tiny_network()
    path = tmp_path / "cn.safetensors"
    save_controlnet(controlnet(net), path)
    loaded = load_controlnet(path, net)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    params = trainable_parameters(loaded)  # resume training
    assert params and all(p.requires_grad for p in params)
