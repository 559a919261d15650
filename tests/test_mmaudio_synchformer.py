"""Synchformer visual encoder: golden outputs of the official module (reduced size), the
real-size manifest, loader filtering and the tiny-model round trip."""

import pytest
import torch

from golden import Golden, assert_close, golden_params, load_manifest
from nag_core.errors import MediaError, WeightsError
from nag_core.mmaudio.synchformer import (load_synchformer, save_synchformer,
                                          tiny_synchformer)


def _golden_video(g: Golden) -> torch.Tensor:
    """The sidecar's recipe: low-res frames repeated 8x plus an integer pattern, clamped."""
    low = g["in.video_lowres_uint8"].long()
    video = low.repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)
    t, c, h, w = (torch.arange(n).view(*([1] * i), n, *([1] * (3 - i)))
                  for i, n in enumerate(video.shape[1:]))
    pattern = (7 * h + 13 * w + 5 * c + 3 * t) % 41 - 20
    return (video + pattern).clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("path", golden_params("synchformer_"))
def test_synchformer_matches_golden(path):
    g = Golden(path)
    video = _golden_video(g)
    assert int(video.long().sum()) == int(g["check.video_sum"].sum())
    assert torch.equal(video[0, 0, 0, 0], g["check.video_first_row"])
    x = (video.to(torch.float32) * (1 / 255) - 0.5) / 0.5

    model = load_synchformer(g.group("weights."), heads=g.meta["reduced_cfg"]["NUM_HEADS"])
    feats = model.encode(x, chunk=1)  # one segment per pass
    assert_close(feats, g["out.sync_features"], 2e-6, "sync features")

    b, t = x.shape[:2]
    starts = range(0, t - 16 + 1, 8)
    segments = torch.stack([x[:, s:s + 16] for s in starts], dim=1)  # (B, S, 16, 3, H, W)
    per_segment = model(segments.flatten(0, 1).permute(0, 2, 1, 3, 4)).view(b, len(starts), 8, -1)
    assert_close(per_segment, g["out.synchformer_forward"], 2e-6, "forward on segments")
    assert_close(per_segment.flatten(1, 2), feats, 1e-6, "all segments in one pass")
    tokens = model.forward_features(x[:1, :16].permute(0, 2, 1, 3, 4))
    assert_close(tokens, g["dbg.b0_seg0.tokens_after_blocks"], 1e-5, "tokens after blocks")


def test_synchformer_real_size_matches_manifest_on_meta_device():
    manifest = load_manifest("synchformer")
    sd = {k: torch.empty(v["shape"], device="meta") for k, v in manifest["state_dict"].items()}
    sd["afeat_extractor.unrelated"] = torch.empty(3, device="meta")  # must be ignored
    model = load_synchformer(sd, device="meta")
    cfg = manifest["config"]
    assert (model.cfg.width, model.cfg.depth, model.cfg.heads) == (
        cfg["embed_dim"], cfg["depth"], cfg["num_heads"])
    assert model.cfg.frames_per_segment == cfg["frames_per_segment"]
    assert model.cfg.image_size == cfg["image_size"]
    own = {"vfeat_extractor." + k: list(v.shape) for k, v in model.state_dict().items()}
    assert own == {k: v["shape"] for k, v in manifest["state_dict"].items()}
    assert sum(v.numel() for v in model.state_dict().values()) == manifest["num_state_dict_elements"]


def test_tiny_synchformer_round_trip_filters_other_parts(tmp_path):
    model = tiny_synchformer(seed=4)
    path = tmp_path / "synchformer_state_dict.pth"
    save_synchformer(model, path, extra={"afeat_extractor.proj.weight": torch.zeros(2, 2),
                                         "transformer.norm.bias": torch.zeros(2)})
    raw = torch.load(path, weights_only=True)
    assert "afeat_extractor.proj.weight" in raw and all(
        k.startswith("vfeat_extractor.") for k in raw if not k.startswith(("afeat", "transformer")))
    loaded = load_synchformer(path)
    assert loaded.cfg == model.cfg and loaded.cfg.heads == 2
    x = torch.rand(1, 24, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = loaded.encode(x)
    assert out.shape == (1, 16, 128)
    assert torch.equal(out, model.encode(x))
    # an already-stripped dict loads too
    assert load_synchformer(model.state_dict()).cfg == model.cfg


def test_synchformer_segments_are_independent():
    # Tokens 8s..8s+7 depend only on frames [8s, 8s+16): changing the last frame of a 24-frame
    # clip must leave segment 0 untouched and change segment 1.
    model = tiny_synchformer(seed=5, width=64, depth=1)
    x = torch.rand(1, 24, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y = x.clone()
    y[:, -1] = 0
    a, b = model.encode(x), model.encode(y)
    assert torch.equal(a[:, :8], b[:, :8]) and not torch.allclose(a[:, 8:], b[:, 8:])


def test_synchformer_errors():
    model = tiny_synchformer(seed=5, width=64, depth=1)
    with pytest.raises(MediaError, match="at least 16 frames"):
        model.encode(torch.zeros(1, 15, 3, 224, 224))
    with pytest.raises(MediaError, match="224"):
        model.encode(torch.zeros(1, 16, 3, 256, 256))
    with pytest.raises(WeightsError, match="not a Synchformer"):
        load_synchformer({"visual.conv1.weight": torch.zeros(1)})
    sd = model.state_dict()
    sd.pop("norm.weight")
    with pytest.raises(WeightsError, match="missing keys.*norm.weight"):
        load_synchformer(sd)
