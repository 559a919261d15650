"""The trained world model set shipped with the pack (``nag_core/assets/world``): tiny MMAudio
parts in the real file names and layouts plus a NAG ControlNet, trained from scratch on the
synthetic world (``python -m bench.world.evaluate --ship``; how the shipped set was made is in
its WORLD_MODELS.txt). They only know the world's sounds; they let the demo run a real (not
random-weight) chain without downloads."""

from __future__ import annotations

from pathlib import Path

from ..errors import WeightsError

WORLD_DIR = Path(__file__).resolve().parent.parent / "assets" / "world"
CONTROLNET_FILE = "nag_controlnet_world.safetensors"
WORLD_DURATION = 4.0


def world_models_dir() -> Path:
    if not (WORLD_DIR / CONTROLNET_FILE).is_file():
        raise WeightsError(f"the world model set is not in {WORLD_DIR}; regenerate it with "
                           "`python -m bench.world.evaluate --ship`")
    return WORLD_DIR


def load_world_model(folder=None, device="cpu"):
    """(MMAudioModel, NAGControlNet) of the world, loaded through the same loaders as real
    weights (nag_core.weights.load_model_files, nag_core.controlnet.load_controlnet)."""
    from ..controlnet import load_controlnet
    from ..weights import find_model_files, load_model_files

    root = Path(folder) if folder is not None else world_models_dir()
    model = load_model_files(find_model_files(root, "small_16k"), device=device)
    model.network.set_duration(WORLD_DURATION)
    return model, load_controlnet(root / CONTROLNET_FILE, model.network)


def world_video(seed: int = 10_000, objects=("ball", "lamp")):
    """(Clip, VideoClip) of one world video, ready for FoleySession."""
    import torch

    from ..media import frames_from_images
    from .scene import render_clip

    clip = render_clip(seed, objects, WORLD_DURATION)
    return clip, frames_from_images(torch.from_numpy(clip.frames), 25, 0.0, WORLD_DURATION)
