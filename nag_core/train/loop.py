"""The ControlNet training loop: flow matching on cached latents with the base frozen.

Per optimiser step: ``accum`` micro-batches of ``batch_size`` (target, condition) pairs; for each
x1 = normalize(mean + std·ε) (a fresh posterior sample), x0 ~ N(0, I), t = sigmoid(n), n ~ N(0, 1),
x_t = t·x1 + (1−t)·x0, loss = ||u_ctrl(x_t, t, V, ∅, x_cond) − (x1 − x0)||² (mean). AdamW on the
ControlNet parameters only; linear warm-up, ×0.1 at 80 % and again at 90 % of the steps;
gradient clipping; bf16 autocast on CUDA, float32 on CPU; power-function EMA profiles.

Everything random comes from one CPU generator (noise) and a sampler whose state is a counter,
both stored in every checkpoint, so stop + ``resume`` gives the same parameters as one run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F

from ..atomic import write_text
from ..checkpoint import write_torch
from ..controlnet import (ControlNetConfig, NAGControlNet, controlnet_flow, freeze_base,
                          save_controlnet, trainable_parameters)
from ..errors import ConfigError, WeightsError
from ..mmaudio.network import Conditions, MMAudioNetwork
from .dataset import CachedPairs, PairSampler, load_cache
from .ema import DEFAULT_SIGMA_RELS, PowerEMA

log = logging.getLogger("nag_core.train")

CHECKPOINT_DIR = "checkpoints"
EMA_DIR = "ema"
LOSS_LOG = "loss.jsonl"
FINAL_NAME = "controlnet.safetensors"
# Settings that must not change between a run and its resumption (the rest may).
RESUME_KEYS = ("batch_size", "accum", "lr", "betas", "weight_decay", "warmup_steps", "decay_at",
               "decay_factor", "seed", "num_blocks", "init_source", "ema_sigma_rels",
               "grad_clip")


@dataclass
class TrainConfig:
    """Training settings (the defaults are the paper's, except the batch size)."""

    steps: int = 200_000
    batch_size: int = 8
    accum: int = 1
    lr: float = 1e-4
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 1e-6
    warmup_steps: int = 1000
    decay_at: tuple = (0.8, 0.9)  # fractions of ``steps`` where the lr is multiplied ...
    decay_factor: float = 0.1  # ... by this
    grad_clip: float = 1.0  # max gradient norm (MMAudio's setting); 0 disables
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    ema_sigma_rels: tuple = DEFAULT_SIGMA_RELS
    ema_every: int = 1000  # EMA snapshot interval in steps; 0 disables EMA
    num_blocks: int = 4
    init_source: str = "first_blocks"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 1  # loss-log rows are written every step; this throttles the flush

    def __post_init__(self):
        self.betas = tuple(self.betas)
        self.decay_at = tuple(self.decay_at)
        self.ema_sigma_rels = tuple(self.ema_sigma_rels)
        for name in ("steps", "batch_size", "accum", "checkpoint_every", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.ema_every < 0:
            raise ConfigError("warmup_steps and ema_every must be 0 or more")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Learning-rate multiplier for optimiser update ``step`` (0-based): linear warm-up
    (step+1)/warmup over the first ``warmup_steps`` updates, then 1, times ``decay_factor`` for
    every milestone round(f·steps), f in ``decay_at``, that ``step`` has reached."""
    factor = 1.0
    if config.warmup_steps > 0:
        factor = min(1.0, (step + 1) / config.warmup_steps)
    for frac in config.decay_at:
        if step >= int(round(frac * config.steps)):
            factor *= config.decay_factor
    return factor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but this PyTorch has no CUDA device; "
                          "use --device cpu (slow) or a CUDA build of PyTorch")
    return dev


@dataclass
class FitResult:
    step: int
    out_dir: Path
    controlnet_path: Optional[Path]  # None when stopped early (stop_after)
    ema_paths: list[Path] = field(default_factory=list)
    last_loss: float = float("nan")


class Trainer:
    """One training run of a ControlNet on a frozen ``network`` over cached ``data``."""

    def __init__(self, network: MMAudioNetwork, data: CachedPairs, config: TrainConfig,
                 out_dir, progress: bool = True):
        self.config, self.data, self.progress = config, data, progress
        self.out = Path(out_dir)
        self.device = resolve_device(config.device)
        self.network = freeze_base(network).to(self.device).eval()
        if abs(network.duration - data.segment_seconds) > 1e-9:
            network.set_duration(data.segment_seconds)
        self._check_data()
        torch.manual_seed(config.seed)  # only "random" init draws from the global generator
        cn_config = ControlNetConfig(num_blocks=config.num_blocks, init_source=config.init_source)
        self.controlnet = NAGControlNet.from_base(self.network, cn_config).float().train()
        self.params = trainable_parameters(self.controlnet)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config))
        self.ema = (PowerEMA(self._named_params(), config.ema_sigma_rels)
                    if config.ema_every > 0 else None)
        self.noise = torch.Generator().manual_seed(config.seed)
        self.sampler = PairSampler(len(data), config.seed)
        self.step = 0
        if self.device.type == "cuda":
            data.pin()

    # ------------------------------------------------------------------ set-up checks
    def _check_data(self) -> None:
        net, data = self.network, self.data
        if data.mode != net.config.mode or data.mean.shape[-1] != net.config.latent_dim:
            raise ConfigError(f"the cache was extracted for {data.mode} ({data.mean.shape[-1]} "
                              f"latent channels) but the network is {net.config.mode} "
                              f"({net.config.latent_dim}); extract with the same variant")
        if data.mean.shape[1] != net.latent_seq_len:
            raise ConfigError(f"cached latents have {data.mean.shape[1]} frames, the network at "
                              f"{data.segment_seconds:g} s expects {net.latent_seq_len}")

    def _named_params(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.controlnet.named_parameters() if v.requires_grad}

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ one step
    def _to_device(self, x: Tensor) -> Tensor:
        cuda = self.device.type == "cuda"
        return x.to(self.device, non_blocking=cuda)

    @torch.no_grad()
    def _conditions(self, rows: Tensor) -> Conditions:
        """Preprocessed (V, ∅-text) conditions; audio-only rows get the learned empty video."""
        net, data = self.network, self.data
        b = rows.shape[0]
        video = self._to_device(data.has_video[rows])[:, None, None]
        clip = torch.where(video, self._to_device(data.clip_f[rows]).to(net.dtype),
                           net.get_empty_clip_sequence(b))
        sync = torch.where(video, self._to_device(data.sync_f[rows]).to(net.dtype),
                           net.get_empty_sync_sequence(b))
        return net.preprocess_conditions(clip, sync, net.get_empty_string_sequence(b))

    def micro_batch_loss(self, pair_idx: Tensor) -> Tensor:
        net, data = self.network, self.data
        tgt, cond = data.pairs[pair_idx, 0], data.pairs[pair_idx, 1]
        b = pair_idx.shape[0]
        shape = data.mean.shape[1:]
        eps = torch.randn((b, *shape), generator=self.noise)
        x0 = torch.randn((b, *shape), generator=self.noise)
        t = torch.sigmoid(torch.randn((b,), generator=self.noise))
        dt = net.dtype
        x1 = net.normalize(self._to_device(data.mean[tgt] + data.std[tgt] * eps).to(dt))
        x_cond = net.normalize(self._to_device(data.cond_mean[cond]).to(dt))
        x0, t = self._to_device(x0).to(dt), self._to_device(t).to(dt)
        x_t = t[:, None, None] * x1 + (1 - t[:, None, None]) * x0
        with self._autocast():
            conditions = self._conditions(tgt)
            pred = controlnet_flow(net, self.controlnet, x_t, t, conditions, x_cond)
        return F.mse_loss(pred.float(), (x1 - x0).float())

    def train_step(self) -> float:
        """One optimiser update (``accum`` micro-batches); returns the mean loss."""
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.accum):
            loss = self.micro_batch_loss(self.sampler.next(cfg.batch_size)) / cfg.accum
            loss.backward()
            total += float(loss.detach())
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self._named_params(), self.step)
        return total

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        state = {"step": self.step, "controlnet": self.controlnet.state_dict(),
                 "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(),
                 "ema": self.ema.state_dict() if self.ema is not None else None,
                 "noise_rng": self.noise.get_state(), "torch_rng": torch.get_rng_state(),
                 "sampler_drawn": self.sampler.drawn, "config": self.config.to_json(),
                 "controlnet_config": self.controlnet.config.to_json()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_checkpoint(self) -> Path:
        folder = self.out / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{self.step:08d}.pt"
        write_torch(self.checkpoint_state(), path)
        for old in list_checkpoints(self.out)[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for damaged files
            raise WeightsError(f"cannot read the training checkpoint {path} ({e}); delete it to "
                               "resume from the one before") from None
        saved = json.loads(state["config"])
        mine = asdict(self.config)
        changed = [k for k in RESUME_KEYS if _norm(saved.get(k)) != _norm(mine.get(k))]
        if changed:
            raise ConfigError(f"cannot resume from {path}: these settings differ from the run "
                              f"that wrote it: " + ", ".join(
                                  f"{k} {saved.get(k)!r} -> {mine.get(k)!r}" for k in changed)
                              + "; use the original settings or a new --out folder")
        if saved["steps"] != mine["steps"]:
            log.warning("resuming with --steps %d (was %d): the lr decay points move",
                        mine["steps"], saved["steps"])
        self.controlnet.load_state_dict(state["controlnet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.noise.set_state(state["noise_rng"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.sampler.drawn = int(state["sampler_drawn"])
        self.step = int(state["step"])

    # ------------------------------------------------------------------ outputs
    def snapshot_ema(self) -> None:
        if self.ema is not None:
            cfg = self.controlnet.config
            self.ema.snapshot(self.out / EMA_DIR, {"controlnet_config": cfg.to_json(),
                                                   "base_variant": str(cfg.base_variant)})

    def save_final(self) -> tuple[Path, list[Path]]:
        path = self.out / FINAL_NAME
        save_controlnet(self.controlnet, path)
        ema_paths = []
        if self.ema is not None:
            for sigma, profile in zip(self.ema.sigma_rels, self.ema.profiles):
                p = self.out / ema_file_name(sigma)
                save_controlnet(controlnet_from_state(self.controlnet.config, profile), p)
                ema_paths.append(p)
        return path, ema_paths

    # ------------------------------------------------------------------ run
    def run(self, stop_after: Optional[int] = None) -> FitResult:
        """Train to ``config.steps`` (or stop after ``stop_after`` steps, checkpointed)."""
        cfg = self.config
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        self.out.mkdir(parents=True, exist_ok=True)
        _truncate_log(self.out / LOSS_LOG, self.step)
        bar = _bar(cfg.steps, self.step, self.progress)
        loss = float("nan")
        with open(self.out / LOSS_LOG, "a", encoding="utf-8") as logf:
            while self.step < end:
                start = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                loss = self.train_step()
                if not math.isfinite(loss):
                    raise ConfigError(f"the loss became {loss} at step {self.step}; lower --lr "
                                      "or check the cached data")
                row = {"step": self.step, "loss": loss, "lr": lr,
                       "seconds": round(time.perf_counter() - start, 6)}
                logf.write(json.dumps(row) + "\n")
                if self.step % cfg.log_every == 0:
                    logf.flush()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                if self.ema is not None and self.step % cfg.ema_every == 0:
                    self.snapshot_ema()
                if self.step % cfg.checkpoint_every == 0 or self.step == end:
                    self.save_checkpoint()
        if bar is not None:
            bar.close()
        if self.step < cfg.steps:
            return FitResult(self.step, self.out, None, [], loss)
        if self.ema is not None and self.step % cfg.ema_every != 0:
            self.snapshot_ema()
        path, ema_paths = self.save_final()
        return FitResult(self.step, self.out, path, ema_paths, loss)


def _norm(value):
    return json.loads(json.dumps(value))  # tuples -> lists, so saved and live values compare


def ema_file_name(sigma_rel: float) -> str:
    return f"controlnet_ema_sigma{sigma_rel:.3f}.safetensors"


def controlnet_from_state(config: ControlNetConfig, state: dict) -> NAGControlNet:
    """A ControlNet module holding ``state`` (e.g. EMA parameters) for save_controlnet."""
    net = NAGControlNet(config)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith(("_mean", "_var", "num_batches_tracked")) for k in missing):
        raise ConfigError(f"EMA state does not fit the ControlNet: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}")
    return net


def list_checkpoints(out_dir) -> list[Path]:
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*.pt"))


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows past ``step`` (written after the checkpoint a resumed run starts from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue
    write_text(path, "".join(line + "\n" for line in keep))


def _bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc="train", unit="step")


# --------------------------------------------------------------------------- from files
def fit(cache_dir, models_dir, out_dir, config: TrainConfig, *, variant: Optional[str] = None,
        resume: bool = False, stop_after: Optional[int] = None, progress: bool = True,
        network: Optional[MMAudioNetwork] = None) -> FitResult:
    """Train a ControlNet on an extracted cache. The frozen base is the network of ``variant``
    (default: the one the cache was extracted with) found in ``models_dir``; ``network`` skips
    the file look-up (tests, notebooks)."""
    from .extract import read_index

    index = read_index(Path(cache_dir))
    current = index.get("current") or {}
    if not current.get("pairs"):
        raise ConfigError(f"{cache_dir} holds no extracted training pairs; run `python -m "
                          "nag_core.train extract` first")
    if network is None:
        from ..mmaudio.network_loading import load_network
        from ..weights import find_model_files
        files = find_model_files(models_dir, variant or current["variant"])
        network, _ = load_network(files.network, expect_mode=current["mode"])
    network.set_duration(float(current["segment_seconds"]))
    c = network.config
    data = load_cache(cache_dir, clip_shape=(network.clip_seq_len, c.clip_dim),
                      sync_shape=(network.sync_seq_len, c.sync_dim))
    trainer = Trainer(network, data, config, out_dir, progress=progress)
    if resume:
        found = list_checkpoints(out_dir)
        if found:
            trainer.load_checkpoint(found[-1])
            log.info("resumed from %s (step %d)", found[-1], trainer.step)
        else:
            log.warning("--resume: no checkpoint in %s, starting from step 0", out_dir)
    elif list_checkpoints(out_dir):
        raise ConfigError(f"{out_dir} already holds training checkpoints; pass --resume to "
                          "continue that run, or choose a new --out folder")
    return trainer.run(stop_after=stop_after)
