"""The demo: a synthetic video (a bouncing ball and a blinking lamp, drawn with torch, no audio)
and the whole step-by-step chain on it.

``python -m nag_core demo`` never downloads gigabytes: it uses real weights only when they are
already in the models folder, and otherwise the tiny smoke-test set (written once to the user
cache), in which case it says plainly, at the start, at the end and in record.json, that the
audio is noise from random weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import torch

from .errors import WeightsError

DEMO_NAME = "nag_foley_demo.mp4"
DEMO_PROMPTS = ("a ball bounces", "a lamp beeps", "rain falls")
BALL_RADIUS = 0.09  # of the frame width
BOUNCES_PER_S = 1.25
BLINK_HZ = 1.0


def demo_frames(seconds: float = 8.0, fps: int = 25, size: int = 128) -> torch.Tensor:
    """(T, H, W, 3) uint8: a ball bouncing on a floor (left) and a lamp blinking (right)."""
    n = int(round(seconds * fps))
    t = torch.arange(n, dtype=torch.float32) / fps
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = coords[:, None], coords[None, :]
    floor_y = 0.85
    # |sin| makes a bounce: the ball touches the floor twice per sine period.
    height = torch.abs(torch.sin(math.pi * BOUNCES_PER_S * t))
    ball_y = floor_y - BALL_RADIUS - 0.6 * height
    ball_x = 0.3 + 0.05 * torch.sin(2 * math.pi * 0.2 * t)
    lamp_on = (torch.remainder(t * BLINK_HZ, 1.0) < 0.5).float()

    sky = torch.tensor([0.15, 0.2, 0.35])
    frames = sky.expand(n, size, size, 3).clone()
    frames[:, yy[:, 0] > floor_y, :, :] = torch.tensor([0.3, 0.25, 0.2])
    d2 = (yy[None] - ball_y[:, None, None]) ** 2 + (xx[None] - ball_x[:, None, None]) ** 2
    ball = d2 < BALL_RADIUS ** 2
    frames[ball] = torch.tensor([0.9, 0.3, 0.2])
    lamp = ((yy - 0.35) ** 2 + (xx - 0.75) ** 2) < 0.07 ** 2
    lamp_colour = (torch.tensor([0.25, 0.25, 0.2])
                   + lamp_on[:, None] * torch.tensor([0.75, 0.7, 0.1]))
    frames[:, lamp] = lamp_colour[:, None, :]
    post = (xx > 0.735) & (xx < 0.765) & (yy > 0.42) & (yy < floor_y)
    frames[:, post] = torch.tensor([0.5, 0.5, 0.5])
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


def write_demo_video(path, seconds: float = 8.0, fps: int = 25, size: int = 128) -> Path:
    """Encode :func:`demo_frames` to ``path`` (H.264 in MP4, no audio; written atomically)."""
    return write_video(path, demo_frames(seconds, fps, size).numpy(), fps)


def write_video(path, frames, fps: int, crf: Optional[int] = None) -> Path:
    """Encode (T, H, W, 3) uint8 ``frames`` (even H and W) to ``path``: H.264 in MP4 (MPEG-4
    part 2 where libx264 is missing), no audio, written atomically. ``crf``: x264 quality
    (lower is closer to the frames; default x264's own)."""
    import av

    from .media._files import written_atomically

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    x264 = _has_encoder("libx264")
    with written_atomically(out) as tmp:
        with av.open(str(tmp), "w") as container:
            options = {"crf": str(crf)} if (crf is not None and x264) else {}
            stream = container.add_stream("libx264" if x264 else "mpeg4", rate=fps,
                                          options=options)
            stream.height, stream.width = frames.shape[1], frames.shape[2]
            stream.pix_fmt = "yuv420p"
            for image in frames:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return out


def _has_encoder(name: str) -> bool:
    import av
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpegError by version
        return False


# --------------------------------------------------------------------------- the demo run
SMOKE_NOTE = ("SMOKE-TEST WEIGHTS: no real MMAudio weights were found, so this demo ran on tiny "
              "RANDOM weights; the audio is NOISE. It only shows that everything works. For real "
              "sound, download the weights (`python -m nag_core download --variant small_16k`) "
              "and run the demo again.")
WORLD_NOTE = ("WORLD MODELS: no real MMAudio weights were found, so this demo ran the tiny models "
              "trained on the synthetic Foley world (shipped with the pack, a few MB) on a world "
              "video of a bouncing ball and a blinking lamp: 'ball bounces', then 'lamp beeps' "
              "with NAG. They know only the world's four sounds. For real videos, download the "
              "weights (`python -m nag_core download --variant small_16k`).")
WORLD_PROMPTS = ("ball bounces", "lamp beeps")
# A world video the models never saw in training (those are seeds < 10000), chosen among the
# evaluation videos as one where the lamp track clearly beeps (lamp contrast 18.9 dB); across 16
# unseen videos the lamp is detected in 10 (tests/test_world_assets.py checks a majority).
WORLD_SEED = 10_007
NO_CONTROLNET_NOTE = ("Real weights, no NAG ControlNet: steps 2 and 3 used the negative-prompt "
                      "baseline (earlier prompts as CFG's negative text), not NAG.")


def pick_demo_models(models_dir=None, variant: str = "small_16k") -> tuple[Path, str]:
    """(models folder, kind): kind "real" when the resolved folder holds complete weights
    already, else "world" (the trained world set shipped in the package), else "smoke" (the
    random smoke-test set in the user cache, written on first use)."""
    from .download import cache_dir, resolve_models_dir
    from .smoke import MARKER, write_smoke_models
    from .weights import find_model_files
    from .world.assets import world_models_dir

    root = resolve_models_dir(models_dir)
    try:
        find_model_files(root, variant)
        return root, ("smoke" if (root / MARKER).exists() else "real")
    except WeightsError:
        pass
    try:
        return world_models_dir(), "world"
    except WeightsError:
        pass
    smoke = cache_dir() / "smoke-models"
    try:
        find_model_files(smoke, "small_16k")
    except WeightsError:
        write_smoke_models(smoke)
    return smoke, "smoke"


def run_demo(out_dir=None, *, models_dir=None, variant: str = "small_16k",
             seconds: Optional[float] = None,
             steps: Optional[int] = None, device=None, progress: bool = True,
             log: Callable[[str], None] = print) -> dict:
    """Write the demo video and the 3-prompt chain on it into a new run folder, ``out_dir``
    (default ./nag_foley_demo) or, when that already holds files, the next free numbered
    folder beside it (as ``generate`` chooses). ``seconds``: the video's length (default 8 s with
    real weights, 4 s with the world models); longer than the models' training length runs in
    windows. Returns the run record, with ``run_dir``."""
    root, kind = pick_demo_models(models_dir, variant)
    if kind == "world":
        return _in_new_run(out_dir, log, lambda stage: _run_world_demo(
            stage, root, steps, device, progress, log, seconds))
    smoke = kind == "smoke"
    if smoke:
        variant = "small_16k"
    notes = [SMOKE_NOTE] if smoke else [NO_CONTROLNET_NOTE]
    for note in notes:
        log(note)
    seconds = seconds or 8.0

    def run(stage):
        from .chain import run_chain_in
        video = write_demo_video(stage.path / DEMO_NAME, seconds=seconds)
        return run_chain_in(stage, video, list(DEMO_PROMPTS), variant=variant, models_dir=root,
                            steps=steps or (10 if smoke else 25), duration=seconds,
                            device=device, offline=True, progress=progress, notes=notes,
                            smoke=smoke, log=log)
    record = _in_new_run(out_dir, log, run)
    for note in notes:
        log(note)
    return record


def _in_new_run(out_dir, log, run) -> dict:
    """``run(stage)`` in a new run folder that becomes visible only once it is complete."""
    from .run_folder import RunStage, describe_target, free_target
    requested = Path(out_dir or "nag_foley_demo")
    target = free_target(requested)
    moved = describe_target(requested, target)
    if moved:
        log(moved)
    with RunStage(target, requested=requested) as stage:
        record = run(stage)
        final = stage.publish()
    log(f"demo video and its Foley: {final}")
    return {**record, "run_dir": str(final)}


def write_world_video(path, seed: int = WORLD_SEED,
                      seconds: Optional[float] = None) -> tuple[Path, object]:
    """A world video of ``seconds`` (default 4 s, the world models' training length; ball + lamp,
    64x64 px, 25 fps; near-lossless H.264 so that the picture the models see is the one they
    were trained on). Returns (path, the rendered scene.Clip)."""
    from .world.assets import WORLD_DURATION
    from .world.scene import FPS, render_clip

    clip = render_clip(seed, ("ball", "lamp"), seconds or WORLD_DURATION)
    frames = (clip.frames * 255).round().clip(0, 255).astype("uint8")
    return write_video(path, frames, FPS, crf=4), clip


def _run_world_demo(stage, root: Path, steps, device, progress, log, seconds=None) -> dict:
    from .chain import run_chain_in
    from .world.assets import CONTROLNET_FILE, WORLD_DURATION

    log(WORLD_NOTE)
    seconds = seconds or WORLD_DURATION
    video, _ = write_world_video(stage.path / DEMO_NAME, seconds=seconds)
    record = run_chain_in(stage, video, list(WORLD_PROMPTS), models_dir=root,
                          controlnet=root / CONTROLNET_FILE, method="nag", steps=steps or 12,
                          seed=1, duration=seconds, device=device, offline=True,
                          progress=progress, notes=[WORLD_NOTE], smoke=False, log=log)
    log(WORLD_NOTE)
    return record
