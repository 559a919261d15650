"""The training loop: schedule, learning, frozen base, resume == uninterrupted, outputs, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from nag_core.controlnet import controlnet_flow, load_controlnet
from nag_core.errors import ConfigError
from nag_core.smoke import tiny_network_config
from nag_core.train.__main__ import main
from nag_core.train.dataset import load_cache
from nag_core.train.extract import extract
from nag_core.train.loop import TrainConfig, Trainer, fit, lr_factor

from train_helpers import FakeEncoder, make_audio, make_video, tiny_base, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

SEG = 1.0


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    make_video(d / "v1.mp4", 2.3, 440)
    make_video(d / "v2.mp4", 3.1, 660)
    make_audio(d / "a1.wav", 2.2, 330)
    c = tmp_path_factory.mktemp("cache")
    extract(d, c, FakeEncoder(tiny_network_config("16k")), SEG, progress=False)
    return c


def small_config(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=3, accum=2, warmup_steps=2, num_blocks=2, checkpoint_every=2,
                ema_every=2, device="cpu", seed=5)
    base.update(kw)
    return TrainConfig(**base)


def trainer(cache, out, **kw) -> Trainer:
    net = tiny_base(duration=SEG)
    return Trainer(net, load_cache(cache), small_config(**kw), out, progress=False)


def test_lr_schedule_hand_values():
    cfg = TrainConfig(steps=100, warmup_steps=10)
    got = [lr_factor(s, cfg) for s in (0, 4, 9, 50, 79, 80, 89, 90, 99)]
    assert got == pytest.approx([0.1, 0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01], abs=1e-12)
    paper = TrainConfig(steps=200_000)  # 1k warm-up, decay at 160k and 180k
    assert lr_factor(499, paper) == 0.5 and lr_factor(159_999, paper) == 1.0
    assert lr_factor(160_000, paper) == pytest.approx(0.1)
    assert lr_factor(180_000, paper) == pytest.approx(0.01)
    assert TrainConfig().lr == 1e-4 and TrainConfig().betas == (0.9, 0.95)
    assert TrainConfig().weight_decay == 1e-6


def test_optimiser_lr_follows_schedule(cache, tmp_path):
    tr = trainer(cache, tmp_path, steps=10, warmup_steps=4, lr=1e-3)
    lrs = []
    for _ in range(10):
        lrs.append(tr.optimizer.param_groups[0]["lr"])
        tr.train_step()
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-4, 1e-5])


def test_training_lowers_the_loss_on_a_fixed_batch(cache, tmp_path):
    tr = trainer(cache, tmp_path, batch_size=8, accum=1, lr=3e-3, warmup_steps=0, grad_clip=0)
    idx = torch.arange(8)

    def fixed_loss():  # the noise of an example is a function of its position (0..7 here)
        with torch.no_grad():
            return float(tr.micro_batch_loss(idx, torch.arange(100, 108)))

    before = fixed_loss()
    for _ in range(25):
        tr.sampler.drawn = 0  # first epoch of batch 8 = every pair, the same noise each time
        tr.train_step()
    after = fixed_loss()
    assert after < 0.8 * before, (before, after)


def test_base_frozen_bit_identical_and_only_controlnet_gets_gradients(cache, tmp_path):
    tr = trainer(cache, tmp_path)
    base = {k: v.clone() for k, v in tr.network.state_dict().items()}
    cn0 = {k: v.clone() for k, v in tr.controlnet.state_dict().items()}
    for _ in range(3):
        tr.train_step()
        assert all(p.grad is None and not p.requires_grad for p in tr.network.parameters())
        assert all(p.grad is not None for p in tr.controlnet.parameters())
    for k, v in tr.network.state_dict().items():
        assert torch.equal(v, base[k]), k
    changed = [k for k, v in tr.controlnet.state_dict().items() if not torch.equal(v, cn0[k])]
    assert set(changed) == set(cn0)  # every ControlNet tensor trains
    ids = {id(p) for p in tr.network.parameters()}
    assert not any(id(p) in ids for g in tr.optimizer.param_groups for p in g["params"])


def _params(path):
    return load_file(str(path))


def test_stop_and_resume_equals_uninterrupted_run(cache, tmp_path):
    cfg = small_config()
    full = fit(cache, None, tmp_path / "a", cfg, network=tiny_base(duration=SEG), progress=False)
    part = fit(cache, None, tmp_path / "b", cfg, network=tiny_base(duration=SEG), progress=False,
               stop_after=3)
    assert part.controlnet_path is None and part.step == 3
    resumed = fit(cache, None, tmp_path / "b", cfg, network=tiny_base(duration=SEG),
                  progress=False, resume=True)
    assert resumed.step == full.step == 6
    a, b = _params(full.controlnet_path), _params(resumed.controlnet_path)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for pa, pb in zip(full.ema_paths, resumed.ema_paths):
        ea, eb = _params(pa), _params(pb)
        assert all(torch.equal(ea[k], eb[k]) for k in ea)
    rows = [json.loads(x) for x in (tmp_path / "b" / "loss.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "a" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert [(r["loss"], r["lr"]) for r in rows] == [(r["loss"], r["lr"]) for r in ref]
    # EMA snapshots every 2 steps; 2 checkpoints kept
    assert sorted(p.name for p in (tmp_path / "a" / "ema").iterdir()) == [
        "ema-00000002.safetensors", "ema-00000004.safetensors", "ema-00000006.safetensors"]
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == [
        "step-00000004.pt", "step-00000006.pt"]


def test_resume_guards(cache, tmp_path):
    fit(cache, None, tmp_path, small_config(), network=tiny_base(duration=SEG), progress=False,
        stop_after=2)
    with pytest.raises(ConfigError, match="--resume"):
        fit(cache, None, tmp_path, small_config(), network=tiny_base(duration=SEG),
            progress=False)
    with pytest.raises(ConfigError, match="global batch would change from 6 .* to 8"):
        fit(cache, None, tmp_path, small_config(batch_size=4), network=tiny_base(duration=SEG),
            progress=False, resume=True)
    with pytest.raises(ConfigError, match="seed 5 -> 6"):
        fit(cache, None, tmp_path, small_config(seed=6), network=tiny_base(duration=SEG),
            progress=False, resume=True)
    # the same global batch split otherwise (batch 6 x accum 1 instead of 3 x 2) resumes
    res = fit(cache, None, tmp_path, small_config(batch_size=6, accum=1),
              network=tiny_base(duration=SEG), progress=False, resume=True)
    assert res.step == 6 and res.controlnet_path.is_file()


def test_saved_controlnet_loads_and_gives_identical_outputs(cache, tmp_path):
    tr = trainer(cache, tmp_path, steps=3, ema_every=1)
    result = tr.run()
    net = tiny_base(duration=SEG)
    loaded = load_controlnet(result.controlnet_path, net)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, net.latent_seq_len, 20, generator=g)
    x_cond = torch.randn(2, net.latent_seq_len, 20, generator=g)
    t = torch.tensor([0.2, 0.7])
    with torch.no_grad():
        cond = tr._conditions(torch.tensor([0, 1]))
        ref = controlnet_flow(tr.network, tr.controlnet, x, t, cond, x_cond)
        out = controlnet_flow(net, loaded, x, t, cond, x_cond)
        base = net.predict_flow(x, t, cond)
    assert torch.equal(out, ref) and not torch.equal(out, base)
    for p in result.ema_paths:
        load_controlnet(p, net)

    # post-hoc EMA via the CLI: sigma 0.05 at the last step equals the tracked 0.05 profile
    assert main(["synthesize-ema", "--out", str(tmp_path), "--sigma-rel", "0.05"]) == 0
    synth = tmp_path / "controlnet_posthoc_sigma0.050.safetensors"
    load_controlnet(synth, net)
    tracked, posthoc = _params(result.ema_paths[0]), _params(synth)
    for k in tracked:
        torch.testing.assert_close(posthoc[k], tracked[k], rtol=0, atol=1e-5)
    assert main(["synthesize-ema", "--out", str(tmp_path), "--sigma-rel", "0.08"]) == 0


def test_cli_errors(cache, tmp_path, capsys):
    code = main(["fit", "--cache", str(cache), "--models", str(tmp_path / "none"), "--out",
                 str(tmp_path / "o"), "--steps", "1", "--no-progress"])
    assert code == 2 and "missing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = main(["extract", "--data", str(tmp_path / "empty"), "--models", str(tmp_path),
                 "--cache", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "no clips found" in err
