"""CLIP encoder: golden outputs of the official open_clip module (reduced size), the real-size
key/shape manifest, loader behaviour and the tiny-model round trip."""

import pytest
import torch

from golden import Golden, assert_close, golden_params, load_manifest
from nag_core.errors import ConfigError, MediaError, WeightsError
from nag_core.mmaudio.clip import ClipModel, load_clip, save_clip, tiny_clip


def _golden_model(g: Golden) -> ClipModel:
    cfg = g.meta["reduced_cfg"]
    vision = cfg["vision_cfg"]
    return load_clip(g.group("weights."), vision_heads=vision["width"] // vision["head_width"],
                     text_heads=cfg["text_cfg"]["heads"])


@pytest.mark.parametrize("path", golden_params("clip_"))
def test_clip_image_features_match_golden(path):
    g = Golden(path)
    model = _golden_model(g)
    frames = g["in.frames_uint8"].to(torch.float32) * (1 / 255)
    feats = model.encode_video(frames)
    assert_close(feats, g["out.image_features"], 1e-5, "image features")
    assert_close(feats.norm(dim=-1), torch.ones(feats.shape[:2]), 1e-5, "unit norm")
    flat = frames.flatten(0, 1)
    assert_close(model.encode_image(flat, normalize=False), g["dbg.image_features_unnormalized"],
                 1e-5, "unnormalised image features")


@pytest.mark.parametrize("path", golden_params("clip_"))
def test_clip_text_features_match_golden(path):
    g = Golden(path)
    model = _golden_model(g)
    tokens = g["out.tokens"]
    assert_close(model.encode_text(tokens), g["out.text_features"], 1e-5, "text features")
    assert_close(model.encode_text(tokens, normalize=False), g["dbg.text_hidden_unnormalized"],
                 1e-5, "ln_final states")


def _meta_state_dict(manifest: dict) -> dict:
    return {k: torch.empty(v["shape"], dtype=getattr(torch, v["dtype"]), device="meta")
            for k, v in manifest["state_dict"].items()}


def test_clip_real_size_matches_manifest_on_meta_device():
    manifest = load_manifest("clip_dfn5b_vit_h_14_384")
    model = load_clip(_meta_state_dict(manifest), device="meta")
    cfg = manifest["model_cfg"]
    assert model.cfg.vision_heads == cfg["vision_cfg"]["width"] // cfg["vision_cfg"]["head_width"]
    assert model.cfg.text_heads == cfg["text_cfg"]["heads"]
    assert model.cfg.vision_layers == 32 and model.cfg.text_layers == 24
    assert model.cfg.image_size == 384 and model.cfg.embed_dim == 1024
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert own == {k: v["shape"] for k, v in manifest["state_dict"].items()}
    assert sum(v.numel() for v in model.state_dict().values()) == manifest["num_state_dict_elements"]


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_tiny_clip_round_trip(tmp_path, suffix):
    model = tiny_clip(seed=3, vocab_size=714)
    path = tmp_path / f"open_clip_pytorch_model{suffix}"
    save_clip(model, path)
    loaded = load_clip(path)
    assert loaded.cfg == model.cfg
    frames = torch.rand(2, 3, 384, 384, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, 714, (2, 77), generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.encode_image(frames), model.encode_image(frames))
    assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))
    assert model.encode_image(frames).shape == (2, 48)
    assert model.encode_text(tokens).shape == (2, 77, 128)


def test_load_clip_unwraps_state_dict_and_module_prefix():
    model = tiny_clip(seed=1, vocab_size=600, width=64, layers=1)
    wrapped = {"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}
    loaded = load_clip(wrapped, dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16 and loaded.cfg == model.cfg


def test_load_clip_rejects_other_files():
    with pytest.raises(WeightsError, match="not a open_clip CLIP state dict.*DFN5B"):
        load_clip({"latent_mean": torch.zeros(1, 1, 40)})
    sd = tiny_clip(seed=1, vocab_size=600, width=64, layers=1).state_dict()
    sd["visual.extra"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="unexpected keys.*visual.extra"):
        load_clip(sd)
    del sd["visual.extra"], sd["ln_final.bias"]
    with pytest.raises(WeightsError, match="missing keys.*ln_final.bias"):
        load_clip(sd)
    with pytest.raises(WeightsError, match="not found"):
        load_clip("/nonexistent/open_clip_pytorch_model.bin")


def test_clip_input_errors():
    model = tiny_clip(seed=1, vocab_size=600, width=64, layers=1)
    with pytest.raises(MediaError, match="384x384"):
        model.encode_image(torch.rand(1, 3, 224, 224))
    with pytest.raises(MediaError, match="float frames"):
        model.encode_image(torch.zeros(1, 3, 384, 384, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="outside this CLIP's vocabulary"):
        model.encode_text(torch.full((1, 77), 49407))
    with pytest.raises(ConfigError, match=r"\(B, 77\)"):
        model.encode_text(torch.zeros(1, 10, dtype=torch.long))


def test_clip_normalises_with_openai_constants():
    # A frame equal to the OpenAI mean is all zeros after normalisation, so the features must
    # equal those of the model run directly on a zero input.
    model = tiny_clip(seed=2, vocab_size=600, width=64, layers=1)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1).expand(1, 3, 384, 384)
    expected = torch.nn.functional.normalize(model.visual(torch.zeros(1, 3, 384, 384)), dim=-1)
    assert_close(model.encode_image(mean.contiguous()), expected, 1e-6, "mean frame")
