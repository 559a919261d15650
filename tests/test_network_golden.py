"""The flow network against the official MMAudio module (reduced size, seeded weights)."""

from __future__ import annotations

import functools

import pytest
import torch

from golden import Golden, assert_close, golden_duration, golden_params
from nag_core.generation import cfg_velocity, sample_cfg
from nag_core.mmaudio.network import Conditions, MMAudioNetwork
from nag_core.mmaudio.variants import NetworkConfig, sequence_lengths

COND_FIELDS = ("clip_f", "sync_f", "text_f", "clip_f_c", "text_f_c")
FWD = 1e-5  # the goldens' stated tolerance for single forward passes
RUN = 1e-4  # ... and for complete Euler + CFG runs (errors accumulate over the steps)


@functools.lru_cache(maxsize=None)
def _load(path):
    g = Golden(path)
    k = g.meta["constructor_kwargs"]
    mode = "16k" if k["latent_dim"] == 20 else "44k"
    cfg = NetworkConfig(latent_dim=k["latent_dim"], hidden_dim=k["hidden_dim"],
                        num_heads=k["num_heads"], depth=k["depth"], fused_depth=k["fused_depth"],
                        clip_dim=k["clip_dim"], sync_dim=k["sync_dim"], text_dim=k["text_dim"],
                        text_seq_len=k["text_seq_len"], mlp_ratio=k["mlp_ratio"], v2=k["v2"],
                        mode=mode)
    # Built at the constructor's lengths and then switched to the lengths of the stored inputs,
    # as the golden's module was (update_seq_lengths); both durations come from the golden itself.
    net = MMAudioNetwork(cfg, duration=golden_duration(mode, k["latent_seq_len"],
                                                       k["clip_seq_len"], k["sync_seq_len"]))
    assert net.latent_seq_len == k["latent_seq_len"] and net.sync_seq_len == k["sync_seq_len"]
    net.set_duration(_input_duration(g, mode))
    net.load_state_dict(g.group("weights."), strict=True)
    net.eval().requires_grad_(False)
    return g, net


def _input_duration(g, mode: str) -> float:
    return golden_duration(mode, g["in.latent"].shape[1], g["in.clip_f"].shape[1],
                           g["in.sync_f"].shape[1])


def _cond(g, prefix) -> Conditions:
    return Conditions(**{f: g[f"{prefix}.{f}"] for f in COND_FIELDS})


def _check_cond(actual: Conditions, g, prefix):
    for f in COND_FIELDS:
        assert_close(getattr(actual, f), g[f"{prefix}.{f}"], FWD, f"{prefix}.{f}")


@pytest.mark.parametrize("path", golden_params("network_"))
def test_tables_and_lengths(path):
    g, net = _load(path)
    assert (net.latent_seq_len, net.clip_seq_len, net.sync_seq_len) == \
        tuple(g["in.latent"].shape[1:2]) + (g["in.clip_f"].shape[1], g["in.sync_f"].shape[1])
    # pow/sin/cos round their last bit differently on different CPUs' vector paths (one element
    # of the v2 timestep table is 1 ulp off on some), so the tables agree to 2 ulp, not bitwise.
    for name in ("latent_rot", "clip_rot", "t_embed.freqs"):
        torch.testing.assert_close(net.get_buffer(name), g[f"buffers.{name}"], rtol=2.5e-7,
                                   atol=0.0, msg=name)


@pytest.mark.parametrize("path", golden_params("network_"))
def test_preprocess_conditions(path):
    g, net = _load(path)
    with torch.no_grad():
        _check_cond(net.preprocess_conditions(g["in.clip_f"], g["in.sync_f"], g["in.text_f"]),
                    g, "out.cond")


@pytest.mark.parametrize("path", golden_params("network_"))
def test_intermediates(path):
    """Each stage fed with the reference inputs, so a failure names the first wrong stage."""
    g, net = _load(path)
    cond = _cond(g, "out.cond")
    with torch.no_grad():
        assert_close(net.t_embed(g["in.t"]), g["dbg.t_embed"], FWD, "t_embed")
        assert_close(net.audio_input_proj(g["in.latent"]), g["dbg.audio_input_proj"], FWD,
                     "audio_input_proj")
        assert_close(net.global_cond_mlp(cond.clip_f_c + cond.text_f_c),
                     g["dbg.global_cond_mlp"], FWD, "global_cond_mlp")
        global_c, extended_c = net.conditioning_vectors(g["in.t"], cond)
        assert_close(global_c, g["dbg.global_c"], FWD, "global_c")
        assert_close(extended_c, g["dbg.extended_c"], FWD, "extended_c")
        global_c, extended_c = g["dbg.global_c"], g["dbg.extended_c"]

        x, clip_f, text_f = g["dbg.audio_input_proj"], cond.clip_f, cond.text_f
        for i, block in enumerate(net.joint_blocks):
            out = block(x, clip_f, text_f, global_c, extended_c, net.latent_rot, net.clip_rot)
            ref = [g[f"dbg.joint_blocks.{i}.{s}"] for s in ("latent", "clip_f", "text_f")]
            for a, r, s in zip(out, ref, ("latent", "clip_f", "text_f")):
                assert_close(a, r, FWD, f"joint_blocks.{i}.{s}")
            x, clip_f, text_f = ref
        for i, block in enumerate(net.fused_blocks):
            ref = g[f"dbg.fused_blocks.{i}.latent"]
            assert_close(block(x, extended_c, net.latent_rot), ref, FWD, f"fused_blocks.{i}")
            x = ref
        assert_close(net.final_layer(x, global_c), g["out.flow"], FWD, "final_layer")


@pytest.mark.parametrize("path", golden_params("network_"))
def test_predict_flow_and_forward(path):
    g, net = _load(path)
    with torch.no_grad():
        cond = net.preprocess_conditions(g["in.clip_f"], g["in.sync_f"], g["in.text_f"])
        assert_close(net.predict_flow(g["in.latent"], g["in.t"], cond), g["out.flow"], FWD,
                     "predict_flow")
        assert_close(net(g["in.latent"], g["in.clip_f"], g["in.sync_f"], g["in.text_f"],
                         g["in.t"]), g["out.flow"], FWD, "forward")


@pytest.mark.parametrize("path", golden_params("network_"))
def test_empty_and_negative_conditions(path):
    g, net = _load(path)
    b = g["in.latent"].shape[0]
    with torch.no_grad():
        assert torch.equal(net.get_empty_clip_sequence(b), g["out.empty_clip_sequence"])
        assert torch.equal(net.get_empty_sync_sequence(b), g["out.empty_sync_sequence"])
        assert torch.equal(net.get_empty_string_sequence(b), g["out.empty_string_sequence"])
        empty = net.get_empty_conditions(b)
        _check_cond(empty, g, "out.empty_cond")
        _check_cond(net.get_empty_conditions(b, negative_text_features=g["in.negative_text_f"]),
                    g, "out.neg_cond")
        assert_close(net.predict_flow(g["in.latent"], g["in.t"], empty), g["out.flow_empty_cond"],
                     FWD, "flow_empty_cond")
        no_video = net.preprocess_conditions(net.get_empty_clip_sequence(b),
                                             net.get_empty_sync_sequence(b), g["in.text_f"])
        assert_close(net.predict_flow(g["in.latent"], g["in.t"], no_video),
                     g["out.flow_no_video"], FWD, "flow_no_video")


@pytest.mark.parametrize("path", golden_params("network_"))
def test_ode_wrapper(path):
    g, net = _load(path)
    cond, empty = _cond(g, "out.cond"), _cond(g, "out.empty_cond")
    t = g["in.ode_t"].reshape(())
    with torch.no_grad():
        assert_close(cfg_velocity(net, cond, empty, 4.5)(g["in.latent"], t),
                     g["out.ode_wrapper_cfg"], FWD, "ode_wrapper cfg 4.5")
        assert_close(cfg_velocity(net, cond, empty, 0.5)(g["in.latent"], t),
                     g["out.ode_wrapper_cfg_below_1"], FWD, "ode_wrapper cfg 0.5")


@pytest.mark.parametrize("run", ["sample", "sample_neg"])
@pytest.mark.parametrize("path", golden_params("network_"))
def test_euler_cfg_run(path, run):
    """A complete 4-step Euler + CFG 4.5 run from the golden noise, step by step."""
    g, net = _load(path)
    b = g["in.x0"].shape[0]
    with torch.no_grad():
        cond = net.preprocess_conditions(g["in.clip_f"], g["in.sync_f"], g["in.text_f"])
        neg = g["in.negative_text_f"] if run == "sample_neg" else None
        empty = net.get_empty_conditions(b, negative_text_features=neg)
        base = cfg_velocity(net, cond, empty, 4.5)
        seen = []

        def velocity(x, t):
            v = base(x, t)
            seen.append((t.clone(), x.clone(), v.clone()))
            return v

        from nag_core.sampling import euler, time_grid
        steps = len([k for k in g.tensors if k.startswith(f"out.{run}.step") and k.endswith(".t")])
        assert steps >= 1, f"{path.name} holds no out.{run}.step*.t tensors"
        assert torch.equal(time_grid(steps), g["out.sample.time_grid"])
        x1 = euler(velocity, g["in.x0"], steps)
        for i, (t, x, v) in enumerate(seen):
            assert torch.equal(t.reshape(1), g[f"out.{run}.step{i}.t"]), f"step{i}.t"
            assert_close(x, g[f"out.{run}.step{i}.x"], RUN, f"{run}.step{i}.x")
            assert_close(v, g[f"out.{run}.step{i}.velocity"], RUN, f"{run}.step{i}.velocity")
        assert_close(x1, g[f"out.{run}.x1"], RUN, f"{run}.x1")
        # the public entry point gives the same result
        assert torch.equal(sample_cfg(net, cond, empty, g["in.x0"], steps, 4.5), x1)
        assert_close(net.unnormalize(x1), g[f"out.{run}.x1_unnormalized"], RUN,
                     f"{run}.x1_unnormalized")


@pytest.mark.parametrize("path", golden_params("network_"))
def test_normalize_unnormalize(path):
    g, net = _load(path)
    latent = g["in.latent"].clone()
    with torch.no_grad():
        assert_close(net.normalize(latent), g["out.normalize_latent"], FWD, "normalize")
        assert_close(net.unnormalize(latent), g["out.unnormalize_latent"], FWD, "unnormalize")
    assert torch.equal(latent, g["in.latent"]), "normalize/unnormalize must not work in place"


@pytest.mark.parametrize("path", golden_params("network_"))
def test_sequence_relation_matches_mode(path):
    g, net = _load(path)
    lengths = sequence_lengths(net.config.mode, _input_duration(g, net.config.mode))
    assert (lengths.latent, lengths.clip, lengths.sync) == (
        g["in.latent"].shape[1], g["in.clip_f"].shape[1], g["in.sync_f"].shape[1])
