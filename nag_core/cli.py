"""Command line: ``python -m nag_core <command>`` (or ``nag-foley <command>``).

Commands: generate, redo, demo, download, list-models, smoke-models. User errors (missing
weights, bad settings, unreadable video) print one message and exit with status 2; a traceback
means a bug.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import defaults as d
from .errors import ConfigError, NAGFoleyError
from .mmaudio.variants import VARIANTS

EXIT_USER_ERROR = 2


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= d.SEED_MAX:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..{d.SEED_MAX} (64-bit seeds)")
    return value


def _model_args(p: argparse.ArgumentParser, variant: bool = True) -> None:
    if variant:
        p.add_argument("--variant", default=d.VARIANT_DEFAULT, choices=tuple(VARIANTS),
                       help=f"MMAudio variant (default {d.VARIANT_DEFAULT}, the paper's base "
                            "model)")
    p.add_argument("--models", metavar="DIR", default=None,
                   help="models folder (default: $NAGFOLEY_MODELS_DIR, ComfyUI's models/mmaudio "
                        "when run inside ComfyUI, else ~/.cache/nag-foley/models)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default: cuda "
                   "when available, else cpu)")
    p.add_argument("--dtype", "--precision", default=None, choices=d.PRECISIONS,
                   help="model precision (default auto: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--offline", action="store_true", default=None,
                   help="never download (also NAGFOLEY_OFFLINE=1 or HF_HUB_OFFLINE=1): missing "
                        "weights are listed with where to put them")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _duration(text: str):
    """--duration: seconds, or 'all' (None: to the end of the video)."""
    if text.strip().lower() == "all":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'all', got {text!r}") from None


def _step_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    keep = (lambda v: v) if defaults else (lambda v: None)
    p.add_argument("--alpha", type=float, default=None,
                   help=f"text guidance strength (CFG), default {d.ALPHA_DEFAULT:g}")
    p.add_argument("--beta", type=float, default=None,
                   help=f"negative audio guidance strength (NAG), default {d.BETA_DEFAULT:g}")
    p.add_argument("--steps", type=int, default=keep(d.STEPS_DEFAULT),
                   help=f"Euler steps per track (default {d.STEPS_DEFAULT})")
    p.add_argument("--seed", type=_seed, default=keep(d.SEED_DEFAULT),
                   help=f"seed of step 1; step k uses seed + k - 1 (default {d.SEED_DEFAULT})"
                   if defaults else "seed of the redone step")
    p.add_argument("--method", default=None, choices=d.METHOD_CHOICES,
                   help="how steps >= 2 avoid earlier tracks: auto (the default: "
                        f"{d.AUTO_WITH_CONTROLNET} with --controlnet, else "
                        f"{d.AUTO_WITHOUT_CONTROLNET}), nag (needs --controlnet), text_nag "
                        "(training-free: the earlier prompts with the same video as the "
                        "negative branch), negative_prompt (the paper's baseline), independent")
    p.add_argument("--negative-text", "--negative", dest="negative", default=None,
                   metavar="TEXT", help="your own negative prompt (added to every step)")
    p.add_argument("--takes", type=int, default=keep(1), metavar="N",
                   help="N takes of each step in one batched call, take i from the step's "
                        "seed + i; the chain goes on with take 0 (choose another later with "
                        "`redo OUT --step K --take I`)" if defaults else
                   "N takes of the redone step (default: as recorded)")
    p.add_argument("--whole-video", action="store_true", default=None,
                   help="the .foley video is the whole input video with the sound placed at "
                        "--start (default: only the scored segment, --start to --start + "
                        "--duration)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nag-foley", description="Step-by-step video-to-audio Foley with Negative Audio "
        "Guidance (NAG) on MMAudio.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="generate one track per prompt, step by step",
                       description="Generate one track per --prompt (in order; step k is "
                       "steered away from tracks 1..k-1), the -20 LUFS composite, the video with "
                       "the composite muxed in, and record.json, into --out.")
    g.add_argument("video", help="input video (never modified)")
    g.add_argument("--prompt", action="append", required=True,
                   help="the prompt of one step; repeat for each step, in order")
    g.add_argument("--out", default="nag_foley_out", metavar="DIR",
                   help="run folder (default ./nag_foley_out); if it already holds files, "
                        "nothing in it is touched and the run goes to DIR-2, DIR-3, ...")
    g.add_argument("--controlnet", default=None, metavar="FILE",
                   help="NAG ControlNet weights (.safetensors); enables --method nag")
    g.add_argument("--start-time", "--start", dest="start", type=float, default=0.0,
                   help="seconds into the video (default 0)")
    g.add_argument("--duration", type=_duration, default=d.DURATION_DEFAULT,
                   help=f"seconds to generate (default {d.DURATION_DEFAULT:g}, MMAudio's "
                        "training length), up to the video's length, or 'all' for the whole "
                        "video; longer than the model's training length runs in overlapping "
                        "windows of that length")
    g.add_argument("--gain-db", type=float, action="append", default=None, dest="gain_db",
                   help="a track's gain in the mixes; give one per prompt, or none")
    g.add_argument("--pcm16", action="store_true",
                   help="write 16-bit WAVs instead of 32-bit float (a later redo then "
                        "conditions on the 16-bit tracks)")
    _step_args(g, defaults=True)
    _model_args(g)
    _run_args(g)

    r = sub.add_parser("redo", help="regenerate step K (and the later ones) of an output folder",
                       description="Regenerate step K of the chain in OUT with changed settings, "
                       "then every later step with its recorded settings. Tracks before K stay "
                       "byte-identical. --step N+1 adds a step.")
    r.add_argument("out", metavar="OUT", help="a folder written by `generate`")
    r.add_argument("--step", type=int, required=True, metavar="K",
                   help="the step to redo (1-based)")
    r.add_argument("--prompt", default=None, help="new prompt of step K (default: unchanged)")
    r.add_argument("--gain-db", type=float, default=None, dest="gain_db")
    r.add_argument("--take", type=int, default=None, metavar="I",
                   help="go on with take I (0-based) of step K, as recorded, and regenerate "
                        "only the later steps")
    r.add_argument("--to", default=None, metavar="DIR",
                   help="write the result to a new run folder (earlier tracks are copied; "
                        "if DIR already holds files the run goes to DIR-2, ...)")
    r.add_argument("--controlnet", default=None, metavar="FILE",
                   help="ControlNet (default: the one recorded)")
    _step_args(r, defaults=False)
    _model_args(r, variant=False)
    _run_args(r)

    dm = sub.add_parser("demo", help="synthesise a demo video and run a Foley chain on it",
                        description="With real weights already downloaded: writes "
                        "nag_foley_demo.mp4 (a bouncing ball and a blinking lamp) and runs 'a ball "
                        "bounces' / 'a lamp beeps' / 'rain falls'. Without them: the tiny models "
                        "trained on the synthetic world (shipped with the pack) on a 4 s world "
                        "video, 'ball bounces' then 'lamp beeps' with NAG. Never downloads.")
    dm.add_argument("--out", default="nag_foley_demo", metavar="DIR",
                    help="output folder (default ./nag_foley_demo)")
    dm.add_argument("--seconds", type=float, default=None,
                    help="demo video length (default 8 s with real weights, 4 s for the world "
                         "demo); e.g. --seconds 20 for a long demo, generated in windows of "
                         "the models' training length")
    dm.add_argument("--steps", type=int, default=None,
                    help="Euler steps (default 25 with real weights, 12 with the world models)")
    dm.add_argument("--video-only", action="store_true",
                    help="only write the demo video (nag_foley_demo.mp4, e.g. for the ComfyUI "
                        "workflows) and stop")
    _model_args(dm)
    dm.add_argument("--device", default=None)
    dm.add_argument("--quiet", action="store_true")

    dl = sub.add_parser("download", help="download the weights of a variant",
                        description="Download the official files of a variant into the models "
                        "folder (resumable, md5-checked).")
    _model_args(dl)

    ls = sub.add_parser("list-models", help="show the models folder and what it holds")
    _model_args(ls, variant=False)

    sm = sub.add_parser("smoke-models", help="write the tiny random smoke-test weight set",
                        description="Write tiny random weights in the real names and layouts "
                        "(for tests and install checks; they generate noise). Refuses to write "
                        "into a folder that holds real weights.")
    sm.add_argument("dir", metavar="DIR")
    sm.add_argument("--44k", dest="with_44k", action="store_true", help="also the 44k set")
    return parser


# --------------------------------------------------------------------------- commands
def _cmd_generate(a, argv) -> int:
    from .chain import run_chain
    run_chain(a.video, a.prompt, a.out, variant=a.variant, models_dir=a.models,
              controlnet=a.controlnet, method=a.method, alpha=a.alpha, beta=a.beta,
              steps=a.steps, seed=a.seed, start=a.start, duration=a.duration,
              negative=a.negative or "", gains_db=a.gain_db, takes=a.takes, device=a.device,
              dtype=a.dtype,
              offline=a.offline, encoding="pcm16" if a.pcm16 else "float",
              whole_video=bool(a.whole_video), progress=not a.quiet,
              command=["nag_core", *argv], log=_log)
    return 0


def _cmd_redo(a, argv) -> int:
    from .chain import redo_chain
    changes = {"prompt": a.prompt, "seed": a.seed, "steps": a.steps, "alpha": a.alpha,
               "beta": a.beta, "method": a.method, "negative_text": a.negative,
               "gain_db": a.gain_db, "takes": a.takes}
    redo_chain(a.out, a.step, changes=changes, models_dir=a.models, controlnet=a.controlnet,
               device=a.device, dtype=a.dtype, offline=a.offline, to_dir=a.to, take=a.take,
               whole_video=a.whole_video, progress=not a.quiet, command=["nag_core", *argv],
               log=_log)
    return 0


def _cmd_demo(a, argv) -> int:
    from .demo import DEMO_NAME, run_demo, write_demo_video
    if a.video_only:
        _log(f"wrote {write_demo_video(Path(a.out) / DEMO_NAME, seconds=a.seconds or 8.0)}")
        return 0
    run_demo(a.out, models_dir=a.models, variant=a.variant, seconds=a.seconds, steps=a.steps,
             device=a.device, progress=not a.quiet, log=_log)
    return 0


def _models_root(a) -> Path:
    from .download import resolve_models_dir
    root = resolve_models_dir(a.models)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"models folder {root} is a file; give a folder (--models DIR), "
                          "created if missing")
    return root


def _cmd_download(a, argv) -> int:
    from .download import ensure_model_files
    root = _models_root(a)
    _log(f"models folder: {root}")
    files = ensure_model_files(a.variant, root, offline=False, replace_smoke=True)
    _log(f"{a.variant} is complete in {root} (network: {files.network.name})")
    return 0


def _cmd_list_models(a, argv) -> int:
    from .smoke import MARKER
    from .weights import NETWORK_FILES, find_model_files, list_weight_files
    root = _models_root(a)
    print(f"models folder: {root}" + ("" if root.is_dir() else " (does not exist yet)"))
    if (root / MARKER).exists():
        print("  NOTE: this is a smoke-test set (tiny random weights; generates noise)")
    for rel in list_weight_files(root):
        size = (root / rel).stat().st_size
        print(f"  {rel}  ({size / 2**20:.1f} MiB)")
    for variant in NETWORK_FILES:
        try:
            find_model_files(root, variant)
            print(f"  {variant}: complete")
        except NAGFoleyError:
            print(f"  {variant}: incomplete (`python -m nag_core download --variant {variant}`)")
    return 0


def _cmd_smoke_models(a, argv) -> int:
    from .smoke import write_smoke_models
    modes = ("16k", "44k") if a.with_44k else ("16k",)
    written = write_smoke_models(a.dir, modes=modes)
    _log(f"wrote {len(written)} smoke-test files to {a.dir} (random weights: they generate "
         "noise; use them to check an install, never for sound)")
    return 0


COMMANDS = {"generate": _cmd_generate, "redo": _cmd_redo, "demo": _cmd_demo,
            "download": _cmd_download, "list-models": _cmd_list_models,
            "smoke-models": _cmd_smoke_models}


def _os_error(e: OSError) -> str:
    """One line for a file-system failure: what and where, and what to do."""
    where = f" ({e.filename})" if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"the disk is full{where}; free some space and run again (nothing was published)"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{e.strerror}{where}; check the permissions of that path, or choose another "
                "folder")
    return f"{e.strerror or e}{where}; check that path"


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM: clean up the half-built run as Ctrl-C does


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:
        pass  # not the main thread: signals stay as they are
    try:
        return COMMANDS[args.command](args, argv)
    except NAGFoleyError as e:
        _log(f"error: {e}")
        return EXIT_USER_ERROR
    except OSError as e:
        _log(f"error: {_os_error(e)}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        _log("interrupted: nothing of this run was published; earlier runs are as they were")
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
