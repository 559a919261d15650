"""Are the seams of windowed generation audible? Measured on the shipped world models (trained
on 4 s) over long world videos (default 20 s: five or more 4 s windows).

For each world video (ball + lamp) the chain "ball bounces" (step 1) then "lamp beeps" (step 2,
text_nag or NAG when the ControlNet is given) is generated over the whole clip with windows. Then,
on each track, at the window edges (where a window starts or ends, ±EDGE s) against the same
measure away from every edge (>= AWAY s):

* spectral flux (positive frame-to-frame change of the 16k log-mel, summed over bands): the
  mean over the edge frames, and where it lies in the distribution of the mean over as many
  frames drawn at random from the away frames (percentile; a seam would sit at the top);
* the ball track's onsets: for every floor contact of the video (where the ball's 0.2 s tone
  starts), the time the ball band rises through the midpoint of its sounding and silent levels
  nearest it (timing error), and the rises found within MATCH s of it (1 = once; 0 = dropped;
  2+ = doubled), for contacts near an edge against those away;
* the lamp track's switches: the time the lamp band crosses half its lit/dark contrast near
  each true switch, near an edge against away.

    nice -n 19 python bench/long_seams.py [--seconds 20] [--videos 4] [--steps 12]

Prints one ``RESULT`` json line per video and a summary; nothing is asserted (the numbers go to
bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nag_core.media import frames_from_images  # noqa: E402
from nag_core.pipeline import FoleySession  # noqa: E402
from nag_core.windows import plan_windows  # noqa: E402
from nag_core.world.assets import CONTROLNET_FILE, world_models_dir  # noqa: E402
from bench.world.detectors import band_power, frame_times, log_mel  # noqa: E402
from nag_core.world.scene import CAPTIONS, render_clip  # noqa: E402

EDGE = 0.10  # s either side of a window edge counted as "at the edge"
AWAY = 0.40  # s from every edge counted as "away"
MATCH = 0.06  # s: an onset this close to a contact belongs to it
DRAWS = 2000


def load_world_model():
    """(MMAudioModel, NAGControlNet) of the shipped world set, through the product's loaders
    (its training.json makes the windows 4 s)."""
    from nag_core.controlnet import load_controlnet
    from nag_core.weights import find_model_files, load_model_files
    root = world_models_dir()
    model = load_model_files(find_model_files(root, "small_16k"))
    return model, load_controlnet(root / CONTROLNET_FILE, model.network)


def edges(plan) -> np.ndarray:
    """Times (s) where a window starts (after the first) or ends (before the last)."""
    out = []
    for i in range(len(plan.windows)):
        start, end = plan.seconds(i)
        if i > 0:
            out.append(start)
        if i < len(plan.windows) - 1:
            out.append(end)
    return np.array(sorted(out))


def distance_to(times: np.ndarray, points: np.ndarray) -> np.ndarray:
    if len(points) == 0:
        return np.full(len(times), np.inf)
    return np.min(np.abs(times[:, None] - points[None, :]), axis=1)


def flux(mel: np.ndarray) -> np.ndarray:
    """(T,) spectral flux of a log-mel; frame 0 has none (nan)."""
    d = np.diff(mel, axis=1)
    return np.concatenate([[np.nan], np.clip(d, 0, None).sum(0)])


def flux_at_edges(mel: np.ndarray, edge_times: np.ndarray, rng) -> dict:
    f = flux(mel)
    t = frame_times(mel.shape[1])
    dist = distance_to(t, edge_times)
    at = (dist <= EDGE) & np.isfinite(f)
    away = (dist >= AWAY) & np.isfinite(f)
    if not at.any() or away.sum() < at.sum():
        return {"edge_mean": None}
    edge_mean = float(f[at].mean())
    pool = f[away]
    draws = np.array([rng.choice(pool, at.sum(), replace=False).mean() for _ in range(DRAWS)])
    return {"edge_mean": edge_mean, "away_mean": float(pool.mean()),
            "away_p5": float(np.percentile(draws, 5)), "away_p95": float(np.percentile(draws, 95)),
            "percentile": float((draws < edge_mean).mean() * 100), "edge_frames": int(at.sum())}


def _crossings(db: np.ndarray, t: np.ndarray, on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rises, all crossings): times the band's level passes the midpoint of its median levels
    where the object sounds (``on``) and where it does not."""
    mid = 0.5 * (np.median(db[on]) + np.median(db[~on]))
    above = db > mid
    change = above[1:] != above[:-1]
    return t[1:][change & above[1:]], t[1:][change]


def onsets(mel: np.ndarray, clip, edge_times: np.ndarray) -> list[dict]:
    """Per floor contact: timing error of the nearest rise of the ball band and how many rises
    match it."""
    t = frame_times(mel.shape[1])
    db = 10 * np.log10(band_power(mel, "ball") + 1e-20)
    on = clip.sounding_mask(t)
    if on.all() or not on.any():
        return []
    rises, _ = _crossings(db, t, on)
    out = []
    for c in clip.contacts:
        if c < MATCH or c > t[-1] - MATCH:
            continue
        near = rises[np.abs(rises - c) <= MATCH]
        err = float(near[np.argmin(np.abs(near - c))] - c) if len(near) else None
        out.append({"t": float(c), "edge_dist": float(distance_to(np.array([c]), edge_times)[0]),
                    "count": int(len(near)), "error": err})
    return out


def switches(mel: np.ndarray, clip, edge_times: np.ndarray) -> list[dict]:
    """Per lamp switch (on or off): when the lamp band crosses the midpoint of its lit and dark
    levels nearest the true time (error), within 0.25 s."""
    t = frame_times(mel.shape[1])
    db = 10 * np.log10(band_power(mel, "lamp") + 1e-20)
    lit = clip.lit_mask(t)
    if lit.all() or not lit.any():
        return []
    _, crossings = _crossings(db, t, lit)
    out = []
    for a, b in clip.lit:
        for s in (a, b):
            if s <= 0.1 or s >= t[-1] - 0.1:
                continue
            near = crossings[np.abs(crossings - s) <= 0.25]
            out.append({"t": float(s), "edge_dist": float(distance_to(np.array([s]),
                                                                      edge_times)[0]),
                        "error": float(near[np.argmin(np.abs(near - s))] - s) if len(near)
                        else None})
    return out


def summary(events: list[dict], key: str) -> dict:
    def part(sel):
        errs = [abs(e["error"]) for e in sel if e.get("error") is not None]
        res = {"n": len(sel), "timed": len(errs),
               "median_abs_error_ms": round(1000 * float(np.median(errs)), 1) if errs else None}
        if key == "count":
            res["once"] = sum(e["count"] == 1 for e in sel)
            res["dropped"] = sum(e["count"] == 0 for e in sel)
            res["doubled"] = sum(e["count"] >= 2 for e in sel)
        return res
    return {"near_edge": part([e for e in events if e["edge_dist"] <= 0.3]),
            "away": part([e for e in events if e["edge_dist"] > 0.3])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seed", type=int, default=50_000, help="first world video seed")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--overlap", type=float, default=None, help="window overlap in seconds")
    p.add_argument("--method", default="auto")
    p.add_argument("--controlnet", action="store_true", help="use the world NAG ControlNet")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, controlnet = load_world_model()
    rng = np.random.default_rng(0)
    totals = {"flux": [], "onsets": [], "switches": []}
    for v in range(a.videos):
        seed = a.seed + v
        clip = render_clip(seed, ("ball", "lamp"), a.seconds)
        video = frames_from_images(torch.from_numpy(clip.frames), clip.fps, 0.0, a.seconds)
        t0 = time.perf_counter()
        session = FoleySession(model, video, controlnet=controlnet if a.controlnet else None,
                               window_overlap=a.overlap)
        ball = session.add_step(CAPTIONS["ball"], seed=seed, steps=a.steps).wave.numpy()
        lamp = session.add_step(CAPTIONS["lamp"], seed=seed + 1, steps=a.steps,
                                method=a.method).wave.numpy()
        seconds = time.perf_counter() - t0
        plan = session.window_plan
        e = edges(plan)
        res = {"seed": seed, "seconds": a.seconds, "windows": len(plan.windows),
               "edges_s": [round(float(x), 3) for x in e], "generate_s": round(seconds, 1)}
        for name, wave in (("ball", ball), ("lamp", lamp)):
            mel = log_mel(wave)
            res[f"flux_{name}"] = flux_at_edges(mel, e, rng)
            totals["flux"].append(res[f"flux_{name}"])
        mel_ball, mel_lamp = log_mel(ball), log_mel(lamp)
        c = onsets(mel_ball, clip, e)
        s = switches(mel_lamp, clip, e)
        totals["onsets"] += c
        totals["switches"] += s
        res["onsets"] = summary(c, "count")
        res["switches"] = summary(s, "error")
        print("RESULT " + json.dumps(res), flush=True)
    pct = [f["percentile"] for f in totals["flux"] if f.get("percentile") is not None]
    print(f"flux at window edges: percentile within the away distribution per track "
          f"{[round(x) for x in pct]} (50 = typical, >95 = a seam)")
    print("ball onsets " + json.dumps(summary(totals["onsets"], "count")))
    print("lamp switches " + json.dumps(summary(totals["switches"], "error")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
