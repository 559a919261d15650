"""Run folders at the boundary a user hits (the CLI's main(argv) and a real subprocess): a run
never touches files it did not write, becomes visible only when complete, survives SIGINT and
SIGKILL, and no name read from record.json leads outside its folder."""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from nag_core import cli
from nag_core.demo import write_demo_video
from nag_core.errors import MediaWarning
from nag_core.media import write_audio
from nag_core.smoke import write_smoke_models

ROOT = Path(__file__).resolve().parents[1]
VIDEO_SECONDS = 2.0
START, DURATION = 0.5, 1.0


def _snapshot(folder: Path) -> dict:
    """Every entry of a folder (hidden ones too): name -> (sha256, inode, mtime)."""
    out = {}
    for p in sorted(folder.iterdir()):
        st = p.stat()
        out[p.name] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_ino, st.st_mtime_ns)
    return out


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def _container_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        return float(c.duration) / av.time_base


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Smoke weights, a 2 s video, and one earlier 2-step run in <root>/runs/o (1 Euler step,
    the 1 s segment from 0.5 s), with a file of the user's inside it."""
    root = tmp_path_factory.mktemp("runs")
    models = root / "models"
    write_smoke_models(models)
    video = write_demo_video(root / "in" / "clip.mp4", seconds=VIDEO_SECONDS, size=64)
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
    out = root / "runs" / "o"
    assert cli.main(["generate", str(video), "--out", str(out), "--models", str(models),
                     "--offline", "--prompt", "a ball bounces", "--prompt", "a lamp beeps",
                     "--steps", "1", "--start", str(START), "--duration", str(DURATION),
                     "--quiet"]) == 0
    # the user's own file in the run folder, named like a track of ours
    write_audio(out / "track_01_interview.wav", __import__("torch").zeros(1, 1600), 16000)
    yield {"root": root, "models": models, "video": video, "out": out}
    mp.undo()


def _cli(env, *args):
    return ["generate", str(env["video"]), "--models", str(env["models"]), "--offline",
            "--steps", "1", "--duration", str(DURATION), "--quiet", *args]


def _copy(env, tmp_path, name="o") -> Path:
    dst = tmp_path / name
    shutil.copytree(env["out"], dst)
    return dst


def _interruptible():
    """Run in the child before exec: Ctrl-C acts as in a terminal. A test run started in the
    background by a shell (`pytest &`, nohup, some CI runners) inherits SIGINT ignored, Python
    then keeps it ignored, and the SIGINT test saw the run finish with return code 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _subprocess(env, argv):
    e = dict(os.environ, PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(env["root"] / "cache"))
    return subprocess.Popen([sys.executable, "-m", "nag_core", *argv], cwd=env["root"], env=e,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible)


def _signal_after(proc, line_start: str, sig) -> str:
    """Send ``sig`` once the process has logged a line starting with ``line_start``."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(line_start):
            proc.send_signal(sig)
            break
    else:
        pytest.fail("the run ended before logging " + repr(line_start) + ":\n" + "".join(seen))
    rest = proc.stderr.read()
    proc.wait(timeout=300)
    return "".join(seen) + rest


# --------------------------------------------------------------------------- generate
def test_the_scored_segment_is_the_default_video(env):
    record = json.loads((env["out"] / "record.json").read_text())
    video_out = env["out"] / record["video_out"]["file"]
    assert record["video_out"]["span"] == "segment"
    assert record["video_out"]["start"] == START
    assert _container_seconds(video_out) == pytest.approx(DURATION, abs=0.05)
    assert _container_seconds(env["video"]) == pytest.approx(VIDEO_SECONDS, abs=0.05)


def test_a_short_input_is_named_in_the_record_and_kept_by_a_redo(env, tmp_path):
    """A video shorter than asked is a MediaWarning at the run and the same line in the
    record's ``warnings`` (a redo decodes it again and records it again); a run that got what
    it asked for records none."""
    assert json.loads((env["out"] / "record.json").read_text())["warnings"] == []
    o = tmp_path / "short"
    asked = VIDEO_SECONDS + 6.0
    argv = ["generate", str(env["video"]), "--models", str(env["models"]), "--offline",
            "--steps", "1", "--start", str(START), "--duration", str(asked), "--quiet",
            "--out", str(o), "--prompt", "a ball bounces"]
    with pytest.warns(MediaWarning) as shown:
        assert cli.main(argv) == 0
    record = json.loads((o / "record.json").read_text())
    said = [str(w.message) for w in shown if issubclass(w.category, MediaWarning)]
    assert record["warnings"] == said and len(said) == 1, (record["warnings"], said)
    used = record["input"]["duration"]
    assert used < VIDEO_SECONDS - START + 1e-9
    assert said[0].startswith(f"{env['video'].name}: used {used:.3f} s of the {asked:g} s asked "
                              f"from {START:g} s: the source ends there")
    with pytest.warns(MediaWarning):
        assert cli.main(["redo", str(o), "--step", "1", "--seed", "9", "--offline",
                         "--quiet"]) == 0
    assert json.loads((o / "record.json").read_text())["warnings"] == said


def test_generate_into_a_used_folder_touches_nothing_there(env, tmp_path, capsys):
    o = _copy(env, tmp_path)
    before = _snapshot(o)
    assert cli.main(_cli(env, "--out", str(o), "--prompt", "rain falls")) == 0
    assert _snapshot(o) == before  # the user's track_01_interview.wav and the earlier run
    new = tmp_path / "o-2"
    record = json.loads((new / "record.json").read_text())
    assert [s["prompt"] for s in record["steps"]] == ["rain falls"]
    assert _siblings(o) == ["o", "o-2"]  # no staging folder left
    assert str(new) in capsys.readouterr().err


def test_sigint_after_track_1_leaves_the_earlier_run_whole(env, tmp_path):
    o = _copy(env, tmp_path)
    before = _snapshot(o)
    proc = _subprocess(env, _cli(env, "--out", str(o), "--prompt", "x", "--prompt", "y",
                                 "--prompt", "z"))
    err = _signal_after(proc, "step 1:", signal.SIGINT)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert _snapshot(o) == before
    assert _siblings(o) == ["o"]  # no half run, no staging folder


def test_sigkill_in_step_3_then_redo_of_the_earlier_run_works(env, tmp_path):
    o = _copy(env, tmp_path)
    before = _snapshot(o)
    proc = _subprocess(env, _cli(env, "--out", str(o), "--prompt", "x", "--prompt", "y",
                                 "--prompt", "z"))
    _signal_after(proc, "step 2:", signal.SIGKILL)
    assert _snapshot(o) == before
    visible = [n for n in _siblings(o) if not n.startswith(".")]
    assert visible == ["o"]  # the killed run's folder stays hidden, never named o-2

    # a redo in place on the earlier run works, and keeps track 1 and the user's file as they
    # were (the same inode: linked, not rewritten); --whole-video muxes the whole source video
    assert cli.main(["redo", str(o), "--step", "2", "--steps", "1", "--prompt", "thunder",
                     "--offline", "--whole-video", "--quiet"]) == 0
    after = _snapshot(o)
    for name in ("track_01_a-ball-bounces.wav", "track_01_interview.wav"):
        assert after[name] == before[name]
    assert "track_02_a-lamp-beeps.wav" not in after and "track_02_thunder.wav" in after
    record = json.loads((o / "record.json").read_text())
    assert record["video_out"]["span"] == "whole"
    assert _container_seconds(o / record["video_out"]["file"]) == pytest.approx(
        VIDEO_SECONDS, abs=0.05)
    assert not [n for n in _siblings(o) if n.startswith(".o.redo-")]


def test_sigkill_during_an_in_place_redo_leaves_the_folder_as_it_was(env, tmp_path):
    o = _copy(env, tmp_path)
    before = _snapshot(o)
    proc = _subprocess(env, ["redo", str(o), "--step", "1", "--steps", "1", "--offline",
                             "--quiet"])
    _signal_after(proc, "step 1:", signal.SIGKILL)
    assert _snapshot(o) == before


class _FullDisk:
    """A file that takes half of what is written to it, then reports a full disk."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_disk_full_at_record_json_publishes_nothing(env, tmp_path, monkeypatch, capsys):
    import builtins
    real = builtins.open
    hit = []

    def full_at_record(file, mode="r", *a, **k):
        f = real(file, mode, *a, **k)
        name = Path(os.fspath(file)).name  # record.json, or the atomic writer's temp name
        is_record = name == "record.json" or (name.startswith(".record.") and
                                              name.endswith(".json"))
        if is_record and ("w" in mode or "x" in mode):
            hit.append(file)
            return _FullDisk(f)
        return f
    monkeypatch.setattr(builtins, "open", full_at_record)
    out = tmp_path / "new"
    assert cli.main(_cli(env, "--out", str(out), "--prompt", "a")) == 2
    err = capsys.readouterr().err
    assert hit and "disk is full" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # no run, no staging folder, no .record.json.*.tmp


# --------------------------------------------------------------------------- redo path safety
def _tamper(run: Path, edit) -> None:
    path = run / "record.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


def test_redo_never_deletes_a_file_outside_the_folder(env, tmp_path, capsys):
    o = _copy(env, tmp_path)
    victim = tmp_path / "VICTIM.txt"
    victim.write_text("mine")
    _tamper(o, lambda r: r["video_out"].update(file="../VICTIM.txt"))
    before = _snapshot(o)
    assert cli.main(["redo", str(o), "--step", "2", "--steps", "1", "--offline",
                     "--quiet"]) == 2
    assert victim.read_text() == "mine" and _snapshot(o) == before
    err = capsys.readouterr().err
    assert "'../VICTIM.txt'" in err and "not a plain file name" in err


def test_redo_to_never_writes_outside_its_target(env, tmp_path, capsys):
    o = _copy(env, tmp_path)
    outside = tmp_path / "x_outside.wav"
    shutil.copyfile(o / "track_01_a-ball-bounces.wav", outside)
    sha = hashlib.sha256(outside.read_bytes()).hexdigest()
    _tamper(o, lambda r: r["steps"][0].update(file="../x_outside.wav", sha256=sha))
    to = tmp_path / "elsewhere" / "to"
    assert cli.main(["redo", str(o), "--step", "2", "--to", str(to), "--offline",
                     "--quiet"]) == 2
    assert not (tmp_path / "elsewhere").exists()
    assert "not a plain file name" in capsys.readouterr().err


@pytest.mark.parametrize("record, expected", [
    ([], "not an object"),
    ({"format": "nag-foley-record"}, "'version'"),
    ("steps-oops", "'steps'"),
    ("no-seed", "has no 'seed'"),
    ("seed-text", "'seed'"),
])
def test_damaged_records_get_one_line(env, tmp_path, capsys, record, expected):
    o = _copy(env, tmp_path)
    if record == "steps-oops":
        _tamper(o, lambda r: r.update(steps="oops"))
    elif record == "no-seed":
        _tamper(o, lambda r: r["steps"][1].pop("seed"))
    elif record == "seed-text":
        _tamper(o, lambda r: r["steps"][0].update(seed="abc"))
    else:
        (o / "record.json").write_text(json.dumps(record))
    before = _snapshot(o)
    assert cli.main(["redo", str(o), "--step", "2", "--offline", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _snapshot(o) == before


# --------------------------------------------------------------------------- cheap checks first
@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a model would be loaded."""
    import nag_core.loading

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the cheap checks")
    monkeypatch.setattr(nag_core.loading, "load_variant", boom)


def _one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_an_audio_only_input_fails_before_the_models_load(env, tmp_path, capsys, no_loading):
    audio = tmp_path / "sound.mp4"
    write_audio(tmp_path / "sound.wav", __import__("torch").zeros(1, 16000), 16000)
    shutil.copyfile(tmp_path / "sound.wav", audio)
    code = cli.main(["generate", str(audio), "--out", str(tmp_path / "o"), "--models",
                     str(tmp_path / "no-weights"), "--offline", "--prompt", "a", "--quiet"])
    _one_line_error(capsys, code, "no video stream")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["missing", "folder", "late-start"])
def test_bad_inputs_fail_before_the_models_load(env, tmp_path, capsys, no_loading, case):
    video, extra = {"missing": (tmp_path / "nope.mp4", []),
                    "folder": (tmp_path, []),
                    "late-start": (env["video"], ["--start", str(VIDEO_SECONDS + 1)])}[case]
    code = cli.main(["generate", str(video), "--out", str(tmp_path / "o"), "--models",
                     str(env["models"]), "--offline", "--prompt", "a", "--quiet", *extra])
    _one_line_error(capsys, code, {"missing": "not found", "folder": "not a file",
                                   "late-start": "past the end"}[case])


@pytest.mark.parametrize("device, needle", [("cuda", "CPU-only"), ("bogus", "unknown device")])
def test_unusable_devices_get_one_line(env, tmp_path, capsys, no_loading, device, needle):
    import torch
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    code = cli.main(_cli(env, "--out", str(tmp_path / "o"), "--prompt", "a", "--device",
                         device))
    _one_line_error(capsys, code, needle, "--device cpu" if device == "cuda" else "cpu")


def test_a_seed_past_64_bits_is_refused(env, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(_cli(env, "--out", str(tmp_path / "o"), "--prompt", "a", "--seed",
                      str(2 ** 64)))
    assert e.value.code == 2 and "64-bit" in capsys.readouterr().err
    # the largest seed is fine for one step, but not when step 2 would need seed + 1
    code = cli.main(_cli(env, "--out", str(tmp_path / "o"), "--prompt", "a", "--prompt", "b",
                         "--seed", str(2 ** 64 - 1)))
    _one_line_error(capsys, code, "out of range")


def test_out_that_is_a_file_or_cannot_be_created(env, tmp_path, capsys, monkeypatch,
                                                  no_loading):
    f = tmp_path / "afile"
    f.write_text("mine")
    _one_line_error(capsys, cli.main(_cli(env, "--out", str(f), "--prompt", "a")), "is a file")
    _one_line_error(capsys, cli.main(_cli(env, "--out", str(f / "o"), "--prompt", "a")),
                    "is a file, not a folder")
    assert f.read_text() == "mine"

    import tempfile

    def read_only(*a, **k):  # root writes anywhere: make the read-only folder's refusal real
        raise PermissionError(errno.EACCES, "Permission denied", k.get("dir"))
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    _one_line_error(capsys, cli.main(_cli(env, "--out", str(tmp_path / "ro" / "o"),
                                          "--prompt", "a")), "permission denied")


def test_download_into_a_file(tmp_path, capsys):
    f = tmp_path / "models.txt"
    f.write_text("mine")
    _one_line_error(capsys, cli.main(["download", "--models", str(f)]), "is a file")
    assert f.read_text() == "mine"


def test_a_folder_where_a_weight_file_belongs(env, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(env["models"], models)
    (models / "v1-16.pth").unlink()
    (models / "v1-16.pth").mkdir()
    code = cli.main(_cli(env, "--out", str(tmp_path / "o"), "--prompt", "a", "--models",
                         str(models)))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{models / 'v1-16.pth'} is a directory, expected a file; remove or rename it" in err
    assert not (tmp_path / "o").exists() and (models / "v1-16.pth").is_dir()


def test_an_unreadable_models_subfolder(env, tmp_path, capsys, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(env["models"], models)
    locked = models / "apple"  # the CLIP's sub-folder
    real_stat, real_scandir = os.stat, os.scandir

    def denied(path):  # root reads anything: make the permission error real
        return not isinstance(path, int) and locked in Path(os.fsdecode(path)).parents
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: (
        _raise(PermissionError(errno.EACCES, "Permission denied", str(p))) if denied(p)
        else real_stat(p, *a, **k)))
    monkeypatch.setattr(os, "scandir", lambda p=".": (
        _raise(PermissionError(errno.EACCES, "Permission denied", str(p)))
        if denied(p) or (not isinstance(p, int) and Path(os.fsdecode(p)) == locked)
        else real_scandir(p)))
    for argv in (["list-models", "--models", str(models)],
                 _cli(env, "--out", str(tmp_path / "o"), "--prompt", "a", "--models",
                      str(models))):
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err, err
        if code == 2:
            assert "apple" in err and "ermission" in err, err


def _raise(e):
    raise e


# --------------------------------------------------------------------------- takes
def test_takes_then_choose_another(env, tmp_path, capsys):
    o = tmp_path / "takes"
    assert cli.main(_cli(env, "--out", str(o), "--prompt", "a ball bounces", "--prompt",
                         "a lamp beeps", "--takes", "2", "--seed", "5")) == 0
    record = json.loads((o / "record.json").read_text())
    for k, step in enumerate(record["steps"], start=1):
        assert step["takes"] == 2 and step["take"] == 0
        assert [t["seed"] for t in step["take_files"]] == [4 + k, 5 + k]
        for t in step["take_files"]:
            assert hashlib.sha256((o / t["file"]).read_bytes()).hexdigest() == t["sha256"]
        assert step["file"] == step["take_files"][0]["file"]
    assert (record["steps"][0]["take_files"][0]["sha256"]
            != record["steps"][0]["take_files"][1]["sha256"])
    before = _snapshot(o)

    # go on with take 1 of step 1: its files stay (the same inodes), step 2 is made again
    assert cli.main(["redo", str(o), "--step", "1", "--take", "1", "--offline", "--quiet"]) == 0
    after = _snapshot(o)
    new = json.loads((o / "record.json").read_text())
    one = new["steps"][0]
    assert one["take"] == 1 and one["file"] == one["take_files"][1]["file"]
    for t in one["take_files"]:
        assert after[t["file"]] == before[t["file"]]
    # the composite now mixes take 1 (step 2 is regenerated; without a ControlNet no method
    # listens to the earlier audio, so its bytes may stay the same)
    assert new["composite"]["sha256"] != record["composite"]["sha256"]
    assert new["steps"][1]["seed"] == record["steps"][1]["seed"]
    assert new["history"][-1]["action"] == "take"
    capsys.readouterr()

    code = cli.main(["redo", str(o), "--step", "1", "--take", "2", "--offline", "--quiet"])
    _one_line_error(capsys, code, "no take 2", "0..1")
    assert _snapshot(o) == after
