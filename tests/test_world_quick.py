"""End-to-end world proof at --quick size, run as the one command a user runs
(``python -m bench.world.evaluate --quick``): render, train VAE / vocoder / base / ControlNet,
write the model set in the real layout, reload it with the product loaders, generate the chain
with the three methods and print the table.

About a minute of CPU time (the table's six methods and the diagnosis included): the strongest
integration test of the training code, so it runs with the suite. The subprocess limits are hang
guards for a shared machine, not timings. Run as a subprocess from the checkout, exactly as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_world_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench.world.evaluate", "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(c) NAG β=1.5" in proc.stdout and "(a) independent CFG" in proc.stdout
    assert "(d) text NAG (no ControlNet) β=1.5" in proc.stdout and "(e) oracle" in proc.stdout
    assert proc.stdout.count("Checks: ") == 2
    assert 'Step 1 "ball bounces" (CFG), step 2 "lamp beeps"' in proc.stdout  # the order
    result = json.loads((tmp_path / "results.json").read_text())
    assert set(result["summary"]) == {"ball_then_lamp", "lamp_then_ball"}
    for order in result["summary"].values():
        assert {"step1", "independent", "negative_prompt", "nag_b1.5", "text_nag_b1.5",
                "oracle_b1.5"} <= set(order)
    models = tmp_path / "models"
    for name in ("mmaudio_small_16k.pth", "v1-16.pth", "best_netG.pt",
                 "synchformer_state_dict.pth", "nag_controlnet_world.safetensors"):
        assert (models / name).is_file(), name
    from bench.world.models import DURATION
    from nag_core.windows import trained_duration
    assert trained_duration(models) == DURATION  # write_model_set says what it was trained on

    # the diagnosis of issue 14 item 4 runs on the same set (2 videos, 2 held-out clips)
    proc = subprocess.run([sys.executable, "-m", "bench.world.diagnose", "--models", str(models),
                           "--videos", "2", "--held-out-clips", "2",
                           "--out", str(tmp_path / "diag.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diag = json.loads((tmp_path / "diag.json").read_text())
    assert set(diag["branches"]) == {"ball_then_lamp", "lamp_then_ball"}
    losses = diag["held_out_loss"]
    assert losses["base_u(V,∅)"] > 0 and losses["controlnet_u_ctrl"] > 0
    assert "u_ctrl(V,∅,x_cond = true lamp track)" in proc.stdout


def test_a_run_continued_from_a_set_writes_a_whole_set_with_that_sets_vae(tmp_path):
    # --init-from keeps the set's encoders and VAE (the VAE file is copied: a loaded VAE keeps no
    # raw weights to save) and needs no ControlNet in it
    import shutil

    from nag_core.world.assets import CONTROLNET_FILE, world_models_dir
    start = tmp_path / "start"
    shutil.copytree(world_models_dir(), start)
    (start / CONTROLNET_FILE).unlink()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "bench.world.evaluate", "--quick", "--out",
                           str(out), "--init-from", str(start), "--train-only", "--jobs", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    models = out / "models"
    assert (models / "v1-16.pth").read_bytes() == (start / "v1-16.pth").read_bytes()
    assert (models / CONTROLNET_FILE).is_file()
    from bench.world.evaluate import load_model_set
    model, cn = load_model_set(models)
    assert cn is not None and model.vae is not None
