"""Extraction cache: what is stored, reuse without recomputation, skip counts, loading."""

from __future__ import annotations

import json

import pytest
import torch

from nag_core.errors import ConfigError
from nag_core.smoke import tiny_network_config
from nag_core.train.dataset import PairSampler, load_cache
from nag_core.train.extract import extract

from train_helpers import FakeEncoder, make_audio, make_video, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

SEG = 1.0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    make_video(d / "v1.mp4", 2.3, 440)
    make_video(d / "v2.mp4", 3.1, 660)
    make_video(d / "short.mp4", 1.5, 550)
    make_audio(d / "a1.wav", 2.2, 330)
    (d / "a1.txt").write_text("a hum")
    (d / "broken.wav").write_bytes(b"RIFF....not audio")
    return d


def test_extract_counts_index_and_reuse(data_dir, tmp_path):
    enc = FakeEncoder(tiny_network_config("16k"))
    cache = tmp_path / "cache"
    r1 = extract(data_dir, cache, enc, SEG, progress=False)
    # v1: 2 segs, v2: 3 segs, a1: 2 segs; short.mp4 too short, broken.wav unreadable
    assert r1.encoded_segments == 7 and r1.reused_segments == 0
    assert [p.split("/")[-1] for p in r1.too_short] == ["short.mp4"]
    assert len(r1.unreadable) == 1 and "broken.wav" in r1.unreadable[0]
    assert r1.pairs == 2 + 4 + 2
    assert (enc.audio_calls, enc.video_calls) == (7, 5)

    index = json.loads((cache / "index.json").read_text())
    captions = {e["path"].split("/")[-1]: e["caption"] for e in index["sources"].values()}
    assert captions["a1.wav"] == "a hum"
    assert len(list((cache / "shards").glob("*.safetensors"))) == 3

    r2 = extract(data_dir, cache, enc, SEG, progress=False)  # nothing is recomputed
    assert (enc.audio_calls, enc.video_calls) == (7, 5)
    assert r2.encoded_segments == 0 and r2.reused_segments == 7 and r2.pairs == 8
    assert len(r2.too_short) == 1 and len(r2.unreadable) == 1

    make_audio(data_dir / "a1.wav", 2.2, 340)  # a changed file is encoded again, only it
    r3 = extract(data_dir, cache, enc, SEG, progress=False)
    assert r3.encoded_segments == 2 and enc.audio_calls == 9 and enc.video_calls == 5
    enc2 = FakeEncoder(tiny_network_config("16k"), fingerprint="other model files")
    extract(data_dir, cache, enc2, SEG, progress=False)  # other models: everything anew
    assert enc2.audio_calls == 7


def test_load_cache_tensors_and_pairs(data_dir, tmp_path):
    cfg = tiny_network_config("16k")
    enc = FakeEncoder(cfg)
    extract(data_dir, tmp_path, enc, SEG, progress=False)
    data = load_cache(tmp_path)
    assert len(data) == 8 and data.mean.shape == (7, 32, 20)
    assert data.clip_f.shape == (7, 8, cfg.clip_dim) and data.sync_f.shape == (7, 16, cfg.sync_dim)
    assert int(data.has_video.sum()) == 5
    # audio-only rows hold zero placeholders; pairs are neighbours of the same clip
    assert torch.count_nonzero(data.clip_f[~data.has_video]) == 0
    ref = enc.encode_audio(data_dir / "a1.wav", 1.0, SEG)
    hits = [i for i in range(7) if torch.equal(data.mean[i], ref["mean"])]
    assert len(hits) == 1 and torch.equal(data.cond_mean[hits[0]], ref["cond_mean"])
    assert data.mode == "16k" and data.segment_seconds == SEG


def test_empty_cache_and_no_pairs_errors(tmp_path):
    with pytest.raises(ConfigError, match="extract"):
        load_cache(tmp_path)
    d = tmp_path / "d"
    d.mkdir()
    make_audio(d / "short.wav", 1.2)
    with pytest.raises(ConfigError, match="no training pairs"):
        extract(d, tmp_path / "c", FakeEncoder(tiny_network_config("16k")), SEG, progress=False)


def test_pair_sampler_is_a_pure_function_of_the_count():
    a = PairSampler(5, seed=3)
    first = [a.next(3).tolist() for _ in range(4)]
    b = PairSampler(5, seed=3, drawn=6)
    assert [b.next(3).tolist() for _ in range(2)] == first[2:]
    flat = sum(first[:2], [])[:5]
    assert sorted(flat) == [0, 1, 2, 3, 4]  # one epoch is a permutation


class InterruptedEncoder(FakeEncoder):
    """Ctrl-C while the second clip is encoded."""

    def encode_audio(self, path, start, seconds):
        if self.audio_calls == 2:
            raise KeyboardInterrupt
        return super().encode_audio(path, start, seconds)


def test_an_interrupted_extraction_keeps_what_it_encoded(data_dir, tmp_path):
    cfg = tiny_network_config("16k")
    with pytest.raises(KeyboardInterrupt):
        extract(data_dir, tmp_path, InterruptedEncoder(cfg), SEG, progress=False)
    assert len(list(tmp_path.glob("index.journal-*.jsonl"))) == 1  # the first clip, journalled
    enc = FakeEncoder(cfg)
    r = extract(data_dir, tmp_path, enc, SEG, progress=False)
    assert r.reused_segments == 2 and r.encoded_segments == 5 and enc.audio_calls == 5
    assert not list(tmp_path.glob("index.journal-*"))  # folded into index.json
    ref = extract(data_dir, tmp_path / "fresh", FakeEncoder(cfg), SEG, progress=False)
    got = json.loads((tmp_path / "index.json").read_text())["current"]["pairs"]
    want = json.loads((tmp_path / "fresh" / "index.json").read_text())["current"]["pairs"]
    assert got == want and len(got) == ref.pairs  # same clips, same keys, same pairs
