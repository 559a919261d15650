"""Training under torch.distributed (gloo on CPU, 2 processes): the same weights as one process
with the same global batch, resuming with another number of processes, rank-0-only writing,
every process stopping when one fails, and torchrun end to end on world clips."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nag_core.controlnet import load_controlnet
from nag_core.smoke import tiny_network_config
from nag_core.train.distributed import World, share, world_from_env
from nag_core.train.extract import extract, read_index
from nag_core.train.loop import TrainConfig, Trainer, fit

from train_helpers import FakeEncoder, make_audio, make_video, tiny_base, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

SEG = 1.0
REPO = Path(__file__).resolve().parents[1]
JOIN_S = 300  # a generous bound on a worker's life: only a hang comes near it


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    make_video(d / "v1.mp4", 2.3, 440)
    make_video(d / "v2.mp4", 3.1, 660)
    make_audio(d / "a1.wav", 3.2, 330)
    c = tmp_path_factory.mktemp("cache")
    extract(d, c, FakeEncoder(tiny_network_config("16k")), SEG, progress=False)
    return c


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory):
    """One process, global batch 4 (4 x 1): what every multi-process run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    res = fit(cache, None, out, config(), network=tiny_base(duration=SEG), progress=False,
              world=World())
    return res, initial_weights(cache, out)


def config(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, accum=1, warmup_steps=1, num_blocks=2,
                checkpoint_every=2, ema_every=2, device="cpu", seed=3, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, size, port, cache, outs, cfg, kwargs, fail_at_step, result_dir):
    """One process of a run, started like torchrun starts one: by environment variables."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if fail_at_step is not None and rank == 1:
        original = Trainer.train_step

        def failing(self):
            if self.step == fail_at_step:
                raise ValueError("injected failure on rank 1")
            return original(self)

        Trainer.train_step = failing
    outcome = {"rank": rank}
    try:
        res = fit(cache, None, outs[rank], TrainConfig(**cfg), network=tiny_base(duration=SEG),
                  progress=False, **kwargs)
        outcome.update(ok=True, step=res.step)
    except Exception as e:  # reported to the test, which asserts on it
        outcome.update(ok=False, error=type(e).__name__, message=str(e))
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(outcome))


def run_processes(size, cache, outs, cfg: TrainConfig, tmp_path, fail_at_step=None, **kwargs):
    ctx = multiprocessing.get_context("spawn")
    cfg_dict = json.loads(cfg.to_json())
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, size, port, str(cache), [str(o) for o in outs],
                                               cfg_dict, kwargs, fail_at_step, str(tmp_path)))
             for r in range(size)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_S)
    alive = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not alive, f"processes {alive} hung"
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(size)]


def weights(path):
    return load_file(str(path))


def initial_weights(cache, tmp_path) -> dict:
    tr = Trainer(tiny_base(duration=SEG), load_cache_(cache), config(), tmp_path / "init",
                 progress=False)
    return {k: v.detach().clone() for k, v in tr.controlnet.state_dict().items()}


def assert_same(a: dict, b: dict, init: dict):
    """Equal up to float32 rounding of the gradient sums. Adam divides each gradient by its own
    running magnitude, so an element whose true gradient is ~0 moves by ±lr on rounding noise
    alone; elementwise closeness therefore cannot be asked. Per tensor, the two runs must differ
    by under 1 % of how far training moved the tensor (measured: < 0.07 %; a wrong data split,
    a missing gradient average or another global batch gives tens of %)."""
    assert a.keys() == b.keys()
    for k in a:
        moved = float((a[k] - init[k]).norm())
        assert moved > 0, k
        assert float((a[k] - b[k]).norm()) < 1e-2 * moved, k


def test_world_from_env_and_share():
    assert world_from_env({}) == World(0, 1, 0)
    w = world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (w.rank, w.size, w.local_rank, w.is_main) == (3, 4, 1, False)
    from nag_core.errors import ConfigError
    with pytest.raises(ConfigError, match="outside WORLD_SIZE"):
        world_from_env({"RANK": "2", "WORLD_SIZE": "2"})
    items = list(range(7))
    parts = [share(items, World(r, 3, r)) for r in range(3)]
    assert sorted(sum(parts, [])) == items and parts[0] == [0, 3, 6]


def test_two_processes_equal_one_and_only_rank0_writes(cache, reference, tmp_path):
    one, init = reference
    outs = [tmp_path / "two", tmp_path / "rank1-out"]
    results = run_processes(2, cache, outs, config(batch_size=2), tmp_path)
    assert all(r["ok"] and r["step"] == 4 for r in results), results
    assert not outs[1].exists()  # rank 1 wrote nothing (no folder, no logs, no weights)
    assert_same(weights(one.controlnet_path), weights(outs[0] / "controlnet.safetensors"), init)
    for p in one.ema_paths:
        assert_same(weights(p), weights(outs[0] / p.name), init)
    assert sorted(p.name for p in (outs[0] / "ema").iterdir()) == sorted(
        p.name for p in (one.out_dir / "ema").iterdir())
    rows1 = [json.loads(x) for x in (one.out_dir / "loss.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (outs[0] / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows2] == [1, 2, 3, 4]  # one row per step, written once
    assert [r["loss"] for r in rows2] == pytest.approx([r["loss"] for r in rows1], rel=1e-5)


def test_two_processes_stopped_then_resumed_with_one(cache, reference, tmp_path):
    ref, init = reference
    out = tmp_path / "run"
    # 2 processes x batch 1 x accum 2 (gradients synchronised only at the last micro-batch)
    results = run_processes(2, cache, [out, tmp_path / "rank1-out"],
                            config(batch_size=1, accum=2), tmp_path, stop_after=2)
    assert all(r["ok"] and r["step"] == 2 for r in results), results
    ckpt = torch.load(str(out / "checkpoints" / "step-00000002.pt"), weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["sampler_drawn"] == 2 * 4  # 2 steps x global 4
    resumed = fit(cache, None, out, config(batch_size=2, accum=2), network=tiny_base(
        duration=SEG), progress=False, resume=True, world=World())
    assert resumed.step == 4
    assert_same(weights(ref.controlnet_path), weights(resumed.controlnet_path), init)
    for p in ref.ema_paths:
        assert_same(weights(p), weights(out / p.name), init)


def test_a_failing_process_stops_every_process(cache, tmp_path):
    out = tmp_path / "run"
    results = run_processes(2, cache, [out, out], config(batch_size=2, checkpoint_every=100),
                            tmp_path, fail_at_step=1, timeout_minutes=1.0)
    assert results[1]["ok"] is False and results[1]["error"] == "ValueError"
    assert results[0]["ok"] is False and results[0]["error"] == "PeerFailure", results[0]
    assert results[0]["message"].startswith("rank 0 stopped: another process")
    assert not (out / "controlnet.safetensors").exists()


def test_validation_on_held_out_clips(cache, tmp_path):
    data_clips = sorted({Path(p).name for p in read_pair_clips(cache)})
    cfg = config(val_list=(data_clips[0],), val_every=2, ema_every=0)
    tr = Trainer(tiny_base(duration=SEG), load_cache_(cache), cfg, tmp_path, progress=False)
    held = set(Path(c).name for c in tr.val_data.pair_clips)
    assert held == {data_clips[0]}
    assert not held & {Path(c).name for c in tr.data.pair_clips}  # whole clips held out
    first = tr.validation_loss()
    assert first == tr.validation_loss()  # fixed t and noise
    res = tr.run()
    rows = [json.loads(x) for x in (tmp_path / "loss.jsonl").read_text().splitlines()]
    vals = {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}
    assert sorted(vals) == [2, 4] and res.step == 4
    assert vals[4] != first
    # the number does not depend on the training seed's noise: a fresh trainer agrees
    fresh = Trainer(tiny_base(duration=SEG), load_cache_(cache), config(
        val_list=(data_clips[0],), seed=99), tmp_path / "x", progress=False)
    assert fresh.validation_loss() == pytest.approx(first, rel=1e-6)


def read_pair_clips(cache):
    index = read_index(cache)
    return [index["sources"][k]["path"] for k, _, _ in index["current"]["pairs"]]


def load_cache_(cache):
    from nag_core.train.dataset import load_cache
    return load_cache(cache)


# --------------------------------------------------------------------------- torchrun, real CLI
def _torchrun(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "nag_core.train", *map(str, args), "--no-progress"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=JOIN_S)


def _strip_run(index):
    index = json.loads(json.dumps(index))
    for entry in index["sources"].values():
        entry.pop("path", None)  # the copies live in two folders
    index["current"].pop("data")
    return index


def test_torchrun_extract_and_fit_on_world_clips(tmp_path):
    from bench.world.export import export
    from nag_core.mmaudio.network_loading import load_network
    from nag_core.train.extract import ModelSegmentEncoder
    from nag_core.weights import find_model_files

    models = REPO / "nag_core" / "assets" / "world"
    data = tmp_path / "data"
    export(data, 3, duration=8.0)
    (data / "damaged.mkv").write_bytes(b"\x1aE\xdf\xa3 not really a video")
    serial_data = tmp_path / "serial-data"
    shutil.copytree(data, serial_data)

    r = _torchrun("extract", "--data", data, "--models", models, "--variant", "small_16k",
                  "--cache", tmp_path / "cache", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 unreadable" in r.stdout and "damaged.mkv" in r.stdout
    assert not list((tmp_path / "cache").glob("index.journal-*"))

    files = find_model_files(models, "small_16k")
    serial = extract(serial_data, tmp_path / "serial", ModelSegmentEncoder.from_files(files),
                     progress=False)
    assert len(serial.unreadable) == 1
    par, ser = read_index(tmp_path / "cache"), read_index(tmp_path / "serial")
    # same entries and pairs (keys hash the file identity: compare by file name)
    names = {k: Path(e["path"]).name for k, e in par["sources"].items()}
    names_s = {k: Path(e["path"]).name for k, e in ser["sources"].items()}
    assert sorted(names.values()) == sorted(names_s.values())
    by_name = {names[k]: e for k, e in _strip_run(par)["sources"].items()}
    by_name_s = {names_s[k]: e for k, e in _strip_run(ser)["sources"].items()}
    for name in by_name:
        e, es = dict(by_name[name]), dict(by_name_s[name])
        e.pop("shard", None), es.pop("shard", None)
        if e.get("skipped"):
            e["skipped"] = es["skipped"] = "same clip"  # the message names the folder
        assert e == es, name
    assert ([[names[k], t, c] for k, t, c in par["current"]["pairs"]]
            == [[names_s[k], t, c] for k, t, c in ser["current"]["pairs"]])
    for k, e in par["sources"].items():
        if e.get("shard"):
            ks = next(k2 for k2, n in names_s.items() if n == names[k])
            a = load_file(str(tmp_path / "cache" / e["shard"]))
            b = load_file(str(tmp_path / "serial" / ser["sources"][ks]["shard"]))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    out = tmp_path / "run"
    r = _torchrun("fit", "--cache", tmp_path / "cache", "--models", models, "--out", out,
                  "--steps", 2, "--batch-size", 2, "--warmup-steps", 1, "--num-blocks", 2,
                  "--ema-every", 0, "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world size 2" in r.stderr and "global batch 4" in r.stderr
    assert r.stdout.count("ControlNet written to") == 1  # rank 0 reports, once
    net, _ = load_network(files.network)
    cn = load_controlnet(out / "controlnet.safetensors", net)
    assert cn.config.num_blocks == 2
