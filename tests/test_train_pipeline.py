"""End to end on the smoke-test model set: real decoding, VAE, CLIP/Synchformer features into the
cache, training from it with the network from the model folder, CLI `run`."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from nag_core.controlnet import load_controlnet
from nag_core.mmaudio.network_loading import load_network
from nag_core.smoke import write_smoke_models
from nag_core.train.__main__ import main
from nag_core.train.extract import ModelSegmentEncoder, extract, read_index
from nag_core.train.loop import TrainConfig, fit
from nag_core.weights import find_model_files

from train_helpers import make_audio, make_video, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

SEG = 2.0  # the smoke set is fast at 2 s; the default (and the real setting) is 4 s


class Counting(ModelSegmentEncoder):
    calls = 0

    def encode_audio(self, *a):
        Counting.calls += 1
        return super().encode_audio(*a)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_smoke_models(root / "models")
    (root / "data").mkdir()
    make_video(root / "data" / "clip.mp4", 4.3, 440)
    make_audio(root / "data" / "hum.flac", 4.2, 220)
    return root


def test_extract_real_models_and_reuse(world):
    files = find_model_files(world / "models", "small_16k")
    enc = Counting.from_files(files)
    cache = world / "cache"
    r = extract(world / "data", cache, enc, SEG, progress=False)
    assert r.encoded_segments == 4 and r.pairs == 4 and Counting.calls == 4
    index = read_index(cache)
    shapes = {}
    for entry in index["sources"].values():
        with safe_open(str(cache / entry["shard"]), framework="pt") as f:
            shapes[entry["kind"]] = {k: tuple(f.get_tensor(k).shape) for k in f.keys()}
    # 2 s at 16k: 63 latent frames of 20 channels; CLIP 16 x 48, Synchformer 40 x 128 (tiny)
    assert shapes["video"]["0.mean"] == (63, 20) and shapes["video"]["1.std"] == (63, 20)
    assert shapes["video"]["0.clip_f"] == (16, 48) and shapes["video"]["0.sync_f"] == (40, 128)
    assert "0.clip_f" not in shapes["audio"] and shapes["audio"]["1.cond_mean"] == (63, 20)
    enc2 = Counting.from_files(files)
    r2 = extract(world / "data", cache, enc2, SEG, progress=False)
    assert Counting.calls == 4 and r2.reused_segments == 4
    assert not isinstance(enc2._model, torch.nn.Module)  # nothing to encode: never loaded


def test_fit_from_model_folder_and_cli(world):
    cfg = TrainConfig(steps=3, batch_size=2, accum=1, warmup_steps=1, num_blocks=4,
                      checkpoint_every=2, ema_every=1, device="cpu")
    res = fit(world / "cache", world / "models", world / "run", cfg, progress=False)
    net, _ = load_network(find_model_files(world / "models", "small_16k").network)
    cn = load_controlnet(res.controlnet_path, net)
    assert cn.config.num_blocks == 4
    code = main(["run", "--data", str(world / "data"), "--models", str(world / "models"),
                 "--cache", str(world / "cache"), "--segment-seconds", str(SEG), "--out",
                 str(world / "run2"), "--steps", "2", "--batch-size", "2", "--warmup-steps", "1",
                 "--ema-every", "1", "--device", "cpu", "--no-progress"])
    assert code == 0 and (world / "run2" / "controlnet.safetensors").is_file()
