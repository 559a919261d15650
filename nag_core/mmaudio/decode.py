"""Glue between the flow network's latents and audio (docs/MMAUDIO.md).

decode: unnormalised latent (B, N, C) -> VAE decoder (channel-first) -> log-mel (B, n_mels, 2N)
        -> vocoder -> wave (B, 1, 2N * hop).
encode: wave -> log-mel -> VAE encoder -> posterior (its ``mean`` is the clean latent, channel
        first (B, C, N); transpose to (B, N, C) for the network).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .bigvgan import BigVGAN
from .mel import MelConverter
from .vae import VAE, DiagonalGaussian


def _check_pair(vae: VAE, vocoder: BigVGAN) -> None:
    if vocoder.config.num_mels != vae.data_dim:
        raise ConfigError(f"the VAE makes {vae.data_dim}-band mels but the vocoder expects "
                          f"{vocoder.config.num_mels}: load the VAE and vocoder of the same mode "
                          "(16k: v1-16.pth + best_netG.pt, 44k: v1-44.pth + BigVGAN-v2 44k)")


@torch.no_grad()
def decode_latents(vae: VAE, vocoder: BigVGAN, latent_bnc: Tensor) -> Tensor:
    """Unnormalised latent (B, N, C) -> waveform (B, 1, 2N * hop), float32, in [-1, 1]."""
    _check_pair(vae, vocoder)
    if latent_bnc.ndim != 3 or latent_bnc.shape[-1] != vae.embed_dim:
        raise ValueError(f"decode_latents expects a latent of shape (B, N, {vae.embed_dim}); "
                         f"got {tuple(latent_bnc.shape)}")
    dev = vae.data_mean.device
    mel = vae.decode(latent_bnc.to(dev).transpose(1, 2))
    voc_dev = vocoder.conv_pre.weight.device
    wave = vocoder(mel.to(voc_dev))
    return wave.float()


@torch.no_grad()
def encode_audio(mel_converter: MelConverter, vae: VAE, wave: Tensor) -> DiagonalGaussian:
    """Waveform (B, T) / (B, 1, T) / (T,) at the mode's rate -> the VAE posterior over
    (B, C, T // hop // 2). The NAG pipeline uses ``.mean`` as the clean latent."""
    if mel_converter.n_mels != vae.data_dim:
        raise ConfigError(f"the {mel_converter.mode} mel converter makes {mel_converter.n_mels} "
                          f"bands but the VAE expects {vae.data_dim}: use the same mode for both")
    dev = vae.data_mean.device
    mel = mel_converter.to(dev)(wave.to(dev))
    if mel.ndim == 2:
        mel = mel[None]
    if mel.shape[-1] % 2:  # the encoder halves time; an odd last frame cannot form a latent
        mel = mel[..., :-1]
    return vae.encode(mel)
