"""Our CFG generation against the same computation done naively: what batching and caching buy.

ours  = preprocess_conditions + get_empty_conditions once, then sample_cfg (one network call per
        Euler step over the stacked [uncond, cond] batch, Conditions.cat once per generation)
naive = at every Euler step: preprocess_conditions and get_empty_conditions again, then the
        two branches as two separate network calls of batch 1

Both give the same latent (checked to fp tolerance). Goal: ours / naive <= 1.0.

    python bench/naive_cfg.py [--variant small_16k] [--steps 4] [--reps 3] [--quick]
"""

from __future__ import annotations

import common  # noqa: F401  (puts the checkout on sys.path)

import torch

from common import Goals, build_network, interleaved, parser, random_features, ratio, setup
from nag_core.generation import noise, sample_cfg
from nag_core.guidance import cfg
from nag_core.sampling import euler

CFG_STRENGTH = 4.5


def main() -> None:
    p = parser(__doc__.splitlines()[0], reps=3)
    p.add_argument("--steps", type=int, default=4, help="Euler steps per generation")
    args = p.parse_args()
    setup(args)
    if args.quick:
        args.steps = 2
    goals = Goals()
    net = build_network(args)
    clip, sync, text = random_features(net)
    x0 = noise(1, net, torch.Generator(device=args.device).manual_seed(0))

    def ours():
        conditions = net.preprocess_conditions(clip, sync, text)
        empty = net.get_empty_conditions(1)
        return sample_cfg(net, conditions, empty, x0, args.steps, CFG_STRENGTH)

    def naive_velocity(x, t):
        conditions = net.preprocess_conditions(clip, sync, text)
        empty = net.get_empty_conditions(1)
        t1 = t.to(x.dtype).reshape(1)
        return cfg(net.predict_flow(x, t1, conditions), net.predict_flow(x, t1, empty),
                   CFG_STRENGTH)

    def naive():
        return euler(naive_velocity, x0, args.steps)

    with torch.no_grad():
        a, b = ours().float(), naive().float()
        err = ((a - b).abs().max() / b.abs().max()).item()
        tol = 1e-4 if args.dtype == "fp32" else 5e-2
        goals.check("same_result", err <= tol, f"max |ours - naive| / max |naive| = {err:.2e} "
                                               f"(<= {tol:g})")
        times = interleaved({"ours": ours, "naive": naive}, args.reps, args.device)
    r = ratio(times["ours"], times["naive"])
    print(r.line("ours_cfg_over_naive_cfg", f"({args.steps} Euler steps per generation)"))
    goals.check("batching_and_caching_pay", r.value <= 1.0,
                f"ours / naive {r.value:.3f} (at most 1.0 wanted)")
    goals.finish(args.quick)


if __name__ == "__main__":
    main()
