"""One object holding a complete MMAudio model: network, CLIP (+ tokenizer), Synchformer, VAE,
vocoder and the mel converter of its mode. It turns video frames and text into conditions, and
latents into waveforms at the model's true sample rate (16000 or 44100 Hz).

Generation itself (CFG / NAG sampling over a Foley chain) lives in :mod:`nag_core.pipeline`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from .defaults import SYNC_FPS, sync_frames_needed
from .errors import ConfigError, WeightsError
from .media import VideoClip, clip_to_float, sync_to_float
from .mmaudio.decode import decode_latents, encode_audio
from .mmaudio.mel import mel_converter
from .mmaudio.network import MMAudioNetwork
from .mmaudio.variants import MODES, sequence_lengths
from .resample import resample
from .windows import TRAINED_DURATION, plan_windows, sync_frame_slice


# What to do about a part that does not fit the network, said once per part.
_PART_ADVICE = {
    "vae": "Use the VAE of the network's mode (16k: v1-16.pth; 44k: v1-44.pth).",
    "vocoder": "Use the vocoder of the network's mode (16k: best_netG.pt; 44k: BigVGAN-v2 "
               "44 kHz).",
    "clip": "Use the CLIP the network was trained with (DFN5B-CLIP-ViT-H-14-384 for the "
            "released networks; for a tiny or self-trained set, the CLIP of that set, beside "
            "its network).",
    "synchformer": "Use the Synchformer the network was trained with "
                   "(synchformer_state_dict.pth for the released networks; for a tiny or "
                   "self-trained set, the one beside its network).",
}


@dataclass
class VideoFeatures:
    """CLIP and Synchformer features of one clip; computed once per video for a whole chain."""

    clip_f: Tensor  # (1, Nc, clip_dim), L2-normalised per frame
    sync_f: Tensor  # (1, Ns, sync_dim): segments at stride 8 from the clip's first frame
    duration: float  # effective duration in seconds (after the truncation rule)
    # A clip longer than one window: the Synchformer tokens of its last window (the one that
    # ends at the clip's end) when that window starts off the 8-frame grid of ``sync_f``, and
    # the 25 fps frame it starts at (nag_core.windows).
    tail_sync_f: Optional[Tensor] = None
    tail_sync_frame: Optional[int] = None


class MMAudioModel(nn.Module):
    """A complete MMAudio (any of the five variants, or a tiny test model).

    Holds nn.Modules only, so ``.to(device, dtype)`` moves everything. Only the mel converter
    stays float32 (see ``to``: its STFT needs the precision); the VAE casts its input to its own
    dtype, so a bf16 model encodes a float32 mel.
    """

    def __init__(self, network: MMAudioNetwork, vae: nn.Module, vocoder: nn.Module,
                 clip: nn.Module, synchformer: nn.Module, tokenizer, variant: str = "custom",
                 trained_duration: float = TRAINED_DURATION,
                 sources: Optional[Mapping[str, str]] = None):
        super().__init__()
        # The sequence length the network was trained on: longer clips run in windows this long.
        self.trained_duration = float(trained_duration)
        self.sources = dict(sources or {})  # part -> the file it was loaded from (messages)
        self.network = network
        self.vae = vae
        self.vocoder = vocoder
        self.clip = clip
        self.synchformer = synchformer
        self.tokenizer = tokenizer
        self.variant = variant
        self.mode = network.config.mode
        self.mel = mel_converter(self.mode)
        self._check_parts()

    # ------------------------------------------------------------------ identity
    @property
    def sample_rate(self) -> int:
        return MODES[self.mode].sample_rate

    @property
    def device(self) -> torch.device:
        return self.network.device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.dtype

    def _check_parts(self) -> None:
        """Parts of different modes or widths fail here, with names, not deep in a matmul. Each
        problem names the part (and its file, from ``sources``) that does not fit the network,
        and the advice is for that part."""
        cfg = self.network.config
        name = {k: f"the {label}" + (f" ({Path(self.sources[k]).name})" if k in self.sources
                                      else "")
                for k, label in (("network", "network"), ("vae", "VAE"),
                                 ("vocoder", "vocoder"), ("clip", "CLIP"),
                                 ("synchformer", "Synchformer"))}
        net = name["network"]
        problems: list[tuple[str, str]] = []
        vae_dim = self.vae.embed_dim
        if vae_dim != cfg.latent_dim:
            problems.append(("vae", f"{name['vae']} has {vae_dim} latent channels but {net} "
                                    f"expects {cfg.latent_dim} ({cfg.mode})"))
        n_mels = self.vae.data_dim
        if n_mels != self.mel.n_mels:
            problems.append(("vae", f"{name['vae']} works on {n_mels} mel bands; a {cfg.mode} "
                                    f"model needs {self.mel.n_mels}"))
        voc_mels = self.vocoder.config.num_mels
        if voc_mels != n_mels:
            problems.append(("vocoder", f"{name['vocoder']} takes {voc_mels} mel bands, "
                                        f"{name['vae']} makes {n_mels}"))
        clip_dim = self.clip.cfg.embed_dim
        if clip_dim != cfg.clip_dim:
            problems.append(("clip", f"{name['clip']} gives image features {clip_dim} wide, "
                                     f"{net} expects {cfg.clip_dim}"))
        text_dim = self.clip.cfg.text_width
        if text_dim != cfg.text_dim:
            problems.append(("clip", f"{name['clip']} gives text features {text_dim} wide, "
                                     f"{net} expects {cfg.text_dim}"))
        sync_dim = self.synchformer.cfg.width
        if sync_dim != cfg.sync_dim:
            problems.append(("synchformer", f"{name['synchformer']} gives features {sync_dim} "
                                            f"wide, {net} expects {cfg.sync_dim}"))
        if problems:
            parts = list(dict.fromkeys(part for part, _ in problems))
            raise WeightsError("these model files do not belong together: "
                               + "; ".join(text for _, text in problems) + ". "
                               + " ".join(_PART_ADVICE[part] for part in parts))

    # ------------------------------------------------------------------ conditions
    @torch.no_grad()
    def encode_video(self, clip: VideoClip,
                     window_duration: Optional[float] = None) -> VideoFeatures:
        """CLIP features of the 8 fps stream and Synchformer features of the 25 fps stream, once
        for the whole clip (windows of a long clip are cut from them; nag_core.windows).
        ``window_duration`` (default ``trained_duration``): the windows it will be generated in."""
        lengths = sequence_lengths(self.mode, clip.duration)
        dev = self.device
        # uint8 frames cross to the device, then become float there (a quarter of the traffic)
        clip_frames = clip_to_float(clip.clip_frames[: lengths.clip].to(dev)).to(self.clip.dtype)
        clip_f = self.clip.encode_video(clip_frames.unsqueeze(0))
        n_sync = sync_frames_needed(lengths.sync_segments)
        sync_frames = sync_to_float(clip.sync_frames[:n_sync].to(dev)).to(self.synchformer.dtype)
        if sync_frames.shape[0] < n_sync:
            raise ConfigError(f"the video gave {sync_frames.shape[0]} frames at {SYNC_FPS} fps, "
                              f"{n_sync} are needed for {clip.duration:.2f} s")
        sync_f = self.synchformer.encode(sync_frames.unsqueeze(0))
        features = VideoFeatures(clip_f=clip_f, sync_f=sync_f, duration=lengths.duration)
        # The last window ends at the clip's end whatever the overlap, so its start is known now.
        plan = plan_windows(self.mode, lengths.duration, window_duration or self.trained_duration)
        last = plan.windows[-1]
        if last.index > 0 and not last.on_sync_grid:
            frames = clip.sync_frames[sync_frame_slice(plan, last.index)].to(dev)
            features.tail_sync_f = self.synchformer.encode(
                sync_to_float(frames).to(self.synchformer.dtype).unsqueeze(0))
            features.tail_sync_frame = last.sync_frame
        return features

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.clip.encode_text(tokens)

    # ------------------------------------------------------------------ audio <-> latent
    def num_samples(self, duration: float) -> int:
        """Samples of audio for ``duration`` seconds at the model's rate (tracks are trimmed to
        this, so every track of a chain lines up with the video exactly)."""
        return int(round(duration * self.sample_rate))

    @torch.no_grad()
    def decode(self, latent_normalized: Tensor) -> Tensor:
        """(B, N, C) latent in the network's normalized space -> waveform (B, samples)."""
        latent = self.network.unnormalize(latent_normalized)
        wave = decode_latents(self.vae, self.vocoder, latent.to(self.vae.data_mean.dtype))
        return wave[:, 0].float()

    @torch.no_grad()
    def encode_posterior(self, wave: Tensor, sample_rate: int, latent_len: int):
        """Audio (channels, samples) or (samples,) -> the VAE posterior over ``latent_len`` latent
        frames, channel-first (1, C, N): down-mix, resample to the model rate, pad with silence or
        trim to ``latent_len * 2 * hop`` samples, mel -> VAE encode. Shared by the inference-time
        conditioning mix and training's extraction, so both see exactly the same audio path."""
        mono = wave.float().mean(dim=0, keepdim=True) if wave.dim() == 2 else wave.float()[None]
        mono = resample(mono, sample_rate, self.sample_rate)
        need = latent_len * 2 * MODES[self.mode].hop
        if mono.shape[-1] < need:
            mono = torch.nn.functional.pad(mono, (0, need - mono.shape[-1]))
        posterior = encode_audio(self.mel, self.vae, mono[..., :need].to(self.device))
        if posterior.mean.shape[-1] != latent_len:
            raise ConfigError(f"encoded audio has {posterior.mean.shape[-1]} latent frames, "
                              f"{latent_len} were expected")
        return posterior

    @torch.no_grad()
    def encode_mix(self, wave: Tensor, sample_rate: int,
                   latent_len: Optional[int] = None) -> Tensor:
        """A conditioning mix -> x_cond (1, N, C): the posterior MEAN (deterministic at inference,
        as in training; design doc §4) in the network's normalised space. N = ``latent_len``
        (default the network's latent_seq_len; a windowed generation encodes the whole mix)."""
        net = self.network
        n = latent_len or net.latent_seq_len
        mean = self.encode_posterior(wave, sample_rate, n).mean.transpose(1, 2)
        return net.normalize(mean.to(net.dtype))

    def to(self, *args, **kwargs):
        super().to(*args, **kwargs)
        # The mel converter stays float32 (FFT precision). Rebuilt rather than cast back: a
        # filterbank rounded to bf16 and returned to float32 is no longer the official one.
        self.mel = mel_converter(self.mode).to(self.device)
        return self
