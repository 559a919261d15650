"""NAG sampling: one call per step, β = 0 is CFG, the closed form, ControlNet on ctrl rows only."""

from __future__ import annotations

import pytest
import torch

from nag_core.controlnet import controlnet_flow
from nag_core.errors import ConfigError
from nag_core.generation import nag_velocity, sample_cfg, sample_nag, sample_negative_prompt
from nag_core.mmaudio.network import Conditions
from nag_core.sampling import euler

from nag_tiny import all_conditions, controlnet, features, latent, tiny_network

B = 2
STEPS = 3
ALPHA, BETA = 4.5, 1.5


@pytest.fixture(scope="module")
def setup():
    net = tiny_network()
    cond, empty, ctrl = all_conditions(net, B)
    return net, cond, empty, ctrl, latent(net, B, 20), latent(net, B, 21)


def _count_calls(net, monkeypatch):
    calls = []
    original = net.predict_flow

    def counted(*args, **kwargs):
        calls.append((args[0].shape[0], args[2].batch_size))  # (latent rows, branch rows)
        return original(*args, **kwargs)

    monkeypatch.setattr(net, "predict_flow", counted)
    return calls


@torch.no_grad()
def test_one_network_call_per_step(setup, monkeypatch):
    net, cond, empty, ctrl, x0, xc = setup
    cn = controlnet(net, nonzero=True)
    calls = _count_calls(net, monkeypatch)
    sample_nag(net, cn, cond, empty, ctrl, xc, x0, STEPS, ALPHA, BETA)
    # one call per step over 3 branches that share the B latent rows (passed once)
    assert calls == [(B, 3 * B)] * STEPS
    calls.clear()
    sample_cfg(net, cond, empty, x0, STEPS, ALPHA)
    assert calls == [(B, 2 * B)] * STEPS


@torch.no_grad()
def test_beta_zero_is_cfg(setup):
    net, cond, empty, ctrl, x0, xc = setup
    cn = controlnet(net, nonzero=True)
    reference = sample_cfg(net, cond, empty, x0, STEPS, ALPHA)
    assert torch.equal(sample_nag(net, cn, cond, empty, ctrl, xc, x0, STEPS, ALPHA, 0.0), reference)
    # Step 1 (no earlier track) is CFG as well.
    assert torch.equal(sample_nag(net, cn, cond, empty, ctrl, None, x0, STEPS, ALPHA), reference)
    # The 3-branch path with beta 0 differs from the 2-branch batch by rounding only.
    three = euler(nag_velocity(net, cn, cond, empty, ctrl, xc, B, ALPHA, 0.0), x0, STEPS)
    torch.testing.assert_close(three, reference, rtol=0, atol=1e-5)


def _closed_form(net, cn, cond, empty, ctrl, xc, use_controlnet=True):
    """u_uncond + α(u_cond − u_uncond) + β(u_cond − u_ctrl) from separate network calls."""
    def velocity(x, t):
        ts = t * torch.ones(x.shape[0])
        uncond = net.predict_flow(x, ts, empty)
        c = net.predict_flow(x, ts, cond)
        u_ctrl = (controlnet_flow(net, cn, x, ts, ctrl, xc) if use_controlnet
                  else net.predict_flow(x, ts, ctrl))
        return uncond + ALPHA * (c - uncond) + BETA * (c - u_ctrl)
    return velocity


@pytest.mark.parametrize("nonzero", [False, True])
@torch.no_grad()
def test_nag_equals_closed_form(nonzero):
    # float64: in float32 the batched and separate calls round differently (~3e-6 per branch,
    # batch composition changes the kernels' blocking) and α, β amplify that to ~2e-5, which
    # would hide nothing but make a 1e-5 check flaky. In float64 any real mistake (wrong row,
    # wrong branch order, residual on the wrong rows) is still orders of magnitude above 1e-5.
    net = tiny_network().double()
    cond, empty, ctrl = all_conditions(net, B)
    x0, xc = latent(net, B, 20).double(), latent(net, B, 21).double()
    cn = controlnet(net, nonzero=nonzero).double()
    batched = nag_velocity(net, cn, cond, empty, ctrl, xc, B, ALPHA, BETA)
    # zero-init: u_ctrl is u(V, ∅) itself; nonzero: u_ctrl from a separate ControlNet call
    separate = _closed_form(net, cn, cond, empty, ctrl, xc, use_controlnet=nonzero)
    x = latent(net, B, 31).double()
    t = torch.tensor(0.7)
    torch.testing.assert_close(batched(x, t), separate(x, t), rtol=0, atol=1e-5)
    got = sample_nag(net, cn, cond, empty, ctrl, xc, x0, 2, ALPHA, BETA)
    torch.testing.assert_close(got, euler(separate, x0, 2), rtol=0, atol=1e-5)
    if nonzero:  # a trained-looking ControlNet really moves the result away from CFG
        assert (got - sample_cfg(net, cond, empty, x0, 2, ALPHA)).abs().max() > 1e-3


@torch.no_grad()
def test_nag_float32_batched_vs_separate_within_amplified_rounding(setup):
    net, cond, empty, ctrl, x0, xc = setup
    cn = controlnet(net, nonzero=True)
    got = nag_velocity(net, cn, cond, empty, ctrl, xc, B, ALPHA, BETA)(x0, torch.tensor(0.5))
    expected = _closed_form(net, cn, cond, empty, ctrl, xc)(x0, torch.tensor(0.5))
    # each branch within 1e-5, combined with coefficients |1-α| + (α+β) + β
    torch.testing.assert_close(got, expected, rtol=0,
                               atol=1e-5 * (abs(1 - ALPHA) + ALPHA + 2 * BETA))


@torch.no_grad()
def test_controlnet_changes_only_ctrl_rows(setup):
    net, cond, empty, ctrl, _, xc = setup
    cn = controlnet(net, nonzero=True)
    x, t = latent(net, B, 30), torch.full((3 * B,), 0.6)
    stacked = Conditions.cat([empty, cond, ctrl])
    out = net.predict_flow(x.repeat(3, 1, 1), t, stacked, control=cn.hook(xc, slice(2 * B, 3 * B)))
    tb = t[:B]
    torch.testing.assert_close(out[:B], net.predict_flow(x, tb, empty), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[B:2 * B], net.predict_flow(x, tb, cond), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[2 * B:], controlnet_flow(net, cn, x, tb, ctrl, xc),
                               rtol=0, atol=1e-5)
    assert (out[2 * B:] - net.predict_flow(x, tb, ctrl)).abs().max() > 1e-3


@torch.no_grad()
def test_batch_one_x_cond_and_conditions_are_broadcast(setup):
    net, cond, empty, ctrl, x0, xc = setup
    cn = controlnet(net, nonzero=True)
    one = xc[:1]
    got = sample_nag(net, cn, cond, empty.select(slice(0, 1)), ctrl, one, x0, STEPS)
    expected = sample_nag(net, cn, cond, empty, ctrl, one.expand(B, -1, -1), x0, STEPS)
    # batch-1 and batch-2 convolutions round apart (float32, several Euler steps): a relative
    # bound, since the latent's values reach a few units
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_negative_prompt_is_cfg_with_negative_text(setup):
    net, cond, empty, ctrl, x0, xc = setup
    _, _, neg_text = features(net, 1, seed=9)  # stands in for CLIP("earlier prompts")
    negative = net.get_empty_conditions(B, negative_text_features=neg_text)
    got = sample_negative_prompt(net, cond, negative, x0, STEPS, ALPHA)
    assert torch.equal(got, sample_cfg(net, cond, negative, x0, STEPS, ALPHA))
    assert (got - sample_cfg(net, cond, empty, x0, STEPS, ALPHA)).abs().max() > 1e-4


def test_sampling_builds_no_graph_with_a_trainable_controlnet(setup):
    net, cond, empty, ctrl, x0, xc = setup
    cn = controlnet(net, nonzero=True)  # requires_grad on, as during training
    assert not sample_nag(net, cn, cond, empty, ctrl, xc, x0, 2).requires_grad


def test_cfg_sampling_builds_no_graph_with_a_trainable_base():
    # tiny_network() keeps requires_grad on (no ControlNet froze it): without no_grad the
    # graph of all steps would stay alive (gigabytes at large_44k_v2) and the result need grad.
    net = tiny_network()
    assert any(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        cond, empty, _ = all_conditions(net, 1)
    x0 = latent(net, 1, 20)
    assert not sample_cfg(net, cond, empty, x0, 2, ALPHA).requires_grad
    assert not sample_negative_prompt(net, cond, empty, x0, 2, ALPHA).requires_grad


@torch.no_grad()
def test_shared_latent_projects_once_and_equals_the_repeated_latent(setup):
    net, cond, empty, ctrl, _, xc = setup
    cn = controlnet(net, nonzero=True)
    x = latent(net, B, 31)
    stacked = Conditions.cat([empty, cond, ctrl])
    hook = cn.hook(xc, slice(2 * B, 3 * B))
    rows_seen = {"audio_input_proj": [], "t_embed": []}
    handles = [getattr(net, name).register_forward_hook(
        lambda m, args, out, name=name: rows_seen[name].append(args[0].shape[0]))
        for name in rows_seen]
    try:
        shared = net.predict_flow(x, torch.full((B,), 0.4), stacked, control=hook)
    finally:
        for h in handles:
            h.remove()
    # what depends only on x_t and t ran on the B latent rows, not on the 3B branch rows
    assert rows_seen == {"audio_input_proj": [B], "t_embed": [B]}
    repeated = net.predict_flow(x.repeat(3, 1, 1), torch.full((3 * B,), 0.4), stacked,
                                control=hook)
    assert shared.shape == repeated.shape == (3 * B, *x.shape[1:])
    torch.testing.assert_close(shared, repeated, rtol=0, atol=1e-5)


def test_latent_batch_must_divide_the_branch_rows(setup):
    net, cond, empty, _, _, _ = setup
    stacked = Conditions.cat([empty, cond])  # 2B rows
    odd = 2 * B + 1  # divides neither 2B nor B
    with pytest.raises(ConfigError, match=rf"conditions have batch {2 * B}, latent has {odd}"):
        net.predict_flow(latent(net, odd, 32), torch.tensor(0.5), stacked)


@pytest.mark.parametrize("method", ["nag", "text_nag", "negative_prompt", "independent", "cfg"])
def test_a_step_is_guided_by_its_one_velocity_dispatch(setup, monkeypatch, method):
    """nag_core.step decides "which guidance for which method" in one place (step_velocity),
    for a one-window clip and a long clip's windows alike: sample_step integrates exactly that
    velocity, and for each method it equals the method's own sampler bit for bit."""
    import types

    from nag_core import step as step_mod
    from nag_core.generation import sample_text_nag
    net, cond, empty, ctrl, x0, xc = setup
    cn = controlnet(net, nonzero=True)
    model = types.SimpleNamespace(network=net)
    settings = step_mod.StepSettings(prompt="x", steps=STEPS, alpha=ALPHA, beta=BETA)
    conditions = step_mod.StepConditions(method, cond, empty, control=ctrl, x_cond=xc,
                                         earlier=(ctrl,))
    expected = {
        "nag": lambda: sample_nag(net, cn, cond, empty, ctrl, xc, x0, STEPS, ALPHA, BETA),
        "text_nag": lambda: sample_text_nag(net, cond, empty, (ctrl,), x0, STEPS, ALPHA, BETA),
        "negative_prompt": lambda: sample_negative_prompt(net, cond, empty, x0, STEPS, ALPHA),
    }.get(method, lambda: sample_cfg(net, cond, empty, x0, STEPS, ALPHA))()
    got = step_mod.sample_step(model, conditions, x0, settings, cn)
    assert torch.equal(got, expected) and not got.requires_grad

    seen = []

    def constant(model_, step_, settings_, controlnet_, batch):
        seen.append((step_.method, batch))
        return lambda x, t: torch.full_like(x, 0.25)
    monkeypatch.setattr(step_mod, "step_velocity", constant)
    got = step_mod.sample_step(model, conditions, x0, settings, cn)
    assert seen == [(method, B)]
    torch.testing.assert_close(got, x0 + 0.25, rtol=0, atol=1e-6)  # Euler over t = 0..1
