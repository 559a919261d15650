"""The NAG flow estimator: an audio-conditioned ControlNet on the frozen MMAudio network.

Design: README.md, "The NAG ControlNet". u_ctrl(x, t, V, ∅, x_cond) is the frozen base run
on the (V, empty text) conditions with residuals from this module, which reads x_cond (the clean,
normalized latent of the mix of the earlier tracks):

* ``cond_embed(x_cond)`` (the base's audio-input-projection form followed by a zero-initialised
  Linear) is added to the projected latent before base block 0 and starts the control stream
  ``h = audio_input_proj(x_t) + cond_embed(x_cond)``;
* K control blocks (:class:`SingleBlock`, like the base's fused blocks) run on h, each followed by
  a zero-initialised Linear giving r_i;
* r_{floor(b / interval)}, interval = ceil(L / K), is added after base block b (b = 0..L-1).

Every path into the base goes through a zero-initialised Linear, so an untrained ControlNet
leaves the base's output exactly unchanged. The ControlNet holds no reference to the base, so
its state dict (and weight file) holds only its own parameters.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

import torch
from torch import Tensor, nn

from .checkpoint import read_checkpoint, write_safetensors
from .errors import ConfigError, WeightsError
from .mmaudio.blocks import ChannelLastConv1d, ConvMLP, SingleBlock
from .mmaudio.network import Conditions, ControlHook, ControlResiduals, MMAudioNetwork
from .fingerprint import fingerprint, mismatch
from .mmaudio.state_dict import check_finite, check_keys
from .mmaudio.variants import MODES, NetworkConfig, variant_name

log = logging.getLogger(__name__)

FORMAT = "nag-controlnet"
FORMAT_VERSION = "1"
INIT_SOURCES = ("first_blocks", "random")
INJECTIONS = ("interval",)


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ControlNetConfig:
    """ControlNet hyper-parameters plus the facts of the base it was built for.

    The user-facing fields are ``num_blocks`` (K), ``init_source`` ("first_blocks": copy the
    latent streams of the first K base blocks, joint blocks' ``latent_block`` first, then the
    fused blocks; "random": fresh blocks) and ``injection`` ("interval": r_{floor(b / ceil(L/K))}
    after base block b). The base fields are filled in by :meth:`NAGControlNet.from_base` (leave
    them None); they are stored with the weights so that loading onto another base is refused.
    """
    num_blocks: int = 4
    init_source: str = "first_blocks"
    injection: str = "interval"
    hidden_dim: Optional[int] = None
    latent_dim: Optional[int] = None
    num_heads: Optional[int] = None
    mlp_ratio: Optional[float] = None
    mode: Optional[str] = None
    v2: Optional[bool] = None  # picks the cond_embed activation: SiLU (v2) or SELU (v1)
    base_depth: Optional[int] = None  # L, all base blocks (joint + fused): sets the interval
    base_variant: Optional[str] = None
    # nag_core.fingerprint of the exact base weights (set by from_base; "" in files written
    # before it existed: such a ControlNet loads on any base of its shape, with a warning)
    base_fingerprint: str = ""

    def __post_init__(self):
        if self.init_source not in INIT_SOURCES:
            raise ConfigError(f"unknown ControlNet init_source {self.init_source!r}; "
                              f"use one of {INIT_SOURCES}")
        if self.injection not in INJECTIONS:
            raise ConfigError(f"unknown ControlNet injection {self.injection!r}; "
                              f"use one of {INJECTIONS}")
        if not isinstance(self.num_blocks, int) or self.num_blocks < 1:
            raise ConfigError(f"ControlNet num_blocks must be a positive integer, "
                              f"got {self.num_blocks!r}")
        if self.mode is not None and self.mode not in MODES:
            raise ConfigError(f"unknown audio mode {self.mode!r}; use one of {sorted(MODES)}")
        if self.base_depth is not None:
            self._check_depth()

    def _check_depth(self) -> None:
        k, depth = self.num_blocks, self.base_depth
        if k > depth:
            raise ConfigError(f"a ControlNet with {k} blocks needs a base with at least {k} "
                              f"blocks; this base has {depth}: use num_blocks <= {depth}")
        used = math.ceil(depth / self.interval)
        if used != k:
            raise ConfigError(
                f"with {depth} base blocks and num_blocks {k}, the interval ceil({depth}/{k}) = "
                f"{self.interval} only injects {used} residuals, so control blocks {used}..{k - 1} "
                f"would never be used; pick a num_blocks such as {used}")

    @property
    def is_bound(self) -> bool:
        return all(getattr(self, f.name) is not None for f in fields(self))

    @property
    def interval(self) -> int:
        """ceil(L / K): how many consecutive base blocks share one residual."""
        return math.ceil(self.base_depth / self.num_blocks)

    def residual_index(self, block: int) -> int:
        """Which control residual is added after base block ``block``."""
        return block // self.interval

    @staticmethod
    def base_facts(config: NetworkConfig, base_variant: Optional[str] = None) -> dict:
        return dict(hidden_dim=config.hidden_dim, latent_dim=config.latent_dim,
                    num_heads=config.num_heads, mlp_ratio=float(config.mlp_ratio),
                    mode=config.mode, v2=bool(config.v2), base_depth=config.depth,
                    base_variant=base_variant or variant_name(config))

    def bound_to(self, config: NetworkConfig,
                 base_variant: Optional[str] = None) -> "ControlNetConfig":
        """This config with the base fields of ``config``; base fields already set must agree."""
        facts = self.base_facts(config, base_variant)
        for key, value in facts.items():
            mine = getattr(self, key)
            if key != "base_variant" and mine is not None and mine != value:
                raise ConfigError(f"ControlNet config has {key} = {mine!r} but the base network "
                                  f"has {value!r}")
        if self.base_variant is not None and base_variant is None:
            facts["base_variant"] = self.base_variant
        return replace(self, **facts)

    def describe_base(self) -> str:
        return describe(self.base_variant, self)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ControlNetConfig":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ConfigError("a ControlNet config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"ControlNet config has unknown fields {unknown}; it was written "
                              "by a newer version of this pack: update the pack")
        return cls(**data)


def describe(variant: Optional[str], facts) -> str:
    """'small_16k (hidden 448, latent 20, 16k, 7 heads, 12 blocks, v1)' for a NetworkConfig or a
    bound ControlNetConfig (both have these attribute names, except depth)."""
    depth = getattr(facts, "base_depth", None) or getattr(facts, "depth", None)
    return (f"{variant} (hidden {facts.hidden_dim}, latent {facts.latent_dim}, {facts.mode}, "
            f"{facts.num_heads} heads, {depth} blocks, {'v2' if facts.v2 else 'v1'})")


# --------------------------------------------------------------------------- module
def zero_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def freeze_base(network: MMAudioNetwork) -> MMAudioNetwork:
    """requires_grad False on every base parameter (weights untouched)."""
    for p in network.parameters():
        if p.requires_grad:
            p.requires_grad_(False)
    return network


class NAGControlNet(nn.Module):
    """The ControlNet. Build one with :meth:`from_base` (new) or :func:`load_controlnet` (trained).

    Parameters: ``cond_embed`` (Sequential: k7 conv latent_dim -> D, SELU/SiLU, k7 ConvMLP, zero
    Linear D -> D), ``blocks`` (K SingleBlock), ``residual_proj`` (K zero Linear D -> D).
    ``NAGControlNet(config)`` with a bound config builds freshly initialised modules.
    """

    def __init__(self, config: ControlNetConfig):
        super().__init__()
        if not config.is_bound:
            raise ConfigError("NAGControlNet needs a config bound to a base network; use "
                              "NAGControlNet.from_base(network, config)")
        self._config = config
        d, k = config.hidden_dim, config.num_blocks
        hidden = int(d * config.mlp_ratio)
        act = nn.SiLU if config.v2 else nn.SELU
        self.cond_embed = nn.Sequential(
            ChannelLastConv1d(config.latent_dim, d, kernel_size=7, padding=3), act(),
            ConvMLP(d, hidden, kernel_size=7, padding=3), zero_linear(d))
        self.blocks = nn.ModuleList(
            SingleBlock(d, config.num_heads, config.mlp_ratio, kernel_size=3, padding=1)
            for _ in range(k))
        self.residual_proj = nn.ModuleList(zero_linear(d) for _ in range(k))

    @property
    def config(self) -> ControlNetConfig:
        return self._config

    @classmethod
    def from_base(cls, network: MMAudioNetwork, config: Optional[ControlNetConfig] = None,
                  base_variant: Optional[str] = None) -> "NAGControlNet":
        """A new ControlNet for ``network`` (which is frozen, never modified, and not referenced).

        With init_source "first_blocks" the control blocks are copies of the latent streams of
        the first K base blocks and cond_embed's projection is a copy of the base's
        ``audio_input_proj`` (x_cond lives in the same latent space as x_t, so this starts from a
        meaningful feature map; the zero Linear after it keeps the output unchanged). On the base's
        device and dtype. ``base_variant`` defaults to the released variant the base's config
        equals ("custom" otherwise).
        """
        freeze_base(network)
        config = replace((config or ControlNetConfig()).bound_to(network.config, base_variant),
                         base_fingerprint=fingerprint(network))
        with torch.device(network.device):
            net = cls(config).to(network.dtype)
        if config.init_source == "first_blocks":
            sources = [jb.latent_block for jb in network.joint_blocks] + list(network.fused_blocks)
            net.blocks = nn.ModuleList(copy.deepcopy(sources[i]) for i in range(config.num_blocks))
            proj = network.audio_input_proj
            for i in range(3):  # conv, activation, ConvMLP; index 3 stays the zero Linear
                net.cond_embed[i] = copy.deepcopy(proj[i])
        # The copies carry the base's requires_grad False; the ControlNet trains.
        net.requires_grad_(True)
        return net

    def residual_plan(self) -> list[int]:
        """r index added after each base block b = 0..L-1."""
        return [self._config.residual_index(b) for b in range(self._config.base_depth)]

    def hook(self, x_cond: Tensor, rows: slice = slice(None)) -> ControlHook:
        """The ``control`` callable for ``MMAudioNetwork.predict_flow``, applying to batch ``rows``.

        ``x_cond`` (b, N, latent_dim) or (1, N, latent_dim): the clean latent of the conditioning
        mix in the network's normalized space, b = the number of rows. cond_embed(x_cond) does
        not depend on x_t or t, so it is computed once here and reused at every Euler step.
        """
        if x_cond.dim() != 3 or x_cond.shape[2] != self._config.latent_dim:
            raise ConfigError(f"x_cond has shape {tuple(x_cond.shape)}; expected (B, N, "
                              f"{self._config.latent_dim}), a normalized latent of the "
                              f"ControlNet's base ({self.config.describe_base()})")
        weight = self.cond_embed[0].weight
        embedded = self.cond_embed(x_cond.to(device=weight.device, dtype=weight.dtype))
        plan = self.residual_plan()

        def control(h0: Tensor, extended_c: Tensor, global_c: Tensor,
                    latent_rot: Tensor) -> ControlResiduals:
            base = h0[rows]
            if base.shape[1] != embedded.shape[1]:
                raise ConfigError(f"x_cond has {embedded.shape[1]} tokens but the latent has "
                                  f"{base.shape[1]}: encode the mix for the same duration")
            if embedded.shape[0] not in (1, base.shape[0]):
                raise ConfigError(f"x_cond has batch {embedded.shape[0]}, the controlled rows "
                                  f"are {base.shape[0]}")
            e = embedded.expand(base.shape[0], -1, -1)
            h = base + e
            c = extended_c[rows]
            residuals = []
            for block, proj in zip(self.blocks, self.residual_proj):
                h = block(h, c, latent_rot)
                residuals.append(proj(h))
            return ControlResiduals(rows=rows, input_residual=e,
                                    block_residuals=[residuals[i] for i in plan])

        return control


# --------------------------------------------------------------------------- training API
def trainable_parameters(controlnet: NAGControlNet) -> list[nn.Parameter]:
    """The parameters an optimiser should update: every ControlNet parameter (never the base).
    Switches requires_grad on, so a ControlNet from :func:`load_controlnet` (inference: frozen)
    can resume training."""
    controlnet.requires_grad_(True)
    return list(controlnet.parameters())


def controlnet_flow(network: MMAudioNetwork, controlnet: NAGControlNet, x_t: Tensor, t: Tensor,
                    control_conditions: Conditions, x_cond: Tensor) -> Tensor:
    """u_ctrl(x_t, t, V, ∅, x_cond) for a batch: the frozen base on ``control_conditions`` (the
    preprocessed (V, empty text) conditions) with the ControlNet's residuals on every row.
    Gradients flow into the ControlNet only (the base is frozen here if it was not)."""
    freeze_base(network)
    return network.predict_flow(x_t, t, control_conditions,
                                control=controlnet.hook(x_cond, slice(None)))


# --------------------------------------------------------------------------- weight file
def save_controlnet(controlnet: NAGControlNet, path: str | os.PathLike) -> None:
    """safetensors with only the ControlNet parameters and the format/config metadata."""
    cfg = controlnet.config
    write_safetensors(controlnet.state_dict(), path, metadata={
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "base_variant": str(cfg.base_variant), "config": cfg.to_json()})


def _read_config(path, meta: dict) -> ControlNetConfig:
    fmt = meta.get("format")
    if fmt != FORMAT:
        what = (f"its metadata says format {fmt!r}" if fmt else
                "it has no NAG ControlNet metadata (it may be an MMAudio network, VAE or other "
                "model file)")
        raise WeightsError(f"{path} is not a NAG ControlNet weight file: {what}. Expected a "
                           f"safetensors file with metadata format '{FORMAT}', as written by "
                           "save_controlnet / the NAG training script")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightsError(f"{path} is a NAG ControlNet file of format version {version!r}; this "
                           f"pack reads version {FORMAT_VERSION}: update the pack")
    try:
        config = ControlNetConfig.from_json(meta.get("config", ""))
    except (ValueError, TypeError, ConfigError) as e:
        raise WeightsError(f"{path} has an unreadable ControlNet config ({e}); the file is "
                           "damaged: train or download it again") from None
    if not config.is_bound:
        raise WeightsError(f"{path} has an incomplete ControlNet config (base fields missing)")
    return config


def check_compatible(config: ControlNetConfig, network: MMAudioNetwork,
                     base_variant: Optional[str] = None) -> None:
    """WeightsError naming both variants unless the ControlNet fits ``network``."""
    base = ControlNetConfig.base_facts(network.config, base_variant)
    keys = ("hidden_dim", "latent_dim", "mode", "num_heads", "v2", "base_depth", "mlp_ratio")
    if any(getattr(config, k) != base[k] for k in keys):
        raise WeightsError(
            f"this ControlNet was trained for {config.describe_base()} but the loaded MMAudio is "
            f"{describe(base['base_variant'], network.config)}; load the MMAudio variant the "
            f"ControlNet was trained for ({config.base_variant}) or a ControlNet trained for "
            f"{base['base_variant']}")


def check_base_weights(config: ControlNetConfig, network: MMAudioNetwork, path) -> None:
    """WeightsError unless ``network`` holds the exact weights the ControlNet was trained on
    (its fingerprint); a file without a fingerprint is allowed with a loud warning."""
    if not config.base_fingerprint:
        log.warning("WARNING: %s carries no fingerprint of the base weights it was trained on, "
                    "so nothing checks that the loaded MMAudio network is that base: on other "
                    "weights of the same shape it silently produces wrong guidance. Re-save it "
                    "with this pack (nag_core.controlnet.save_controlnet after from_base) to "
                    "record one.", path)
        return
    why = mismatch(config.base_fingerprint, network)
    if why:
        raise WeightsError(
            f"{path} was trained on other base weights than the loaded MMAudio network "
            f"({config.describe_base()}: same shape, different values; {why}). Load the exact "
            f"MMAudio network file it was trained on, or a ControlNet trained on this one")


def load_controlnet(path: str | os.PathLike, network: MMAudioNetwork,
                    base_variant: Optional[str] = None) -> NAGControlNet:
    """Read a ControlNet written by :func:`save_controlnet` and place it on ``network``'s device
    and dtype, in eval mode with requires_grad off (for inference; call
    :func:`trainable_parameters` to train it further). ``base_variant`` names the loaded MMAudio
    in messages (default: the released variant its config equals, else "custom")."""
    obj, meta = read_checkpoint(path)
    config = _read_config(path, meta)
    check_compatible(config, network, base_variant)
    check_base_weights(config, network, path)
    freeze_base(network)
    with torch.device(network.device):
        net = NAGControlNet(config)
    check_keys(obj, net.state_dict(), what=f"its own ControlNet config ({config.describe_base()})",
               source=path)
    check_finite(obj, source=path)
    net.load_state_dict(obj)
    return net.to(dtype=network.dtype).eval().requires_grad_(False)
