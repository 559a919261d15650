"""The shipped world model set (nag_core/assets/world): loadable through the product loaders and,
run through the product pipeline (FoleySession), its step-2 "lamp beeps" track carries the lamp's
0.8-1.25 kHz buzz at the lamp's lit times."""

import pytest
import torch

from nag_core.world.assets import WORLD_DIR, CONTROLNET_FILE

pytestmark = pytest.mark.skipif(not (WORLD_DIR / CONTROLNET_FILE).is_file(),
                                reason="world model set not shipped")


@pytest.fixture(scope="module")
def world():
    from nag_core.world.assets import load_world_model
    torch.set_num_threads(1)
    return load_world_model()


def test_shipped_set_is_small_and_loads(world):
    model, controlnet = world
    total = sum(p.stat().st_size for p in WORLD_DIR.rglob("*") if p.is_file())
    assert total < 10e6
    assert model.sample_rate == 16000 and model.network.duration == 4.0
    assert controlnet.config.base_depth == model.network.config.depth


def test_demo_chain_passes_signature_detectors(world):
    from nag_core.pipeline import FoleySession
    from nag_core.world.assets import world_video
    from nag_core.world.detectors import log_mel, signature_report

    model, controlnet = world
    clip, video = world_video(10_003)
    session = FoleySession(model, video, controlnet=controlnet)
    session.add_step("ball bounces", seed=1, steps=12)
    session.add_step("lamp beeps", seed=2, steps=12, method="nag", beta=1.5)
    lamp = signature_report(log_mel(session.tracks[1].numpy()), clip)
    assert lamp["lamp_present"], lamp
