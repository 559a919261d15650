"""The window plan, its blend weights, condition slicing and the windowed velocity wrapper."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from nag_core.errors import ConfigError
from nag_core.generation import cfg_velocity
from nag_core.mmaudio.network import Conditions
from nag_core.mmaudio.variants import sequence_lengths
from nag_core.sampling import euler
from nag_core.windows import (SYNC_STRIDE_SECONDS, blend_weights, clip_slice, latent_rate,
                              plan_windows, sync_frame_slice, sync_token_slice, window_groups,
                              windowed_velocity)

from nag_tiny import tiny_network

CASES = [("16k", 20.0, 8.0, None), ("16k", 20.0, 4.0, 1.0), ("44k", 33.3, 8.0, None),
         ("16k", 9.0, 8.0, 3.0), ("44k", 64.0, 8.0, 0.0), ("16k", 17.7, 4.0, 2.5)]


def _covered(plan) -> torch.Tensor:
    cover = torch.zeros(plan.latent_len, dtype=torch.int64)
    for i in range(len(plan.windows)):
        cover[plan.latent_slice(i)] += 1
    return cover


@pytest.mark.parametrize("mode,duration,window,overlap", CASES)
def test_windows_cover_the_clip_and_their_weights_sum_to_one(mode, duration, window, overlap):
    plan = plan_windows(mode, duration, window, overlap)
    assert plan.latent_len == sequence_lengths(mode, duration).latent
    assert plan.window_len == sequence_lengths(mode, window).latent
    assert len(plan.windows) >= 2
    assert plan.windows[0].latent_start == 0
    assert plan.latent_slice(len(plan.windows) - 1).stop == plan.latent_len
    assert bool((_covered(plan) >= 1).all())
    w = plan.weights()
    assert w.shape == (len(plan.windows), plan.window_len)
    assert bool((w > 0).all())
    total = torch.zeros(plan.latent_len, dtype=torch.float64)
    for i in range(len(plan.windows)):
        total[plan.latent_slice(i)] += w[i].double()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)
    # frames that only one window covers take that window's velocity unscaled
    alone = _covered(plan) == 1
    for i in range(len(plan.windows)):
        sl = plan.latent_slice(i)
        assert bool((w[i][alone[sl]] == 1.0).all())


@pytest.mark.parametrize("mode,duration,window,overlap", CASES)
def test_hops_are_whole_synchformer_strides_and_neighbours_share_the_overlap(mode, duration,
                                                                            window, overlap):
    plan = plan_windows(mode, duration, window, overlap)
    rate = latent_rate(mode)
    wanted = plan.overlap
    for a, b in zip(plan.windows[:-2], plan.windows[1:-1]):
        hop = Fraction(b.latent_start - a.latent_start) / rate
        strides = hop / SYNC_STRIDE_SECONDS
        assert abs(strides - round(strides)) * SYNC_STRIDE_SECONDS * rate <= 1  # within a frame
        assert b.on_sync_grid
    for a, b in zip(plan.windows[:-1], plan.windows[1:]):
        shared = (a.latent_start + plan.window_len - b.latent_start) / rate
        assert shared >= wanted - 1 / rate


@pytest.mark.parametrize("mode,duration,window,overlap", CASES)
def test_every_window_reads_frames_inside_the_clip_at_its_own_time(mode, duration, window,
                                                                    overlap):
    plan = plan_windows(mode, duration, window, overlap)
    rate = latent_rate(mode)
    sync_total = int(duration * 25)
    for w in plan.windows:
        t = w.latent_start / rate
        cs = clip_slice(plan, w.index)
        assert 0 <= cs.start and cs.stop <= plan.total.clip
        assert cs.stop - cs.start == plan.window.clip
        fs = sync_frame_slice(plan, w.index)
        assert 0 <= fs.start and fs.stop <= sync_total
        # the nearest frame, unless that would read past the clip's last frame (the latent
        # sequence is a whole number of frames and may end up to one frame after the video)
        assert abs(cs.start / 8 - float(t)) <= 1 / 16 + 1e-9 or cs.stop == plan.total.clip
        assert abs(fs.start / 25 - float(t)) <= 1 / 50 + 1e-9 or fs.stop == sync_total
        ts = sync_token_slice(plan, w.index)
        if w.on_sync_grid:
            assert ts.stop - ts.start == plan.window.sync
            assert ts.start == fs.start  # 8 tokens per segment, 8 frames per stride
        else:
            assert ts is None


def test_a_clip_no_longer_than_a_window_is_one_window_of_its_own_length():
    for duration in (4.0, 5.5, 8.0):
        plan = plan_windows("16k", duration, 8.0)
        assert plan.single and plan.window_duration == duration
        assert plan.window_len == plan.latent_len == sequence_lengths("16k", duration).latent
        assert bool((plan.weights() == 1.0).all())


def test_bad_window_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="overlap"):
        plan_windows("16k", 20.0, 8.0, overlap=7.9)
    with pytest.raises(ConfigError, match="overlap"):
        plan_windows("16k", 20.0, 8.0, overlap=-1.0)
    with pytest.raises(ConfigError, match="windows per batch"):
        window_groups(plan_windows("16k", 20.0, 8.0), 0)
    with pytest.raises(ConfigError, match="cover"):
        blend_weights([0, 5], 10, 20)


def test_a_constant_velocity_field_gives_a_constant_result():
    plan = plan_windows("16k", 20.0, 4.0, 1.5)
    c = torch.tensor([0.25, -1.5, 3.0])

    def make(group):
        return lambda x, t: c.expand(x.shape).clone()

    for per_batch in (1, 2, 5):
        v = windowed_velocity(plan, make, per_batch)
        x = torch.randn(2, plan.latent_len, 3)
        out = v(x, torch.tensor(0.0))
        torch.testing.assert_close(out, c.expand(x.shape), atol=1e-6, rtol=0)
        x1 = euler(v, x, 3)
        torch.testing.assert_close(x1, x + c, atol=1e-5, rtol=0)


def test_where_the_windows_agree_the_blend_is_what_they_agree_on():
    """A field that depends only on the global frame (every window sees the same values in the
    overlaps) comes back unchanged, in every batching of the windows."""
    plan = plan_windows("44k", 30.0, 8.0)
    field = torch.linspace(-2, 2, plan.latent_len)[None, :, None] * torch.ones(1, 1, 4)
    starts = [w.latent_start for w in plan.windows]

    def make(group):
        def v(x, t):
            assert x.shape[0] == len(group)  # batch 1: one row per window
            return torch.cat([field[:, starts[i]:starts[i] + plan.window_len] for i in group])
        return v

    for per_batch in (1, 3):
        out = windowed_velocity(plan, make, per_batch)(torch.zeros(1, plan.latent_len, 4),
                                                       torch.tensor(0.5))
        torch.testing.assert_close(out, field, atol=1e-6, rtol=0)


def test_progress_counts_windows_and_can_cancel_between_them():
    plan = plan_windows("16k", 20.0, 8.0)
    n = len(plan.windows)
    calls = []

    def make(group):
        return lambda x, t: torch.zeros_like(x)

    windowed_velocity(plan, make, 2, on_windows=calls.append)(torch.zeros(1, plan.latent_len, 2),
                                                              torch.tensor(0.0))
    assert sum(calls) == n and len(calls) == -(-n // 2)

    seen = []

    def stop(k):
        seen.append(k)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        windowed_velocity(plan, make, 1, on_windows=stop)(torch.zeros(1, plan.latent_len, 2),
                                                          torch.tensor(0.0))
    assert seen == [1]  # stopped after the first window, before the others ran


def test_windows_that_tile_the_clip_once_equal_plain_generation_of_each_window_bit_for_bit():
    """No overlap and a clip of exactly two windows: the windowed Euler integration gives, per
    window, the latent that generating that window alone from the same noise gives."""
    window_s = float(4 * SYNC_STRIDE_SECONDS)  # 1.28 s: whole strides, whole latent frames
    net = tiny_network()
    plan = plan_windows(net.config.mode, 2 * window_s, window_s, overlap=0.0)
    assert len(plan.windows) == 2
    assert plan.latent_slice(0).stop == plan.latent_slice(1).start  # no overlap at all
    assert all(w.on_sync_grid for w in plan.windows)

    g = torch.Generator().manual_seed(3)
    c = net.config
    clip = torch.randn(1, plan.total.clip, c.clip_dim, generator=g)
    sync = torch.randn(1, plan.total.sync, c.sync_dim, generator=g)
    text = torch.randn(1, c.text_seq_len, c.text_dim, generator=g)
    x0 = torch.randn(1, plan.latent_len, c.latent_dim, generator=g)

    net.set_duration(plan.window_duration)
    with torch.no_grad():
        empty = net.get_empty_conditions(1)

        def conditions(i):
            return net.preprocess_conditions(clip[:, clip_slice(plan, i)],
                                             sync[:, sync_token_slice(plan, i)], text)

        def make(group):
            cond = Conditions.cat([conditions(i) for i in group])
            return cfg_velocity(net, cond, empty.expand(len(group)), 4.5)

        whole = euler(windowed_velocity(plan, make, 1), x0, 3)
        for i in range(2):
            sl = plan.latent_slice(i)
            alone = euler(cfg_velocity(net, conditions(i), empty, 4.5), x0[:, sl], 3)
            assert torch.equal(whole[:, sl], alone)
        batched = euler(windowed_velocity(plan, make, 2), x0, 3)
    torch.testing.assert_close(batched, whole, atol=1e-4, rtol=1e-4)  # other batch, other rounding


def test_windows_are_as_long_as_the_network_was_trained_on(tmp_path):
    from nag_core.windows import TRAINED_DURATION, TRAINING_FILE, trained_duration
    from nag_core.world.assets import WORLD_DIR, WORLD_DURATION
    assert trained_duration(tmp_path) == TRAINED_DURATION == 8.0  # MMAudio's released variants
    assert trained_duration(WORLD_DIR) == WORLD_DURATION  # the shipped world set says so
    (tmp_path / TRAINING_FILE).write_text('{"duration_s": 10.24}')
    assert trained_duration(tmp_path) == 10.24
    for bad in ('{"duration_s": -1}', '{"seconds": 4}', "not json"):
        (tmp_path / TRAINING_FILE).write_text(bad)
        with pytest.raises(ConfigError, match="duration_s"):
            trained_duration(tmp_path)
