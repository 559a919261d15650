"""BigVGAN vocoders (docs/MMAUDIO.md): v1 for 16 kHz (best_netG.pt, tanh output, conv_post bias) and
NVIDIA BigVGAN-v2 44 kHz (bigvgan_generator.pt, clamp(-1, 1) output, no conv_post bias).

One generator serves both. Released files store weight-normed convolutions, either under the
parametrization names (``X.parametrizations.weight.original0/1``) or the legacy ones
(``X.weight_g/X.weight_v``); files without weight norm store ``X.weight``. The loader folds
g * v / ||v|| into plain weights once, so inference runs plain convolutions.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import read_state_dict, source_name, write_safetensors, write_torch
from ..errors import ConfigError, WeightsError
from .state_dict import check_finite, check_keys, describe

MODE_OF_MELS = {80: "16k", 128: "44k"}
HOP_OF_MODE = {"16k": 256, "44k": 512}
SAMPLING_RATE_OF_MODE = {"16k": 16000, "44k": 44100}


@dataclass(frozen=True)
class VocoderConfig:
    """The generator fields of a BigVGAN config (everything else in the yml/json is training)."""
    num_mels: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    use_tanh_at_final: bool = True
    use_bias_at_final: bool = True
    snake_logscale: bool = True

    def __post_init__(self):
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ConfigError("vocoder config: upsample_rates and upsample_kernel_sizes differ in "
                              "length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ConfigError("vocoder config: resblock_kernel_sizes and resblock_dilation_sizes "
                              "differ in length")

    @property
    def hop(self) -> int:
        """Samples per mel frame (product of the upsample rates)."""
        return math.prod(self.upsample_rates)

    @property
    def mode(self) -> str | None:
        return MODE_OF_MELS.get(self.num_mels)

    @classmethod
    def from_dict(cls, h: Mapping) -> "VocoderConfig":
        """From a bigvgan_vocoder.yml / config.json dict (extra training fields are ignored)."""
        if str(h.get("resblock", "1")) != "1":
            raise ConfigError(f"vocoder config: resblock {h.get('resblock')!r} is not supported "
                              "(MMAudio's vocoders use AMPBlock1, resblock \"1\")")
        if h.get("activation", "snakebeta") != "snakebeta":
            raise ConfigError(f"vocoder config: activation {h.get('activation')!r} is not "
                              "supported (MMAudio's vocoders use snakebeta)")
        try:
            return cls(
                num_mels=int(h["num_mels"]),
                upsample_rates=tuple(int(u) for u in h["upsample_rates"]),
                upsample_kernel_sizes=tuple(int(k) for k in h["upsample_kernel_sizes"]),
                upsample_initial_channel=int(h["upsample_initial_channel"]),
                resblock_kernel_sizes=tuple(int(k) for k in h["resblock_kernel_sizes"]),
                resblock_dilation_sizes=tuple(tuple(int(d) for d in ds)
                                              for ds in h["resblock_dilation_sizes"]),
                use_tanh_at_final=bool(h.get("use_tanh_at_final", True)),
                use_bias_at_final=bool(h.get("use_bias_at_final", True)),
                snake_logscale=bool(h.get("snake_logscale", True)),
            )
        except KeyError as e:
            raise ConfigError(f"vocoder config lacks the field {e.args[0]!r}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(resblock="1", activation="snakebeta")
        return d


_DILATIONS = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
# mmaudio/ext/bigvgan/bigvgan_vocoder.yml (Make-An-Audio 2 vocoder, file best_netG.pt)
CONFIG_16K = VocoderConfig(80, (4, 4, 2, 2, 2, 2), (8, 8, 4, 4, 4, 4), 1536, (3, 7, 11), _DILATIONS,
                           use_tanh_at_final=True, use_bias_at_final=True)
# nvidia/bigvgan_v2_44khz_128band_512x config.json
CONFIG_44K = VocoderConfig(128, (8, 4, 2, 2, 2, 2), (16, 8, 4, 4, 4, 4), 1536, (3, 7, 11),
                           _DILATIONS, use_tanh_at_final=False, use_bias_at_final=False)
CONFIGS = {"16k": CONFIG_16K, "44k": CONFIG_44K}


# ---------------------------------------------------------------------------------------------
# Anti-aliased activation
# ---------------------------------------------------------------------------------------------

def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    """(1, 1, K) low-pass: a sinc at ``cutoff`` (fraction of the sample rate) under a Kaiser
    window whose beta follows Kaiser's formula for the transition ``half_width``; unit DC gain.
    A new float32 tensor on the current default device (computed once per shape on the CPU:
    hundreds of layers share it)."""
    taps = _kaiser_sinc_filter(float(cutoff), float(half_width), int(kernel_size))
    return taps.to(torch.empty(0).device, copy=True)  # empty(0) follows a `with torch.device`


@lru_cache(maxsize=8)
def _kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    with torch.device("cpu"):
        return _kaiser_sinc_taps(cutoff, half_width, kernel_size)


def _kaiser_sinc_taps(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95  # dB
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    if kernel_size % 2 == 0:  # even length: taps sit half-way between samples
        t = torch.arange(-half, half) + 0.5
    else:
        t = torch.arange(kernel_size) - half
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    return (taps / taps.sum()).view(1, 1, kernel_size)


class UpSample1d(nn.Module):
    """x2 band-limited upsampling: replicate-pad, zero-stuffing transposed conv with the shared
    low-pass (times the ratio, to keep the level), trim back to exactly ratio * N samples."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        self.ratio = ratio
        self.pad = kernel_size // ratio - 1
        self.trim_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.trim_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        # one depthwise (grouped) conv for all channels; measured as fast as a polyphase
        # conv1d on CPU, and it is the official arithmetic, so results match to the last bit
        y = F.pad(x, (self.pad, self.pad), mode="replicate")
        y = F.conv_transpose1d(y, self.filter.to(x).expand(c, -1, -1), stride=self.ratio,
                               groups=c)
        return self.ratio * y[..., self.trim_left: y.shape[-1] - self.trim_right]


class LowPassFilter1d(nn.Module):
    def __init__(self, cutoff: float, half_width: float, stride: int, kernel_size: int = 12):
        super().__init__()
        self.stride = stride
        self.pad_left = kernel_size // 2 - (1 if kernel_size % 2 == 0 else 0)
        self.pad_right = kernel_size // 2
        self.register_buffer("filter", kaiser_sinc_filter(cutoff, half_width, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        y = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(y, self.filter.to(x).expand(c, -1, -1), stride=self.stride, groups=c)


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.lowpass(x)


class SnakeBeta(nn.Module):
    """x + sin^2(a x) / b per channel, a = exp(alpha), b = exp(beta) on the log scale."""

    def __init__(self, channels: int, logscale: bool = True):
        super().__init__()
        self.logscale = logscale
        self.alpha = nn.Parameter(torch.zeros(channels) if logscale else torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels) if logscale else torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        a = self.alpha[None, :, None]
        b = self.beta[None, :, None]
        if self.logscale:
            a, b = torch.exp(a), torch.exp(b)
        inv_b = 1.0 / (b + 1e-9)
        if torch.is_grad_enabled() and (x.requires_grad or self.alpha.requires_grad):
            return x + torch.sin(x * a).pow(2) * inv_b
        # inference: the same arithmetic in place on one temporary (this layer runs on every
        # sample at twice the audio rate, so memory passes dominate its cost)
        return torch.sin(x * a).square_().mul_(inv_b).add_(x)


class Activation1d(nn.Module):
    """Snake at twice the rate: upsample x2, SnakeBeta, low-pass and decimate x2.

    ``forward(x, fused=True)`` computes the same function in fewer passes over memory (see
    ``_fused``); BigVGAN asks for it only where it holds (``BigVGAN._use_fused``). The three
    modules stay the reference formulation (and the one autograd sees)."""

    def __init__(self, channels: int, logscale: bool = True):
        super().__init__()
        self.act = SnakeBeta(channels, logscale)
        self.upsample = UpSample1d(2, 12)
        self.downsample = DownSample1d(2, 12)

    def forward(self, x: Tensor, fused: bool = False) -> Tensor:
        if fused:
            return self._fused(x)
        return self.downsample(self.act(self.upsample(x)))

    def _fused(self, x: Tensor) -> Tensor:
        """The reference's pads, trims and filters, with three changes that keep the math:
        * the replicate pads are written into preallocated buffers (the snake writes its
          result straight into the low-pass's padded input) instead of F.pad copies;
        * a = exp(alpha) and the upsampling ratio are folded into per-channel copies of the
          12 taps, so the transposed conv yields u = a * upsample(x); then
          a * snake(y) = u + (a / b) sin^2(u): sin, square and one multiply-add;
        * the 1/a that this leaves is folded into the low-pass taps (the filter is linear and
          per channel), so no pass divides by a.
        Outputs equal the reference's to float32 rounding (tests/test_mmaudio_bigvgan.py)."""
        up, low, snake = self.upsample, self.downsample.lowpass, self.act
        c = x.shape[1]
        log_a = snake.alpha.float()
        a = log_a.exp()
        inv_b = 1.0 / (snake.beta.float().exp() + 1e-9)
        taps_up = (up.filter.float() * (up.ratio * a)[:, None, None]).to(x.dtype)
        taps_low = (low.filter.float() * torch.exp(-log_a)[:, None, None]).to(x.dtype)
        gain = (a * inv_b).to(x.dtype)[:, None]

        xp = _replicate_padded(x, up.pad, up.pad)
        u = F.conv_transpose1d(xp, taps_up, stride=up.ratio, groups=c)
        u = u[..., up.trim_left: u.shape[-1] - up.trim_right]
        n = u.shape[-1]
        d = x.new_empty(*x.shape[:-1], low.pad_left + n + low.pad_right)
        inner = d[..., low.pad_left: low.pad_left + n]
        torch.addcmul(u, torch.sin(u).square_(), gain, out=inner)
        _fill_replicate_edges(d, low.pad_left, low.pad_right)
        return F.conv1d(d, taps_low, stride=low.stride, groups=c)


# The fused form divides by a = exp(alpha): |alpha| beyond this (a outside 1e-13..1e13) keeps
# the reference formulation. Released vocoders' alphas are a few units at most.
_MAX_FUSED_LOG_ALPHA = 30.0


def _replicate_padded(x: Tensor, left: int, right: int) -> Tensor:
    """F.pad(x, (left, right), mode="replicate") written into a new buffer."""
    out = x.new_empty(*x.shape[:-1], left + x.shape[-1] + right)
    out[..., left: left + x.shape[-1]] = x
    _fill_replicate_edges(out, left, right)
    return out


def _fill_replicate_edges(buf: Tensor, left: int, right: int) -> None:
    """Copy the first / last inner sample of ``buf`` into its ``left`` / ``right`` margins."""
    end = buf.shape[-1] - right
    if left:
        buf[..., :left] = buf[..., left: left + 1]
    if right:
        buf[..., end:] = buf[..., end - 1: end]


class AMPBlock1(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...],
                 logscale: bool = True):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2)
            for d in dilations)
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
            for _ in dilations)
        self.activations = nn.ModuleList(Activation1d(channels, logscale)
                                         for _ in range(2 * len(dilations)))

    def forward(self, x: Tensor, fused: bool = False) -> Tensor:
        acts = self.activations
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            x = x + c2(acts[2 * i + 1](c1(acts[2 * i](x, fused)), fused))
        return x


class BigVGAN(nn.Module):
    """log-mel (B, num_mels, T) -> wave (B, 1, T * hop) in [-1, 1]."""

    def __init__(self, config: VocoderConfig):
        super().__init__()
        self.config = cfg = config
        c0 = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.num_mels, c0, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ModuleList([nn.ConvTranspose1d(c0 >> i, c0 >> (i + 1), k, u, padding=(k - u) // 2)])
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)))
        self.resblocks = nn.ModuleList(
            AMPBlock1(c0 >> (i + 1), k, d, cfg.snake_logscale)
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
        ch = c0 >> len(cfg.upsample_rates)
        self.activation_post = Activation1d(ch, cfg.snake_logscale)
        self.conv_post = nn.Conv1d(ch, 1, 7, padding=3, bias=cfg.use_bias_at_final)

    @property
    def hop(self) -> int:
        return self.config.hop

    @property
    def mode(self) -> str | None:
        return self.config.mode

    @property
    def sampling_rate(self) -> int | None:
        return SAMPLING_RATE_OF_MODE.get(self.mode)

    def forward(self, mel: Tensor) -> Tensor:
        if mel.ndim != 3 or mel.shape[1] != self.config.num_mels:
            raise ValueError(f"vocoder expects a mel of shape (B, {self.config.num_mels}, T); "
                             f"got {tuple(mel.shape)}")
        fused = self._use_fused(mel)
        x = self.conv_pre(mel.to(self.conv_pre.weight.dtype))
        n_k = len(self.config.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up[0](x)
            blocks = self.resblocks[i * n_k:(i + 1) * n_k]
            acc = blocks[0](x, fused)
            for blk in blocks[1:]:
                acc = acc + blk(x, fused)
            x = acc / n_k
        x = self.conv_post(self.activation_post(x, fused))
        return torch.tanh(x) if self.config.use_tanh_at_final else x.clamp(-1.0, 1.0)

    def _use_fused(self, mel: Tensor) -> bool:
        """The fused activations (Activation1d._fused) serve inference: not when autograd
        needs the graph (training), not for the linear-scale snake or in float16 (the folded
        taps could overflow), not for an extreme alpha (one check per call)."""
        if torch.is_grad_enabled() and (mel.requires_grad
                                        or any(p.requires_grad for p in self.parameters())):
            return False
        if not self.config.snake_logscale or self.conv_pre.weight.dtype == torch.float16:
            return False
        peaks = [m.act.alpha.detach().abs().amax() for m in self.modules()
                 if isinstance(m, Activation1d) and m.act.alpha.numel()]
        return not peaks or bool(torch.stack(peaks).max() <= _MAX_FUSED_LOG_ALPHA)

    def weight_norm_layers(self) -> list[str]:
        """Names of the convolutions that released files store with weight norm."""
        return [n for n, m in self.named_modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]


# ---------------------------------------------------------------------------------------------
# Weight norm in checkpoints
# ---------------------------------------------------------------------------------------------

_PARAM_G, _PARAM_V = ".parametrizations.weight.original0", ".parametrizations.weight.original1"
_LEGACY_G, _LEGACY_V = ".weight_g", ".weight_v"


def _norm_except_dim0(v: Tensor) -> Tensor:
    return torch.linalg.vector_norm(v, dim=list(range(1, v.ndim)), keepdim=True)


def fold_weight_norm(sd: Mapping[str, Tensor], source="the state dict") -> dict[str, Tensor]:
    """Replace every (g, v) pair, in either naming, by ``X.weight = g * v / ||v||`` (norm over all
    dims but 0; for ConvTranspose1d dim 0 is the input channel). Math in float32."""
    out: dict[str, Tensor] = {}
    pairs: dict[str, dict[str, Tensor]] = {}
    for k, t in sd.items():
        for g_suffix, v_suffix in ((_PARAM_G, _PARAM_V), (_LEGACY_G, _LEGACY_V)):
            if k.endswith(g_suffix) or k.endswith(v_suffix):
                prefix = k[: -len(g_suffix)] if k.endswith(g_suffix) else k[: -len(v_suffix)]
                pairs.setdefault(prefix, {})["g" if k.endswith(g_suffix) else "v"] = t
                break
        else:
            out[k] = t
    for prefix, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            raise WeightsError(f"{source_name(source)} is damaged: {prefix} has only half of its "
                               "weight-norm pair (g and v). Download the file again.")
        if prefix + ".weight" in out:
            raise WeightsError(f"{source_name(source)} stores {prefix} twice (plain and "
                               "weight-normed); it was not written by BigVGAN")
        g, v = gv["g"].float(), gv["v"].float()
        out[prefix + ".weight"] = v * (g / _norm_except_dim0(v))
    return out


def vocoder_checkpoint_state(voc: BigVGAN, naming: str = "parametrizations") -> dict[str, Tensor]:
    """The generator state dict as a released file stores it. ``naming``: "parametrizations"
    (X.parametrizations.weight.original0/1), "legacy" (X.weight_g/_v) or "plain" (X.weight).
    From a folded weight w: g = ||w|| per dim-0 row, v = w, so g * v / ||v|| == w."""
    if naming not in ("parametrizations", "legacy", "plain"):
        raise ValueError(f"naming must be 'parametrizations', 'legacy' or 'plain', not {naming!r}")
    sd = {k: v.detach() for k, v in voc.state_dict().items()}
    if naming == "plain":
        return sd
    g_suffix, v_suffix = (_PARAM_G, _PARAM_V) if naming == "parametrizations" else (_LEGACY_G,
                                                                                   _LEGACY_V)
    for layer in voc.weight_norm_layers():
        w = sd.pop(layer + ".weight")
        sd[layer + g_suffix] = _norm_except_dim0(w.float()).to(w.dtype)
        sd[layer + v_suffix] = w
    return sd


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def infer_vocoder_config(sd: Mapping[str, Tensor], source="the state dict") -> VocoderConfig:
    """Config from a folded state dict's shapes. Assumptions that hold for every released BigVGAN
    config: upsample kernel = 2 x rate; three dilations per resblock are (1, 3, 5); a conv_post
    bias goes with a tanh output (v1), no bias with clamp(-1, 1) (v2 44k)."""
    if "conv_pre.weight" not in sd:
        raise WeightsError(f"{source_name(source)} is not a BigVGAN vocoder: it looks like "
                           f"{describe(sd)}")
    c0, num_mels = sd["conv_pre.weight"].shape[:2]
    rates, kernels = [], []
    while f"ups.{len(kernels)}.0.weight" in sd:
        k = int(sd[f"ups.{len(kernels)}.0.weight"].shape[-1])
        if k % 2:
            raise ConfigError(f"cannot infer the upsample rate of a kernel-{k} stage of "
                              f"{source_name(source)}: pass the vocoder's config.json")
        kernels.append(k)
        rates.append(k // 2)
    n_blocks = len({k.split(".")[1] for k in sd if k.startswith("resblocks.")})
    if not kernels or n_blocks % len(kernels):
        raise WeightsError(f"{source_name(source)} has an incomplete BigVGAN layout "
                           f"({len(kernels)} upsample stages, {n_blocks} resblocks)")
    n_k = n_blocks // len(kernels)
    res_kernels = tuple(int(sd[f"resblocks.{j}.convs1.0.weight"].shape[-1]) for j in range(n_k))
    n_dil = len({k.split(".")[3] for k in sd if k.startswith("resblocks.0.convs1.")})
    if n_dil != 3:
        raise ConfigError(f"{source_name(source)} uses {n_dil} dilations per resblock; pass the "
                          "vocoder's config.json so the dilations are known")
    bias = "conv_post.bias" in sd
    return VocoderConfig(int(num_mels), tuple(rates), tuple(kernels), int(c0), res_kernels,
                         ((1, 3, 5),) * n_k, use_tanh_at_final=bias, use_bias_at_final=bias)


def _resolve_config(config, sd, source) -> VocoderConfig:
    if config is None:
        return infer_vocoder_config(sd, source)
    if isinstance(config, VocoderConfig):
        return config
    if isinstance(config, str) and config in CONFIGS:
        return CONFIGS[config]
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the vocoder config {p}: {e}") from None
        return VocoderConfig.from_dict(data)
    if isinstance(config, Mapping):
        return VocoderConfig.from_dict(config)
    raise TypeError(f"config must be None, '16k'/'44k', a path, a dict or a VocoderConfig; "
                    f"got {type(config).__name__}")


def load_vocoder(source, config=None, *, expect_mode: str | None = None,
                 dtype: torch.dtype | None = None) -> BigVGAN:
    """Load best_netG.pt / bigvgan_generator.pt ({"generator": state dict}), a flat state dict,
    or a .safetensors file, with weight norm in either naming or already removed. ``config``:
    None (inferred from the tensors), '16k'/'44k' (built-in), a config.json path, a dict or a
    VocoderConfig. Returns an eval-mode module without gradients, weight norm folded."""
    sd = read_state_dict(source, unwrap=("generator",))
    sd = fold_weight_norm(sd, source)
    cfg = _resolve_config(config, sd, source)
    if expect_mode is not None and (cfg.mode != expect_mode or cfg.hop != HOP_OF_MODE[expect_mode]):
        raise WeightsError(f"{source_name(source)} is a vocoder for {cfg.num_mels} mels and hop "
                           f"{cfg.hop}, but the {expect_mode} model needs {'80' if expect_mode == '16k' else '128'} "
                           f"mels and hop {HOP_OF_MODE[expect_mode]} "
                           f"({'best_netG.pt' if expect_mode == '16k' else 'bigvgan_v2_44khz_128band_512x'})")
    with torch.device("meta"):
        voc = BigVGAN(cfg)
    expected = {k: v.shape for k, v in voc.state_dict().items()}
    # Filter buffers are derived tables: fill them in when a file was saved without them.
    for k in expected:
        if k.endswith(".filter") and k not in sd:
            sd[k] = kaiser_sinc_filter(0.25, 0.3, expected[k][-1])
    check_keys(sd, expected, what=f"the BigVGAN generator ({cfg.num_mels} mels, "
               f"{cfg.upsample_initial_channel} channels)", source=source)
    check_finite(sd, source=source)
    voc.load_state_dict({k: v.float().clone() for k, v in sd.items()}, strict=True, assign=True)
    if dtype is not None:
        voc.to(dtype)
    return voc.eval().requires_grad_(False)


def save_vocoder_checkpoint(voc: BigVGAN, path: str | os.PathLike,
                            naming: str = "parametrizations") -> None:
    """Write {"generator": state dict} with weight-norm names, like the released .pt files
    (a .safetensors path gets the flat state dict instead)."""
    sd = {k: v.contiguous().cpu() for k, v in vocoder_checkpoint_state(voc, naming).items()}
    if str(path).endswith((".safetensors", ".sft")):
        write_safetensors(sd, path)
    else:
        write_torch({"generator": sd}, path)


TINY_CONFIGS = {
    # hop stays the real one (256 / 512) so audio lengths match the real models
    "16k": VocoderConfig(80, (4, 4, 4, 4), (8, 8, 8, 8), 32, (3, 7), ((1, 3, 5),) * 2,
                         use_tanh_at_final=True, use_bias_at_final=True),
    "44k": VocoderConfig(128, (8, 8, 8), (16, 16, 16), 32, (3, 7), ((1, 3, 5),) * 2,
                         use_tanh_at_final=False, use_bias_at_final=False),
}


def tiny_vocoder(mode: str, seed: int = 0) -> BigVGAN:
    """A small seeded vocoder with the real mel count, hop and output activation of ``mode``."""
    if mode not in TINY_CONFIGS:
        raise ValueError(f"unknown mode {mode!r}: use '16k' or '44k'")
    gen = torch.Generator().manual_seed(seed)
    voc = BigVGAN(TINY_CONFIGS[mode])
    with torch.no_grad():
        for name, p in voc.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.01 * torch.randn(p.shape, generator=gen))
            else:  # a weight-normed conv: row norms g in [0.3, 1)
                v = torch.randn(p.shape, generator=gen)
                g = 0.3 + 0.7 * torch.rand((p.shape[0],) + (1,) * (p.ndim - 1), generator=gen)
                p.copy_(v * g / _norm_except_dim0(v))
    return voc.eval().requires_grad_(False)
