"""``python -m nag_core.train {extract,fit,synthesize-ema,run} ...``: see --help of each."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch


from ..errors import ConfigError, NAGFoleyError
from .distributed import DEFAULT_TIMEOUT_MINUTES, World, world_from_env
from .evaluate import DEFAULT_BETAS, DEFAULT_PROMPT
from .data import DEFAULT_SEGMENT_SECONDS
from .ema import DEFAULT_SIGMA_RELS
from .extract import DEFAULT_COND_LUFS
from .loop import TrainConfig

log = logging.getLogger("nag_core.train")


def _lufs(text: str):
    return None if text.lower() in ("none", "off") else float(text)


def _add_extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="folder of videos with audio and/or audio files")
    p.add_argument("--models", required=True, help="folder with the MMAudio weight files")
    p.add_argument("--variant", default="small_16k", help="MMAudio variant (default small_16k)")
    p.add_argument("--cache", required=True, help="cache folder (created; reused on re-runs)")
    p.add_argument("--segment-seconds", type=float, default=DEFAULT_SEGMENT_SECONDS,
                   help="segment length in seconds (default 4)")
    p.add_argument("--cond-lufs", type=_lufs, default=DEFAULT_COND_LUFS,
                   help="loudness of the condition segment before encoding, like the inference "
                        "mix (default -20; 'none' keeps the raw level)")


def _add_fit_args(p: argparse.ArgumentParser, with_cache: bool = True) -> None:
    d = TrainConfig()
    if with_cache:
        p.add_argument("--cache", required=True, help="cache folder written by `extract`")
        p.add_argument("--models", required=True, help="folder with the MMAudio weight files")
        p.add_argument("--variant", default=None,
                       help="MMAudio variant of the frozen base (default: the cache's)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, logs, weights")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--accum", type=int, default=d.accum, help="gradient accumulation steps")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-blocks", type=int, default=d.num_blocks, help="ControlNet blocks K")
    p.add_argument("--init-source", default=d.init_source, choices=("first_blocks", "random"))
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    p.add_argument("--ema-every", type=int, default=d.ema_every,
                   help="EMA snapshot interval in steps (0: no EMA)")
    p.add_argument("--ema-sigma-rels", type=float, nargs="+", default=list(DEFAULT_SIGMA_RELS))
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop (with a checkpoint) after this many steps; --resume continues")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share of clips held out for validation, chosen by a hash of the file "
                        "name (e.g. 0.01; default 0: none)")
    p.add_argument("--val-list", default=None,
                   help="text file with the names of clips to hold out, one per line")
    p.add_argument("--val-every", type=int, default=d.val_every,
                   help="validation loss on the held-out clips every this many steps (0: never)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the ControlNet + base forward (first steps are slower)")
    _add_timeout_arg(p)


def _add_timeout_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout-minutes", type=float, default=DEFAULT_TIMEOUT_MINUTES,
                   help="under torchrun: how long a process waits for the others in a "
                        "collective before the run stops with an error (default 30)")


def _val_list(path) -> tuple:
    if path is None:
        return ()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read --val-list {path} ({e.strerror})") from None
    return tuple(sorted({ln.strip() for ln in lines if ln.strip()}))


def _config(a) -> TrainConfig:
    return TrainConfig(steps=a.steps, batch_size=a.batch_size, accum=a.accum, lr=a.lr,
                       warmup_steps=a.warmup_steps, grad_clip=a.grad_clip, seed=a.seed,
                       num_blocks=a.num_blocks, init_source=a.init_source,
                       checkpoint_every=a.checkpoint_every, keep_checkpoints=a.keep_checkpoints,
                       ema_every=a.ema_every, ema_sigma_rels=tuple(a.ema_sigma_rels),
                       device=a.device, val_fraction=a.val_fraction,
                       val_list=_val_list(a.val_list), val_every=a.val_every,
                       compile=a.compile)


def _run_extract(a, progress: bool) -> None:
    from ..weights import find_model_files
    from .data import discover
    from .distributed import rank_device
    from .extract import ModelSegmentEncoder, extract

    world = world_from_env()
    discover(a.data)  # an empty data folder fails before gigabytes of weights are loaded
    files = find_model_files(a.models, a.variant)
    encoder = ModelSegmentEncoder.from_files(files, rank_device(getattr(a, "device", "auto"),
                                                                world), a.cond_lufs)
    report = extract(a.data, a.cache, encoder, a.segment_seconds, progress=progress,
                     world=world, timeout_minutes=a.timeout_minutes)
    if world.is_main:
        print(report.summary())


def _run_fit(a, progress: bool) -> None:
    from .loop import fit

    world = world_from_env()
    result = fit(a.cache, a.models, a.out, _config(a), variant=a.variant, resume=a.resume,
                 stop_after=a.stop_after, progress=progress, world=world,
                 timeout_minutes=a.timeout_minutes)
    if not world.is_main:
        return
    if result.controlnet_path is None:
        print(f"stopped at step {result.step}; continue with --resume")
    else:
        print(f"step {result.step}: ControlNet written to {result.controlnet_path}")
        for p in result.ema_paths:
            print(f"EMA weights: {p}")


def _run_synth(a) -> None:
    from .synth import synthesize_controlnet

    path = synthesize_controlnet(a.out, a.sigma_rel, a.step, a.output)
    print(f"post-hoc EMA (sigma_rel {a.sigma_rel:g}) written to {path}")


def _run_evaluate(a, progress: bool) -> None:
    import json

    from ..atomic import write_text
    from ..controlnet import load_controlnet
    from ..weights import find_model_files, load_model_files
    from .distributed import rank_device
    from .evaluate import evaluate, format_report, load_clap, plan_pairs, summarize
    from .loop import FINAL_NAME, ema_file_name

    run = Path(a.run)
    if a.controlnet:
        cn_path = Path(a.controlnet)
    else:
        ema = run / ema_file_name(0.05)
        cn_path = ema if ema.is_file() else run / FINAL_NAME
    if not cn_path.is_file():
        raise ConfigError(f"no ControlNet weights at {cn_path}; pass --run the folder `fit` "
                          "wrote (it holds controlnet.safetensors) or --controlnet FILE")
    pairs, skipped = plan_pairs(a.data, a.segment_seconds, a.pairs)  # before loading weights
    device = rank_device(a.device, World())
    model = load_model_files(find_model_files(a.models, a.variant), device=device,
                             dtype=torch.float32)
    model.network.set_duration(a.segment_seconds)
    controlnet = load_controlnet(cn_path, model.network)
    clap, clap_note = load_clap(a.clap_checkpoint, device)
    scores = evaluate(model, controlnet, pairs, seconds=a.segment_seconds, betas=a.betas,
                      steps=a.steps, seed=a.seed, prompt=a.prompt, clap=clap,
                      progress=progress)
    summary = summarize(scores, a.bootstrap, a.seed)
    notes = [clap_note] + [f"unusable clip: {s}" for s in skipped[:20]]
    header = (f"separation check of {cn_path}: {len(pairs)} pairs of adjacent "
              f"{a.segment_seconds:g} s segments from {a.data}, {a.steps} Euler steps")
    print(format_report(summary, header, notes))
    if a.out:
        write_text(Path(a.out), json.dumps({"controlnet": str(cn_path), "pairs": len(pairs),
                                            "steps": a.steps, "summary": summary,
                                            "notes": notes}, indent=1))
        print(f"report written to {a.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nag_core.train",
                                     description="Train the NAG ControlNet on your own clips.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract", help="encode clips into the latent/feature cache")
    _add_extract_args(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    _add_timeout_arg(p)
    p = sub.add_parser("fit", help="train a ControlNet on an extracted cache")
    _add_fit_args(p)
    p = sub.add_parser("synthesize-ema", help="post-hoc EMA of a run as a ControlNet file")
    p.add_argument("--out", required=True, help="the run folder given to fit")
    p.add_argument("--sigma-rel", type=float, default=0.05)
    p.add_argument("--step", type=int, default=None, help="EMA at this step (default: last)")
    p.add_argument("--output", default=None, help="file to write (default in --out)")
    p = sub.add_parser(
        "evaluate", help="does the ControlNet separate tracks? (your held-out clips)",
        description="Generate step 2 for pairs of adjacent segments of held-out clips against "
                    "x_cond = the next segment's audio at -20 LUFS, with independent CFG, "
                    "negative prompting (clips with captions) and NAG at each beta from the same "
                    "noise, and report how much closer to / further from x_cond each track is "
                    "than the independent one (spectral-envelope similarity; CLAP audio-audio "
                    "cosine with --clap-checkpoint when laion_clap is installed), with bootstrap "
                    "confidence intervals.")
    p.add_argument("--run", required=True, help="the run folder given to fit")
    p.add_argument("--controlnet", default=None,
                   help="ControlNet file (default: the run's EMA sigma 0.05, else its final "
                        "controlnet.safetensors)")
    p.add_argument("--data", required=True,
                   help="held-out clips: a folder or a .csv/.tsv list (as for extract)")
    p.add_argument("--models", required=True, help="folder with the MMAudio weight files")
    p.add_argument("--variant", default="small_16k")
    p.add_argument("--segment-seconds", type=float, default=DEFAULT_SEGMENT_SECONDS)
    p.add_argument("--pairs", type=int, default=50, help="at most this many pairs")
    p.add_argument("--steps", type=int, default=25, help="Euler steps per track")
    p.add_argument("--betas", type=float, nargs="+", default=list(DEFAULT_BETAS))
    p.add_argument("--prompt", default=None,
                   help="the step-2 prompt for every pair (default: each clip's caption, or "
                        f"{DEFAULT_PROMPT!r}); with it, negative prompting with the captions "
                        "as the earlier track's words is compared too")
    p.add_argument("--seed", type=int, default=0, help="noise of pair i: seed + i")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--clap-checkpoint", default=None,
                   help="local LAION-CLAP checkpoint (needs `pip install laion_clap`; never "
                        "downloaded)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="also write the report as JSON here")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("run", help="extract, then fit")
    _add_extract_args(p)
    _add_fit_args(p, with_cache=False)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(message)s")
    progress = not getattr(args, "no_progress", False)
    try:
        if args.command == "extract":
            _run_extract(args, progress)
        elif args.command == "fit":
            _run_fit(args, progress)
        elif args.command == "synthesize-ema":
            _run_synth(args)
        elif args.command == "evaluate":
            _run_evaluate(args, progress)
        else:
            _run_extract(args, progress)
            _run_fit(args, progress)
    except NAGFoleyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if not world_from_env().is_main:  # every process gets the Ctrl-C; one says so
            return 130
        print("interrupted; `fit --resume` continues from the last checkpoint, `extract` "
              "encodes only what is not cached yet", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
