"""Shared set-up for the benchmark scripts: arguments, a real-size network with random weights,
conditions, a ControlNet, and interleaved timing with medians and spread.

Every script prints ``RATIO <name> <value> ...`` lines (what tests/test_bench_smoke.py looks
for) and ``GOAL <name> PASS|FAIL ...`` lines, and exits 1 when a goal is missed. Times are
measured on the same machine in the same run; only ratios are compared, never absolute times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

# The scripts run as `python bench/<name>.py` from a checkout: make nag_core importable.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from nag_core.controlnet import ControlNetConfig, NAGControlNet  # noqa: E402
from nag_core.errors import ConfigError  # noqa: E402
from nag_core.mmaudio.bigvgan import CONFIGS as VOCODER_CONFIGS, BigVGAN  # noqa: E402
from nag_core.mmaudio.network import Conditions, MMAudioNetwork, randomize_parameters_  # noqa: E402
from nag_core.mmaudio.vae import MODE_DIMS, VAE  # noqa: E402
from nag_core.mmaudio.variants import VARIANTS, NetworkConfig, tiny_config  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parser(description: str, reps: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--variant", default="small_16k", choices=sorted(VARIANTS) + ["tiny"],
                   help="network variant at its real size (random weights); 'tiny' is the "
                        "test-sized network")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--duration", type=float, default=8.0, help="clip length in seconds")
    p.add_argument("--blocks", type=int, default=4, help="ControlNet blocks K")
    p.add_argument("--reps", type=int, default=reps, help="timed repetitions per variant")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for both sides of every ratio (default: 1 with "
                        "the cpu clock, else torch's default)")
    p.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                   help="cpu: process CPU time (all threads), the default on --device cpu: on "
                        "a shared machine wall time also counts the neighbours' work; wall: "
                        "perf_counter with CUDA synchronisation, the default on --device cuda")
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: 1 repetition, tiny network, 1 s clip (proves the script "
                        "runs; its times mean nothing)")
    return p


def setup(args: argparse.Namespace) -> None:
    """Apply --quick and --threads, print the machine line."""
    if args.quick:
        args.variant, args.duration, args.reps = "tiny", 1.0, 1
        args.blocks = min(args.blocks, 3)
    if args.clock == "auto":
        args.clock = "wall" if args.device == "cuda" else "cpu"
    if args.threads is None and args.clock == "cpu":
        # Process CPU time with several OpenMP threads also counts their spin-waits, which grow
        # when the machine is shared: one thread makes CPU time the work done.
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    global _clock
    _clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    print(f"machine: {machine()} | torch {torch.__version__} | threads "
          f"{torch.get_num_threads()} | device {args.device} | dtype {args.dtype} | variant "
          f"{args.variant} | duration {args.duration:g} s | K {args.blocks} | reps {args.reps} | "
          f"clock {args.clock}")


def machine() -> str:
    if torch.cuda.is_available() and torch.cuda.device_count():
        gpu = torch.cuda.get_device_name(0)
    else:
        gpu = "no GPU"
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} x{os.cpu_count()}, {gpu}"


def network_config(variant: str) -> NetworkConfig:
    return tiny_config("16k") if variant == "tiny" else VARIANTS[variant]


def build_network(args, config: Optional[NetworkConfig] = None, seed: int = 0) -> MMAudioNetwork:
    """The network at its real size with random weights (randomize_parameters_: every term
    matters and no weight is denormal), in eval mode on --device / --dtype, without gradients
    (the benches only run inference)."""
    net = MMAudioNetwork(config or network_config(args.variant), duration=args.duration)
    randomize_parameters_(net, seed)
    return net.eval().requires_grad_(False).to(device=args.device, dtype=DTYPES[args.dtype])


def build_controlnet(net: MMAudioNetwork, blocks: int, seed: int = 7) -> NAGControlNet:
    # A tiny base may have fewer blocks than asked for: use the largest K it supports.
    k = blocks
    while k > 1:
        try:
            cfg = ControlNetConfig(num_blocks=k).bound_to(net.config)
            break
        except ConfigError:
            k -= 1
    else:
        cfg = ControlNetConfig(num_blocks=1)
    cn = NAGControlNet.from_base(net, cfg)
    randomize_parameters_(cn, seed)  # non-zero projections: the residuals really are added
    return cn.eval().requires_grad_(False)


@torch.no_grad()
def random_vae(mode: str, seed: int = 0) -> VAE:
    """The mel VAE of ``mode`` at its real size with random raw weights (N(0, 1), as the VAE
    draws them), a non-zero output gain and log-mel statistics; folded once, raw weights kept
    (for a second implementation to fold its own way)."""
    g = torch.Generator().manual_seed(seed)
    vae = VAE(*MODE_DIMS[mode])
    for name, p in vae.named_parameters():
        p.copy_(0.3 * torch.randn(p.shape, generator=g) if name.endswith("learnable_gain")
                else torch.randn(p.shape, generator=g))
    vae.data_mean.copy_(torch.randn(vae.data_mean.shape, generator=g) - 3.0)
    vae.data_std.copy_(torch.rand(vae.data_std.shape, generator=g) + 0.5)
    return vae.normalize_weights_(keep_raw=True).eval().requires_grad_(False)


@torch.no_grad()
def random_vocoder(mode: str, seed: int = 0) -> BigVGAN:
    """The BigVGAN of ``mode`` at its real size with random weights: snake alphas and betas
    N(0, 0.3) (log scale), biases N(0, 0.01), convolution rows of norm U(0.3, 1) (so the
    signal keeps its level through the 6 stages)."""
    g = torch.Generator().manual_seed(seed)
    voc = BigVGAN(VOCODER_CONFIGS[mode])
    for name, p in voc.named_parameters():
        if name.endswith(("alpha", "beta")):
            v = 0.3 * torch.randn(p.shape, generator=g)
        elif name.endswith("bias"):
            v = 0.01 * torch.randn(p.shape, generator=g)
        else:
            v = torch.randn(p.shape, generator=g)
            norm = torch.linalg.vector_norm(v, dim=list(range(1, v.ndim)), keepdim=True)
            v = v / norm * (0.3 + 0.7 * torch.rand(norm.shape, generator=g))
        p.copy_(v)
    return voc.eval().requires_grad_(False)


@dataclass
class Inputs:
    conditions: Conditions  # (V, C)
    empty: Conditions  # (∅, ∅)
    control: Conditions  # (V, ∅ text)
    x: torch.Tensor  # a latent x_t
    x_cond: torch.Tensor  # the clean latent of the earlier mix


def random_features(net: MMAudioNetwork, batch: int = 1, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    c = net.config
    feats = (torch.randn(batch, net.clip_seq_len, c.clip_dim, generator=g),
             torch.randn(batch, net.sync_seq_len, c.sync_dim, generator=g),
             torch.randn(batch, c.text_seq_len, c.text_dim, generator=g))
    return tuple(f.to(net.device, net.dtype) for f in feats)


@torch.no_grad()
def inputs(net: MMAudioNetwork, batch: int = 1, seed: int = 1) -> Inputs:
    clip, sync, text = random_features(net, batch, seed)
    g = torch.Generator().manual_seed(seed + 1)
    shape = (batch, net.latent_seq_len, net.config.latent_dim)
    x, xc = (torch.randn(shape, generator=g).to(net.device, net.dtype) for _ in range(2))
    return Inputs(conditions=net.preprocess_conditions(clip, sync, text),
                  empty=net.get_empty_conditions(batch),
                  control=net.preprocess_conditions(clip, sync,
                                                    net.get_empty_string_sequence(batch)),
                  x=x, x_cond=xc)


# ----------------------------------------------------------------------------------- FLOPs
def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flops_by_op(fn) -> dict[str, int]:
    """FLOPs of one call of ``fn`` per aten op (FlopCounterMode: a multiply-add counts 2).
    torch's counter knows the CUDA attention kernels but not the CPU one that SDPA dispatches
    to (``_scaled_dot_product_flash_attention_for_cpu``), which it would count as 0: it is
    given the same formula (4·B·H·Lq·Lk·d for QK^T and AV)."""
    from torch.utils.flop_counter import FlopCounterMode
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    mapping = {cpu_attention: _cpu_attention_flops} if cpu_attention is not None else {}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}


def flops(fn) -> int:
    return sum(flops_by_op(fn).values())


def attention_share(counts: dict[str, int]) -> float:
    total = sum(counts.values())
    return sum(n for op, n in counts.items() if "attention" in op) / total if total else 0.0


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------- timing
_clock = time.perf_counter


def now() -> float:
    """The clock chosen by --clock (seconds)."""
    return _clock()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], reps: int, device: str = "cpu",
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each fn, measured in turns (A B, then B A, ...) so that a slow
    phase of a shared machine hits every variant alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync(device)
    times = {name: [] for name in names}
    for r in range(reps):
        for name in (names if r % 2 == 0 else names[::-1]):
            sync(device)
            start = now()
            fns[name]()
            sync(device)
            times[name].append(now() - start)
    return times


@dataclass
class Ratio:
    """num/den from one run. ``value`` is the ratio of the fastest turns: on a shared machine
    other processes only ever ADD time, so the minimum is the least disturbed estimate of a
    compute-bound call. ``median`` is the ratio of medians; low/high the spread of the
    per-turn ratios (each turn runs both sides back to back)."""
    value: float
    median: float
    low: float
    high: float
    num_best: float
    den_best: float

    def line(self, name: str, extra: str = "") -> str:
        return (f"RATIO {name} {self.value:.3f} (fastest {self.num_best * 1e3:.1f} ms / "
                f"{self.den_best * 1e3:.1f} ms; ratio of medians {self.median:.3f}; per-turn "
                f"min {self.low:.3f} max {self.high:.3f}){' ' + extra if extra else ''}")


def ratio(num: list[float], den: list[float]) -> Ratio:
    per_turn = [a / b for a, b in zip(num, den)]
    return Ratio(min(num) / min(den), statistics.median(num) / statistics.median(den),
                 min(per_turn), max(per_turn), min(num), min(den))


class Goals:
    """Collects GOAL lines; ``finish()`` exits 1 if any goal was missed."""

    def __init__(self):
        self.missed = []

    def check(self, name: str, ok: bool, detail: str) -> None:
        print(f"GOAL {name} {'PASS' if ok else 'FAIL'}: {detail}")
        if not ok:
            self.missed.append(name)

    def finish(self, quick: bool = False) -> None:
        if quick:
            # Smoke mode: tiny network, one repetition; its times say nothing.
            print("quick mode: goals are reported, not enforced")
            sys.exit(0)
        if self.missed:
            print(f"missed goals: {', '.join(self.missed)}")
            sys.exit(1)
        print("all goals met")
        sys.exit(0)


class CallCounter:
    """Counts calls of ``obj.name`` (an instance attribute shadows the method)."""

    def __init__(self, obj, name: str):
        self.obj, self.name, self.calls = obj, name, 0
        original = getattr(obj, name)

        def counted(*a, **k):
            self.calls += 1
            return original(*a, **k)

        setattr(obj, name, counted)

    def remove(self) -> None:
        delattr(self.obj, self.name)
