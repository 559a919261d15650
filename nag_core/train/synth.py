"""Writing a ControlNet weight file from the post-hoc EMA of the saved snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..controlnet import ControlNetConfig, save_controlnet
from ..errors import ConfigError
from .ema import synthesize
from .loop import EMA_DIR, controlnet_from_state


def synthesize_controlnet(out_dir, sigma_rel: float = 0.05, step: Optional[int] = None,
                          output=None) -> Path:
    """The EMA of width ``sigma_rel`` (at ``step``, default the last snapshot) of the run in
    ``out_dir`` as a ControlNet file (default ``out_dir/controlnet_posthoc_sigma<σ>.safetensors``),
    loadable with :func:`nag_core.controlnet.load_controlnet`."""
    out = Path(out_dir)
    state, meta = synthesize(out / EMA_DIR, sigma_rel, step)
    if "controlnet_config" not in meta:
        raise ConfigError(f"the EMA snapshots in {out / EMA_DIR} carry no ControlNet config")
    config = ControlNetConfig.from_json(meta["controlnet_config"])
    path = Path(output) if output else out / f"controlnet_posthoc_sigma{sigma_rel:.3f}.safetensors"
    save_controlnet(controlnet_from_state(config, state), path)
    return path
