"""Training throughput with 1 and N processes under torchrun: examples per second and the
scaling ratio, measured in one run on one machine.

Each measurement is a real ``torchrun --standalone --nproc_per_node=N`` launch of this script in
worker mode, which trains the ControlNet with ``nag_core.train.loop.Trainer`` (DDP over gloo on
CPU, NCCL on CUDA; bf16 autocast on CUDA as `fit` does) on random cached pairs of the network's
real shapes, with a network of the variant's real size and random weights. Every process gets
``--batch-size`` examples per step (the global batch grows with N: weak scaling), so the ideal
ratio is N.

    python bench/train_scaling.py                       # CPU: tiny network, 1 and 2 processes
    python bench/train_scaling.py --device cuda --variant small_16k --batch-size 16 --procs 1

Prints ``RATIO examples_per_s_N_over_1 <value>`` and a ``GOAL`` line (ratio above 1: a second
process adds throughput). Steps are timed with the wall clock (the processes run in parallel);
on a shared machine the neighbours' load lowers both the numbers and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="tiny", help="network variant (tiny: the test size)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--duration", type=float, default=4.0, help="segment seconds (training: 4)")
    p.add_argument("--blocks", type=int, default=2, help="ControlNet blocks K")
    p.add_argument("--batch-size", type=int, default=2, help="examples per process per step")
    p.add_argument("--steps", type=int, default=12, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    p.add_argument("--compile", action="store_true", help="--compile as fit has it")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def random_pairs(net, pairs: int, seed: int = 0):
    """CachedPairs of random latents/features in the network's shapes (2 segments per pair)."""
    from nag_core.train.dataset import CachedPairs

    g = torch.Generator().manual_seed(seed)
    c, s = net.config, 2 * pairs
    mean = torch.randn(s, net.latent_seq_len, c.latent_dim, generator=g)
    return CachedPairs(
        mean=mean, std=0.1 * torch.rand(mean.shape, generator=g), cond_mean=0.5 * mean,
        clip_f=torch.randn(s, net.clip_seq_len, c.clip_dim, generator=g),
        sync_f=torch.randn(s, net.sync_seq_len, c.sync_dim, generator=g),
        has_video=torch.ones(s, dtype=torch.bool),
        pairs=torch.stack([torch.arange(0, s, 2), torch.arange(1, s, 2)], 1), mode=c.mode,
        variant="bench", segment_seconds=net.duration,
        pair_clips=tuple(f"clip{i}" for i in range(pairs)))


def worker(args) -> None:
    from nag_core.mmaudio.network import MMAudioNetwork, randomize_parameters_
    from nag_core.mmaudio.variants import VARIANTS, tiny_config
    from nag_core.train.distributed import process_group, rank_device, world_from_env
    from nag_core.train.loop import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    world = world_from_env()
    config = TrainConfig(steps=10 ** 6, batch_size=args.batch_size, warmup_steps=1,
                         num_blocks=args.blocks, ema_every=0, device=args.device,
                         compile=args.compile)
    device = rank_device(args.device, world)
    cfg = tiny_config("16k") if args.variant == "tiny" else VARIANTS[args.variant]
    net = MMAudioNetwork(cfg, duration=args.duration)
    randomize_parameters_(net, 0)
    with process_group(world, device):
        trainer = Trainer(net.eval(), random_pairs(net, 64), config, "/nonexistent-bench-out",
                          progress=False, world=world)
        times = []
        for i in range(args.warmup + args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        if world.is_main:
            step = statistics.median(times)
            print("RESULT " + json.dumps({
                "procs": world.size, "step_s": step, "min_step_s": min(times),
                "examples_per_s": world.size * args.batch_size / step,
                "peak_gib": (torch.cuda.max_memory_allocated(device) / 2 ** 30
                             if device.type == "cuda" else None)}), flush=True)


def launch(args, procs: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={procs}", str(Path(__file__).resolve()), "--worker",
           "--variant", args.variant, "--device", args.device, "--duration", str(args.duration),
           "--blocks", str(args.blocks), "--batch-size", str(args.batch_size), "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    if args.compile:
        cmd.append("--compile")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{procs} processes failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[0][len("RESULT "):])


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker:
        worker(args)
        return 0
    print(f"variant {args.variant} | device {args.device} | segment {args.duration:g} s | K "
          f"{args.blocks} | batch {args.batch_size} per process | {args.threads} thread(s) per "
          f"process | {args.steps} timed steps after {args.warmup} | cpus {os.cpu_count()}"
          + (" | compile" if args.compile else ""))
    results = {}
    for n in args.procs:
        r = launch(args, n)
        results[n] = r
        mem = f", peak {r['peak_gib']:.2f} GiB" if r.get("peak_gib") else ""
        print(f"{n} process(es): {r['examples_per_s']:.2f} examples/s (median step "
              f"{r['step_s'] * 1000:.1f} ms, fastest {r['min_step_s'] * 1000:.1f} ms{mem})")
    ok = True
    if 1 in results:
        base = results[1]["examples_per_s"]
        for n, r in results.items():
            if n == 1:
                continue
            ratio = r["examples_per_s"] / base
            print(f"RATIO examples_per_s_{n}_over_1 {ratio:.3f} (ideal {n})")
            good = ratio > 1.0
            ok &= good
            print(f"GOAL scaling_{n} {'PASS' if good else 'FAIL'} (more throughput than one "
                  f"process)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
