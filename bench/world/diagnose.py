"""Where NAG's effect is won or lost in the world (issue 14, item 4), measured on a trained model
set:

The step-1 object's track given to the ControlNet here is the true one (the object alone, as
the chain mixes it), so these numbers are about the estimator, not about step 1's quality.

1. **What each branch predicts.** On unseen ball + lamp videos, at a few flow times t, every
   branch's velocity u at x_t = (1 − t)·x0 + t·x1 (x1 = the true mix's latent) gives a clean
   estimate x̂1 = x_t + (1 − t)·u; decoded by the VAE, its mel says how much of each object the
   branch puts where (the detectors' event contrast, in dB). Branches: u(∅,∅), u(V,∅),
   u(V,C_2) (the step-2 prompt), u(V,C_1) (text NAG's negative), u_ctrl(V,∅,x_cond) (NAG's
   negative; x_cond = the true step-1 object's track, the mix as the chain builds it) and
   u(V_alone,C_1) (the oracle's negative: the video with the step-1 object alone).
   Also ‖u_ctrl − u(V,∅)‖ and ‖u(V,C_2) − u(V,∅)‖ (RMS per latent element), and how much each
   object band's power changes from u(V,∅)'s estimate to u_ctrl's (dB): how far the ControlNet
   moves the flow and in which bands.
2. **Held-out losses.** Flow-matching MSE on unseen 8 s clips (first and last 4 s windows, the
   ControlNet's training pairs): the base u(V_k, ∅) against the ControlNet u_ctrl(V_k, ∅,
   x_cond = the other window) at the same (x0, t): what the ControlNet knows beyond the base.

    python -m bench.world.diagnose --models nag_core/assets/world [--videos 8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nag_core.controlnet import controlnet_flow
from nag_core.world.scene import CAPTIONS, OBJECTS, P_SILENT

from . import models as M
from . import train as T
from .detectors import band_db, signature_report
from .evaluate import EVAL_SEED, ORDERS, alone_data, load_model_set

TIMES = (0.1, 0.3, 0.6)  # early times decide which sounds a sample gets
HELD_OUT_SEED = 30_000  # 8 s clips used neither for training (< 10000) nor for evaluation


def _fixed_inputs(model, data, order: str) -> dict:
    """What every flow time of one order shares: the clean latents x1, the step-1 object's
    videos alone (re-rendered and encoded) and its true track as x_cond."""
    leak = ORDERS[order][0]
    lat = T.window_posteriors(model, data)[0][:, 0]  # 4 s clips: one window each
    return {"x1": model.network.normalize(lat), "alone": alone_data(model, data, leak),
            "x_cond": T.mix_conditions(model, [c.tracks[leak] for c in data.clips])}


def _estimates(model, cn, data, order: str, t: float, gen: torch.Generator,
               fixed: dict) -> dict:
    """{branch: (x̂1 normalized latents, u)} at flow time t for one order (``fixed``:
    :func:`_fixed_inputs`)."""
    net = model.network
    b = len(data)
    leak, ask = ORDERS[order]
    x1 = fixed["x1"]
    x0 = torch.randn(x1.shape, generator=gen)
    xt = (1 - t) * x0 + t * x1
    tt = torch.full((b,), t)

    def text(obj):
        return model.encode_text([CAPTIONS[obj]]).expand(b, -1, -1)

    empty_text = net.get_empty_string_sequence(b)
    conds = {"u(∅,∅)": net.get_empty_conditions(b),
             "u(V,∅)": net.preprocess_conditions(data.clip_f, data.sync_f, empty_text),
             f"u(V,C_2 = {ask})": net.preprocess_conditions(data.clip_f, data.sync_f, text(ask)),
             f"u(V,C_1 = {leak})": net.preprocess_conditions(data.clip_f, data.sync_f,
                                                             text(leak))}
    alone = fixed["alone"]
    conds[f"u(V_{leak} alone,C_1)"] = net.preprocess_conditions(alone.clip_f, alone.sync_f,
                                                                 text(leak))
    out = {}
    with torch.no_grad():
        for name, c in conds.items():
            u = net.predict_flow(xt, tt, c)
            out[name] = (xt + (1 - t) * u, u)
        u = controlnet_flow(net, cn, xt, tt, conds["u(V,∅)"], fixed["x_cond"])
        out[f"u_ctrl(V,∅,x_cond = true {leak} track)"] = (xt + (1 - t) * u, u)
    return out


def branch_contents(model, cn, data, order: str, seed: int = 0) -> dict:
    """{t: {branch: {leak/ask event contrast (dB), object band changes vs u(V,∅) (dB)}}} and the
    velocity-difference norms."""
    leak, ask = ORDERS[order]
    gen = torch.Generator().manual_seed(seed)
    result = {}
    fixed = _fixed_inputs(model, data, order)
    for t in TIMES:
        est = _estimates(model, cn, data, order, t, gen, fixed)
        mels = {}
        with torch.no_grad():
            for name, (x1_hat, _) in est.items():
                lat = model.network.unnormalize(x1_hat).transpose(1, 2)
                mels[name] = model.vae.decode(lat).numpy()
        base_name = "u(V,∅)"
        rows = {}
        for name, mel in mels.items():
            reps = [signature_report(m, c) for m, c in zip(mel, data.clips)]
            change = {o: float(np.mean([band_db(m, o).mean() - band_db(b0, o).mean()
                                        for m, b0 in zip(mel, mels[base_name])]))
                      for o in OBJECTS}
            rows[name] = {f"{leak}_sync": float(np.nanmean([r[f"{leak}_sync"] for r in reps])),
                          f"{ask}_sync": float(np.nanmean([r[f"{ask}_sync"] for r in reps])),
                          "band_change_db_vs_u(V,∅)": change}
        u_base = est[base_name][1]
        norms = {name: float((u - u_base).pow(2).mean().sqrt()) for name, (_, u) in est.items()
                 if name != base_name}
        result[f"t={t:g}"] = {"branches": rows, "rms_velocity_change_vs_u(V,∅)": norms}
    return result


def held_out_losses(model, cn, clips: int = 8, draws: int = 4, seed: int = 0) -> dict:
    """Flow-matching MSE of the base (V_k, empty text) and of the ControlNet (V_k, empty text,
    x_cond = the other window at −20 LUFS, as in training) on unseen 8 s clips."""
    net = model.network
    data = T.build_data(model, range(HELD_OUT_SEED, HELD_OUT_SEED + clips), 8.0, p_silent=P_SILENT)
    x1_all = net.normalize(T.window_posteriors(model, data)[0])
    last = data.shifts - 1
    idx = torch.arange(len(data))
    x_cond = {j: T.mix_conditions(model, data.wave_windows(idx, torch.full_like(idx, j)))
              for j in (0, last)}
    empty = net.get_empty_string_sequence(len(data))
    gen = torch.Generator().manual_seed(seed)
    base, ctrl = [], []
    with torch.no_grad():
        for _ in range(draws):
            for tgt, cnd in ((0, last), (last, 0)):
                at = torch.full_like(idx, tgt)
                cond = net.preprocess_conditions(*data.video(idx, at), empty)
                xt, t, target = T.flow_batch(T.latent_windows(x1_all, idx, at), gen)
                base.append(F.mse_loss(net.predict_flow(xt, t, cond), target).item())
                ctrl.append(F.mse_loss(controlnet_flow(net, cn, xt, t, cond, x_cond[cnd]),
                                       target).item())
    return {"base_u(V,∅)": float(np.mean(base)), "controlnet_u_ctrl": float(np.mean(ctrl)),
            "clips": clips, "draws": draws}


def diagnose(folder: Path, videos: int = 8, first_seed: int = EVAL_SEED,
             held_out_clips: int = 8) -> dict:
    torch.set_num_threads(1)
    model, cn = load_model_set(folder)
    data = T.build_data(model, range(first_seed, first_seed + videos), M.DURATION,
                        objects=("ball", "lamp"))
    out = {"branches": {o: branch_contents(model, cn, data, o) for o in ORDERS},
           "held_out_loss": held_out_losses(model, cn, held_out_clips)}
    return out


def report(d: dict) -> str:
    lines = []
    for order, by_t in d["branches"].items():
        leak, ask = ORDERS[order]
        lines += ["", f"{order}: clean estimates x̂1 of each branch (VAE mel; event contrast, dB; "
                      f"band change vs u(V,∅), dB)", "",
                  f"| t | branch | {leak} contrast | {ask} contrast | Δ {leak} band | "
                  f"Δ {ask} band | RMS ‖u − u(V,∅)‖ |", "|---|---|---|---|---|---|---|"]
        for t, r in by_t.items():
            for name, row in r["branches"].items():
                ch = row["band_change_db_vs_u(V,∅)"]
                norm = r["rms_velocity_change_vs_u(V,∅)"].get(name, 0.0)
                lines.append(f"| {t} | {name} | {row[f'{leak}_sync']:.1f} | "
                             f"{row[f'{ask}_sync']:.1f} | {ch[leak]:+.1f} | {ch[ask]:+.1f} | "
                             f"{norm:.3f} |")
    h = d["held_out_loss"]
    lines += ["", f"Held-out flow loss ({h['clips']} unseen 8 s clips × both windows × "
                  f"{h['draws']} draws): base u(V,∅) {h['base_u(V,∅)']:.4f}, ControlNet "
                  f"u_ctrl(V,∅,x_cond) {h['controlnet_u_ctrl']:.4f}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.world.diagnose", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, help="a world model set folder")
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--first-seed", type=int, default=EVAL_SEED)
    p.add_argument("--held-out-clips", type=int, default=8)
    p.add_argument("--out", default=None, help="also write the numbers as JSON here")
    a = p.parse_args(argv)
    d = diagnose(Path(a.models), a.videos, a.first_seed, a.held_out_clips)
    print(report(d))
    if a.out:
        Path(a.out).write_text(json.dumps(d, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
