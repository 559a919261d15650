"""The ControlNet training loop: flow matching on cached latents with the base frozen.

Per optimiser step: ``accum`` micro-batches of ``batch_size`` (target, condition) pairs; for each
x1 = normalize(mean + std·ε) (a fresh posterior sample), x0 ~ N(0, I), t = sigmoid(n), n ~ N(0, 1),
x_t = t·x1 + (1−t)·x0, loss = ||u_ctrl(x_t, t, V, ∅, x_cond) − (x1 − x0)||² (mean). AdamW on the
ControlNet parameters only; linear warm-up, ×0.1 at 80 % and again at 90 % of the steps;
gradient clipping; bf16 autocast on CUDA, float32 on CPU; power-function EMA profiles.

Everything random is a function of the seed and an example's position in the one global order
of examples (the sampler's counter, stored in every checkpoint), so stop + ``resume`` gives the
same parameters as one run, and N processes under torchrun (DistributedDataParallel, each
reading its share of every global batch) give the same parameters as one process with the same
global batch, up to float rounding. Only rank 0 writes files.
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
from .dataset import CachedPairs, PairSampler, example_noise, heldout_mask, load_cache
from .distributed import (DEFAULT_TIMEOUT_MINUTES, World, barrier, mean_over_ranks,
                          process_group, rank_device, sum_over_ranks, world_from_env)
from .ema import DEFAULT_SIGMA_RELS, PowerEMA

log = logging.getLogger("nag_core.train")

CHECKPOINT_DIR = "checkpoints"
EMA_DIR = "ema"
LOSS_LOG = "loss.jsonl"
FINAL_NAME = "controlnet.safetensors"
# Settings that must not change between a run and its resumption (the rest may).
# The global batch (processes × batch_size × accum) must not change either; how it is split may.
RESUME_KEYS = ("lr", "betas", "weight_decay", "warmup_steps", "decay_at", "decay_factor", "seed",
               "num_blocks", "init_source", "ema_sigma_rels", "grad_clip", "val_fraction",
               "val_list")
# Validation: the flow-matching loss of every held-out pair at each of these t, with noise fixed
# by VAL_SEED (not the run's seed), so runs with other seeds and resumed runs compare.
VAL_T = (0.1, 0.3, 0.5, 0.7, 0.9)
VAL_SEED = 20240601


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
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: cuda = the local GPU)
    log_every: int = 1  # loss-log rows are written every step; this throttles the flush
    val_fraction: float = 0.0  # share of clips held out (by a hash of the file name)
    val_list: tuple = ()  # file names of clips held out (in addition)
    val_every: int = 1000  # validation interval in steps (0: none); needs held-out clips
    compile: bool = False  # torch.compile the ControlNet + base forward

    def __post_init__(self):
        self.betas = tuple(self.betas)
        self.decay_at = tuple(self.decay_at)
        self.ema_sigma_rels = tuple(self.ema_sigma_rels)
        self.val_list = tuple(self.val_list)
        if self.val_every < 0:
            raise ConfigError("val_every must be 0 or more")
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


def resolve_device(name: str, world: World = World()) -> torch.device:
    return rank_device(name, world)


def global_batch(config: TrainConfig, world: World) -> int:
    return world.size * config.batch_size * config.accum


class ControlledFlow(torch.nn.Module):
    """u_ctrl as one module whose only parameters are the ControlNet's: what DDP wraps (it
    averages the ControlNet's gradients; the frozen base, identical on every process, is held
    outside the module tree so it is never broadcast or reduced) and what --compile compiles."""

    def __init__(self, network: MMAudioNetwork, controlnet: NAGControlNet):
        super().__init__()
        self.controlnet = controlnet
        self._base = (network,)

    def forward(self, x_t: Tensor, t: Tensor, conditions: Conditions, x_cond: Tensor) -> Tensor:
        return controlnet_flow(self._base[0], self.controlnet, x_t, t, conditions, x_cond)


@dataclass
class FitResult:
    step: int
    out_dir: Path
    controlnet_path: Optional[Path]  # None when stopped early (stop_after)
    ema_paths: list[Path] = field(default_factory=list)
    last_loss: float = float("nan")


class Trainer:
    """One training run of a ControlNet on a frozen ``network`` over cached ``data``, in this
    process of ``world`` (one process by default; under torchrun, one of several)."""

    def __init__(self, network: MMAudioNetwork, data: CachedPairs, config: TrainConfig,
                 out_dir, progress: bool = True, world: World = World()):
        self.config, self.world = config, world
        self.progress = progress and world.is_main
        self.out = Path(out_dir)
        self.device = rank_device(config.device, world)
        self.network = freeze_base(network).to(self.device).eval()
        if abs(network.duration - data.segment_seconds) > 1e-9:
            network.set_duration(data.segment_seconds)
        self.data = data
        self._check_data()
        if self.device.type == "cuda":
            data.pin()  # before the split, so training and held-out pairs share one copy
        self.data, self.val_data = self._split(data)
        torch.manual_seed(config.seed)  # only "random" init draws from the global generator
        cn_config = ControlNetConfig(num_blocks=config.num_blocks, init_source=config.init_source)
        self.controlnet = NAGControlNet.from_base(self.network, cn_config).float().train()
        self.params = trainable_parameters(self.controlnet)
        self.model = self._wrap(ControlledFlow(self.network, self.controlnet))
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config))
        # The EMA lives where it is written: on rank 0 (the others would only repeat it).
        self.ema = (PowerEMA(self._named_params(), config.ema_sigma_rels)
                    if config.ema_every > 0 and world.is_main else None)
        self.sampler = PairSampler(len(self.data), config.seed)
        self.step = 0

    @property
    def global_batch(self) -> int:
        return global_batch(self.config, self.world)

    # ------------------------------------------------------------------ set-up
    def _check_data(self) -> None:
        net, data = self.network, self.data
        if data.mode != net.config.mode or data.mean.shape[-1] != net.config.latent_dim:
            raise ConfigError(f"the cache was extracted for {data.mode} ({data.mean.shape[-1]} "
                              f"latent channels) but the network is {net.config.mode} "
                              f"({net.config.latent_dim}); extract with the same variant")
        if data.mean.shape[1] != net.latent_seq_len:
            raise ConfigError(f"cached latents have {data.mean.shape[1]} frames, the network at "
                              f"{data.segment_seconds:g} s expects {net.latent_seq_len}")

    def _split(self, data: CachedPairs) -> tuple[CachedPairs, Optional[CachedPairs]]:
        cfg = self.config
        if not (cfg.val_fraction > 0 or cfg.val_list):
            return data, None
        held = heldout_mask(data.pair_clips, cfg.val_fraction, cfg.val_list)
        if bool(held.all()):
            raise ConfigError(f"every one of the {len(data)} training pairs is held out for "
                              "validation; lower --val-fraction or shorten --val-list")
        val = data.subset(held) if bool(held.any()) else None
        return data.subset(~held), val

    def _wrap(self, flow: ControlledFlow) -> torch.nn.Module:
        model: torch.nn.Module = flow
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(flow, device_ids=ids)
        if self.config.compile:
            model = torch.compile(model)
        return model

    def _named_params(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.controlnet.named_parameters() if v.requires_grad}

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> str:
        cfg, w = self.config, self.world
        held = 0 if self.val_data is None else len(self.val_data)
        return (f"world size {w.size} ({self.device.type}), global batch {self.global_batch} "
                f"= {w.size} x batch {cfg.batch_size} x accum {cfg.accum}; "
                f"{len(self.data)} training pairs, {held} held out")

    # ------------------------------------------------------------------ one step
    def _to_device(self, x: Tensor) -> Tensor:
        cuda = self.device.type == "cuda"
        return x.to(self.device, non_blocking=cuda)

    @torch.no_grad()
    def _conditions(self, rows: Tensor, data: Optional[CachedPairs] = None) -> Conditions:
        """Preprocessed (V, ∅-text) conditions; audio-only rows get the learned empty video."""
        net, data = self.network, data or self.data
        b = rows.shape[0]
        video = self._to_device(data.has_video[rows])[:, None, None]
        clip = torch.where(video, self._to_device(data.clip_f[rows]).to(net.dtype),
                           net.get_empty_clip_sequence(b))
        sync = torch.where(video, self._to_device(data.sync_f[rows]).to(net.dtype),
                           net.get_empty_sync_sequence(b))
        return net.preprocess_conditions(clip, sync, net.get_empty_string_sequence(b))

    def _pair_loss(self, data: CachedPairs, pair_idx: Tensor, eps: Tensor, x0: Tensor,
                   t: Tensor, model: torch.nn.Module) -> Tensor:
        """Mean flow-matching loss of these pairs with this noise: x1 = mean + std·ε."""
        net = self.network
        tgt, cond = data.pairs[pair_idx, 0], data.pairs[pair_idx, 1]
        dt = net.dtype
        x1 = net.normalize(self._to_device(data.mean[tgt] + data.std[tgt] * eps).to(dt))
        x_cond = net.normalize(self._to_device(data.cond_mean[cond]).to(dt))
        x0, t = self._to_device(x0).to(dt), self._to_device(t).to(dt)
        x_t = t[:, None, None] * x1 + (1 - t[:, None, None]) * x0
        with self._autocast():
            conditions = self._conditions(tgt, data)
            pred = model(x_t, t, conditions, x_cond)
        return F.mse_loss(pred.float(), (x1 - x0).float())

    def micro_batch_loss(self, pair_idx: Tensor, positions: Optional[Tensor] = None) -> Tensor:
        """Loss of these pairs; ``positions`` (their places in the global order, default 0..b-1)
        pick the noise."""
        if positions is None:
            positions = torch.arange(pair_idx.shape[0])
        eps, x0, n = example_noise(self.config.seed, positions, tuple(self.data.mean.shape[1:]))
        return self._pair_loss(self.data, pair_idx, eps, x0, torch.sigmoid(n), self.model)

    def train_step(self) -> float:
        """One optimiser update (``accum`` micro-batches on every process); returns the mean
        loss of the global batch."""
        cfg, w = self.config, self.world
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(cfg.accum):
            pairs, positions = self.sampler.take(cfg.batch_size, w.rank, w.size)
            # DDP averages gradients over the processes at the last micro-batch's backward only.
            sync = k == cfg.accum - 1 or not w.distributed
            with contextlib.nullcontext() if sync else self._no_sync():
                loss = self.micro_batch_loss(pairs, positions) / cfg.accum
                loss.backward()
            total += float(loss.detach())
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self._named_params(), self.step)
        return mean_over_ranks(w, total, self.device)

    def _no_sync(self):
        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile's wrapper
        return model.no_sync()

    @torch.no_grad()
    def validation_loss(self) -> Optional[float]:
        """Mean flow-matching loss of every held-out pair at each t in VAL_T, with fixed noise
        (x1 = the posterior mean + std·ε); None without held-out pairs. Each process takes a
        share of the pairs; the result does not depend on the number of processes."""
        val = self.val_data
        if val is None:
            return None
        w = self.world
        shape = tuple(val.mean.shape[1:])
        totals = torch.zeros(2, dtype=torch.float64)
        flow = getattr(self.model, "module", self.model)  # no DDP bookkeeping for eval
        self.controlnet.eval()
        for i in range(w.rank, len(val), w.size):
            idx = torch.tensor([i] * len(VAL_T))
            eps, x0, _ = example_noise(VAL_SEED, torch.tensor([i]), shape, stream="val")
            t = torch.tensor(VAL_T)
            loss = self._pair_loss(val, idx, eps.expand(len(VAL_T), *shape),
                                   x0.expand(len(VAL_T), *shape), t, flow)
            totals += torch.tensor([float(loss) * len(VAL_T), len(VAL_T)], dtype=torch.float64)
        self.controlnet.train()
        totals = sum_over_ranks(w, totals.to(self.device)).cpu()
        return float(totals[0] / totals[1])

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        state = {"step": self.step, "controlnet": self.controlnet.state_dict(),
                 "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(),
                 "ema": self.ema.state_dict() if self.ema is not None else None,
                 "torch_rng": torch.get_rng_state(), "sampler_drawn": self.sampler.drawn,
                 "world_size": self.world.size, "global_batch": self.global_batch,
                 "config": self.config.to_json(),
                 "controlnet_config": self.controlnet.config.to_json()}
        return state

    def save_checkpoint(self) -> Optional[Path]:
        """Rank 0 writes ``checkpoints/step-<n>.pt`` (and drops the oldest); others do nothing."""
        if not self.world.is_main:
            return None
        folder = self.out / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{self.step:08d}.pt"
        write_torch(self.checkpoint_state(), path)
        for old in list_checkpoints(self.out)[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Continue from ``path`` (every process reads it; the global batch must be the one the
        run was started with, however it is split over processes, batch and accum)."""
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for damaged files
            raise WeightsError(f"cannot read the training checkpoint {path} ({e}); delete it to "
                               "resume from the one before") from None
        saved = json.loads(state["config"])
        mine = asdict(self.config)
        changed = [k for k in RESUME_KEYS if _norm(saved.get(k, mine.get(k))) != _norm(mine.get(k))]
        if changed:
            raise ConfigError(f"cannot resume from {path}: these settings differ from the run "
                              f"that wrote it: " + ", ".join(
                                  f"{k} {saved.get(k)!r} -> {mine.get(k)!r}" for k in changed)
                              + "; use the original settings or a new --out folder")
        old_world = int(state.get("world_size", 1))
        old_batch = int(state.get("global_batch",
                                  old_world * saved["batch_size"] * saved["accum"]))
        if old_batch != self.global_batch:
            raise ConfigError(
                f"cannot resume from {path}: the global batch would change from {old_batch} "
                f"({old_world} processes x batch {saved['batch_size']} x accum "
                f"{saved['accum']}) to {self.global_batch} ({self.world.size} x "
                f"{self.config.batch_size} x {self.config.accum}); choose --batch-size and "
                f"--accum so that processes x batch x accum = {old_batch}, or a new --out folder")
        if saved["steps"] != mine["steps"]:
            log.warning("resuming with --steps %d (was %d): the lr decay points move",
                        mine["steps"], saved["steps"])
        self.controlnet.load_state_dict(state["controlnet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        self.sampler.drawn = int(state["sampler_drawn"])
        self.step = int(state["step"])
        if old_world != self.world.size and self.world.is_main:
            log.info("resuming a run of %d processes with %d (global batch %d unchanged)",
                     old_world, self.world.size, self.global_batch)

    # ------------------------------------------------------------------ outputs (rank 0)
    def snapshot_ema(self) -> None:
        if self.ema is not None:
            cfg = self.controlnet.config
            self.ema.snapshot(self.out / EMA_DIR, {"controlnet_config": cfg.to_json(),
                                                   "base_variant": str(cfg.base_variant)})

    def save_final(self) -> tuple[Optional[Path], list[Path]]:
        path = self.out / FINAL_NAME
        ema_paths = []
        if self.world.is_main:
            save_controlnet(self.controlnet, path)
            if self.ema is not None:
                for sigma, profile in zip(self.ema.sigma_rels, self.ema.profiles):
                    p = self.out / ema_file_name(sigma)
                    save_controlnet(controlnet_from_state(self.controlnet.config, profile), p)
                    ema_paths.append(p)
        return path, ema_paths

    # ------------------------------------------------------------------ run
    def run(self, stop_after: Optional[int] = None) -> FitResult:
        """Train to ``config.steps`` (or stop after ``stop_after`` steps, checkpointed)."""
        cfg, main = self.config, self.world.is_main
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            _truncate_log(self.out / LOSS_LOG, self.step)
            log.info("training: %s", self.describe())
            if cfg.val_every > 0 and self.val_data is None:
                log.info("no held-out clips (--val-fraction / --val-list): no validation")
        bar = _bar(cfg.steps, self.step, self.progress)
        loss = float("nan")
        with (open(self.out / LOSS_LOG, "a", encoding="utf-8") if main
              else contextlib.nullcontext()) as logf:
            while self.step < end:
                start = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                loss = self.train_step()
                if not math.isfinite(loss):
                    raise ConfigError(f"the loss became {loss} at step {self.step}; lower --lr "
                                      "or check the cached data")
                row = {"step": self.step, "loss": loss, "lr": lr,
                       "seconds": round(time.perf_counter() - start, 6)}
                if cfg.val_every > 0 and (self.step % cfg.val_every == 0 or self.step == end):
                    val = self.validation_loss()
                    if val is not None:
                        row["val_loss"] = val
                        if main:
                            log.info("step %d: validation loss %.5f", self.step, val)
                if main:
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
            barrier(self.world)  # the checkpoint is on disk before any process reports
            return FitResult(self.step, self.out, None, [], loss)
        if self.ema is not None and self.step % cfg.ema_every != 0:
            self.snapshot_ema()
        path, ema_paths = self.save_final()
        barrier(self.world)
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
        network: Optional[MMAudioNetwork] = None, world: Optional[World] = None,
        timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> FitResult:
    """Train a ControlNet on an extracted cache. The frozen base is the network of ``variant``
    (default: the one the cache was extracted with) found in ``models_dir``; ``network`` skips
    the file look-up (tests, notebooks). ``world`` defaults to what torchrun put in the
    environment (one process without torchrun); the process group is joined here when it is
    not already."""
    world = world_from_env() if world is None else world
    with process_group(world, rank_device(config.device, world), timeout_minutes):
        return _fit(cache_dir, models_dir, out_dir, config, variant, resume, stop_after,
                    progress, network, world)


def _fit(cache_dir, models_dir, out_dir, config, variant, resume, stop_after, progress, network,
         world) -> FitResult:
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
    trainer = Trainer(network, data, config, out_dir, progress=progress, world=world)
    found = list_checkpoints(out_dir)
    if resume:
        if found:
            trainer.load_checkpoint(found[-1])
            if world.is_main:
                log.info("resumed from %s (step %d)", found[-1], trainer.step)
        elif world.is_main:
            log.warning("--resume: no checkpoint in %s, starting from step 0", out_dir)
    elif found:
        raise ConfigError(f"{out_dir} already holds training checkpoints; pass --resume to "
                          "continue that run, or choose a new --out folder")
    barrier(world)  # every process has looked at the checkpoints before rank 0 writes any
    return trainer.run(stop_after=stop_after)
