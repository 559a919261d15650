"""Cost and memory of windowed generation against clip length: per second of audio, one step
(CFG) on the shipped world models (trained on 4 s, so 8 s is already two windows), at 8, 16, 32
and 64 s. Cost per second should be flat (the windows grow linearly with the clip); the
sampler's working memory should be flat too (one batch of windows at a time), while the whole
latent, the features and the decoded waveform grow with the clip.

Each length runs in a fresh process (``--worker SECONDS``), which renders a world video of that
length, encodes it once (timed apart), then generates one step. CPU time of the process (one
thread) is the cost; memory is Linux VmHWM after resetting it (see bench/memory.py): ``step`` =
the whole step's peak over the memory before it, ``decode`` = the decoder's own peak on a latent
of the clip's length.

    nice -n 19 python bench/long_cost.py [--seconds 8 16 32 64] [--steps 4]
                                         [--windows-per-batch 4] [--quick]
"""

from __future__ import annotations

import common  # noqa: F401  (puts the checkout on sys.path)

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from memory import MIB, Meter, _trim

FLAT = 1.25  # cost per second of audio at the longest length over the shortest, at most


def worker(a) -> None:
    from nag_core.media import frames_from_images
    from nag_core.pipeline import FoleySession
    from long_seams import load_world_model
    from nag_core.world.scene import render_clip

    torch.set_num_threads(1)
    meter = Meter("cpu")
    model, _ = load_world_model()
    clip = render_clip(7, ("ball", "lamp"), a.worker)
    video = frames_from_images(torch.from_numpy(clip.frames), clip.fps, 0.0, a.worker)
    t = time.process_time()
    session = FoleySession(model, video, windows_per_batch=a.windows_per_batch)
    encode = time.process_time() - t
    plan = session.window_plan
    _trim()
    ready = meter.now()
    meter.reset()
    t = time.process_time()
    r = session.add_step("ball bounces", steps=a.steps, seed=1)
    step = time.process_time() - t
    step_peak = meter.peak() - ready
    x = torch.randn(1, plan.latent_len, model.network.config.latent_dim)
    _trim()
    ready = meter.now()
    meter.reset()
    t = time.process_time()
    model.decode(x)
    decode = time.process_time() - t
    decode_peak = meter.peak() - ready
    print("COST " + json.dumps(dict(seconds=a.worker, windows=len(plan.windows),
                                    samples=int(r.wave.shape[-1]), encode_s=encode,
                                    step_s=step, decode_s=decode, step_peak=step_peak,
                                    decode_peak=decode_peak, reset=meter.reset_ok)), flush=True)


def measure(seconds: float, a) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(seconds), "--steps",
           str(a.steps), "--windows-per-batch", str(a.windows_per_batch)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"worker {seconds} s failed:\n{res.stdout}\n{res.stderr}")
    return json.loads([x for x in res.stdout.splitlines() if x.startswith("COST ")][-1][5:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, nargs="+", default=[8.0, 16.0, 32.0, 64.0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--windows-per-batch", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="smoke mode: 4 and 8 s, 1 Euler step")
    p.add_argument("--worker", type=float, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a)
        return
    if a.quick:
        a.seconds, a.steps = [4.0, 8.0], 1
    rows = [measure(s, a) for s in a.seconds]
    print(f"world models (4 s windows), {a.steps} Euler steps, {a.windows_per_batch} windows per "
          "call, CPU time of one thread; memory = VmHWM over the memory before")
    print(f"{'seconds':>8} {'windows':>8} {'step s/s':>9} {'encode s/s':>11} {'decode s/s':>11} "
          f"{'step peak MiB':>14} {'decode peak MiB':>16}")
    for r in rows:
        d = r["seconds"]
        print(f"{d:8g} {r['windows']:8d} {r['step_s'] / d:9.4f} {r['encode_s'] / d:11.4f} "
              f"{r['decode_s'] / d:11.4f} {r['step_peak'] / MIB:14.1f} "
              f"{r['decode_peak'] / MIB:16.1f}")
    ratio = (rows[-1]["step_s"] / rows[-1]["seconds"]) / (rows[0]["step_s"] / rows[0]["seconds"])
    print(f"RATIO step_cost_per_second_longest_over_shortest {ratio:.3f}")
    mem = rows[-1]["step_peak"] / max(rows[0]["step_peak"], 1)
    print(f"RATIO step_peak_memory_longest_over_shortest {mem:.3f} (the decoder's share grows "
          "with the clip)")
    ok = ratio <= FLAT
    print(f"GOAL flat_cost {'PASS' if ok else 'FAIL'} cost per second of audio "
          f"{ratio:.3f}x from {rows[0]['seconds']:g} s to {rows[-1]['seconds']:g} s (at most "
          f"{FLAT})")
    if not ok and not a.quick:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
