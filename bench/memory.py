"""Peak memory of a NAG generation over a CFG generation, each measured in a fresh process.

Each measurement runs ``memory.py --worker cfg|nag`` in a new Python process, which builds the
network (random weights) and the ControlNet (both sides hold both: in a Foley session the
ControlNet stays loaded for the whole chain), then generates: preprocess the conditions and
sample ``--steps`` Euler steps (CFG: sample_cfg; NAG: the control conditions too, and
sample_nag, whose hook computes cond_embed once).

Method:
* CPU: Linux /proc/self/status. ``base`` = VmRSS after the imports, before anything is built;
  ``ready`` = VmRSS once the model and inputs exist; then the high-water mark is reset to the
  current RSS (``echo 5 > /proc/self/clear_refs``) and after the generation ``peak`` = VmHWM.
  A fresh process per measurement keeps the allocator's cached memory of earlier runs out;
  the workers run with MALLOC_MMAP_THRESHOLD_=65536 (every block of 64 KiB or more, i.e. every
  activation, is its own mapping, returned to the OS when freed) and call malloc_trim(0)
  before ``ready``, so that freed memory of the build phase is not silently reused and the
  growth of RSS really is the generation's working memory.
* CUDA: torch.cuda.memory_allocated / reset_peak_memory_stats / max_memory_allocated, the
  same three points.
Reported: ``total`` = peak - base (weights + the generation's working memory) and ``working``
= peak - ready (what the generation itself adds). Goal: total NAG / total CFG <= 1.3.

    python bench/memory.py [--variant small_16k] [--device cpu|cuda] [--dtype fp32|bf16]
                           [--steps 2] [--reps 2] [--quick]
"""

from __future__ import annotations

import common  # noqa: F401  (puts the checkout on sys.path)

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from common import Goals, build_controlnet, build_network, inputs, parser, setup

LIMIT = 1.3
MIB = 2 ** 20


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


class Meter:
    """Memory now and the peak since reset(), on the device's own counters."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.reset_ok = True

    def now(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else _status("VmRSS")

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.reset_ok = False  # the peak then includes building the model

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return _status("VmHWM")


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc), so RSS counts live memory only."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def worker(args) -> None:
    from nag_core.generation import noise, sample_cfg, sample_nag

    meter = Meter(args.device)
    base = meter.now()
    net = build_network(args)
    cn = build_controlnet(net, args.blocks)
    inp = inputs(net)
    raw = [f.clone() for f in common.random_features(net)]
    x0 = noise(1, net, torch.Generator(device=args.device).manual_seed(0))
    _trim()
    ready = meter.now()
    meter.reset()
    with torch.no_grad():
        clip, sync, text = raw
        conditions = net.preprocess_conditions(clip, sync, text)
        empty = net.get_empty_conditions(1)
        if args.worker == "cfg":
            out = sample_cfg(net, conditions, empty, x0, args.steps, 4.5)
        else:
            control = net.preprocess_conditions(clip, sync, net.get_empty_string_sequence(1))
            out = sample_nag(net, cn, conditions, empty, control, inp.x_cond, x0, args.steps)
        float(out.float().abs().sum())  # the result is really computed
    peak = meter.peak()
    weights = sum(p.numel() * p.element_size() for m in (net, cn) for p in m.parameters())
    print("MEM " + json.dumps(dict(base=base, ready=ready, peak=peak, weights=weights,
                                   reset=meter.reset_ok)))


def measure(kind: str, argv: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind] + argv
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"worker {kind} failed:\n{res.stdout}\n{res.stderr}")
    line = [x for x in res.stdout.splitlines() if x.startswith("MEM ")][-1]
    m = json.loads(line[4:])
    m["total"], m["working"] = m["peak"] - m["base"], m["peak"] - m["ready"]
    return m


def main() -> None:
    p = parser(__doc__.splitlines()[0], reps=2)
    p.add_argument("--steps", type=int, default=2, help="Euler steps per generation")
    p.add_argument("--worker", choices=("cfg", "nag"), help=argparse_hidden())
    args = p.parse_args()
    if args.worker:
        if args.quick:
            args.variant, args.duration, args.blocks = "tiny", 1.0, min(args.blocks, 3)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        worker(args)
        return
    setup(args)
    goals = Goals()
    argv = [a for a in sys.argv[1:]]
    runs = {"cfg": [], "nag": []}
    for r in range(args.reps):  # alternate which side runs first
        for kind in (("cfg", "nag") if r % 2 == 0 else ("nag", "cfg")):
            runs[kind].append(measure(kind, argv))
    if not all(m["reset"] for ms in runs.values() for m in ms):
        print("note: could not reset VmHWM (/proc/self/clear_refs): peaks include model building")
    med = {k: {f: statistics.median(m[f] for m in ms) for f in ("total", "working", "weights")}
           for k, ms in runs.items()}
    for k in ("cfg", "nag"):
        print(f"{k}: total {med[k]['total'] / MIB:.1f} MiB (weights {med[k]['weights'] / MIB:.1f} "
              f"MiB), working {med[k]['working'] / MIB:.1f} MiB (median of {args.reps} fresh "
              f"processes; method: {'CUDA allocator' if args.device == 'cuda' else 'VmHWM/VmRSS'})")
    total = med["nag"]["total"] / med["cfg"]["total"]
    working = med["nag"]["working"] / max(med["cfg"]["working"], 1)
    spread = [a["total"] / b["total"] for a, b in zip(runs["nag"], runs["cfg"])]
    print(f"RATIO peak_memory_nag_over_cfg {total:.3f} (weights + working memory; per-pair "
          f"{min(spread):.3f}..{max(spread):.3f})")
    print(f"RATIO working_memory_nag_over_cfg {working:.3f} (what the generation adds over the "
          f"loaded model: 3 rows + the control stream vs 2 rows)")
    goals.check("peak_memory", total <= LIMIT, f"NAG / CFG peak {total:.3f} (at most {LIMIT})")
    goals.finish(args.quick)


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
