"""Euler flow matching on MMAudio's grid, and the one-call batching of guidance branches."""

from __future__ import annotations

import pytest
import torch

from golden import Golden, golden_params
from nag_core import guidance, sampling
from nag_core.errors import ConfigError


def test_time_grid_is_mmaudio_linspace():
    ts = sampling.time_grid(4)
    assert ts.dtype == torch.float32
    assert torch.equal(ts, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert torch.equal(sampling.time_grid(25), torch.linspace(0, 1, 26))


@pytest.mark.parametrize("steps", [0, -3])
def test_time_grid_rejects_no_steps(steps):
    with pytest.raises(ConfigError, match="steps must be at least 1"):
        sampling.time_grid(steps)


def test_euler_two_steps_on_a_linear_velocity_by_hand():
    # v(x, t) = a·x + b + c·t with a = 2, b = 1, c = 4; grid [0, 0.5, 1], dt = 0.5; t = 1 unused.
    # element 0, x0 = 3:
    #   step 1 (t = 0):   v = 2·3 + 1 + 0     = 7   -> x = 3   + 0.5·7  = 6.5
    #   step 2 (t = 0.5): v = 2·6.5 + 1 + 2   = 16  -> x = 6.5 + 0.5·16 = 14.5
    # element 1, x0 = −1:
    #   step 1 (t = 0):   v = −2 + 1 + 0      = −1  -> x = −1  + 0.5·(−1) = −1.5
    #   step 2 (t = 0.5): v = −3 + 1 + 2      = 0   -> x = −1.5
    seen_t, progress = [], []

    def velocity(x, t):
        seen_t.append(t.clone())
        return 2.0 * x + 1.0 + 4.0 * t

    def callback(done, total, x):
        progress.append((done, total, x.clone()))

    x0 = torch.tensor([[[3.0, -1.0]]])
    x1 = sampling.euler(velocity, x0, 2, callback=callback)
    assert torch.equal(x1, torch.tensor([[[14.5, -1.5]]]))
    # t is a 0-dim float32 tensor; the last grid point is never evaluated.
    assert [t.dim() for t in seen_t] == [0, 0]
    assert [t.dtype for t in seen_t] == [torch.float32] * 2
    assert [float(t) for t in seen_t] == [0.0, 0.5]
    assert [(d, n) for d, n, _ in progress] == [(1, 2), (2, 2)]
    assert torch.equal(progress[0][2], torch.tensor([[[6.5, -1.5]]]))
    assert torch.equal(progress[1][2], x1)


def test_euler_does_not_modify_the_noise():
    x0 = torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(0))
    kept = x0.clone()
    sampling.euler(lambda x, t: torch.ones_like(x), x0, 3)
    assert torch.equal(x0, kept)


class FakeNetwork:
    """Records each call; gets the latent once (shared by the branches) and returns, for branch
    i, the velocity (i + 1)·x + 10·t (per row), stacked branch after branch."""

    def __init__(self, n_branches):
        self.n = n_branches
        self.calls = []

    def __call__(self, x, ts):
        self.calls.append((x.clone(), ts.clone()))
        return torch.cat([(i + 1) * x + 10.0 * ts.view(-1, 1, 1) for i in range(self.n)])


@pytest.mark.parametrize("n_branches", [2, 3])
def test_batched_branches_one_call_per_step_same_x_and_t(n_branches):
    net = FakeNetwork(n_branches)
    received = []

    def combine(*vs):
        received.append(vs)
        return vs[0]

    x = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(3))
    t = torch.tensor(0.375)
    velocity = sampling.batched_branches(net, n_branches, combine)
    out = velocity(x, t)

    assert len(net.calls) == 1
    xs, ts = net.calls[0]
    # The latent goes in once, not repeated per branch: the branches share it.
    assert torch.equal(xs, x)
    # MMAudio hands t to the network as t · ones(B) in the latent's dtype.
    assert ts.shape == (2,) and ts.dtype == x.dtype
    assert torch.equal(ts, torch.full((2,), 0.375))
    # Branch order: combine gets branch 0's output first.
    (vs,) = received
    assert len(vs) == n_branches
    for i, v in enumerate(vs):
        assert torch.equal(v, (i + 1) * x + 3.75)
    assert torch.equal(out, x + 3.75)


def test_batched_branches_keeps_the_latent_dtype():
    net = FakeNetwork(2)
    x = torch.ones(1, 3, 2, dtype=torch.float64)
    sampling.batched_branches(net, 2, lambda a, b: a)(x, torch.tensor(0.5))
    assert net.calls[0][1].dtype == torch.float64


def test_euler_with_cfg_and_nag_by_hand():
    # Fake network: branch i returns (i + 1)·x + 10·t. One step from x0 = 1 (grid [0, 1], t = 0):
    #   CFG, branches (cond, uncond) = (1, 2):  4.5·1 − 3.5·2 = −2.5        -> x = 1 − 2.5 = −1.5
    #   NAG, branches (uncond, cond, ctrl) = (1, 2, 3), α = 4.5, β = 1.5:
    #        4.5·2 − 3.5·1 + 1.5·(2 − 3) = 9 − 3.5 − 1.5 = 4              -> x = 1 + 4 = 5
    x0 = torch.ones(1, 1, 1)
    cfg_net, nag_net = FakeNetwork(2), FakeNetwork(3)
    v_cfg = sampling.batched_branches(cfg_net, 2, lambda c, u: guidance.cfg(c, u, 4.5))
    v_nag = sampling.batched_branches(nag_net, 3, lambda u, c, k: guidance.nag(u, c, k, 4.5, 1.5))
    assert float(sampling.euler(v_cfg, x0, 1)) == -1.5
    assert float(sampling.euler(v_nag, x0, 1)) == 5.0
    # Two steps: one network call per step, no more.
    sampling.euler(v_nag, x0, 2)
    assert len(nag_net.calls) == 1 + 2
    # Each call carried t_i · ones(B) for its own grid point: 0, then 0.5 (never 1).
    assert [ts.tolist() for _, ts in nag_net.calls[1:]] == [[0.0], [0.5]]


@pytest.mark.parametrize("path", golden_params("network_"))
@pytest.mark.parametrize("run", ["sample", "sample_neg"])
def test_euler_replays_mmaudio_sampling_run(path, run):
    # Feed MMAudio's own per-step CFG velocities back: our grid, the states before each step and
    # the final state must be MMAudio's, bit for bit (same float32 arithmetic: x + (t_next − t)·v).
    g = Golden(path)
    steps = sum(1 for k in g.tensors if k.startswith(f"out.{run}.step") and k.endswith(".t"))
    assert torch.equal(sampling.time_grid(steps), g[f"out.{run}.time_grid"]
                       if f"out.{run}.time_grid" in g else g["out.sample.time_grid"])
    step = iter(range(steps))

    def velocity(x, t):
        i = next(step)
        assert float(t) == float(g[f"out.{run}.step{i}.t"])
        assert torch.equal(x, g[f"out.{run}.step{i}.x"]), f"state before step {i}"
        return g[f"out.{run}.step{i}.velocity"]

    x1 = sampling.euler(velocity, g["in.x0"], steps)
    assert torch.equal(x1, g[f"out.{run}.x1"])
