"""The Python API's boundary: every step setting is checked where it enters (a clear ConfigError,
never NaN audio or a TypeError from deep inside), the seed of step k, and takes of one step as one
batched call."""

from __future__ import annotations

import math

import pytest
import torch

from nag_core import defaults
from nag_core.errors import ConfigError
from nag_core.pipeline import FoleySession, StepSettings

DURATION = 1.0  # text-to-audio sessions on the shipped world models: no video to encode


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=math.nan), "alpha must be a finite number"),
    (dict(alpha=math.inf), "alpha must be a finite number"),
    (dict(alpha=1e30), "alpha must be a finite number from 0 to 50"),
    (dict(alpha=-1.0), "alpha must be a finite number"),
    (dict(beta=math.nan), "beta must be a finite number"),
    (dict(beta=-math.inf), "beta must be a finite number"),
    (dict(beta="1.5"), "beta must be a number, got '1.5'"),
    (dict(steps=2.5), "steps must be a whole number from 1 to 1000, got 2.5"),
    (dict(steps=0), "steps must be from 1 to 1000, got 0"),
    (dict(steps=10**6), "steps must be from 1 to 1000"),
    (dict(steps=True), "steps must be a whole number"),
    (dict(seed="abc"), "seed must be a whole number from 0 to 18446744073709551615, got 'abc'"),
    (dict(seed=-1), "seed must be from 0 to 18446744073709551615, got -1"),
    (dict(seed=2**64), "seed must be from 0 to"),
    (dict(seed=2**64 - 1, takes=2), "runs past the largest seed"),
    (dict(takes=0), "takes must be from 1 to"),
    (dict(gain_db=math.nan), "gain_db must be a finite number"),
    (dict(method="magic"), "unknown method 'magic'; use one of auto, nag, text_nag"),
    (dict(text_nag_branches="summed"), "unknown text_nag_branches 'summed'"),
    (dict(negative_text=None), "negative_text must be a text"),
])
def test_bad_settings_are_one_line_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        StepSettings("rain", **kwargs)


@pytest.mark.parametrize("prompt", [None, "", "   ", 3])
def test_the_prompt_must_be_a_non_empty_text(prompt):
    with pytest.raises(ConfigError, match="prompt must be a non-empty text"):
        StepSettings(prompt)


def test_numbers_are_normalised_to_plain_python_types():
    import numpy as np
    s = StepSettings("rain", seed=np.uint64(2**64 - 1), steps=np.int32(3), alpha=np.float32(4.5))
    assert type(s.seed) is int and s.seed == 2**64 - 1 and type(s.steps) is int
    assert type(s.alpha) is float and s.alpha == 4.5


@pytest.fixture(scope="module")
def world_model():
    from bench.world.evaluate import load_model_set
    from nag_core.world.assets import world_models_dir
    return load_model_set(world_models_dir())[0]


def test_api_boundary_rejects_bad_values_before_any_generation(world_model, monkeypatch):
    session = FoleySession(world_model, None, duration=DURATION)
    monkeypatch.setattr("nag_core.pipeline.generate_track",
                        lambda *a, **k: pytest.fail("generation ran with a bad setting"))
    for kwargs, match in ((dict(steps=2.5), "steps must be a whole number"),
                          (dict(seed="abc"), "seed must be a whole number"),
                          (dict(alpha=math.nan), "alpha must be a finite"),
                          (dict(bogus=1), r"unknown setting bogus; the settings of a step are "
                                          r"seed, steps, alpha, beta, method")):
        with pytest.raises(ConfigError, match=match):
            session.add_step("rain", **kwargs)
    with pytest.raises(ConfigError, match="prompt must be a non-empty text, got None"):
        session.add_step(None)
    assert session.results == []


def test_redo_and_choose_take_refuse_bad_names_and_indices(world_model):
    session = FoleySession(world_model, None, duration=DURATION)
    session.add_step("rain", steps=1)
    before = list(session.results)
    with pytest.raises(ConfigError, match=r"unknown setting bogus; the settings of a step are "
                                          r"prompt, seed"):
        session.redo_step(1, bogus=1)
    with pytest.raises(ConfigError, match="steps must be a whole number"):
        session.redo_step(1, steps=2.5)
    with pytest.raises(ConfigError, match="there is no step 2"):
        session.redo_step(2, seed=1)
    with pytest.raises(ConfigError, match="there is no take 1 of step 1; it has 1"):
        session.choose_take(1, 1)
    assert session.results == before


def test_step_k_without_a_seed_uses_seed_plus_k_minus_one(world_model):
    session = FoleySession(world_model, None, duration=DURATION)
    for _ in range(3):
        session.add_step("rain", steps=1, method="independent")
    assert [r.settings.seed for r in session.results] == \
        [defaults.step_seed(defaults.SEED_DEFAULT, k) for k in (1, 2, 3)] == [42, 43, 44]


def test_takes_are_one_batched_call_and_take_i_is_the_single_run_of_seed_plus_i(world_model,
                                                                              monkeypatch):
    net = world_model.network
    calls = []
    original = net.predict_flow
    monkeypatch.setattr(net, "predict_flow",
                        # the branch rows (the conditions); the latent's takes go in once
                        lambda *a, **k: calls.append(a[2].batch_size) or original(*a, **k))
    takes, steps = 3, 2
    session = FoleySession(world_model, None, duration=DURATION)
    first = session.add_step("ball bounces", seed=5, steps=steps)
    calls.clear()
    r = session.add_step("lamp beeps", seed=7, steps=steps, method="text_nag", takes=takes)
    assert calls == [3 * takes] * steps  # every take and branch in one call per Euler step
    assert r.waves.shape == (takes, world_model.num_samples(session.features.duration))
    assert r.take == 0 and torch.equal(r.wave, r.waves[0]) and r.seed == 7
    for i in range(takes):
        single = FoleySession(world_model, None, duration=DURATION)
        single.results = [first]
        alone = single.add_step("lamp beeps", seed=7 + i, steps=steps, method="text_nag")
        # not bit-equal: the network's batched matmuls round differently at batch 9 and 3
        torch.testing.assert_close(alone.wave, r.waves[i], rtol=0, atol=1e-5)
    assert not torch.equal(r.waves[0], r.waves[1])


def test_choose_take_puts_that_take_into_the_mix_and_redoes_later_steps(world_model):
    session = FoleySession(world_model, None, duration=DURATION)
    session.add_step("ball bounces", steps=1, takes=2)
    session.add_step("lamp beeps", steps=1, method="text_nag")
    before = [r.wave.clone() for r in session.results]
    redone = session.choose_take(1, 1)
    assert session.results[0].take == 1 and session.results[0].seed == 43
    assert torch.equal(session.tracks[0], session.results[0].waves[1])
    assert not torch.equal(session.tracks[0], before[0])
    assert len(redone) == 1 and redone[0] is session.results[1]
    assert session.results[1].settings.prompt == "lamp beeps"
    # the mix now holds take 1: the composite is the mix of the chosen takes
    mix = session.conditioning_mix(2)
    from nag_core.mix import Track, composite
    # a conditioning mix has no true-peak ceiling (the ControlNet was trained on plain -20 LUFS)
    want = composite([Track(session.results[0].waves[1][None], session.sample_rate)], [0.0],
                     ceiling_db=None)
    assert torch.equal(mix.wave, want.wave)
    assert session.choose_take(1, 1) == []  # already chosen: nothing to redo


# ------------------------------------------------------------------ device and precision, decided once
def test_precision_auto_is_bf16_on_cuda_and_float32_on_the_cpu(monkeypatch):
    assert defaults.resolve_dtype(None, "cpu") is torch.float32
    assert defaults.resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert defaults.resolve_dtype("bf16", "cpu") is torch.bfloat16
    assert defaults.resolve_dtype("float16", "cpu") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert defaults.resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert defaults.resolve_dtype("auto", torch.device("cuda")) is torch.float32
    with pytest.raises(ConfigError, match="unknown precision 'fp8'; use auto, float32"):
        defaults.resolve_dtype("fp8", "cpu")


def test_a_bad_or_absent_device_is_a_config_error(monkeypatch):
    assert defaults.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'bogus'"):
        defaults.resolve_device("bogus")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert defaults.resolve_device(None) == torch.device("cpu")
    with pytest.raises(ConfigError, match="is not available: this torch"):
        defaults.resolve_device("cuda")
