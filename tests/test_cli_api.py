"""The Python API (nag_core.load / load_video / FoleySession), the light `import nag_core`, the
weight-hash cache and output names."""

import subprocess
import sys
from pathlib import Path

import pytest

import nag_core
from nag_core import filehash
from nag_core.run_folder import slug, track_name
from nag_core.demo import demo_frames, write_demo_video
from nag_core.errors import WeightsError
from nag_core.smoke import write_smoke_models

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_light():
    code = ("import sys, nag_core; heavy = [m for m in ('torch', 'av', 'pyloudnorm', 'numpy') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_readme_python_example(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_smoke_models(tmp_path / "models")
    video = write_demo_video(tmp_path / "v.mp4", seconds=1.0, size=64)

    model = nag_core.load("small_16k", models_dir=tmp_path / "models", device="cpu",
                          offline=True)
    clip = nag_core.load_video(video, start=0.0, duration=1.0)
    session = nag_core.FoleySession(model, clip)
    session.add_step("a ball bounces", seed=1, steps=1)
    session.add_step("a lamp beeps", seed=2, steps=1, method="negative_prompt")
    first = session.tracks[0].clone()
    session.redo_step(2, prompt="rain falls")
    mix = session.composite()
    nag_core.write_audio(tmp_path / "mix.wav", mix.wave, mix.sample_rate)
    nag_core.mux_audio_into_video(video, mix.wave, mix.sample_rate, tmp_path / "v_foley.mp4")

    assert bool((session.tracks[0] == first).all())
    assert [r.method_used for r in session.results] == ["cfg", "negative_prompt"]
    assert session.results[1].settings.prompt == "rain falls"
    assert mix.wave.shape[-1] == 16000 and (tmp_path / "v_foley.mp4").is_file()


def test_load_offline_without_weights_names_the_files(tmp_path):
    with pytest.raises(WeightsError, match="mmaudio_small_16k.pth"):
        nag_core.load(models_dir=tmp_path, offline=True)


def test_weight_hash_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    f = tmp_path / "w.pth"
    f.write_bytes(b"abc")
    calls = []
    real = filehash.sha256_file
    monkeypatch.setattr(filehash, "sha256_file", lambda p: calls.append(p) or real(p))
    first = filehash.cached_sha256(f)
    assert filehash.cached_sha256(f) == first and len(calls) == 1  # second time from the cache
    assert (tmp_path / "cache" / "nag-foley" / filehash.CACHE_NAME).is_file()
    f.write_bytes(b"abcd")  # new size: hashed again
    assert filehash.cached_sha256(f) != first and len(calls) == 2


def test_track_names():
    assert track_name(3, "Rain falls, on a TIN roof!") == "track_03_rain-falls-on-a-tin-roof.wav"
    assert slug("日本") == "track" and len(slug("x" * 200)) == 40


def test_demo_frames_move_and_blink():
    frames = demo_frames(seconds=2.0, fps=25, size=64)
    assert frames.shape == (50, 64, 64, 3) and frames.dtype.__str__() == "torch.uint8"
    lamp_on, lamp_off = frames[0, 22, 48].float().sum(), frames[13, 22, 48].float().sum()
    assert lamp_on > lamp_off + 100  # the lamp blinks at 1 Hz
    assert not bool((frames[0] == frames[10]).all())  # the ball moves
