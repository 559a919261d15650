"""Where the trained world model set shipped with the pack lives (``nag_core/assets/world``):
tiny MMAudio parts in the real file names and layouts plus a NAG ControlNet, trained from
scratch on the synthetic world (``python -m bench.world.evaluate --ship``; how the shipped set
was made is in its WORLD_MODELS.txt). They only know the world's sounds; they let the demo run a
real (not random-weight) chain without downloads. The demo loads them with the product loaders
like any model folder; loading and measuring them for tests and benchmarks is in bench/world."""

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
