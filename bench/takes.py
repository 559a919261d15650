"""What N takes of one step cost next to N single runs.

A sampler with ``takes = N`` makes its N variations (seeds seed..seed+N−1) in ONE batched call:
every Euler step is one network call on 2·N rows (CFG's [uncond, cond] per take) instead of N
calls on 2 rows, and the conditions are built once. This script times the Euler loop of one step
both ways on a real-size network with random weights (the network is the cost at real size; the
VAE/vocoder decode is per take either way) and checks that take i of the batch equals the single
run with seed + i.

Goal: N takes in one call cost less than N single runs (ratio < 1).

    nice -n 19 python bench/takes.py [--variant small_16k] [--takes 4] [--steps 4]
                                     [--duration 8] [--reps 3] [--quick]
"""

from __future__ import annotations

import common  # noqa: F401  (puts the checkout on sys.path)

import torch

from common import Goals, build_network, inputs, interleaved, parser, ratio, setup
from nag_core.generation import sample_cfg


def noise(net, seeds, device, dtype):
    """One noise row per seed, drawn as a single run with that seed draws it."""
    rows = []
    for seed in seeds:
        g = torch.Generator(device=device).manual_seed(int(seed))
        rows.append(torch.randn(1, net.latent_seq_len, net.config.latent_dim, generator=g,
                                device=device, dtype=dtype))
    return torch.cat(rows)


def main() -> None:
    p = parser(__doc__.splitlines()[0], reps=3)
    p.add_argument("--takes", type=int, default=4, help="takes N of the step")
    p.add_argument("--steps", type=int, default=4, help="Euler steps per run")
    args = p.parse_args()
    setup(args)
    if args.takes < 2:
        raise SystemExit("--takes must be at least 2 to compare with single runs")
    goals = Goals()
    net = build_network(args)
    inp = inputs(net)
    device, dtype = inp.x.device, inp.x.dtype
    seeds = list(range(100, 100 + args.takes))
    x0 = noise(net, seeds, device, dtype)

    def batched():
        return sample_cfg(net, inp.conditions, inp.empty, x0, args.steps, 4.5)

    def singles():
        return torch.cat([sample_cfg(net, inp.conditions, inp.empty, x0[i:i + 1], args.steps,
                                     4.5) for i in range(args.takes)])

    with torch.no_grad():
        together, apart = batched(), singles()
        times = interleaved({"batched": batched, "singles": singles}, args.reps, args.device)
    err = (together - apart).abs().max().item()
    r = ratio(times["batched"], times["singles"])
    print(r.line(f"takes_{args.takes}_batched_vs_single_runs",
                 f"variant {args.variant}, {args.steps} Euler steps, {args.duration:g} s"))
    goals.check("takes_cost_less", r.value < 1.0,
                f"{args.takes} takes in one call / {args.takes} single runs = {r.value:.3f}")
    goals.check("takes_equal_single_runs", err <= 1e-4 * max(1.0, apart.abs().max().item()),
                f"max |take i - single run with seed + i| = {err:.2e}")
    goals.finish(args.quick)


if __name__ == "__main__":
    main()
