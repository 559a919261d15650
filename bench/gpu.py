"""The GPU numbers in one run (under 10 minutes on one H200): seconds and peak memory of whole
generations at real size, random weights, bf16, 8 s clips.

Rows (each after a warm-up generation; CUDA synchronised, perf_counter; peak =
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, weights included):

* ``cfg_track``: one CFG generation, small_16k, --steps Euler steps (default 25);
* ``nag_track``: one NAG generation (ControlNet K = --blocks on the ctrl rows);
* ``chain5``: a 5-step chain = 1 CFG track + 4 NAG tracks (the network part of a Foley
  session: the x_cond of each NAG track is a random latent standing in for the VAE-encoded
  mix, so the VAE, vocoder and encoders are not in these seconds);
* ``large_cfg_track``: one CFG generation with large_44k_v2;
* ``*_compiled``: the same with ``torch.compile(network.predict_flow)`` (compile time printed
  separately, not in the seconds);
* ``official_cfg_track`` (only with --official PATH, a checkout of the official MMAudio code):
  its ``ode_wrapper`` through the same Euler loop on the same weights.

Targets (issue #21): chain5 under 5 s on one H200, peak under 8 GB.

    python bench/gpu.py [--official /path/to/MMAudio] [--steps 25] [--no-compile]
"""

from __future__ import annotations

import common  # noqa: F401  (puts the checkout on sys.path)

import argparse
import time

import torch

from common import build_controlnet, build_network, inputs, machine
from nag_core.generation import sample_cfg, sample_nag
from nag_core.sampling import euler

TARGET_CHAIN_S = 5.0
TARGET_PEAK_GB = 8.0


def measure(fn, device: str) -> tuple[float, float]:
    """(seconds, peak GiB) of one call after one warm-up call."""
    fn()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - start, torch.cuda.max_memory_allocated(device) / 2 ** 30


def report(name: str, seconds: float, peak: float) -> None:
    print(f"GPU {name} {seconds:.3f} s peak {peak:.2f} GiB", flush=True)


def session(variant: str, args, seed: int = 0):
    ns = argparse.Namespace(variant=variant, duration=args.duration, device="cuda",
                            dtype=args.dtype)
    net = build_network(ns, seed=seed)
    return net, inputs(net)


def generations(net, cn, inp, steps: int):
    g = torch.Generator(device="cuda").manual_seed(0)
    x0 = torch.randn(inp.x.shape, generator=g, device="cuda", dtype=net.dtype)

    def cfg():
        return sample_cfg(net, inp.conditions, inp.empty, x0, steps, 4.5)

    def nag():
        return sample_nag(net, cn, inp.conditions, inp.empty, inp.control, inp.x_cond, x0, steps)

    def chain():
        cfg()
        for _ in range(4):
            nag()

    return {"cfg_track": cfg, "nag_track": nag, "chain5": chain}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--official", default=None, metavar="PATH")
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA device")
    print(f"machine: {machine()} | torch {torch.__version__} | dtype {args.dtype} | "
          f"{args.steps} Euler steps | {args.duration:g} s", flush=True)
    t_all = time.perf_counter()

    net, inp = session("small_16k", args)
    cn = build_controlnet(net, args.blocks)
    rows = {}
    with torch.no_grad():
        for name, fn in generations(net, cn, inp, args.steps).items():
            rows[name] = measure(fn, "cuda")
            report(name, *rows[name])
        if args.official:
            from official import official_network
            off = official_network(args.official, "small_16k", net.state_dict(), "cuda", net.dtype)
            c_off = off.preprocess_conditions(*[f for f in _features(net)])
            e_off = off.get_empty_conditions(1)
            x0 = torch.randn(inp.x.shape, device="cuda", dtype=net.dtype)
            report("official_cfg_track", *measure(
                lambda: euler(lambda x, t: off.ode_wrapper(t, x, c_off, e_off, 4.5), x0,
                              args.steps), "cuda"))
            del off
        if not args.no_compile:
            eager = net.predict_flow
            net.predict_flow = torch.compile(eager)
            start = time.perf_counter()
            for fn in generations(net, cn, inp, 1).values():
                fn()  # compiles the 2- and 3-branch shapes
            torch.cuda.synchronize()
            print(f"GPU compile_time {time.perf_counter() - start:.1f} s", flush=True)
            for name, fn in generations(net, cn, inp, args.steps).items():
                report(f"{name}_compiled", *measure(fn, "cuda"))
            net.predict_flow = eager
    del net, cn, inp
    torch.cuda.empty_cache()

    with torch.no_grad():
        large, linp = session("large_44k_v2", args)
        g = generations(large, None, linp, args.steps)
        report("large_cfg_track", *measure(g["cfg_track"], "cuda"))
    chain_s, chain_peak = rows["chain5"]
    print(f"GOAL chain5_under_{TARGET_CHAIN_S:g}s {'PASS' if chain_s < TARGET_CHAIN_S else 'FAIL'}:"
          f" {chain_s:.2f} s")
    print(f"GOAL peak_under_{TARGET_PEAK_GB:g}GB "
          f"{'PASS' if chain_peak * 2 ** 30 < TARGET_PEAK_GB * 1e9 else 'FAIL'}: "
          f"{chain_peak:.2f} GiB")
    print(f"total {time.perf_counter() - t_all:.0f} s")


def _features(net):
    from common import random_features
    return random_features(net, 1, seed=1)


if __name__ == "__main__":
    main()
