"""Text NAG (this project's training-free method): the equation on hand values, its sampler (one
network call per Euler step, β = 0 is CFG bit for bit) and the method through the Python API on
the shipped world models."""

from __future__ import annotations

import pytest
import torch

from nag_core import defaults, guidance
from nag_core.generation import sample_cfg, sample_nag, sample_text_nag, text_nag_velocity
from nag_core.sampling import euler

from nag_tiny import all_conditions, features, latent, tiny_network

COND = torch.tensor([1.0, 2.0])     # u(V, C_k)
UNCOND = torch.tensor([0.5, -1.0])  # u(∅, ∅)
EARLIER = torch.tensor([2.0, 0.0])  # u(V, C_<k)


def test_text_nag_hand_values():
    # u(∅,∅) + α(u(V,C_k) − u(∅,∅)) + β(u(V,C_k) − u(V,C_<k)), α = 4.5, β = 1.5:
    # CFG = 4.5·[1, 2] − 3.5·[0.5, −1] = [2.75, 12.5]; + 1.5·([1, 2] − [2, 0]) = [1.25, 15.5]
    assert torch.equal(guidance.text_nag(UNCOND, COND, EARLIER, 4.5, 1.5),
                       torch.tensor([1.25, 15.5]))
    # β = 3: [2.75 − 3, 12.5 + 6]
    assert torch.equal(guidance.text_nag(UNCOND, COND, EARLIER, 4.5, 3.0),
                       torch.tensor([-0.25, 18.5]))


def test_text_nag_averages_several_earlier_velocities():
    # mean([2, 0], [0, 4]) = [1, 2] = COND, so the β term vanishes: the CFG velocity remains.
    other = torch.tensor([0.0, 4.0])
    assert torch.equal(guidance.text_nag(UNCOND, COND, [EARLIER, other], 4.5, 1.5),
                       torch.tensor([2.75, 12.5]))
    # a single earlier velocity in a list is that velocity
    assert torch.equal(guidance.text_nag(UNCOND, COND, [EARLIER], 4.5, 1.5),
                       guidance.text_nag(UNCOND, COND, EARLIER, 4.5, 1.5))


def test_text_nag_beta_zero_is_cfg_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    u, c, e = (torch.randn(2, 4, 5, generator=g) for _ in range(3))
    assert torch.equal(guidance.text_nag(u, c, e, 4.5, 0.0), guidance.cfg(c, u, 4.5))


# ------------------------------------------------------------------ the sampler (tiny network)
B, STEPS, ALPHA, BETA = 2, 3, 4.5, 1.5


@pytest.fixture(scope="module")
def tiny():
    net = tiny_network()
    cond, empty, _ = all_conditions(net, 1)
    clip, sync, _ = features(net, 1)
    with torch.no_grad():
        earlier = [net.preprocess_conditions(clip, sync, features(net, 1, seed=s)[2])
                   for s in (7, 8)]
    return net, cond, empty, earlier, latent(net, B, 20)


def _count_calls(net, monkeypatch):
    calls = []
    original = net.predict_flow

    def counted(*args, **kwargs):
        # rows of the branch batch (the conditions): the B latent rows go in once, shared
        calls.append(args[2].batch_size)
        return original(*args, **kwargs)

    monkeypatch.setattr(net, "predict_flow", counted)
    return calls


@torch.no_grad()
def test_one_network_call_per_euler_step_over_all_branches(tiny, monkeypatch):
    net, cond, empty, earlier, x0 = tiny
    calls = _count_calls(net, monkeypatch)
    sample_text_nag(net, cond, empty, earlier[:1], x0, STEPS, ALPHA, BETA)
    assert calls == [3 * B] * STEPS  # [uncond, cond, (V, C_<k)] x B takes, once per step
    calls.clear()
    sample_text_nag(net, cond, empty, earlier, x0, STEPS, ALPHA, BETA)
    assert calls == [4 * B] * STEPS  # averaged: one branch per earlier prompt


@torch.no_grad()
def test_sampler_is_the_equation_over_separate_network_calls(tiny):
    net, cond, empty, earlier, x0 = tiny
    got = sample_text_nag(net, cond, empty, earlier, x0, STEPS, ALPHA, BETA)

    def separate(x, t):
        ts = t * torch.ones(x.shape[0])
        u = net.predict_flow(x, ts, empty.expand(B))
        c = net.predict_flow(x, ts, cond.expand(B))
        e = [net.predict_flow(x, ts, p.expand(B)) for p in earlier]
        return u + ALPHA * (c - u) + BETA * (c - (e[0] + e[1]) / 2)

    want = euler(separate, x0, STEPS)
    assert not torch.equal(got, sample_cfg(net, cond, empty, x0, STEPS, ALPHA))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_sampler_beta_zero_and_no_earlier_prompts_are_cfg_bit_for_bit(tiny):
    net, cond, empty, earlier, x0 = tiny
    reference = sample_cfg(net, cond, empty, x0, STEPS, ALPHA)
    assert torch.equal(sample_text_nag(net, cond, empty, earlier, x0, STEPS, ALPHA, 0.0),
                       reference)
    assert torch.equal(sample_text_nag(net, cond, empty, (), x0, STEPS, ALPHA, BETA), reference)
    # the 3-branch batch at β = 0 rounds differently, which is why β = 0 takes the CFG path
    three = euler(text_nag_velocity(net, cond, empty, earlier[:1], B, ALPHA, 0.0), x0, STEPS)
    torch.testing.assert_close(three, reference, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_batch_one_conditions_serve_every_take_in_cfg_and_nag(tiny):
    # sample_nag delegates to sample_cfg at β = 0 / without a mix: both expand batch-1 conditions
    net, cond, empty, _, x0 = tiny
    out = sample_cfg(net, cond, empty, x0, 1, ALPHA)
    assert out.shape == x0.shape
    assert torch.equal(sample_nag(net, None, cond, empty, cond, None, x0, 1, ALPHA), out)
    assert torch.equal(sample_nag(net, None, cond, empty, cond, x0[:1], x0, 1, ALPHA, 0.0), out)


def test_conditions_of_another_batch_name_the_noise_batch(tiny):
    from nag_core.errors import ConfigError
    net, cond, empty, earlier, x0 = tiny
    three = latent(net, 3, 1)
    with pytest.raises(ConfigError, match="batch 2, the noise x0 has batch 3"):
        sample_cfg(net, cond.expand(2), empty, three, 1, ALPHA)
    with pytest.raises(ConfigError, match="noise x0 has batch 3"):
        sample_text_nag(net, cond, empty, [earlier[0].expand(2)], three, 1, ALPHA, BETA)


# ------------------------------------------------------------------ the method in the product
def test_text_nag_is_in_the_one_registry_and_auto_without_a_controlnet():
    from nag_core import pipeline
    from nag_core.cli import build_parser
    assert "text_nag" in pipeline.METHODS and pipeline.METHODS is defaults.METHODS
    assert defaults.resolve_method("auto", has_controlnet=True) == "nag"
    assert defaults.resolve_method("auto", has_controlnet=False) == \
        defaults.AUTO_WITHOUT_CONTROLNET
    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    method = next(a for a in generate._actions if a.dest == "method")
    assert set(method.choices) == set(defaults.METHOD_CHOICES)
    from nodes_support import load_pack
    sampler = load_pack().NODE_CLASS_MAPPINGS["NAGFoley_NAGSampler"]
    choices, options = sampler.INPUT_TYPES()["required"]["method"]
    assert choices == list(defaults.METHOD_CHOICES) and options["default"] == defaults.AUTO


@pytest.fixture(scope="module")
def world():
    from bench.world.evaluate import load_model_set
    from bench.world.export import world_video
    from nag_core.world.assets import world_models_dir
    model, _controlnet = load_model_set(world_models_dir())
    _, clip = world_video(10_001)
    from nag_core.pipeline import FoleySession
    session = FoleySession(model, clip)
    return model, clip, session.features


def _world_session(world):
    from nag_core.pipeline import FoleySession
    model, clip, feats = world
    return FoleySession(model, clip, features=feats)  # the video is encoded once per module


def test_world_text_nag_beta_zero_is_independent_and_beta_above_zero_differs(world):
    tracks = {}
    for name, kwargs in (("b0", dict(method="text_nag", beta=0)),
                         ("ind", dict(method="independent")),
                         ("b15", dict(method="text_nag", beta=1.5))):
        s = _world_session(world)
        s.add_step("ball bounces", seed=3, steps=2)
        r = s.add_step("lamp beeps", seed=4, steps=2, **kwargs)
        tracks[name] = (r.wave, r.method_used)
    assert tracks["b0"][1] == "independent" and tracks["b15"][1] == "text_nag"
    assert torch.equal(tracks["b0"][0], tracks["ind"][0])
    assert not torch.equal(tracks["b15"][0], tracks["ind"][0])


def test_world_text_nag_at_step_three_joined_and_averaged(world, monkeypatch):
    model = world[0]
    calls = _count_calls(model.network, monkeypatch)
    waves = {}
    for branches in ("joined", "averaged", "joined"):
        s = _world_session(world)
        s.add_step("ball bounces", steps=1, method="independent")
        s.add_step("lamp beeps", steps=1, method="independent")
        calls.clear()
        r = s.add_step("ball bounces", steps=2, method="text_nag", text_nag_branches=branches)
        assert r.method_used == "text_nag" and r.settings.seed == 44  # 42 + k − 1 at k = 3
        # one call per Euler step: [uncond, cond, C_<3] joined, one branch per prompt averaged
        assert calls == [3 if branches == "joined" else 4] * 2
        waves.setdefault(branches, []).append(r.wave)
    assert torch.equal(waves["joined"][0], waves["joined"][1])  # same seed, same audio
    assert not torch.equal(waves["joined"][0], waves["averaged"][0])
