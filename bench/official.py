"""Our flow network next to the official MMAudio code, on the same random real-size weights.

Needs a checkout of the official repository (github.com/hkchengrex/MMAudio) given with
--official PATH (it is imported from there, never copied; it needs the ``einops`` package).
Both networks get the same state dict (ours, from ``randomize_parameters_``) and the same
features; the script first checks that they give the same outputs, then times, interleaved:

* ``forward``: one ``predict_flow`` call at batch 1;
* ``cfg_step``: one CFG velocity (ours: ``cfg_velocity``, one batched call over [uncond, cond]
  with the audio input projection done once; official: ``ode_wrapper``, two calls);
* ``nag_step`` (ours) / official ``cfg_step``: informative, no official counterpart.

Goal (issue: at least 10 % under the official code at every stage): ours / official <= 0.90
for ``forward`` and ``cfg_step``.

    python bench/official.py --official /path/to/MMAudio [--variant small_16k] [--reps 5]
"""

from __future__ import annotations

import common  # noqa: F401  (puts the checkout on sys.path)

import sys
from pathlib import Path

import torch

from common import (Goals, build_controlnet, build_network, interleaved, parser, random_features,
                    ratio, setup)
from nag_core.generation import cfg_velocity, nag_velocity

GOAL = 0.90
CFG = 4.5


def official_network(path: str, variant: str, state: dict, device: str, dtype):
    root = Path(path).expanduser().resolve()
    if not (root / "mmaudio" / "model" / "networks.py").is_file():
        raise SystemExit(f"--official {path}: no mmaudio/model/networks.py there; give a checkout "
                         "of github.com/hkchengrex/MMAudio")
    sys.path.insert(0, str(root))
    from mmaudio.model.networks import get_my_mmaudio  # the official code
    net = get_my_mmaudio(variant)
    net.load_weights(dict(state))
    return net.eval().to(device=device, dtype=dtype)


def main() -> None:
    p = parser(__doc__.splitlines()[0], reps=5)
    p.add_argument("--official", required=True, metavar="PATH",
                   help="a checkout of the official MMAudio repository")
    args = p.parse_args()
    if args.quick:
        raise SystemExit("--quick is not supported: the official code has no tiny variant")
    setup(args)
    if args.duration != 8.0:
        raise SystemExit("the official variants are built for 8 s: use --duration 8")
    goals = Goals()
    ours = build_network(args)
    official = official_network(args.official, args.variant, ours.state_dict(), args.device,
                                ours.dtype)
    clip, sync, text = random_features(ours, 1, seed=1)
    g = torch.Generator().manual_seed(2)
    shape = (1, ours.latent_seq_len, ours.config.latent_dim)
    x, x_cond = (torch.randn(shape, generator=g).to(ours.device, ours.dtype) for _ in range(2))
    t = torch.tensor(0.4, device=ours.device)

    with torch.no_grad():
        c_ours, e_ours = ours.preprocess_conditions(clip, sync, text), ours.get_empty_conditions(1)
        c_off, e_off = official.preprocess_conditions(clip, sync, text), official.get_empty_conditions(1)
        v_ours = cfg_velocity(ours, c_ours, e_ours, CFG)
        cn = build_controlnet(ours, args.blocks)
        ctrl = ours.preprocess_conditions(clip, sync, ours.get_empty_string_sequence(1))
        v_nag = nag_velocity(ours, cn, c_ours, e_ours, ctrl, x_cond, 1)
        fns = {
            "forward": (lambda: ours.predict_flow(x, t.reshape(1), c_ours),
                        lambda: official.predict_flow(x, t.reshape(1), c_off)),
            "cfg_step": (lambda: v_ours(x, t),
                         lambda: official.ode_wrapper(t, x, c_off, e_off, CFG)),
        }
        for name, (a, b) in fns.items():
            diff = (a().float() - b().float()).abs().max().item()
            tol = 1e-4 if ours.dtype == torch.float32 else 5e-2
            goals.check(f"same_{name}", diff <= tol, f"{name}: max |ours - official| = {diff:.2e} "
                        f"(at most {tol:g})")
        for name, (a, b) in fns.items():
            times = interleaved({"ours": a, "official": b}, args.reps, args.device)
            r = ratio(times["ours"], times["official"])
            print(r.line(f"ours_{name}_over_official"))
            goals.check(f"{name}_10pct_under_official", r.value <= GOAL,
                        f"{name}: ours / official = {r.value:.3f} (at most {GOAL} wanted)")
        times = interleaved({"nag": lambda: v_nag(x, t),
                             "official_cfg": fns["cfg_step"][1]}, args.reps, args.device)
        print(ratio(times["nag"], times["official_cfg"]).line(
            "ours_nag_step_over_official_cfg_step", "(informative: NAG has a third branch and "
            f"K = {cn.config.num_blocks} control blocks)"))
    goals.finish()


if __name__ == "__main__":
    main()
