"""Winograd F(2, 3) kernel-3 convolutions: the same results as F.conv1d, and the golden VAE and
network outputs when every kernel-3 convolution takes that path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nag_core.mmaudio import winograd
from nag_core.mmaudio.blocks import ChannelLastConv1d
from nag_core.mmaudio.vae import load_vae
from tests.golden import Golden, assert_close, golden_params


@pytest.mark.parametrize("length", [1, 2, 3, 8, 11])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv1d_k3_equals_conv1d(length, channels_last, with_bias):
    g = torch.Generator().manual_seed(length)
    x = torch.randn(2, 5, length, generator=g, dtype=torch.float64)
    w = torch.randn(7, 5, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(7, generator=g, dtype=torch.float64) if with_bias else None
    ref = F.conv1d(x, w, bias, padding=1)
    u = winograd.transformed_weights(w)
    if channels_last:
        out = winograd.conv1d_k3(x.transpose(1, 2).contiguous(), u, bias, channels_last=True)
        out = out.transpose(1, 2)
    else:
        out = winograd.conv1d_k3(x, u, bias)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)  # exact algebra in float64


def test_conv1d_k3_float32_rounding():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 50, generator=g)
    w = torch.randn(48, 64, 3, generator=g) / 14
    exact = F.conv1d(x.double(), w.double(), padding=1)
    out = winograd.conv1d_k3(x, winograd.transformed_weights(w))
    direct = F.conv1d(x, w, padding=1)
    # as close to the exact result as the direct float32 convolution (a few ulps of the sums)
    assert (out.double() - exact).abs().max() <= 4 * (direct.double() - exact).abs().max() + 1e-6


def test_applies_only_to_cpu_float32_inference_at_width():
    big = winograd.MIN_CHANNELS
    w = torch.zeros(big, big, 3)
    x = torch.zeros(1, big, 4)
    assert winograd.applies(x, w)
    assert not winograd.applies(x, torch.zeros(big, big, 5))  # other kernels
    assert not winograd.applies(x, torch.zeros(big, big - 1, 3))  # too narrow
    assert not winograd.applies(x.double(), w.double())
    assert not winograd.applies(x.bfloat16(), w.bfloat16())
    assert not winograd.applies(x, w.clone().requires_grad_(True))  # autograd: F.conv1d
    with torch.no_grad():
        assert winograd.applies(x, w.clone().requires_grad_(True))


def test_cached_weights_follow_the_weight():
    conv = ChannelLastConv1d(4, 6, 3, padding=1)
    first = winograd.cached_weights(conv, conv.weight)
    assert winograd.cached_weights(conv, conv.weight) is first
    with torch.no_grad():
        conv.weight.mul_(2)  # an optimizer step: in place
    second = winograd.cached_weights(conv, conv.weight)
    assert second is not first
    torch.testing.assert_close(second, 2 * first)
    conv.weight = torch.nn.Parameter(torch.ones(6, 4, 3))  # replaced (load_state_dict assign)
    torch.testing.assert_close(winograd.cached_weights(conv, conv.weight),
                               winograd.transformed_weights(conv.weight.detach()))
    assert "_winograd_cache" not in str(conv.state_dict().keys())


def test_cache_budget_caps_the_kept_weights(monkeypatch):
    import copy
    import gc
    base = winograd._cached_bytes
    first = ChannelLastConv1d(4, 6, 3, padding=1)
    size = 4 * 6 * 4 * 4  # 4 matrices of 4 x 6 float32
    monkeypatch.setattr(winograd, "CACHE_BUDGET_BYTES", base + size)
    assert winograd.cached_weights(first, first.weight) is not None
    assert winograd._cached_bytes == base + size
    second = ChannelLastConv1d(4, 6, 3, padding=1)
    assert winograd.cached_weights(second, second.weight) is None  # over the budget
    clone = copy.deepcopy(first)  # a copy starts without transformed weights ...
    assert clone.__dict__.get("_winograd_cache") is None and winograd._cached_bytes == base + size
    del first
    gc.collect()  # ... and a freed module gives its bytes back
    assert winograd._cached_bytes == base
    assert winograd.cached_weights(second, second.weight) is not None
    x = torch.randn(1, 5, 4)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    calls = _count_calls(monkeypatch)
    with torch.no_grad():
        ref = F.conv1d(x.transpose(1, 2), clone.weight, clone.bias, padding=1).transpose(1, 2)
        assert_close(clone(x), ref, 1e-6, "over the budget: F.conv1d")
    assert calls == [0]


def test_weights_made_in_inference_mode(monkeypatch):
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    calls = _count_calls(monkeypatch)
    with torch.inference_mode():  # how a host may load and run the models
        conv = ChannelLastConv1d(3, 4, 3, padding=1).eval()
        x = torch.randn(1, 6, 3)
        ref = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, padding=1).transpose(1, 2)
        assert_close(conv(x), ref, 1e-6, "inference-mode weights")
        conv.weight = torch.nn.Parameter(conv.weight * 3)
        assert_close(conv(x), 3 * (ref - conv.bias) + conv.bias, 1e-5, "replaced weight")
    assert calls == [2]


def test_channel_last_conv_takes_the_path(monkeypatch):
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    calls = _count_calls(monkeypatch)
    conv = ChannelLastConv1d(5, 7, 3, padding=1).eval().requires_grad_(False)
    x = torch.randn(2, 9, 5)
    ref = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, padding=1).transpose(1, 2)
    assert_close(conv(x), ref, 1e-6, "channel-last conv")
    assert calls == [1]
    conv.requires_grad_(True)  # training: the plain convolution, autograd intact
    conv(x).sum().backward()
    assert calls == [1] and conv.weight.grad is not None


def _count_calls(monkeypatch) -> list[int]:
    calls = [0]
    original = winograd.conv1d_k3

    def counted(*a, **k):
        calls[0] += 1
        return original(*a, **k)

    monkeypatch.setattr(winograd, "conv1d_k3", counted)
    return calls


@pytest.mark.parametrize("path", golden_params("vae_"))
def test_vae_golden_through_winograd(path, monkeypatch):
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)  # the reduced goldens are narrow
    calls = _count_calls(monkeypatch)
    g = Golden(path)
    vae = load_vae(g.group("weights."))
    with torch.no_grad():
        assert_close(vae.decode(g["in.z"]), g["out.decode"], 1e-5, "decode")
        assert_close(vae.encode(g["in.mel"]).moments, g["out.encode.moments"], 1e-5, "moments")
    assert calls[0] > 0


@pytest.mark.parametrize("path", golden_params("network_"))
def test_network_golden_through_winograd(path, monkeypatch):
    import test_network_golden as tng
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    calls = _count_calls(monkeypatch)
    g, net = tng._load(path)
    with torch.no_grad():
        cond = net.preprocess_conditions(g["in.clip_f"], g["in.sync_f"], g["in.text_f"])
        flow = net.predict_flow(g["in.latent"], g["in.t"], cond)
    assert_close(flow, g["out.flow"], tng.FWD, "predict_flow")
    assert calls[0] > 0
