"""Do the frozen seeded encoders carry the picture? A linear probe (ridge regression, train on
70 % of the clips, test on the rest) of the lamp's lit state and the ball's contact proximity
from each CLIP frame feature (8 fps) and each Synchformer token (12.5 Hz), and whether the
ball's sound is playing (BALL_SECONDS from each contact).

    python -m bench.world.probe [--clips 40]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from . import models as M
from . import train as T


def _ridge_acc(x_tr, y_tr, x_te, y_te, lam=1e-2) -> float:
    x_tr = np.hstack([x_tr, np.ones((len(x_tr), 1))])
    x_te = np.hstack([x_te, np.ones((len(x_te), 1))])
    w = np.linalg.solve(x_tr.T @ x_tr + lam * np.eye(x_tr.shape[1]), x_tr.T @ (2 * y_tr - 1))
    return float(((x_te @ w > 0) == y_te.astype(bool)).mean())


def probe(clips: int = 40) -> dict:
    torch.set_num_threads(1)
    from nag_core.mmaudio.tokenizer import load_tokenizer
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        tok = load_tokenizer(M.write_vocab(Path(d) / "v.gz"))
    fm = T.features_model(tokenizer=tok)
    data = T.build_data(fm, range(20_000, 20_000 + clips), M.DURATION, objects=("ball", "lamp"))
    n_tr = int(0.7 * clips)
    out = {}
    for name, feats, times in (
            ("clip", data.clip_f.numpy(), (np.arange(32) + 0.5) / 8),
            ("sync", data.sync_f.numpy(),
             np.array([(8 * s + 2 * j + 1) / 25 for s in range(11) for j in range(8)]))):
        for target in ("lamp_lit", "ball_near_floor", "ball_sounding"):
            ys = []
            for c in data.clips:
                if target == "lamp_lit":
                    ys.append(c.lit_mask(times))
                elif target == "ball_sounding":
                    ys.append(c.sounding_mask(times))
                else:
                    d = np.min(np.abs(times[:, None] - c.contacts[None, :]), axis=1)
                    ys.append(d < 0.08)
            y = np.stack(ys)
            x = feats.reshape(clips, len(times), -1)
            acc = _ridge_acc(x[:n_tr].reshape(-1, x.shape[-1]), y[:n_tr].ravel(),
                             x[n_tr:].reshape(-1, x.shape[-1]), y[n_tr:].ravel())
            chance = max(y[n_tr:].mean(), 1 - y[n_tr:].mean())
            out[f"{name}:{target}"] = (acc, float(chance))
            print(f"{name:5s} {target:16s} probe accuracy {acc:.3f} (majority class {chance:.3f})")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.world.probe", description=__doc__)
    p.add_argument("--clips", type=int, default=40)
    probe(p.parse_args(argv).clips)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
