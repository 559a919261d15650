"""Our flow network next to the official MMAudio code, on the same random real-size weights.

Needs a checkout of the official repository (github.com/hkchengrex/MMAudio) given with
--official PATH (it is imported from there, never copied; it needs the ``einops`` package).
Both networks get the same state dict (ours, from ``randomize_parameters_``) and the same
features; the script first checks that they give the same outputs, then times, interleaved:

* ``forward``: one ``predict_flow`` call at batch 1;
* ``cfg_step``: one CFG velocity (ours: ``cfg_velocity``, one batched call over [uncond, cond]
  with the audio input projection done once; official: ``ode_wrapper``, two calls);
* ``nag_step`` (ours) / official ``cfg_step``: informative, no official counterpart;
* ``vae_decode``: the mel VAE's decoder on one 8 s latent (ours: ``VAE.decode``; official:
  ``mmaudio.ext.autoencoder.vae.VAE.decode``), same random raw weights on both sides, each
  side folding its weight normalisation once at load;
* ``vocoder``: the 16 kHz BigVGAN on the decoded 8 s mel (ours: ``BigVGAN``; official:
  ``mmaudio.ext.bigvgan.models.BigVGANVocoder``, weight norm removed), the same random
  weights (alphas and betas drawn, not zero). The official 44 kHz vocoder imports
  ``huggingface_hub``: with a 44k variant this stage is skipped.

Goal (issue: at least 10 % under the official code at every stage): ours / official <= 0.90
for ``forward``, ``cfg_step``, ``vae_decode`` and ``vocoder``.

    python bench/official.py --official /path/to/MMAudio [--variant small_16k] [--reps 5]
        [--stages forward,cfg_step,nag_step,vae_decode,vocoder]
"""

from __future__ import annotations

import common  # noqa: F401  (puts the checkout on sys.path)

import sys
from pathlib import Path

import torch

from common import (Goals, build_controlnet, build_network, interleaved, parser, random_features,
                    random_vae, random_vocoder, ratio, setup)
from nag_core.generation import cfg_velocity, nag_velocity
from nag_core.mmaudio.bigvgan import vocoder_checkpoint_state
from nag_core.mmaudio.vae import vae_checkpoint_state

GOAL = 0.90
CFG = 4.5
STAGES = ("forward", "cfg_step", "nag_step", "vae_decode", "vocoder")


def put_official_on_path(path: str) -> None:
    root = Path(path).expanduser().resolve()
    if not (root / "mmaudio" / "model" / "networks.py").is_file():
        raise SystemExit(f"--official {path}: no mmaudio/model/networks.py there; give a checkout "
                         "of github.com/hkchengrex/MMAudio")
    sys.path.insert(0, str(root))


def official_network(variant: str, state: dict, device: str, dtype):
    from mmaudio.model.networks import get_my_mmaudio  # the official code
    net = get_my_mmaudio(variant)
    net.load_weights(dict(state))
    return net.eval().to(device=device, dtype=dtype)


def official_vae(mode: str, raw_state: dict, device: str, dtype):
    from mmaudio.ext.autoencoder.vae import get_my_vae  # the official code
    vae = get_my_vae(mode)
    vae.load_state_dict(dict(raw_state))
    return vae.remove_weight_norm().eval().to(device=device, dtype=dtype)


def official_vocoder(config, weight_normed_state: dict, device: str, dtype):
    import contextlib
    import io
    from types import SimpleNamespace

    from mmaudio.ext.bigvgan.models import BigVGANVocoder  # the official code
    voc = BigVGANVocoder(SimpleNamespace(**config.to_dict()))
    voc.load_state_dict(dict(weight_normed_state))
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Removing weight norm..."
        voc.remove_weight_norm()
    return voc.eval().to(device=device, dtype=dtype)


def _check_same(goals: Goals, name: str, a, b, tol: float) -> None:
    """The goldens' agreement rule: max |ours - official| <= tol * max(1, max |official|). The
    two sides round differently (ours runs kernel-3 convolutions as Winograd F(2, 3), which
    lands nearer the exact result than the direct convolution; a CFG step scales the
    difference of two forwards by 4.5), so the rule is relative to the output's size."""
    ref = b().float()
    diff = (a().float() - ref).abs().max().item()
    bound = tol * max(1.0, ref.abs().max().item())
    goals.check(f"same_{name}", diff <= bound, f"{name}: max |ours - official| = {diff:.2e} "
                f"(at most {tol:g} x max(1, max |official|) = {bound:.2e})")


def _time(goals: Goals, name: str, ours, official, args) -> None:
    times = interleaved({"ours": ours, "official": official}, args.reps, args.device)
    r = ratio(times["ours"], times["official"])
    print(r.line(f"ours_{name}_over_official"))
    goals.check(f"{name}_10pct_under_official", r.value <= GOAL,
                f"{name}: ours / official = {r.value:.3f} (at most {GOAL} wanted)")


def main() -> None:
    p = parser(__doc__.splitlines()[0], reps=5)
    p.add_argument("--official", required=True, metavar="PATH",
                   help="a checkout of the official MMAudio repository")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated subset of {','.join(STAGES)}")
    args = p.parse_args()
    if args.quick:
        raise SystemExit("--quick is not supported: the official code has no tiny variant")
    stages = [st for st in args.stages.split(",") if st]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"--stages: unknown {', '.join(unknown)}; use some of {', '.join(STAGES)}")
    put_official_on_path(args.official)
    setup(args)
    if args.duration != 8.0:
        raise SystemExit("the official variants are built for 8 s: use --duration 8")
    goals = Goals()
    ours = build_network(args)
    tol = 1e-4 if ours.dtype == torch.float32 else 5e-2
    with torch.no_grad():
        if {"forward", "cfg_step", "nag_step"} & set(stages):
            _network_stages(args, goals, ours, stages, tol)
        if {"vae_decode", "vocoder"} & set(stages):
            _decode_stages(args, goals, ours, stages, tol)
    goals.finish()


def _network_stages(args, goals: Goals, ours, stages, tol: float) -> None:
    official = official_network(args.variant, ours.state_dict(), args.device, ours.dtype)
    clip, sync, text = random_features(ours, 1, seed=1)
    g = torch.Generator().manual_seed(2)
    shape = (1, ours.latent_seq_len, ours.config.latent_dim)
    x, x_cond = (torch.randn(shape, generator=g).to(ours.device, ours.dtype) for _ in range(2))
    t = torch.tensor(0.4, device=ours.device)
    c_ours, e_ours = ours.preprocess_conditions(clip, sync, text), ours.get_empty_conditions(1)
    c_off, e_off = official.preprocess_conditions(clip, sync, text), official.get_empty_conditions(1)
    v_ours = cfg_velocity(ours, c_ours, e_ours, CFG)
    fns = {
        "forward": (lambda: ours.predict_flow(x, t.reshape(1), c_ours),
                    lambda: official.predict_flow(x, t.reshape(1), c_off)),
        "cfg_step": (lambda: v_ours(x, t),
                     lambda: official.ode_wrapper(t, x, c_off, e_off, CFG)),
    }
    timed = [name for name in fns if name in stages]
    for name in timed:
        _check_same(goals, name, *fns[name], tol)
    for name in timed:
        _time(goals, name, *fns[name], args)
    if "nag_step" in stages:
        cn = build_controlnet(ours, args.blocks)
        ctrl = ours.preprocess_conditions(clip, sync, ours.get_empty_string_sequence(1))
        v_nag = nag_velocity(ours, cn, c_ours, e_ours, ctrl, x_cond, 1)
        times = interleaved({"nag": lambda: v_nag(x, t),
                             "official_cfg": fns["cfg_step"][1]}, args.reps, args.device)
        print(ratio(times["nag"], times["official_cfg"]).line(
            "ours_nag_step_over_official_cfg_step", "(informative: NAG has a third branch and "
            f"K = {cn.config.num_blocks} control blocks)"))


def _decode_stages(args, goals: Goals, net, stages, tol: float) -> None:
    mode = net.config.mode
    device, dtype = args.device, net.dtype
    vae = random_vae(mode, seed=3).to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(4)
    z = torch.randn(1, vae.embed_dim, net.latent_seq_len, generator=g).to(device, dtype)
    mel = vae.decode(z)
    if "vae_decode" in stages:
        off_vae = official_vae(mode, vae_checkpoint_state(vae), device, dtype)
        fns = (lambda: vae.decode(z), lambda: off_vae.decode(z))
        _check_same(goals, "vae_decode", *fns, tol)
        _time(goals, "vae_decode", *fns, args)
        del off_vae
    if "vocoder" in stages:
        if mode != "16k":
            print("vocoder: skipped (the official 44 kHz BigVGAN-v2 imports huggingface_hub; "
                  "use a 16k variant)")
            return
        voc = random_vocoder(mode, seed=5).to(device=device, dtype=dtype)
        off_voc = official_vocoder(voc.config, vocoder_checkpoint_state(voc), device, dtype)
        fns = (lambda: voc(mel), lambda: off_voc(mel))
        _check_same(goals, "vocoder", *fns, tol)
        _time(goals, "vocoder", *fns, args)


if __name__ == "__main__":
    main()
