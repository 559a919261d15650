"""Training the world's tiny model set from scratch on CPU: VAE, vocoder, flow network (MMAudio's
recipe) and the NAG ControlNet.

Every stage works on a :class:`WorldData` built once: per 4 s segment the CLIP/Synchformer
features (through the product path: frames_from_images -> MMAudioModel.encode_video), the 16 kHz
log-mel and the waveform. Training clips are 8 s, so each gives two adjacent segments: the
ControlNet's (target, condition) pairs.
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
from nag_core.mix import TARGET_LUFS, Track, composite
from nag_core.mmaudio.network import MMAudioNetwork
from nag_core.mmaudio.vae import VAE, normalized_mp_weight
from nag_core.model import MMAudioModel
from nag_core.world.scene import CAPTIONS, render_clip, training_caption

from . import models as M

SEG = M.DURATION
SR = 16000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- data
@dataclass
class WorldData:
    clips: list  # rendered clips (scene.Clip), one per source clip
    seg_clip: list  # source clip index of each segment
    seg_start: list  # start second of each segment in its clip
    clip_f: torch.Tensor  # (S, 32, CLIP_EMBED)
    sync_f: torch.Tensor  # (S, 88, SYNC_WIDTH)
    mel: torch.Tensor  # (S, 80, 250)
    wave: torch.Tensor  # (S, 64000)

    def __len__(self):
        return len(self.seg_clip)


def features_model(clip=None, sync=None, tokenizer=None, network=None, vae=None, vocoder=None):
    """An MMAudioModel of the world's parts (placeholders where a part is not trained yet: only
    its widths matter for encoding)."""
    vae = vae or M.build_vae().normalize_weights_()
    return MMAudioModel(network or M.build_network(), vae, vocoder or M.build_vocoder(),
                        clip or M.build_clip(), sync or M.build_synchformer(), tokenizer)


def build_data(model: MMAudioModel, seeds, duration: float, objects=None, p_silent=0.0,
               audible=None) -> WorldData:
    clips, seg_clip, seg_start, cf, sf, mels, waves = [], [], [], [], [], [], []
    n_seg = int(duration // SEG)
    for i, seed in enumerate(seeds):
        c = render_clip(int(seed), objects, duration, audible=audible, p_silent=p_silent)
        clips.append(c)
        frames = torch.from_numpy(c.frames)
        for k in range(n_seg):
            vc = frames_from_images(frames, 25, start=k * SEG, duration=SEG)
            f = model.encode_video(vc)
            w = torch.from_numpy(c.audio[int(k * SEG * SR): int((k + 1) * SEG * SR)])
            cf.append(f.clip_f[0])
            sf.append(f.sync_f[0])
            waves.append(w)
            mels.append(model.mel(w))
            seg_clip.append(i)
            seg_start.append(k * SEG)
    return WorldData(clips, seg_clip, seg_start, torch.stack(cf), torch.stack(sf),
                     torch.stack(mels), torch.stack(waves))


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

    Switched sounds (the lamp's buzz) live in a few of 80 bands: under a plain L1 the VAE saves
    more by smoothing the broad stationary bands than by tracking them. Weighting each band by its mean within-clip standard deviation (of the normalized
    mel) puts the loss where the events are; mean weight 1 keeps the loss scale."""
    spread = mel_n.std(dim=2).mean(dim=0)  # (80,)
    w = 1.0 + strength * spread / spread.mean()
    return (w / w.mean()).view(1, -1, 1)


def train_vae(mels: torch.Tensor, steps: int, batch: int = 16, lr: float = 3e-3,
              seed: int = 0, band_weight: float = 3.0) -> VAE:
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
        x = mel_n[idx]
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


def train_vocoder(model: MMAudioModel, data: WorldData, steps: int, batch: int = 8,
                  frames: int = 32, lr: float = 4e-3, seed: int = 0):
    """Regression-only training (log-mel L1 + multi-resolution log-STFT L1, no discriminator):
    the vocoder must put energy in the right bands at the right times, which is what the
    detectors measure; it is not meant to sound natural."""
    voc = M.build_vocoder().train()
    opt = torch.optim.Adam(voc.parameters(), lr=lr, betas=(0.8, 0.99))
    gen = torch.Generator().manual_seed(seed)
    hop = 256
    mel_conv = model.mel
    for step in range(steps):
        idx = torch.randint(len(data), (batch,), generator=gen)
        start = torch.randint(0, data.mel.shape[-1] - frames, (batch,), generator=gen)
        mel = torch.stack([data.mel[i, :, s:s + frames] for i, s in zip(idx, start)])
        wav = torch.stack([data.wave[i, s * hop:(s + frames) * hop] for i, s in zip(idx, start)])
        out = voc(mel)[:, 0]
        loss = F.l1_loss(mel_conv(out), mel_conv(wav))
        for n_fft in (128, 256, 512, 1024):  # short windows place clicks, long ones the bands
            loss = loss + F.l1_loss(_stft_mag(out, n_fft).log(), _stft_mag(wav, n_fft).log()) * 0.25
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(voc.parameters(), 10.0)
        opt.step()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            log(f"vocoder step {step}: loss {loss.item():.4f}")
    return voc.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- base network
def latents_of(vae: VAE, mels: torch.Tensor) -> torch.Tensor:
    """(S, 80, 250) mel -> (S, 125, 20) posterior means."""
    with torch.no_grad():
        return vae.encode(mels).mean.transpose(1, 2).contiguous()


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
               dropout: float = 0.1) -> MMAudioNetwork:
    """MMAudio's recipe: flow matching (x_t = (1-t) x0 + t x1, target x1 - x0), logit-normal t,
    condition dropout 0.1 for video and for text (independently), latents normalised by the data's
    per-channel mean/std stored in the network."""
    net = model.network
    net.train().requires_grad_(True)
    with torch.no_grad():
        net.latent_mean.copy_(latents.mean(dim=(0, 1), keepdim=True))
        net.latent_std.copy_(latents.std(dim=(0, 1), keepdim=True).clamp(min=1e-3))
        net.empty_string_feat.copy_(model.encode_text([""])[0])
    net.latent_mean.requires_grad_(False)
    net.latent_std.requires_grad_(False)
    net.empty_string_feat.requires_grad_(False)
    x1_all = net.normalize(latents)
    texts = caption_table(model, all_captions())
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr,
                            weight_decay=1e-4)
    warm = max(1, steps // 20)
    for step in range(steps):
        idx = torch.randint(len(data), (batch,), generator=gen)
        caps = [training_caption(data.clips[data.seg_clip[i]].audible, rng) for i in idx.tolist()]
        text = torch.stack([texts[c] for c in caps])
        clip_f, sync_f = data.clip_f[idx], data.sync_f[idx]
        drop_v = torch.rand(batch, generator=gen) < dropout
        drop_t = torch.rand(batch, generator=gen) < dropout
        clip_f = torch.where(drop_v[:, None, None], net.get_empty_clip_sequence(batch), clip_f)
        sync_f = torch.where(drop_v[:, None, None], net.get_empty_sync_sequence(batch), sync_f)
        text = torch.where(drop_t[:, None, None], net.get_empty_string_sequence(batch), text)
        xt, t, target = flow_batch(x1_all[idx], gen)
        cond = net.preprocess_conditions(clip_f, sync_f, text)
        loss = F.mse_loss(net.predict_flow(xt, t, cond), target)
        optimizer_step(opt, net.parameters(), loss, lr, step, steps, warm)
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log(f"base step {step}: flow loss {loss.item():.4f}")
    return net.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- ControlNet
def condition_latents(model: MMAudioModel, data: WorldData) -> torch.Tensor:
    """x_cond of every segment as inference builds it: the wave at the mix loudness (-20 LUFS),
    mel -> VAE posterior mean -> network normalisation (MMAudioModel.encode_mix)."""
    out = []
    for w in data.wave:
        mix = composite([Track(w[None], SR)], [0.0], TARGET_LUFS)
        out.append(model.encode_mix(mix.wave, mix.sample_rate)[0])
    return torch.stack(out)


def train_controlnet(model: MMAudioModel, data: WorldData, latents: torch.Tensor,
                     x_cond_all: torch.Tensor, steps: int, batch: int = 16, lr: float = 5e-4,
                     seed: int = 0, num_blocks: int = 2) -> NAGControlNet:
    """The paper's objective on adjacent segments: u_ctrl(x_t, t, V_k, ∅, x_cond = segment of
    the neighbour) regresses the flow to segment k's audio. Minimal stand-in for
    ``python -m nag_core.train`` (same objective, same ControlNet module)."""
    net = model.network
    cn = NAGControlNet.from_base(net, ControlNetConfig(num_blocks=num_blocks))
    cn.train()
    pairs = []
    by_clip: dict = {}
    for s, c in enumerate(data.seg_clip):
        by_clip.setdefault(c, []).append(s)
    for segs in by_clip.values():
        for a, b in zip(segs, segs[1:]):
            pairs += [(a, b), (b, a)]
    pairs = torch.tensor(pairs)
    x1_all = net.normalize(latents)
    empty_text = net.get_empty_string_sequence(1)
    opt = torch.optim.AdamW(cn.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    warm = max(1, steps // 20)
    for step in range(steps):
        pick = pairs[torch.randint(len(pairs), (batch,), generator=gen)]
        tgt, cnd = pick[:, 0], pick[:, 1]
        with torch.no_grad():
            cond = net.preprocess_conditions(data.clip_f[tgt], data.sync_f[tgt],
                                             empty_text.expand(batch, -1, -1))
        xt, t, target = flow_batch(x1_all[tgt], gen)
        u = controlnet_flow(net, cn, xt, t, cond, x_cond_all[cnd])
        loss = F.mse_loss(u, target)
        optimizer_step(opt, cn.parameters(), loss, lr, step, steps, warm)
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log(f"controlnet step {step}: flow loss {loss.item():.4f}")
    return cn.eval().requires_grad_(False)
