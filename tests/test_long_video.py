"""Windowed generation end to end: features cut from one encoding of the whole video, every
method over windows, exact lengths, progress over windows × Euler steps, cancel between windows."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from nag_core.media import frames_from_images
from nag_core.smoke import write_smoke_models
from nag_core.weights import find_model_files, load_model_files
from nag_core.windowed import plan_for, window_features
from nag_core.windows import (SYNC_STRIDE_SECONDS, TRAINING_FILE, clip_slice, sync_frame_slice)

# Windows of 4 Synchformer strides (1.28 s: 40 latent frames at 16k) keep the tests fast; the
# code reads the length from the models folder's training.json like any model's.
WINDOW = float(4 * SYNC_STRIDE_SECONDS)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_smoke_models(root, modes=("16k",))
    (root / TRAINING_FILE).write_text(json.dumps({"duration_s": WINDOW}))
    return root


@pytest.fixture(scope="module")
def model(models):
    m = load_model_files(find_model_files(models, "small_16k"))
    assert m.trained_duration == WINDOW
    return m


def video(seconds: float, seed: int = 0, fps: float = 25.0):
    g = torch.Generator().manual_seed(seed)
    n = int(round(seconds * fps)) + 1
    return frames_from_images(torch.rand(n, 24, 32, 3, generator=g), fps=fps, duration=seconds)


@pytest.mark.parametrize("seconds", [3.0, 2.56])
def test_window_features_are_the_encoding_of_each_windows_own_frames(model, seconds):
    clip = video(seconds)
    features = model.encode_video(clip)
    plan = plan_for(model, features.duration)
    assert len(plan.windows) >= 2
    wf = window_features(model, features, plan)
    assert wf.clip_f.shape[0] == wf.sync_f.shape[0] == len(plan.windows)
    for w in plan.windows:
        cs, fs = clip_slice(plan, w.index), sync_frame_slice(plan, w.index)
        own = type(clip)(clip.clip_frames[cs], clip.sync_frames[fs], plan.window_duration,
                         0.0, 25.0, clip.size, 0, None)
        alone = model.encode_video(own)
        # equal up to the rounding of another batch size (the encoders run frames in chunks)
        torch.testing.assert_close(wf.clip_f[w.index], alone.clip_f[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(wf.sync_f[w.index], alone.sync_f[0], atol=1e-6, rtol=1e-5)


def test_features_of_other_windows_are_refused_with_what_to_do(model, models, tmp_path):
    from nag_core.errors import ConfigError
    clip = video(3.0)
    features = model.encode_video(clip)
    other = tmp_path / "other"
    shutil.copytree(models, other)
    (other / TRAINING_FILE).write_text(json.dumps({"duration_s": 1.6}))
    m2 = load_model_files(find_model_files(other, "small_16k"))
    plan = plan_for(m2, features.duration)
    if plan.windows[-1].on_sync_grid:
        pytest.skip("this window length puts the last window on the grid")
    with pytest.raises(ConfigError, match="encode the video again"):
        window_features(m2, features, plan)


# ------------------------------------------------------------------ generation over windows
@pytest.fixture(scope="module")
def long_clip():
    return video(3.0, seed=4)


@pytest.fixture(scope="module")
def session_parts(model, long_clip):
    from nag_core.controlnet import NAGControlNet
    features = model.encode_video(long_clip)
    cn = NAGControlNet.from_base(model.network)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return features, cn


def test_every_method_runs_over_windows_and_each_track_is_the_clip_long(model, session_parts):
    from nag_core.pipeline import FoleySession
    features, cn = session_parts
    s = FoleySession(model, None, controlnet=cn, features=features)
    assert len(s.window_plan.windows) >= 2
    samples = model.num_samples(features.duration)
    s.add_step("ball bounces", steps=2)
    for method in ("nag", "text_nag", "negative_prompt", "independent"):
        r = s.add_step("lamp beeps", steps=2, method=method)
        assert r.method_used == method
        assert r.waves.shape == (1, samples) and bool(torch.isfinite(r.waves).all())
        del s.results[1:]
    takes = s.add_step("rain falls", steps=2, takes=2, method="nag")
    assert takes.waves.shape == (2, samples)
    assert not torch.equal(takes.waves[0], takes.waves[1])


def test_windows_per_batch_changes_rounding_only(model, session_parts):
    from nag_core.pipeline import FoleySession
    features, cn = session_parts
    waves = []
    for per_batch in (1, 3):
        s = FoleySession(model, None, controlnet=cn, features=features,
                         windows_per_batch=per_batch)
        s.add_step("ball bounces", steps=2, seed=5)
        waves.append(s.add_step("lamp beeps", steps=2, seed=6, method="nag").wave)
    torch.testing.assert_close(waves[0], waves[1], atol=1e-4, rtol=1e-3)


def test_a_20_s_generation_has_exactly_20_s_of_samples(model):
    from nag_core.pipeline import FoleySession
    s = FoleySession(model, None, duration=20.0)
    assert len(s.window_plan.windows) > 10
    r = s.add_step("fan hums", steps=1)
    assert r.wave.shape == (int(round(20.0 * model.sample_rate)),)


def test_progress_counts_windows_times_steps_and_cancel_keeps_the_session(model, session_parts):
    from nag_core.pipeline import FoleySession
    features, _ = session_parts
    calls = []
    s = FoleySession(model, None, features=features, progress=lambda i, n: calls.append((i, n)),
                     windows_per_batch=1)
    n = len(s.window_plan.windows)
    s.add_step("ball bounces", steps=3)
    assert calls == [(i, 3 * n) for i in range(1, 3 * n + 1)]

    def cancel(i, total):
        if i == 2:  # inside the first Euler step, after its second window
            raise KeyboardInterrupt

    s.progress = cancel
    before = [r.wave.clone() for r in s.results]
    with pytest.raises(KeyboardInterrupt):
        s.add_step("lamp beeps", steps=3)
    assert len(s.results) == 1 and torch.equal(s.results[0].wave, before[0])


def test_bad_window_settings_are_refused_before_any_work(model, session_parts):
    from nag_core.errors import ConfigError
    from nag_core.pipeline import FoleySession
    features, _ = session_parts
    with pytest.raises(ConfigError, match="windows_per_batch"):
        FoleySession(model, None, features=features, windows_per_batch=0)
    with pytest.raises(ConfigError, match="overlap"):
        FoleySession(model, None, features=features, window_overlap=WINDOW)


def test_cli_generates_the_whole_video_in_windows_and_records_them(models, tmp_path):
    from nag_core import cli
    from nag_core.demo import write_video
    g = torch.Generator().manual_seed(2)
    frames = (torch.rand(76, 32, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
    path = write_video(tmp_path / "v.mp4", frames, 25)
    out = tmp_path / "out"
    assert cli.main(["generate", str(path), "--prompt", "a ball", "--prompt", "a lamp",
                     "--duration", "all", "--steps", "1", "--models", str(models), "--offline",
                     "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["input"]["duration_requested"] is None
    duration = record["input"]["duration"]
    windows = record["windows"]
    assert windows["window_seconds"] == WINDOW and len(windows["windows"]) >= 2
    assert windows["windows"][0]["start_s"] == 0.0
    assert windows["windows"][-1]["end_s"] == pytest.approx(duration)
    for step in record["steps"]:
        assert step["samples"] == int(round(duration * step["sample_rate"]))
    assert record["composite"]["samples"] == record["steps"][0]["samples"]


def test_duration_all_and_bad_durations_on_the_command_line():
    from nag_core import cli
    p = cli.build_parser()
    base = ["generate", "v.mp4", "--prompt", "x"]
    assert p.parse_args(base + ["--duration", "all"]).duration is None
    assert p.parse_args(base + ["--duration", "20"]).duration == 20.0
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--duration", "twenty"])
