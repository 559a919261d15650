"""Post-hoc EMA: sigma_rel <-> gamma, the update rule, least-squares synthesis."""

from __future__ import annotations

import pytest
import torch

from nag_core.errors import ConfigError
from nag_core.train.ema import (PowerEMA, gamma_from_sigma_rel, power_ema_direct,
                                sigma_rel_from_gamma, solve_weights, synthesize)

from train_helpers import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

SIGMAS = (0.05, 0.10)


def _run(trajectory, folder, every):
    ema = PowerEMA({"w": trajectory[0]}, SIGMAS)
    for step, theta in enumerate(trajectory, 1):
        ema.update({"w": theta}, step)
        if step % every == 0:
            ema.snapshot(folder)
    return ema


def test_sigma_rel_gamma_round_trip_and_edm2_values():
    for s in (0.01, 0.05, 0.1, 0.2):
        assert abs(sigma_rel_from_gamma(gamma_from_sigma_rel(s)) - s) < 1e-12
    # EDM2 quotes gamma ~ 6.94 for sigma_rel 0.10 and ~ 16.97 for 0.05
    assert abs(gamma_from_sigma_rel(0.10) - 6.94) < 0.01
    assert abs(gamma_from_sigma_rel(0.05) - 16.97) < 0.01
    with pytest.raises(ConfigError):
        gamma_from_sigma_rel(0.5)


def test_update_rule_equals_direct_power_ema():
    g = torch.Generator().manual_seed(0)
    traj = [torch.randn(4, generator=g) for _ in range(37)]
    ema = PowerEMA({"w": traj[0]}, SIGMAS)
    for step, theta in enumerate(traj, 1):
        ema.update({"w": theta}, step)
    for gamma, profile in zip(ema.gammas, ema.profiles):
        torch.testing.assert_close(profile["w"].double(), power_ema_direct(traj, gamma),
                                   rtol=0, atol=1e-5)


def test_constant_parameter_comes_back(tmp_path):
    traj = [torch.full((3,), 2.5)] * 40
    _run(traj, tmp_path, 10)
    for sigma in (0.03, 0.05, 0.08, 0.15):
        state, _ = synthesize(tmp_path, sigma)
        torch.testing.assert_close(state["w"], torch.full((3,), 2.5), rtol=0, atol=1e-5)


def test_linear_ramp_gives_a_value_in_between(tmp_path):
    traj = [torch.tensor([float(s)]) for s in range(1, 101)]
    _run(traj, tmp_path, 10)
    prev = None
    for sigma in (0.03, 0.05, 0.10, 0.2):  # wider averages reach further back: smaller values
        w = float(synthesize(tmp_path, sigma)[0]["w"])
        assert 1.0 < w < 100.0
        # power EMA of a ramp t at step T: mean of tau under p ~ tau^g: T (g+1)/(g+2)
        g = gamma_from_sigma_rel(sigma)
        assert abs(w - 100 * (g + 1) / (g + 2)) < 1.5
        if prev is not None:
            assert w < prev
        prev = w


def test_target_equal_to_a_stored_profile_is_the_direct_ema(tmp_path):
    g = torch.Generator().manual_seed(1)
    traj = [torch.randn(5, generator=g) + 0.05 * s for s in range(60)]
    _run(traj, tmp_path, 20)
    for sigma in SIGMAS:
        state, _ = synthesize(tmp_path, sigma)
        direct = power_ema_direct(traj, gamma_from_sigma_rel(sigma)).float()
        torch.testing.assert_close(state["w"], direct, rtol=0, atol=1e-4)
    # at an earlier snapshot step too
    state, _ = synthesize(tmp_path, 0.05, step=40)
    direct = power_ema_direct(traj[:40], gamma_from_sigma_rel(0.05)).float()
    torch.testing.assert_close(state["w"], direct, rtol=0, atol=1e-4)


def test_solve_weights_sum_to_one_and_pick_exact_profile():
    gs = [gamma_from_sigma_rel(s) for s in SIGMAS]
    steps, gammas = [10, 10, 20, 20], [gs[0], gs[1], gs[0], gs[1]]
    x = solve_weights(steps, gammas, 20, gs[1])
    assert abs(x.sum() - 1) < 1e-9 and abs(x[3] - 1) < 1e-6
    y = solve_weights(steps, gammas, 20, gamma_from_sigma_rel(0.07))
    assert abs(y.sum() - 1) < 1e-9


def test_no_snapshots_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no EMA snapshots"):
        synthesize(tmp_path, 0.05)
