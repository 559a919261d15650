"""Does a trained ControlNet separate tracks? The check a user runs on their own held-out clips.

For pairs of adjacent segments (k, k+1) of held-out clips, step 2 of a chain is generated for
segment k (its video; the prompt of --prompt, else the clip's caption, else DEFAULT_PROMPT)
against x_cond = segment k+1's audio at the inference mix level (−20 LUFS), exactly as in
training, with every method from the same noise: independent CFG (NAG with β 0), NAG at each β,
and, when --prompt is given, negative prompting with the clip's caption standing for the words
of the earlier track (clips with a caption; without --prompt the caption is the prompt itself
and negating it would cancel the prompt). Each track is scored by its similarity to x_cond;
what matters is the difference to the independent track of the same pair (negative = further
from x_cond = the guidance separates), reported as a mean with a bootstrap confidence interval
over pairs.

Measures:

* spectral-envelope similarity (model-free, always): the log-mel spectrogram (the model's own
  mel front end) pooled into bands of MEL_BINS_PER_BAND bins and frames of POOL_SECONDS, in dB
  above (track maximum − RANGE_DB) clipped at 0, compared by cosine (1 = the same sounds at the
  same times; like the world's A-A similarity, without its four known bands);
* CLAP audio-audio cosine (the paper's measure), only when ``laion_clap`` is installed and a
  checkpoint file is given; nothing is ever downloaded (Hugging Face is told to stay offline).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, MediaError
from .data import DEFAULT_SEGMENT_SECONDS, Source, discover, probe_duration, segment_starts

log = logging.getLogger("nag_core.train")

DEFAULT_BETAS = (1.0, 1.5, 2.0)
DEFAULT_PROMPT = "the sound of the video"  # for clips without a caption (a prompt is required)
MEL_BINS_PER_BAND = 5
POOL_SECONDS = 0.1
RANGE_DB = 60.0
CI_LEVEL = 0.95
CLAP_RATE = 48_000


# --------------------------------------------------------------------------- measures
def spectral_envelope(wave: Tensor, mode: str) -> np.ndarray:
    """(bands, frames) levels in dB above (max − RANGE_DB), clipped at 0, of a (samples,) wave
    at the sample rate of ``mode``."""
    from ..mmaudio.mel import mel_converter, mel_params

    p = mel_params(mode)
    with torch.no_grad():
        mel = mel_converter(mode)(wave.detach().float().flatten().cpu()).numpy()
    db = 20.0 * (mel if p.log10 else mel / math.log(10.0))  # 16k: log10 |.|, 44k: ln |.|
    n_bands = db.shape[0] // MEL_BINS_PER_BAND
    db = db[: n_bands * MEL_BINS_PER_BAND].reshape(n_bands, MEL_BINS_PER_BAND, -1).mean(1)
    per = max(1, int(round(POOL_SECONDS * p.sampling_rate / p.hop_size)))
    frames = db.shape[1] // per
    if frames < 1:
        raise ConfigError(f"a track of {wave.numel()} samples is shorter than {POOL_SECONDS} s")
    db = db[:, : frames * per].reshape(n_bands, frames, per).mean(2)
    return np.clip(db - (db.max() - RANGE_DB), 0.0, None)


def envelope_similarity(a: Tensor, b: Tensor, mode: str) -> float:
    """Cosine similarity of two waves' spectral envelopes (over their common length)."""
    ea, eb = spectral_envelope(a, mode), spectral_envelope(b, mode)
    n = min(ea.shape[1], eb.shape[1])
    x, y = ea[:, :n].ravel(), eb[:, :n].ravel()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0,
                 level: float = CI_LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the mean and the percentile bootstrap interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(v.mean()), float(lo), float(hi)


class ClapScorer:
    """LAION-CLAP audio embeddings from a local checkpoint file (never downloaded)."""

    def __init__(self, checkpoint: Path, device: torch.device):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # its text branch must not fetch anything
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import laion_clap  # noqa: F401  (optional extra)

        self.model = laion_clap.CLAP_Module(enable_fusion=False, device=str(device))
        self.model.load_ckpt(ckpt=str(checkpoint), verbose=False)

    def similarity(self, a: Tensor, b: Tensor, sample_rate: int) -> float:
        from ..resample import resample

        waves = [resample(w.float().flatten().cpu()[None], sample_rate, CLAP_RATE)[0]
                 for w in (a, b)]
        n = min(w.shape[-1] for w in waves)
        x = torch.stack([w[:n] for w in waves])
        with torch.no_grad():
            e = self.model.get_audio_embedding_from_data(x=x, use_tensor=True)
        e = torch.nn.functional.normalize(e.float(), dim=-1)
        return float(e[0] @ e[1])


def load_clap(checkpoint: Optional[str], device: torch.device) -> tuple[Optional[ClapScorer], str]:
    """(scorer or None, a line saying what happened)."""
    if checkpoint is None:
        return None, ("CLAP: skipped (no --clap-checkpoint given; with `pip install laion_clap` "
                      "and a local LAION-CLAP checkpoint file it adds the paper's measure)")
    if not Path(checkpoint).is_file():
        return None, f"CLAP: skipped (--clap-checkpoint {checkpoint} does not exist)"
    try:
        import laion_clap  # noqa: F401
    except ImportError:
        return None, ("CLAP: skipped (laion_clap is not installed: `pip install laion_clap`, "
                      "an optional extra)")
    try:
        return ClapScorer(Path(checkpoint), device), f"CLAP: {checkpoint}"
    except Exception as e:  # a third-party loader: any failure means "no CLAP", said clearly
        return None, f"CLAP: skipped (laion_clap could not load {checkpoint}: {e})"


# --------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class EvalPair:
    source: Source
    target_start: float
    cond_start: float


def plan_pairs(data, seconds: float = DEFAULT_SEGMENT_SECONDS,
               max_pairs: int = 50) -> tuple[list[EvalPair], list[str]]:
    """Adjacent (k, k+1) segment pairs of the clips in ``data`` (a folder or a list file):
    first every clip's first pair, then every clip's second, ... up to ``max_pairs``. Returns the
    pairs and the clips that could not be used ("path: reason")."""
    if max_pairs < 1:
        raise ConfigError(f"--pairs must be at least 1, got {max_pairs}")
    found = discover(data)
    starts, skipped = [], [f"{m}: listed but not found" for m in found.missing]
    for source in found.sources:
        try:
            s = segment_starts(probe_duration(source), seconds)
        except MediaError as e:
            skipped.append(f"{source.path}: {e}")
            continue
        if len(s) < 2:
            skipped.append(f"{source.path}: shorter than two {seconds:g} s segments")
            continue
        starts.append((source, s))
    pairs = []
    for k in range(max((len(s) for _, s in starts), default=0)):
        for source, s in starts:
            if k + 1 < len(s) and len(pairs) < max_pairs:
                pairs.append(EvalPair(source, s[k], s[k + 1]))
    if not pairs:
        raise ConfigError(f"no pair of adjacent {seconds:g} s segments in {data} "
                          f"({len(skipped)} clips unusable); held-out clips need at least "
                          f"{2 * seconds:g} s of audio")
    return pairs, skipped


# --------------------------------------------------------------------------- the check
@dataclass
class MethodScores:
    name: str
    envelope: list
    clap: list


def evaluate(model, controlnet, pairs: Sequence[EvalPair], *, seconds: float,
             betas: Sequence[float] = DEFAULT_BETAS, steps: int = 25, seed: int = 0,
             prompt: Optional[str] = None, clap: Optional[ClapScorer] = None,
             progress: bool = True) -> dict[str, MethodScores]:
    """Generate step 2 of every pair with every method from the same noise and score each track
    against x_cond. Returns the scores per method name, in the order they were run."""
    from ..media import decode_video, read_audio
    from ..mix import TARGET_LUFS, Track, loudness_normalize
    from ..model import VideoFeatures
    from ..step import StepSettings, generate_track

    if not betas or any(not b > 0 for b in betas):
        raise ConfigError(f"--betas must be positive numbers, got {list(betas)}")
    methods = [("independent", "independent", 0.0)] + [
        (f"nag beta={b:g}", "nag", float(b)) for b in betas]
    if prompt is not None and any(p.source.caption for p in pairs):
        methods.insert(1, ("negative_prompt", "negative_prompt", 0.0))
    scores = {name: MethodScores(name, [], []) for name, _, _ in methods}
    sr, mode = model.sample_rate, model.network.config.mode
    iterator = pairs
    if progress:
        from tqdm import tqdm
        iterator = tqdm(pairs, desc="evaluate", unit="pair")
    for i, pair in enumerate(iterator):
        path = pair.source.path
        cond_wave, _ = read_audio(path, sample_rate=sr, mono=True, start=pair.cond_start,
                                  duration=seconds)
        cond = loudness_normalize(Track(cond_wave, sr), TARGET_LUFS)
        if pair.source.kind == "video":
            features = model.encode_video(decode_video(path, start=pair.target_start,
                                                       duration=seconds))
        else:
            features = VideoFeatures(None, None, seconds)
        caption = (pair.source.caption or "").strip()
        text = prompt or caption or DEFAULT_PROMPT
        for name, method, beta in methods:
            if method == "negative_prompt" and not caption:
                continue  # no words for x_cond: this pair counts for the other methods only
            settings = StepSettings(prompt=text, seed=seed + i, steps=steps, method=method,
                                    beta=beta if method == "nag" else 1.0)
            track = generate_track(model, features, settings, condition_mix=cond,
                                   controlnet=controlnet, earlier_prompts=(caption,)).wave
            ref = cond.wave[0]
            scores[name].envelope.append((i, envelope_similarity(track, ref, mode)))
            if clap is not None:
                scores[name].clap.append((i, clap.similarity(track, ref, sr)))
    return scores


def summarize(scores: dict[str, MethodScores], resamples: int = 1000, seed: int = 0) -> dict:
    """Per method and measure: mean similarity to x_cond, and the mean difference to the
    independent track of the same pair with its bootstrap interval."""
    base = scores["independent"]
    out = {}
    for name, s in scores.items():
        row = {}
        for measure in ("envelope", "clap"):
            mine, ref = dict(getattr(s, measure)), dict(getattr(base, measure))
            if not mine:
                continue
            common = sorted(set(mine) & set(ref))
            entry = {"pairs": len(mine), "mean": float(np.mean(list(mine.values())))}
            if name != "independent":
                m, lo, hi = bootstrap_ci([mine[k] - ref[k] for k in common], resamples, seed)
                entry.update(delta=m, delta_low=lo, delta_high=hi)
            row[measure] = entry
        out[name] = row
    return out


def format_report(summary: dict, header: str, notes: Sequence[str]) -> str:
    pct = int(round(CI_LEVEL * 100))
    lines = [header]
    titles = {"envelope": "spectral-envelope similarity to x_cond",
              "clap": "CLAP audio-audio cosine to x_cond"}
    for measure, title in titles.items():
        rows = [(n, r[measure]) for n, r in summary.items() if measure in r]
        if not rows:
            continue
        lines.append(f"{title} (1 = same sounds at the same times); delta vs independent "
                     f"(negative = further from x_cond) with {pct}% bootstrap CI:")
        for name, e in rows:
            text = f"  {name:18s} {e['mean']:.4f}  ({e['pairs']} pairs)"
            if "delta" in e and not math.isnan(e["delta"]):
                text += f"  delta {e['delta']:+.4f} [{e['delta_low']:+.4f}, {e['delta_high']:+.4f}]"
            lines.append(text)
    lines += list(notes)
    return "\n".join(lines)
