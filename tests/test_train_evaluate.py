"""The separation check: its model-free measure, the bootstrap, CLAP's absence, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nag_core.train.__main__ import main
from nag_core.train.evaluate import (bootstrap_ci, envelope_similarity, load_clap, plan_pairs,
                                     spectral_envelope)

from train_helpers import make_audio, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

SR = 16000
REPO = Path(__file__).resolve().parents[1]


def tone(freq, seconds=2.0, start=0.0, gain=0.3):
    t = torch.arange(int(seconds * SR)) / SR
    wave = gain * torch.sin(2 * math.pi * freq * t)
    return torch.where(t >= start, wave, torch.zeros(()))


def test_envelope_similarity_orders_what_it_should():
    a = tone(440)
    assert envelope_similarity(a, a, "16k") == pytest.approx(1.0, abs=1e-6)
    assert envelope_similarity(a, 0.1 * a, "16k") > 0.99  # (nearly) level-free
    other_band = envelope_similarity(a, tone(3000), "16k")
    later = envelope_similarity(a, tone(440, start=1.0), "16k")  # same sound, half the time
    assert other_band < later < 0.95
    env = spectral_envelope(a, "16k")
    assert env.shape[0] == 80 // 5 and env.min() == 0.0 and env.max() == pytest.approx(60.0)


def test_bootstrap_ci():
    assert bootstrap_ci([0.25] * 7) == (0.25, 0.25, 0.25)
    rng = np.random.default_rng(1)
    v = rng.normal(0.5, 1.0, 400)
    m, lo, hi = bootstrap_ci(v, resamples=2000)
    assert m == pytest.approx(v.mean()) and lo < m < hi
    se = v.std() / math.sqrt(v.size)  # the normal-theory interval, for scale
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_clap_is_optional_and_never_fetched(tmp_path):
    scorer, note = load_clap(None, torch.device("cpu"))
    assert scorer is None and "no --clap-checkpoint" in note
    scorer, note = load_clap(str(tmp_path / "nope.pt"), torch.device("cpu"))
    assert scorer is None and "does not exist" in note
    ckpt = tmp_path / "clap.pt"
    ckpt.write_bytes(b"not a checkpoint")
    scorer, note = load_clap(str(ckpt), torch.device("cpu"))
    assert scorer is None and note.startswith("CLAP: skipped")


def test_plan_pairs_interleaves_clips_and_lists_unusable(tmp_path):
    make_audio(tmp_path / "long.wav", 4.2)  # 1 s segments: 4 -> pairs (0,1) (1,2) (2,3)
    make_audio(tmp_path / "mid.wav", 2.1)  # one pair
    make_audio(tmp_path / "short.wav", 1.5)
    pairs, skipped = plan_pairs(tmp_path, 1.0, max_pairs=3)
    assert [(p.source.path.name, p.target_start, p.cond_start) for p in pairs] == [
        ("long.wav", 0.0, 1.0), ("mid.wav", 0.0, 1.0), ("long.wav", 1.0, 2.0)]
    assert len(skipped) == 1 and "short.wav" in skipped[0]


def test_evaluate_cli_on_world_clips(tmp_path, capsys):
    from bench.world.export import export

    models = REPO / "nag_core" / "assets" / "world"
    export(tmp_path / "data", 2, duration=8.0)
    report = tmp_path / "report.json"
    code = main(["evaluate", "--run", str(tmp_path), "--controlnet",
                 str(models / "nag_controlnet_world.safetensors"), "--data", str(tmp_path / "data"),
                 "--models", str(models), "--pairs", "2", "--steps", "2", "--betas", "1", "--prompt", "a sound",
                 "--device", "cpu", "--no-progress", "--out", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "spectral-envelope similarity" in out and "CLAP: skipped" in out
    data = json.loads(report.read_text())
    assert data["pairs"] == 2
    names = list(data["summary"])
    assert names == ["independent", "negative_prompt", "nag beta=1"]
    for name in names[1:]:
        e = data["summary"][name]["envelope"]
        assert e["pairs"] == 2 and e["delta_low"] <= e["delta"] <= e["delta_high"]
    assert "delta" not in data["summary"]["independent"]["envelope"]
    # no run, no weights: a clear error before anything is loaded
    code = main(["evaluate", "--run", str(tmp_path / "none"), "--data", str(tmp_path / "data"),
                 "--models", str(models)])
    assert code == 2 and "no ControlNet weights" in capsys.readouterr().err
