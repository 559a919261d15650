"""What one NAG Euler step costs next to one CFG Euler step.

NAG's velocity (nag_core.generation.nag_velocity) runs the branches [uncond, cond, ctrl] in ONE
network call plus the ControlNet's K control blocks on the ctrl rows; CFG's (cfg_velocity) runs
[uncond, cond]. The expected cost ratio is the FLOP ratio, counted here with
torch.utils.flop_counter.FlopCounterMode on one velocity call of each (matmuls, convolutions and
attention, the CPU attention kernel included: common.flops), i.e. (3 base branches + K control
blocks) / (2 base branches), less the audio input projection, which runs once per latent row
for all branches.
cond_embed(x_cond) runs once per generation (when the hook is built), not per step: it is
counted and reported separately.

Goal: time ratio at most 5% above the FLOP ratio (below is fine: see the check), one network
call per step, and no per-step condition work (preprocess_conditions, Conditions.cat,
cond_embed: 0 calls inside a step).

    python bench/step_cost.py [--variant small_16k] [--device cpu|cuda] [--dtype fp32|bf16]
                              [--duration 8] [--reps 7] [--profile] [--compile] [--quick]
"""

from __future__ import annotations

import common  # noqa: F401  (puts the checkout on sys.path)

import torch
from common import (CallCounter, Goals, attention_share, build_controlnet, build_network,
                    flops, flops_by_op, inputs, interleaved, parameters, parser, ratio, setup)
from nag_core.generation import cfg_velocity, nag_velocity
from nag_core.mmaudio.network import Conditions

TOLERANCE = 0.05


def profile_step(fn, device: str, rows: int = 15) -> None:
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    fn()
    with profile(activities=acts) as prof:
        fn()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(f"profile of one NAG Euler step (top {rows} by {key}):")
    print(prof.key_averages().table(sort_by=key, row_limit=rows))


def main() -> None:
    p = parser(__doc__.splitlines()[0], reps=7)
    p.add_argument("--profile", action="store_true", help="print the top ops of one NAG step")
    p.add_argument("--compile", action="store_true",
                   help="time torch.compile(network.predict_flow) (counts and FLOPs stay eager)")
    args = p.parse_args()
    setup(args)
    goals = Goals()

    net = build_network(args)
    cn = build_controlnet(net, args.blocks)
    k = cn.config.num_blocks
    inp = inputs(net)
    t = torch.tensor(0.4)

    with torch.no_grad():
        embed_flops = flops(lambda: cn.hook(inp.x_cond, slice(2, 3)))
        v_cfg = cfg_velocity(net, inp.conditions, inp.empty, 4.5)
        v_nag = nag_velocity(net, cn, inp.conditions, inp.empty, inp.control, inp.x_cond, 1)

        # Calls made inside ONE step (the velocities above are built once per generation).
        counters = {"predict_flow": CallCounter(net, "predict_flow"),
                    "preprocess_conditions": CallCounter(net, "preprocess_conditions")}
        cats = []
        original_cat = Conditions.cat
        Conditions.cat = staticmethod(lambda items: cats.append(1) or original_cat(items))
        embeds = []
        handle = cn.cond_embed.register_forward_hook(lambda *a: embeds.append(1))
        try:
            f_cfg = flops(lambda: v_cfg(inp.x, t))
            cfg_calls = counters["predict_flow"].calls
            by_op = flops_by_op(lambda: v_nag(inp.x, t))
            f_nag = sum(by_op.values())
            nag_calls = counters["predict_flow"].calls - cfg_calls
            per_step = {"preprocess_conditions": counters["preprocess_conditions"].calls,
                        "Conditions.cat": len(cats), "cond_embed": len(embeds)}
        finally:
            Conditions.cat = staticmethod(original_cat)
            handle.remove()
            for c in counters.values():
                c.remove()

        flop_ratio = f_nag / f_cfg
        proj = flops(lambda: net.audio_input_proj(inp.x))
        base = (f_cfg - proj) / 2  # one branch without the shared projection
        print(f"FLOPs per step (FlopCounterMode, one velocity call): CFG {f_cfg / 1e9:.2f} G "
              f"(audio input projection {proj / 1e9:.2f} G once + 2 x {base / 1e9:.2f} G), NAG "
              f"{f_nag / 1e9:.2f} G = projection + 3 x {base / 1e9:.2f} G + "
              f"{(f_nag - proj - 3 * base) / 1e9:.2f} G for K = {k} control blocks; cond_embed "
              f"{embed_flops / 1e9:.3f} G once per generation; attention is "
              f"{attention_share(by_op):.1%} of the NAG step")
        print(f"parameters: network {parameters(net) / 1e6:.1f} M, ControlNet K = {k} "
              f"{parameters(cn) / 1e6:.1f} M")
        print(f"RATIO flops_nag_over_cfg {flop_ratio:.3f}")
        goals.check("one_call_per_step", cfg_calls == 1 and nag_calls == 1,
                    f"network calls per step: CFG {cfg_calls}, NAG {nag_calls} (want 1 and 1: "
                    "the branches batched)")
        goals.check("no_per_step_conditions", not any(per_step.values()),
                    f"calls inside a step: {per_step} (want all 0: built once per generation)")

        if args.compile:  # the warm-up turn of interleaved() compiles both batch sizes
            net.predict_flow = torch.compile(net.predict_flow)
            print("timing torch.compile(network.predict_flow)")
        times = interleaved({"cfg": lambda: v_cfg(inp.x, t), "nag": lambda: v_nag(inp.x, t)},
                            args.reps, args.device)
        r = ratio(times["nag"], times["cfg"])
        print(r.line("time_nag_step_over_cfg_step", f"vs FLOP ratio {flop_ratio:.3f}"))
        rel = r.value / flop_ratio - 1
        # One-sided: NAG may cost LESS than its FLOPs say (per-call costs that do not grow
        # with the batch, e.g. reading the weights, are shared by 3 rows instead of 2), but
        # must not cost more (that would be overhead outside the network's arithmetic).
        goals.check("step_cost_matches_flops", rel <= TOLERANCE,
                    f"time ratio {r.value:.3f} is {rel:+.1%} off the FLOP ratio "
                    f"{flop_ratio:.3f} (at most +{TOLERANCE:.0%} wanted)")
        if args.profile:
            profile_step(lambda: v_nag(inp.x, t), args.device)
    goals.finish(args.quick)


if __name__ == "__main__":
    main()
