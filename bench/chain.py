"""A 5-step Foley chain (nag_core.pipeline.FoleySession) against the sum of its parts.

chain  = FoleySession(model, video, controlnet) + 5 x add_step (step 1 CFG, steps 2-5 NAG)
parts  = encode_video once + one CFG track + 4 x one NAG track (each generate_track, timed alone)

Goals: the video is encoded once per chain (counted), chain / parts <= 1.10 (the chain adds no
per-step video encoding), and no growing cost: the fastest step-5 track is at most 15% slower
than the fastest step-2 track (step k conditions on the mix of k-1 tracks; only the loudness
mix grows, and it is cheap).

The model bundle: the smoke-test set (nag_core.smoke: tiny CLIP, Synchformer, VAE, vocoder) with,
by default, a network of the --variant's real size whose clip/sync/text input widths are the
tiny encoders' (so the sampling cost is the real one); --chain-network smoke keeps the tiny
smoke network. Few Euler steps per track (--euler-steps 3) keep the run short on a CPU.

    python bench/chain.py [--variant small_16k] [--euler-steps 3] [--reps 2] [--quick]
"""

from __future__ import annotations

import common  # noqa: F401  (puts the checkout on sys.path)

import dataclasses
import tempfile

import torch

from common import (DTYPES, CallCounter, Goals, build_controlnet, network_config, now, parser,
                    setup, sync)
from nag_core.media import VideoClip
from nag_core.mmaudio.network import MMAudioNetwork, randomize_parameters_
from nag_core import pipeline
from nag_core.model import MMAudioModel
from nag_core.pipeline import FoleySession, StepSettings, generate_track
from nag_core.smoke import (TINY_CLIP_EMBED, TINY_SYNC_WIDTH, TINY_TEXT_WIDTH,
                            write_smoke_models)
from nag_core.weights import find_model_files, load_model_files

STEPS = 5
PROMPTS = ["footsteps on gravel", "wind through trees", "a dog barking", "rain on a roof",
           "a door creaking"]
CHAIN_LIMIT, GROWTH_LIMIT = 1.10, 1.15


def bundle(args, folder: str) -> MMAudioModel:
    write_smoke_models(folder, modes=("16k",))
    model = load_model_files(find_model_files(folder, "small_16k"))
    if args.chain_network == "real" and args.variant != "tiny":
        cfg = dataclasses.replace(network_config(args.variant), clip_dim=TINY_CLIP_EMBED,
                                  sync_dim=TINY_SYNC_WIDTH, text_dim=TINY_TEXT_WIDTH)
        if cfg.mode != "16k":
            raise SystemExit("chain.py uses the 16k smoke set: pick a 16k variant")
        net = randomize_parameters_(MMAudioNetwork(cfg, duration=args.duration)).eval()
        model = MMAudioModel(net, model.vae, model.vocoder, model.clip, model.synchformer,
                             model.tokenizer, variant=f"{args.variant} (tiny encoders)")
    return model.to(args.device, DTYPES[args.dtype]).eval()


def video(duration: float) -> VideoClip:
    g = torch.Generator().manual_seed(3)
    nc, ns = int(8 * duration), int(25 * duration)
    return VideoClip(torch.randint(0, 256, (nc, 3, 384, 384), generator=g, dtype=torch.uint8),
                     torch.randint(0, 256, (ns, 3, 224, 224), generator=g, dtype=torch.uint8),
                     duration=duration, start=0.0, fps=25.0, size=(224, 224), rotation=0,
                     path=None)


def main() -> None:
    p = parser(__doc__.splitlines()[0], reps=2)
    p.add_argument("--euler-steps", type=int, default=3)
    p.add_argument("--chain-network", choices=("real", "smoke"), default="real")
    p.add_argument("--foley-steps", type=int, default=STEPS, help="tracks in the chain (>= 2)")
    args = p.parse_args()
    setup(args)
    if args.quick:  # the smoke network, 2 tracks of 1 Euler step: seconds, not minutes
        args.chain_network, args.euler_steps, args.foley_steps = "smoke", 1, 2
        args.duration = 0.64  # the shortest clip MMAudio takes: the vocoder dominates here
    steps = max(2, args.foley_steps)
    goals = Goals()

    with tempfile.TemporaryDirectory() as folder:
        model = bundle(args, folder)
    net = model.network
    cn = build_controlnet(net, args.blocks)
    clip = video(args.duration)
    print(f"bundle: network {model.variant} ({sum(p.numel() for p in net.parameters()) / 1e6:.1f}"
          f" M params), smoke-test encoders/VAE/vocoder; {steps} Foley steps of "
          f"{args.euler_steps} Euler steps; ControlNet K = {cn.config.num_blocks}")
    settings = [StepSettings(prompt=PROMPTS[k % len(PROMPTS)], seed=k, steps=args.euler_steps)
                for k in range(steps)]
    encodes = CallCounter(model, "encode_video")
    chain_times, step_seconds, per_chain = [], [], []

    # Each Foley step's time on the --clock (StepResult.seconds is wall time, which on a shared
    # machine mostly measures the neighbours).
    track_times = []
    untimed = pipeline.generate_track

    def timed_track(*a, **k):
        start = now()
        result = untimed(*a, **k)
        track_times.append(now() - start)
        return result

    pipeline.generate_track = timed_track

    def run_chain():
        before = encodes.calls
        sync(args.device)
        start = now()
        track_times.clear()
        session = FoleySession(model, clip, controlnet=cn)
        for s in settings:
            session.add_step(s.prompt, seed=s.seed, steps=s.steps)
        sync(args.device)
        chain_times.append(now() - start)
        per_chain.append(encodes.calls - before)
        step_seconds.append(list(track_times))
        return session

    # A warm-up chain (not in quick mode: there the first measured chain serves) gives the
    # features and the mix the NAG part conditions on (the mix of one earlier track).
    first = run_chain()
    if not args.quick:
        chain_times.clear(), step_seconds.clear()
    features, mix = first.features, first.conditioning_mix(2)
    part_fns = {
        "encode": lambda: model.encode_video(clip),
        "cfg_track": lambda: generate_track(model, features, settings[0]),
        "nag_track": lambda: generate_track(model, features, settings[1], condition_mix=mix,
                                            controlnet=cn),
    }
    parts_times = {k: [] for k in part_fns}
    for r in range(args.reps):
        order = ("chain", "parts") if r % 2 == 0 else ("parts", "chain")
        for what in order:
            if what == "chain":
                if not (args.quick and r == 0):
                    run_chain()
                continue
            for name, fn in part_fns.items():
                sync(args.device)
                start = now()
                fn()
                sync(args.device)
                parts_times[name].append(now() - start)

    best = {k: min(v) for k, v in parts_times.items()}
    expected = best["encode"] + best["cfg_track"] + (steps - 1) * best["nag_track"]
    chain_best = min(chain_times)
    print(f"parts (fastest of {args.reps}, {args.clock} clock): encode_video "
          f"{best['encode'] * 1e3:.1f} ms, CFG track {best['cfg_track'] * 1e3:.1f} ms, NAG track "
          f"{best['nag_track'] * 1e3:.1f} ms; chain {chain_best * 1e3:.1f} ms (all turns: "
          f"{', '.join(f'{t:.2f}' for t in chain_times)} s)")
    chain_ratio = chain_best / expected
    print(f"RATIO chain_over_parts {chain_ratio:.3f} (chain {chain_best:.2f} s / encode + CFG "
          f"track + {steps - 1} x NAG track {expected:.2f} s)")
    per_step = [min(s[k] for s in step_seconds) for k in range(steps)]
    growth = per_step[-1] / per_step[1]
    print(f"RATIO last_step_over_step2 {growth:.3f} (fastest {args.clock} seconds per Foley step: "
          f"{', '.join(f'{s:.2f}' for s in per_step)})")
    per_chain = max(per_chain)
    goals.check("video_encoded_once", per_chain == 1,
                f"encode_video calls per chain: {per_chain} (want 1)")
    goals.check("chain_adds_nothing", chain_ratio <= CHAIN_LIMIT,
                f"chain / parts {chain_ratio:.3f} (at most {CHAIN_LIMIT} wanted)")
    goals.check("no_growing_cost", growth <= GROWTH_LIMIT,
                f"step {steps} / step 2 {growth:.3f} (at most {GROWTH_LIMIT} wanted)")
    goals.finish(args.quick)


if __name__ == "__main__":
    main()
