"""End to end: `python -m nag_core generate / redo / demo` on the smoke-test weights and the
synthetic demo video, checking every output file."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest

from nag_core import cli
from nag_core.defaults import AUTO_WITHOUT_CONTROLNET
from nag_core.demo import write_demo_video
from nag_core.smoke import write_smoke_models

PROMPTS = ["a ball bounces", "a lamp beeps", "rain falls"]
SECONDS = 2.0
RATE = 16000
ROOT = Path(__file__).resolve().parents[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _audio(path: Path):
    with av.open(str(path)) as c:
        frames = [f.to_ndarray() for f in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    return np.concatenate(frames, axis=1), rate


def _streams(path: Path):
    with av.open(str(path)) as c:
        video = [s for s in c.streams if s.type == "video"]
        audio = [s for s in c.streams if s.type == "audio"]
        n_frames = sum(1 for p in c.demux(video[0]) if p.size)
        dur = float(c.duration) / av.time_base if c.duration else None
    return len(video), len(audio), n_frames, dur


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Smoke weights, a 2 s synthetic video, and one generate run (shared by the tests)."""
    root = tmp_path_factory.mktemp("cli")
    models = root / "models"
    write_smoke_models(models)
    # --out is the input's folder: it holds a file, so the run goes to work-2 beside it and
    # the input survives untouched
    video = write_demo_video(root / "work" / "ball.mp4", seconds=SECONDS, size=64)
    before = _sha(video)
    out = video.parent
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
    argv = ["generate", str(video), "--out", str(out), "--models", str(models), "--offline",
            "--duration", str(SECONDS), "--steps", "2", "--seed", "3", "--quiet"]
    for p in PROMPTS:
        argv += ["--prompt", p]
    assert cli.main(argv) == 0
    yield {"root": root, "models": models, "video": video, "video_sha": before,
           "out": out.with_name("work-2")}
    mp.undo()


def test_tracks_exact_length_and_rate(env):
    record = json.loads((env["out"] / "record.json").read_text())
    names = [s["file"] for s in record["steps"]]
    assert names == ["track_01_a-ball-bounces.wav", "track_02_a-lamp-beeps.wav",
                     "track_03_rain-falls.wav"]
    for name in names:
        wave, rate = _audio(env["out"] / name)
        assert rate == RATE and wave.shape == (1, int(SECONDS * RATE))
        assert np.isfinite(wave).all() and np.abs(wave).max() > 0


def test_composite_is_minus_20_lufs(env):
    wave, rate = _audio(env["out"] / "composite.wav")
    assert rate == RATE and wave.shape[1] == int(SECONDS * RATE)
    lufs = pyloudnorm.Meter(rate).integrated_loudness(wave[0].astype(np.float64))
    assert abs(lufs - (-20.0)) < 0.2


def test_muxed_video_streams(env):
    out_video = env["out"] / "ball.foley.mp4"
    n_v, n_a, frames, dur = _streams(out_video)
    n_v_in, n_a_in, frames_in, dur_in = _streams(env["video"])
    assert (n_v, n_a) == (1, 1) and (n_v_in, n_a_in) == (1, 0)
    assert frames == frames_in == int(SECONDS * 25)
    assert dur == pytest.approx(dur_in, abs=0.05)


def test_record_contents(env):
    r = json.loads((env["out"] / "record.json").read_text())
    assert r["smoke_test_weights"] is True and "NOISE" in r["notes"][0]
    assert r["input"]["sha256"] == env["video_sha"] and r["input"]["duration"] == SECONDS
    assert r["model"]["variant"] == "small_16k" and r["model"]["sample_rate"] == RATE
    assert set(r["model"]["files"]) >= {"network", "vae", "vocoder", "synchformer", "clip"}
    assert all(len(f["sha256"]) == 64 for f in r["model"]["files"].values())
    auto = AUTO_WITHOUT_CONTROLNET  # no --controlnet: auto is the training-free default
    assert [s["method_used"] for s in r["steps"]] == ["cfg", auto, auto]
    assert [s["seed"] for s in r["steps"]] == [3, 4, 5]
    assert [s["prompt"] for s in r["steps"]] == PROMPTS
    assert r["settings"]["method"] == auto and r["controlnet"] is None
    for s in r["steps"]:
        assert s["sha256"] == _sha(env["out"] / s["file"]) and s["steps"] == 2
    assert r["composite"]["sha256"] == _sha(env["out"] / "composite.wav")
    assert r["composite"]["target_lufs"] == -20.0
    assert r["video_out"]["sha256"] == _sha(env["out"] / r["video_out"]["file"])
    assert len(r["timings"]["steps_s"]) == 3
    assert r["versions"]["nag_core"] and r["versions"]["torch"]
    assert r["command"][:2] == ["nag_core", "generate"]


def test_input_video_untouched_in_its_own_folder(env):
    assert _sha(env["video"]) == env["video_sha"]
    assert [p.name for p in env["video"].parent.iterdir()] == ["ball.mp4"]
    assert sorted(p.name for p in env["out"].iterdir()) == sorted(
        ["ball.foley.mp4", "composite.wav", "record.json",
         "track_01_a-ball-bounces.wav", "track_02_a-lamp-beeps.wav", "track_03_rain-falls.wav"])
    assert not [p for p in env["out"].parent.iterdir() if p.name.startswith(".")]


def test_redo_step_3_keeps_earlier_tracks_byte_identical(env, tmp_path):
    out = env["out"]
    before = {p.name: p.read_bytes() for p in out.glob("track_*.wav")}
    assert len(before) == 3
    redo = tmp_path / "redo"
    assert cli.main(["redo", str(out), "--to", str(redo), "--step", "3", "--prompt",
                     "thunder rolls", "--seed", "7", "--offline", "--quiet"]) == 0
    r = json.loads((redo / "record.json").read_text())
    assert [s["file"] for s in r["steps"]][2] == "track_03_thunder-rolls.wav"
    for name in ("track_01_a-ball-bounces.wav", "track_02_a-lamp-beeps.wav"):
        assert (redo / name).read_bytes() == before[name]
    assert r["steps"][2]["seed"] == 7 and r["history"][-1]["step"] == 3
    assert (redo / "track_03_thunder-rolls.wav").read_bytes() != before["track_03_rain-falls.wav"]

    # in place, with the original settings: the same bytes again (float WAVs make the
    # conditioning mix exactly the one of the first run), and tracks 1-2 are not rewritten
    mtimes = {n: (out / n).stat().st_mtime_ns for n in before}
    assert cli.main(["redo", str(out), "--step", "3", "--offline", "--quiet"]) == 0
    after = {p.name: p.read_bytes() for p in out.glob("track_*.wav")}
    assert after == before
    for n in ("track_01_a-ball-bounces.wav", "track_02_a-lamp-beeps.wav"):
        assert (out / n).stat().st_mtime_ns == mtimes[n]
    assert _sha(env["video"]) == env["video_sha"]


def test_redo_refuses_an_edited_earlier_track(env, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(env["out"], copy)
    with open(copy / "track_01_a-ball-bounces.wav", "ab") as f:
        f.write(b"\0\0")
    assert cli.main(["redo", str(copy), "--step", "2", "--offline", "--quiet"]) == 2


def test_missing_weights_offline_lists_files(env, tmp_path, capsys):
    empty = tmp_path / "nothing"
    code = cli.main(["generate", str(env["video"]), "--out", str(tmp_path / "o"), "--models",
                     str(empty), "--offline", "--prompt", "x", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0
    for name in ("mmaudio_small_16k.pth", "v1-16.pth", "best_netG.pt",
                 "synchformer_state_dict.pth", "open_clip_pytorch_model.bin"):
        assert str(empty / name) in err or name in err
    assert "offline" in err and "Traceback" not in err


def test_nag_without_controlnet_is_refused(env, tmp_path, capsys):
    code = cli.main(["generate", str(env["video"]), "--out", str(tmp_path / "o"), "--models",
                     str(env["models"]), "--offline", "--prompt", "a", "--prompt", "b",
                     "--method", "nag", "--quiet"])
    assert code == 2 and "--controlnet" in capsys.readouterr().err


def test_smoke_models_refuses_real_weights(tmp_path, capsys):
    (tmp_path / "mmaudio_small_16k.pth").write_bytes(b"real")
    assert cli.main(["smoke-models", str(tmp_path)]) == 2
    assert (tmp_path / "mmaudio_small_16k.pth").read_bytes() == b"real"
    assert "never overwritten" in capsys.readouterr().err


def test_demo_says_it_used_smoke_weights(tmp_path, monkeypatch, capsys):
    """`python -m nag_core demo` with no weights anywhere, not even the shipped world set
    (shortened to 1 s, 1 Euler step)."""
    import nag_core.world.assets as world_assets
    monkeypatch.setattr(world_assets, "WORLD_DIR", tmp_path / "no-world-set")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NAGFOLEY_MODELS_DIR", str(tmp_path / "no-weights-here"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--seconds", "1", "--steps", "1", "--quiet"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert "SMOKE-TEST WEIGHTS" in lines[0] and "NOISE" in lines[0]
    assert "SMOKE-TEST WEIGHTS" in lines[-1]
    out = tmp_path / "nag_foley_demo"
    record = json.loads((out / "record.json").read_text())
    assert record["smoke_test_weights"] is True and "NOISE" in record["notes"][0]
    assert (out / "nag_foley_demo.mp4").is_file() and (out / "nag_foley_demo.foley.mp4").is_file()
    assert len(list(out.glob("track_*.wav"))) == 3
    assert not (tmp_path / "no-weights-here").exists()  # nothing downloaded or written there


def test_module_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "nag_core", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for command in ("generate", "redo", "demo", "download", "list-models", "smoke-models"):
        assert command in proc.stdout


def test_demo_video_only(tmp_path, capsys):
    assert cli.main(["demo", "--video-only", "--out", str(tmp_path), "--seconds", "1"]) == 0
    n_v, n_a, frames, _ = _streams(tmp_path / "nag_foley_demo.mp4")
    assert (n_v, n_a, frames) == (1, 0, 25)
    assert list(tmp_path.iterdir()) == [tmp_path / "nag_foley_demo.mp4"]


def test_a_failed_generate_into_an_old_output_folder_deletes_nothing(env, tmp_path):
    import shutil
    out = tmp_path / "old"
    shutil.copytree(env["out"], out)
    before = sorted(p.name for p in out.iterdir())
    code = cli.main(["generate", str(env["video"]), "--out", str(out), "--models",
                     str(tmp_path / "no-weights"), "--offline", "--prompt", "one step", "--quiet"])
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == before  # tracks 2 and 3 of the old chain stay
