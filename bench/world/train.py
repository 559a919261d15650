"""Training the world's tiny model set from scratch on CPU: VAE, vocoder, flow network (MMAudio's
recipe) and the NAG ControlNet.

Every stage works on a :class:`WorldData` built once: per clip the CLIP/Synchformer features
(through the product path: frames_from_images -> MMAudioModel.encode_video), the 16 kHz log-mel
and the waveform, from which the 4 s training windows are cropped (their latents are encoded
window by window: :func:`window_posteriors`). Training clips are 8 s: the ControlNet's (target,
condition) pairs are their first and last windows.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nag_core.controlnet import ControlNetConfig, NAGControlNet, controlnet_flow
from nag_core.media import frames_from_images
from nag_core.media.audio import pcm16_round_trip
from nag_core.mix import TARGET_LUFS, Track, composite
from nag_core.mmaudio.decode import encode_audio
from nag_core.mmaudio.network import MMAudioNetwork
from nag_core.mmaudio.vae import VAE, normalized_mp_weight
from nag_core.model import MMAudioModel
from nag_core.world.scene import CAPTIONS, render_clip, training_caption

from . import models as M
from .detectors import log_mel, signature_report

SEG = M.DURATION
SR = 16000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- data
# Training windows are 4 s crops of the 8 s clips at offsets of SHIFT seconds: 0.32 s is a whole
# number of units on every time axis (8 video frames = 8 Synchformer tokens, 20 mel frames,
# 10 latent frames), so a crop of the clip's features is exactly what encoding the 4 s window
# would give for Synchformer (its 16-frame windows start every 8 frames) and within 1/16 s for
# CLIP (8 fps). Shifted crops are what make the base learn timing from the picture: with two
# fixed halves per clip, a tiny network memorised each clip's audio from its (nearly static)
# CLIP fingerprint and ignored the Synchformer tokens (held-out flow loss 2.5x the training
# loss, unchanged when the sync tokens were swapped between clips).
SHIFT = 0.32
UNITS = {"sync": 8, "mel": 20, "samples": 5120}
SEG_LEN = {"clip": 32, "sync": 88, "mel": 250, "latent": 125, "samples": 64000}


@dataclass
class WorldData:
    """Whole clips (features, mel, wave over the clip's full duration) and the 4 s windows
    (clip index, shift index) cut from them."""
    clips: list  # rendered clips (scene.Clip, frames dropped after encoding)
    clip_f: torch.Tensor  # (C, 8·duration, CLIP_EMBED)
    sync_f: torch.Tensor  # (C, Synchformer tokens, SYNC_WIDTH)
    mel: torch.Tensor  # (C, 80, 62.5·duration)
    wave: torch.Tensor  # (C, 16000·duration)

    @property
    def shifts(self) -> int:
        """Number of 4 s windows per clip: 13 for 8 s clips, 1 for 4 s clips."""
        return int((self.clips[0].duration - SEG) / SHIFT + 1e-6) + 1

    def windows(self) -> torch.Tensor:
        """(C·shifts, 2) every (clip, shift) window."""
        c, j = torch.meshgrid(torch.arange(len(self.clips)), torch.arange(self.shifts),
                              indexing="ij")
        return torch.stack([c.flatten(), j.flatten()], 1)

    @staticmethod
    def _crop(x: torch.Tensor, clip: torch.Tensor, start: torch.Tensor, length: int, dim: int):
        """Gather x[clip[b]] along ``dim`` (1 = time for (C, T, D), 2 for (C, F, T)) from
        start[b] for ``length``."""
        ar = torch.arange(length)
        idx = start[:, None] + ar[None]
        xs = x[clip]
        if dim == 1:
            return torch.gather(xs, 1, idx[:, :, None].expand(-1, -1, xs.shape[2]))
        return torch.gather(xs, 2, idx[:, None, :].expand(-1, xs.shape[1], -1))

    def video(self, clip: torch.Tensor, shift: torch.Tensor):
        """(clip_f (B, 32, D), sync_f (B, 88, D)) of the windows."""
        c0 = torch.round(shift * SHIFT * 8).long()
        return (self._crop(self.clip_f, clip, c0, SEG_LEN["clip"], 1),
                self._crop(self.sync_f, clip, shift * UNITS["sync"], SEG_LEN["sync"], 1))

    def mel_windows(self, clip: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return self._crop(self.mel, clip, shift * UNITS["mel"], SEG_LEN["mel"], 2)

    def wave_windows(self, clip: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        start = shift * UNITS["samples"]
        return torch.stack([self.wave[c, s:s + SEG_LEN["samples"]]
                            for c, s in zip(clip.tolist(), start.tolist())])

    def __len__(self):
        return len(self.clips)

    @classmethod
    def concat(cls, parts: list) -> "WorldData":
        return cls([c for p in parts for c in p.clips],
                   *(torch.cat([getattr(p, k) for p in parts])
                     for k in ("clip_f", "sync_f", "mel", "wave")))


def features_model(clip=None, sync=None, tokenizer=None, network=None, vae=None, vocoder=None):
    """An MMAudioModel of the world's parts (placeholders where a part is not trained yet: only
    its widths matter for encoding)."""
    vae = vae or M.build_vae().normalize_weights_()
    return MMAudioModel(network or M.build_network(), vae, vocoder or M.build_vocoder(),
                        clip or M.build_clip(), sync or M.build_synchformer(), tokenizer)


def build_data(model: MMAudioModel, seeds, duration: float, objects=None, p_silent=0.0,
               audible=None) -> WorldData:
    """Render and encode whole clips through the product path (frames_from_images ->
    MMAudioModel.encode_video); the frames are dropped afterwards (10 MB a clip)."""
    clips, cf, sf, mels, waves = [], [], [], [], []
    for seed in seeds:
        c = render_clip(int(seed), objects, duration, audible=audible, p_silent=p_silent)
        f = model.encode_video(frames_from_images(torch.from_numpy(c.frames), 25, start=0.0,
                                                  duration=duration))
        # The audio as a 16-bit file gives it back, like the exported videos the ControlNet CLI
        # reads and every file a user has: the world renders exact digital silence, whose log-mel
        # sits on the floor where a file's quantisation noise does not. Trained on float audio,
        # the base's latents were 0.15 RMS from those of the same audio read from its .mkv, and
        # the ControlNet spent itself learning that shift (base loss 0.31 on the CLI's cache,
        # 0.19 on float audio).
        w = pcm16_round_trip(torch.from_numpy(c.audio))
        c.frames = None
        clips.append(c)
        cf.append(f.clip_f[0])
        sf.append(f.sync_f[0])
        waves.append(w)
        mels.append(model.mel(w))
    return WorldData(clips, torch.stack(cf), torch.stack(sf), torch.stack(mels),
                     torch.stack(waves))


# ----------------------------------------------------------------------------- VAE
def _vae_forward(vae: VAE, params: dict, mel_n: torch.Tensor, gen: torch.Generator):
    """Encode/decode a normalized mel with the MP weights folded on the fly (differentiable)."""
    folded = {k: (normalized_mp_weight(v) if k in params["_mp"] else v)
              for k, v in params.items() if k != "_mp"}
    moments = functional_call(vae.encoder, {k[8:]: v for k, v in folded.items()
                                            if k.startswith("encoder.")}, (mel_n,))
    mean, logvar = moments.chunk(2, dim=1)
    logvar = logvar.clamp(-30, 20)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
    rec = functional_call(vae.decoder, {k[8:]: v for k, v in folded.items()
                                        if k.startswith("decoder.")}, (z,))
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).mean()
    return rec, kl


def band_weights(mel_n: torch.Tensor, strength: float) -> torch.Tensor:
    """(1, 80, 1) loss weights per mel band, larger where bands change within a clip.

    Switched sounds (the lamp's beep) live in a few of 80 bands: under a plain L1 the VAE saves
    more by smoothing the broad stationary bands than by tracking them. Weighting each band by
    its mean within-clip standard deviation (of the normalized mel) puts the loss where the
    events are; mean weight 1 keeps the loss scale."""
    spread = mel_n.std(dim=2).mean(dim=0)  # (80,)
    w = 1.0 + strength * spread / spread.mean()
    return (w / w.mean()).view(1, -1, 1)


def train_vae(mels: torch.Tensor, steps: int, batch: int = 16, lr: float = 3e-3,
              seed: int = 0, band_weight: float = 3.0, frames: int = SEG_LEN["mel"]) -> VAE:
    """On random ``frames``-long crops of ``mels`` (N, 80, T >= frames)."""
    vae = M.build_vae()
    with torch.no_grad():
        vae.data_mean.copy_(mels.mean(dim=(0, 2), keepdim=True)[0:1])
        vae.data_std.copy_(mels.std(dim=(0, 2), keepdim=True)[0:1].clamp(min=0.05))
    named = dict(vae.named_parameters())
    mp = set(vae.mp_conv_names())
    opt = torch.optim.Adam(named.values(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    mel_n = vae.normalize(mels)
    weight = band_weights(mel_n, band_weight)
    for step in range(steps):
        idx = torch.randint(len(mels), (batch,), generator=gen)
        start = torch.randint(0, mels.shape[-1] - frames + 1, (batch,), generator=gen)
        x = WorldData._crop(mel_n, idx, start, frames, 2)
        rec, kl = _vae_forward(vae, {**named, "_mp": mp}, x, gen)
        loss = ((rec - x).abs() * weight).mean() + 1e-3 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, 2 * (1 - step / steps))
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            log(f"vae step {step}: l1 {F.l1_loss(rec, x).item():.4f} kl {kl.item():.3f}")
    return vae.normalize_weights_(keep_raw=True).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- vocoder
def _stft_mag(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    spec = torch.stft(x, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft),
                      return_complex=True)
    return spec.abs().clamp(min=1e-5)


def _vocoder_batch(data: WorldData, batch: int, frames: int, subsets: float,
                   gen: torch.Generator) -> torch.Tensor:
    """(batch, frames·256) random crops of the clips' audio; with probability ``subsets`` a
    crop sums a random subset of the clip's own tracks (possibly none: silence), so the vocoder
    also sees single sounds and silence, which is what the chain's tracks are."""
    hop = 256
    start = torch.randint(0, data.mel.shape[-1] - frames, (batch,), generator=gen) * hop
    out = []
    for i, s in zip(torch.randint(len(data), (batch,), generator=gen).tolist(), start.tolist()):
        c = data.clips[i]
        if torch.rand(1, generator=gen).item() < subsets:
            keep = [n for n in c.tracks if torch.rand(1, generator=gen).item() < 0.5]
            wave = torch.from_numpy(sum((c.tracks[n] for n in keep), np.zeros_like(c.audio)))
        else:
            wave = data.wave[i]
        out.append(wave[s:s + frames * hop])
    return torch.stack(out).float()


# Held-out clips (ball + lamp, 4 s) that pick the vocoder's best state during training: seeds
# between the training clips (< 240 by default) and the evaluation videos (evaluate.EVAL_SEED).
VOCODER_CHECK_SEED, VOCODER_CHECK_CLIPS = 9_000, 6


def vocoder_check_clips(count: int = VOCODER_CHECK_CLIPS) -> list:
    clips = []
    for seed in range(VOCODER_CHECK_SEED, VOCODER_CHECK_SEED + count):
        c = render_clip(seed, ("ball", "lamp"), M.DURATION)
        c.frames = None
        clips.append(c)
    return clips


def vocoder_score(voc, mel_conv, clips) -> float:
    """Mean over ``clips`` of the weaker of the two signatures the detectors read: the ball's
    event contrast (dB) in the vocoded true ball track and the lamp's in the vocoded lamp track."""
    scores = []
    with torch.no_grad():
        for c in clips:
            ball = voc(mel_conv(torch.from_numpy(c.tracks["ball"])[None]))[0, 0]
            lamp = voc(mel_conv(torch.from_numpy(c.tracks["lamp"])[None]))[0, 0]
            scores.append(min(signature_report(log_mel(ball), c)["ball_sync"],
                              signature_report(log_mel(lamp), c)["lamp_sync"]))
    if not np.all(np.isfinite(scores)):  # a clip without contacts or lit/dark frames
        raise ValueError("the vocoder check clips need ball contacts and lamp switches")
    return float(np.mean(scores))


def train_vocoder(model: MMAudioModel, data: WorldData, steps: int, batch: int = 8,
                  frames: int = 32, lr: float = 1e-4, seed: int = 0, subsets: float = 0.5,
                  vae: VAE | None = None, context: int = 16, init: dict | None = None,
                  check_every: int = 0, check_clips=None):
    """Regression-only training (log-mel L1 + multi-resolution STFT loss: log-magnitude L1 and
    spectral convergence; no discriminator):
    the vocoder must put energy in the right bands at the right times, which is what the
    detectors measure; it is not meant to sound natural. lr 1e-4 (BigVGAN's own), warm-up
    then cosine decay: at 5e-4 and above the snake network kept unlearning what it had (the
    lamp detected at step 125 and gone at step 250; at 1e-4 both signatures stay).

    With ``vae`` the vocoder hears mels as the chain makes them: each crop's mel goes through
    the VAE (posterior mean, decoded) with ``context`` frames either side, and must still give
    the true waveform. Measured on the world's evaluation videos (the true lamp track through
    VAE + vocoder): lamp contrast 18.1 dB with, 15.5 dB without; but the steady floor in the
    ball's band rose from -24 to -18 dB of the track's energy (bench/RESULTS.md). On the
    current world a vocoder trained that way made the ball from the VAE's mels only, and lost it
    there too by 1500 steps; `bench.world.evaluate` trains on the true mels (sixth pass).

    ``check_every`` > 0: every that many steps (and at the end) the vocoder is scored on
    ``check_clips`` (:func:`vocoder_score`) and the best-scoring state is the one returned.
    Longer training unlearned the ball: from the true mels, 12.4 dB of ball contrast after 300
    steps, 4.1 dB after 1500 (bench/RESULTS.md, sixth pass)."""
    voc = M.build_vocoder()
    if init is not None:  # continue from a trained vocoder's state dict (a warm start)
        voc.load_state_dict(init)
    voc.train()
    opt = torch.optim.AdamW(voc.parameters(), lr=lr, betas=(0.8, 0.99))
    gen = torch.Generator().manual_seed(seed)
    mel_conv = model.mel
    hop = 256
    ctx = context if vae is not None else 0
    best = None  # (score, step, state) with check_every
    if check_every > 0 and not check_clips:
        raise ValueError("check_every needs check_clips")
    for step in range(steps):
        wav = _vocoder_batch(data, batch, frames + 2 * ctx, subsets, gen)
        mel = mel_conv(wav)
        if vae is not None:
            with torch.no_grad():
                mel = vae.decode(vae.encode(mel).mean)[..., ctx:ctx + frames]
            wav = wav[:, ctx * hop:(ctx + frames) * hop]
        out = voc(mel)[:, 0]
        loss = F.l1_loss(mel_conv(out), mel_conv(wav))
        for n_fft in (128, 256, 512, 1024):  # short windows place clicks, long ones the bands
            mag_out, mag_ref = _stft_mag(out, n_fft), _stft_mag(wav, n_fft)
            # log-magnitude L1 plus spectral convergence: the log term treats every bin alike,
            # so a loud sustained sound in a few bins (the lamp) barely counted and was never
            # learned; the linear-magnitude term weighs bins by their energy
            convergence = torch.linalg.norm(mag_ref - mag_out) / torch.linalg.norm(mag_ref)
            loss = loss + 0.25 * (F.l1_loss(mag_out.log(), mag_ref.log()) + convergence)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(voc.parameters(), 10.0)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.step()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            log(f"vocoder step {step}: loss {loss.item():.4f}")
        if check_every > 0 and ((step + 1) % check_every == 0 or step == steps - 1):
            score = vocoder_score(voc.eval(), mel_conv, check_clips)
            voc.train()
            if best is None or score > best[0]:
                state = {k: v.detach().clone() for k, v in voc.state_dict().items()}
                best = (score, step + 1, state)
            log(f"vocoder step {step + 1}: check {score:.1f} dB (best {best[0]:.1f} at {best[1]})")
    if best is not None:
        voc.load_state_dict(best[2])
    return voc.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- base network
def window_posteriors(model: MMAudioModel, data: WorldData,
                      batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior (mean, std), each (C, shifts, 125, 20), of every 4 s window encoded
    alone from its audio (nag_core.mmaudio.decode.encode_audio), as the product encodes a
    conditioning mix and ``python -m nag_core.train extract`` a segment. Not crops of a whole
    clip's latents: the VAE's self-attention makes a latent depend on the audio around it (a
    crop of an 8 s clip's latents was 0.09 RMS from the window encoded alone, latent std 0.94),
    and a base trained on crops is off the latents its ControlNet is trained on."""
    windows = data.windows()
    means, stds = [], []
    with torch.no_grad():
        for rows in windows.split(batch):
            post = encode_audio(model.mel, model.vae, data.wave_windows(rows[:, 0], rows[:, 1]))
            means.append(post.mean.transpose(1, 2))
            stds.append(post.std.transpose(1, 2))
    shape = (len(data), data.shifts, SEG_LEN["latent"], -1)
    return torch.cat(means).reshape(shape), torch.cat(stds).reshape(shape)


def latent_windows(latents: torch.Tensor, clip: torch.Tensor, shift: torch.Tensor):
    """(B, 125, 20) the windows (clip, shift) of per-window latents (C, shifts, 125, 20)."""
    return latents[clip, shift]


def caption_table(model: MMAudioModel, captions) -> dict:
    return {c: model.encode_text([c])[0] for c in captions}


def all_captions() -> list[str]:
    names = list(CAPTIONS.values())
    out = []
    for k in range(1, 4):
        for combo in itertools.permutations(names, k):
            out.append(" and ".join(combo))
    return out


def logit_normal(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.sigmoid(torch.randn(n, generator=gen))


def flow_batch(x1: torch.Tensor, gen: torch.Generator):
    """MMAudio's flow-matching training pair: x0 ~ N(0, I), logit-normal t,
    x_t = t·x1 + (1−t)·x0; returns (x_t, t, target x1 − x0)."""
    x0 = torch.randn(x1.shape, generator=gen)
    t = logit_normal(x1.shape[0], gen)
    return (1 - t[:, None, None]) * x0 + t[:, None, None] * x1, t, x1 - x0


def optimizer_step(opt, params, loss: torch.Tensor, lr: float, step: int, steps: int,
                   warm: int) -> None:
    """Backward, clip at 1.0, linear warm-up then cosine decay, step."""
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    for g in opt.param_groups:
        g["lr"] = lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / steps))
    opt.step()


def train_base(model: MMAudioModel, data: WorldData, latents: torch.Tensor, steps: int,
               batch: int = 16, lr: float = 1e-3, seed: int = 0,
               dropout: float = 0.1, warm_start: bool = False,
               stds: torch.Tensor | None = None) -> MMAudioNetwork:
    """MMAudio's recipe: flow matching (x_t = (1-t) x0 + t x1, target x1 - x0), logit-normal t,
    condition dropout 0.1 for video and for text (independently), latents normalised by the data's
    per-channel mean/std stored in the network. ``warm_start``: ``model.network`` is already
    trained (same VAE, same encoders); its weights and latent statistics are kept and training
    continues on ``data``.

    ``stds`` (the posterior's, beside ``latents`` = its means): x1 is a fresh posterior sample
    mean + std·ε at every step, as MMAudio trains and as ``python -m nag_core.train`` trains the
    ControlNet on top of this base. A base trained on the means alone was off the samples the
    ControlNet learns on, and that ControlNet's held-out loss was 3x the base's."""
    net = model.network
    net.train().requires_grad_(True)
    with torch.no_grad():
        if not warm_start:
            flat = latents.reshape(-1, latents.shape[-1])
            net.latent_mean.copy_(flat.mean(dim=0).view_as(net.latent_mean))
            net.latent_std.copy_(flat.std(dim=0).clamp(min=1e-3).view_as(net.latent_std))
        net.empty_string_feat.copy_(model.encode_text([""])[0])
    net.latent_mean.requires_grad_(False)
    net.latent_std.requires_grad_(False)
    net.empty_string_feat.requires_grad_(False)
    windows = data.windows()
    texts = caption_table(model, all_captions())
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr,
                            weight_decay=1e-4)
    warm = max(1, steps // 20)
    for step in range(steps):
        clip, shift = windows[torch.randint(len(windows), (batch,), generator=gen)].T
        caps = [training_caption(data.clips[i].audible, rng) for i in clip.tolist()]
        text = torch.stack([texts[c] for c in caps])
        clip_f, sync_f = data.video(clip, shift)
        drop_v = torch.rand(batch, generator=gen) < dropout
        drop_t = torch.rand(batch, generator=gen) < dropout
        clip_f = torch.where(drop_v[:, None, None], net.get_empty_clip_sequence(batch), clip_f)
        sync_f = torch.where(drop_v[:, None, None], net.get_empty_sync_sequence(batch), sync_f)
        text = torch.where(drop_t[:, None, None], net.get_empty_string_sequence(batch), text)
        x1 = latent_windows(latents, clip, shift)
        if stds is not None:
            x1 = x1 + latent_windows(stds, clip, shift) * torch.randn(x1.shape, generator=gen)
        xt, t, target = flow_batch(net.normalize(x1), gen)
        cond = net.preprocess_conditions(clip_f, sync_f, text)
        loss = F.mse_loss(net.predict_flow(xt, t, cond), target)
        optimizer_step(opt, net.parameters(), loss, lr, step, steps, warm)
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log(f"base step {step}: flow loss {loss.item():.4f}")
    return net.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- ControlNet
def condition_windows(model: MMAudioModel, data: WorldData, latents: torch.Tensor,
                      domain: str) -> torch.Tensor:
    """(C, 2, 125, 20) x_cond of each clip's first and last 4 s window, built as the chain
    builds it for the domain the evaluation measures: "wave" (the product path) the window's
    audio at the mix loudness (-20 LUFS) -> MMAudioModel.encode_mix; "mel" the window's VAE
    latent at its own level, normalised."""
    clips = torch.arange(len(data))
    out = []
    for shift in (0, data.shifts - 1):
        at = torch.full_like(clips, shift)
        if domain == "mel":
            out.append(latent_windows(model.network.normalize(latents), clips, at))
            continue
        out.append(mix_conditions(model, data.wave_windows(clips, at)))
    return torch.stack(out, 1)


def mix_conditions(model: MMAudioModel, waves) -> torch.Tensor:
    """(N, 125, 20) x_cond of single tracks exactly as the chain builds it (nag_core.pipeline):
    the track alone as the mix at -20 LUFS, then MMAudioModel.encode_mix."""
    out = []
    for w in waves:
        mix = composite([Track(torch.as_tensor(w)[None], SR)], [0.0], TARGET_LUFS)
        out.append(model.encode_mix(mix.wave, mix.sample_rate)[0])
    return torch.stack(out)


def train_controlnet(model: MMAudioModel, data: WorldData, latents: torch.Tensor,
                     x_cond_windows: torch.Tensor, steps: int, batch: int = 16, lr: float = 5e-4,
                     seed: int = 0, num_blocks: int = 2) -> NAGControlNet:
    """The paper's objective on adjacent segments: u_ctrl(x_t, t, V_k, ∅, x_cond = segment of
    the neighbour) regresses the flow to segment k's audio. Minimal stand-in for
    ``python -m nag_core.train`` (same objective, same ControlNet module).

    The segments of an 8 s clip are its first and last 4 s windows (shifts 0 and 12, which
    overlap by 0.16 s); ``x_cond_windows`` is :func:`condition_windows`."""
    net = model.network
    cn = NAGControlNet.from_base(net, ControlNetConfig(num_blocks=num_blocks))
    cn.train()
    last = data.shifts - 1
    if last < 1:
        raise ValueError("ControlNet training needs clips longer than one 4 s window")
    pairs = torch.tensor([(c, a, b) for c in range(len(data)) for a, b in ((0, last), (last, 0))])
    x1_all = net.normalize(latents)
    empty_text = net.get_empty_string_sequence(1)
    opt = torch.optim.AdamW(cn.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    warm = max(1, steps // 20)
    for step in range(steps):
        clip, tgt, cnd = pairs[torch.randint(len(pairs), (batch,), generator=gen)].T
        with torch.no_grad():
            cond = net.preprocess_conditions(*data.video(clip, tgt),
                                             empty_text.expand(batch, -1, -1))
        xt, t, target = flow_batch(latent_windows(x1_all, clip, tgt), gen)
        u = controlnet_flow(net, cn, xt, t, cond, x_cond_windows[clip, (cnd > 0).long()])
        loss = F.mse_loss(u, target)
        optimizer_step(opt, cn.parameters(), loss, lr, step, steps, warm)
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log(f"controlnet step {step}: flow loss {loss.item():.4f}")
    return cn.eval().requires_grad_(False)
