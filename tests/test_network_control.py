"""The ControlNet hook of predict_flow: zero residuals are exact, residuals touch only their rows."""

from __future__ import annotations

import functools

import pytest
import torch

from nag_core.mmaudio.network import (Conditions, ControlResiduals, MMAudioNetwork,
                                      randomize_parameters_)
from nag_core.mmaudio.variants import tiny_config


@functools.lru_cache(maxsize=None)
def _setup():
    net = randomize_parameters_(MMAudioNetwork(tiny_config("16k"), duration=1.0), 11)
    net.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(12)
    c = net.config
    with torch.no_grad():
        cond = net.preprocess_conditions(torch.randn(1, net.clip_seq_len, c.clip_dim, generator=g),
                                         torch.randn(1, net.sync_seq_len, c.sync_dim, generator=g),
                                         torch.randn(1, c.text_seq_len, c.text_dim, generator=g))
        empty = net.get_empty_conditions(1)
        ctrl = net.get_empty_conditions(1)  # stands for (V, empty text) in NAG
    # three branches in one call, as NAG batches them: [uncond, cond, ctrl]
    stacked = Conditions.cat([empty, cond, ctrl])
    x = torch.randn(1, net.latent_seq_len, c.latent_dim, generator=g).repeat(3, 1, 1)
    t = torch.full((3,), 0.3)
    return net, stacked, x, t


def _hook(residual_fn, rows=slice(2, 3), seen=None):
    def control(h0, ext_c, global_c, latent_rot):
        if seen is not None:
            seen.append((h0.shape, ext_c.shape, global_c.shape, latent_rot.shape))
        depth = 3
        return ControlResiduals(rows=rows, input_residual=residual_fn(h0[rows], "in"),
                                block_residuals=[residual_fn(h0[rows], i) for i in range(depth)])
    return control


def test_zero_residuals_are_bit_identical():
    net, cond, x, t = _setup()
    seen = []
    with torch.no_grad():
        base = net.predict_flow(x, t, cond)
        zero = net.predict_flow(x, t, cond, control=_hook(lambda h, i: torch.zeros_like(h),
                                                           seen=seen))
        none = net.predict_flow(x, t, cond, control=_hook(lambda h, i: None))
    assert torch.equal(base, zero) and torch.equal(base, none)
    d, n = net.config.hidden_dim, net.latent_seq_len
    assert seen == [((3, n, d), (3, n, d), (3, 1, d), tuple(net.latent_rot.shape))]


@pytest.mark.parametrize("where", ["in", 0, 1, 2])
def test_residual_changes_only_its_rows(where):
    net, cond, x, t = _setup()

    def fn(h, i):
        return torch.full_like(h, 0.5) if i == where else None

    with torch.no_grad():
        base = net.predict_flow(x, t, cond)
        out = net.predict_flow(x, t, cond, control=_hook(fn))
    assert torch.equal(out[:2], base[:2])
    assert not torch.allclose(out[2:], base[2:])


def test_full_batch_rows_and_gradients():
    net, cond, x, t = _setup()
    r = torch.zeros(3, net.latent_seq_len, net.config.hidden_dim, requires_grad=True)

    def control(h0, ext_c, global_c, rot):
        return ControlResiduals(rows=slice(1, 3), input_residual=None,
                                block_residuals=[None, r[1:], None])

    out = net.predict_flow(x, t, cond, control=control)
    out.sum().backward()
    assert r.grad[0].abs().sum() == 0 and r.grad[1:].abs().sum() > 0


def test_wrong_residual_count_fails():
    net, cond, x, t = _setup()
    with pytest.raises(ValueError, match="block residuals"):
        net.predict_flow(x, t, cond, control=lambda *a: ControlResiduals(slice(None), None, []))


def test_blocks_a_controlnet_can_copy():
    """Joint latent sub-blocks and fused blocks share shapes and the fused-block call."""
    net, cond, x, t = _setup()
    a = net.joint_blocks[0].latent_block.state_dict()
    b = net.fused_blocks[0].state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    with torch.no_grad():
        h0 = net.audio_input_proj(x)
        _, ext_c = net.conditioning_vectors(t, cond)
        y = net.joint_blocks[0].latent_block(h0, ext_c, net.latent_rot)
    assert y.shape == h0.shape
