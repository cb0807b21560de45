"""The one training loop shared by pre-training (Stage 1) and fine-tuning (Stage 2).

A stage calls `train(cfg, Stage(...))` with
  (a) `model`:     the network, built from `cfg.model`, on the CPU (the engine moves it and wraps DDP);
  (b) `train_set`: a Dataset whose `__getitem__((index, sample_seed))` returns a tuple of tensors;
                   every random choice of a sample must come from `sample_seed` (docs/DESIGN.md §4);
  (c) optionally `val_set` (items `(input, target)`, tensors (3,H,W) in [0,1]; PSNR every `val_every`),
      `initialize(model)` (fresh start only, never on resume: e.g. load pre-trained weights), and
      `hooks`, a `StageHooks` subclass:
        setup(ctx)                      once, after the device/process group are ready and before a resume
                                        restores state: build extra modules (e.g. generators) on `ctx.device`,
                                        wrap them with `ctx.wrap(module)` (DDP when distributed), make their
                                        optimizer.
        prepare(batch, step) -> (input, target)
                                        turns the collated batch into the network's input and target on
                                        `step.device` (default: batch[0], batch[1]). Stage 1 makes the
                                        degraded input from clean images here, under torch.no_grad().
        after_step(step, input, target) -> dict[str, float]
                                        runs after the network's optimizer step (Stage 1: the generators'
                                        adversarial step on `step.model`, the unwrapped network); returned
                                        scalars are logged next to `loss`.
        state_dict() -> dict            extra top-level keys for last.pt, e.g. {"generators": {...}} (tensors
                                        and plain types only); `load_state_dict(ckpt)` gets the whole last.pt.

Determinism: for step s the global batch position j gets dataset index perm_epoch[(s*B + j) % N] and
sample seed hash(seed, s, j), and torch's RNG is re-seeded with hash(seed, s, rank) before `prepare`;
so a resumed run, any number of data-loader workers, and (for per-sample randomness) any number of
processes give the same result. Under torchrun (RANK set) each rank takes its slice of the global batch.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dwgn.training.checkpoint import (FORMAT_VERSION, check_architecture, checkpoint_model_config, load_checkpoint,
                             save_checkpoint)
from dwgn.training.config import TrainConfig, config_to_dict, differing_fields, save_yaml
from dwgn.training.sampler import StepSampler, mix_seed

ENGINE_KEYS = ("format_version", "model", "model_ema", "config", "step", "optimizer", "scheduler", "scaler",
               "rng", "best_val_psnr")


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss or weights); the message names the step and what to do."""


# ---------------------------------------------------------------- stage interface


@dataclass
class EngineContext:
    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    rank: int
    world_size: int
    model: nn.Module                      # the unwrapped network
    amp_dtype: torch.dtype | None         # None = float32

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP-wrap a trainable module when distributed (gradients averaged over ranks), else itself."""
        if not self.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)


@dataclass
class StepContext:
    step: int                             # index of the step being taken (0-based; == completed steps before it)
    items: list[tuple[int, int]]          # this rank's (dataset index, sample seed) pairs
    engine: EngineContext

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def model(self) -> nn.Module:
        return self.engine.model

    @property
    def seeds(self) -> list[int]:
        return [s for _, s in self.items]


class StageHooks:
    """No-op defaults; a stage overrides what it needs (see the module docstring)."""

    def setup(self, ctx: EngineContext) -> None:
        pass

    def prepare(self, batch: Any, step: StepContext) -> tuple[Tensor, Tensor]:
        inputs, targets = batch[0], batch[1]
        return inputs.to(step.device, non_blocking=True), targets.to(step.device, non_blocking=True)

    def after_step(self, step: StepContext, inputs: Tensor, targets: Tensor) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        pass


@dataclass
class Stage:
    name: str                                            # "pretrain" | "finetune": run dir runs/<name>-<preset>
    model: nn.Module
    train_set: Dataset
    val_set: Dataset | None = None
    hooks: StageHooks = field(default_factory=StageHooks)
    initialize: Callable[[nn.Module], None] | None = None


@dataclass
class RunResult:
    run_dir: Path
    step: int                                            # completed steps
    last_loss: float | None
    best_val_psnr: float | None
    already_finished: bool = False


# ---------------------------------------------------------------- pieces (also used by benchmarks)


def cosine_lr(step: int, cfg: TrainConfig) -> float:
    """Learning rate for step `step` of `cfg.steps`: cosine from cfg.lr down to cfg.lr_min."""
    progress = min(step / cfg.steps, 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def amp_dtype_for(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA only; the CPU trains in plain float32."""
    if device.type != "cuda" or cfg.amp == "none":
        return None
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16


def forward_loss(model: nn.Module, inputs: Tensor, targets: Tensor, ctx: EngineContext) -> Tensor:
    with ctx.autocast():
        restored = model(inputs)
    return F.l1_loss(restored.float(), targets.float())


def optimizer_step(loss: Tensor, model: nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, grad_clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not fp16-scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


@torch.no_grad()
def validation_psnr(model: nn.Module, val_set: Dataset, ctx: EngineContext) -> float:
    """Mean RGB PSNR (peak 1) over `val_set`, one image at a time (sizes may differ). A training monitor;
    the paper's protocol (Y channel on saved 8-bit images) is dwgn.evaluation's job."""
    was_training = model.training
    model.eval()
    values = []
    for i in range(len(val_set)):
        inputs, targets = val_set[i][:2]
        with ctx.autocast():
            restored = model(inputs[None].to(ctx.device))
        mse = F.mse_loss(restored.float().clamp(0, 1), targets[None].to(ctx.device).float()).item()
        values.append(10 * math.log10(1.0 / max(mse, 1e-10)))
    model.train(was_training)
    return float(np.mean(values))


# ---------------------------------------------------------------- processes, logging


def run_dir_for(cfg: TrainConfig, stage_name: str) -> Path:
    """`--out`, else runs/<stage>-<preset>."""
    return Path(cfg.out or f"runs/{stage_name}-{cfg.preset}")


def setup_processes(cfg: TrainConfig) -> tuple[torch.device, int, int, bool]:
    """(device, rank, world size, whether this call started the process group). Like nanoGPT, the
    RANK variable (set by torchrun) decides between DDP and a single process."""
    if "RANK" not in os.environ:
        if cfg.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu"), 0, 1, False
        return torch.device(cfg.device), 0, 1, False
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return device, rank, world, started


class RunLog:
    """log.jsonl + TensorBoard scalars, written by rank 0 only. On resume, lines past the resumed step
    (written by the killed run after its last checkpoint) are dropped so the log matches the weights."""

    def __init__(self, run_dir: Path, start: int, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self.writer = None
        if not enabled:
            return
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start]
            self.path.write_text("".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter  # imported late: slow import, rank 0 only

        self.writer = SummaryWriter(str(run_dir), purge_step=start if start else None)

    def write(self, record: dict[str, Any], prefix: str = "train") -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _all_finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def _rng_state() -> dict[str, Any]:
    cuda = [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda, "python": random.getstate()}


# ---------------------------------------------------------------- the loop


def train(cfg: TrainConfig, stage: Stage) -> RunResult:
    """Run (or resume, or extend) a stage to `cfg.steps` optimizer steps; see the module docstring."""
    device, rank, world, started_group = setup_processes(cfg)
    main = rank == 0
    run_dir = run_dir_for(cfg, stage.name)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    model = stage.model.to(device)
    ckpt = load_checkpoint(last_path) if last_path.exists() else None
    start = int(ckpt["step"]) if ckpt else 0
    if ckpt is not None:
        if isinstance(getattr(model, "config", None), type(cfg.model)):
            check_architecture(checkpoint_model_config(ckpt, last_path), model.config, last_path)
        if start >= cfg.steps:
            if main:
                print(f"{run_dir} is already finished ({start} of {cfg.steps} steps); pass a larger --steps "
                      f"to train on, or another --out to start a new run")
            return _finish(started_group, RunResult(run_dir, start, None, ckpt.get("best_val_psnr"), True))
    ctx = EngineContext(cfg, run_dir, device, rank, world, model, amp_dtype_for(cfg, device))
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=ctx.amp_dtype == torch.float16)
    stage.hooks.setup(ctx)
    best = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        stage.hooks.load_state_dict(ckpt)
        best = ckpt.get("best_val_psnr")
        torch.set_rng_state(ckpt["rng"]["torch"])
        if main:
            old = [k for k in differing_fields(_stored_config(cfg, ckpt), cfg) if k not in ("steps", "out")]
            print(f"resuming {run_dir} at step {start} of {cfg.steps}"
                  + (f" (config changed since: {', '.join(old)})" if old else ""))
    elif stage.initialize is not None:
        stage.initialize(model)
    ema = None
    if cfg.ema_decay > 0:
        ema = copy.deepcopy(model).requires_grad_(False)
        if ckpt is not None and ckpt.get("model_ema") is not None:
            ema.load_state_dict(ckpt["model_ema"])
    net = ctx.wrap(model)
    if main:
        save_yaml(cfg, run_dir / "config.yaml")
    sampler = StepSampler(len(stage.train_set), cfg.batch_size, cfg.seed, start, cfg.steps, rank, world)
    loader = DataLoader(stage.train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda")
    log = RunLog(run_dir, start, main)

    def checkpoint(step: int) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "model": model.state_dict(),
                "model_ema": ema.state_dict() if ema is not None else None,
                "config": config_to_dict(cfg), "step": step}

    def save_last(step: int) -> None:
        if not _all_finite(model):
            raise TrainingError(f"weights became NaN/inf by step {step}; {last_path} keeps the last good state "
                                f"— lower --lr or set --grad-clip, then rerun to resume")
        extras = stage.hooks.state_dict()
        clash = set(extras) & set(ENGINE_KEYS)
        if clash:
            raise ValueError(f"stage hooks return checkpoint keys {sorted(clash)} that the engine owns")
        save_checkpoint(last_path, {**checkpoint(step), "optimizer": optimizer.state_dict(),
                                    "scheduler": {"kind": "cosine", "lr": cfg.lr, "lr_min": cfg.lr_min,
                                                  "steps": cfg.steps},
                                    "scaler": scaler.state_dict(), "rng": _rng_state(), "best_val_psnr": best,
                                    **extras})

    if main:
        print(f"training {stage.name}: {cfg.preset} network, {len(stage.train_set)} samples, global batch "
              f"{cfg.batch_size} over {world} process(es) on {device}"
              f"{'' if ctx.amp_dtype is None else f' ({cfg.amp})'}, steps {start}->{cfg.steps}, run dir {run_dir}")
        if start == 0 and stage.val_set is not None:  # the starting point, for the curves (no best.pt)
            psnr = validation_psnr(model, stage.val_set, ctx)
            log.write({"step": 0, "val_psnr": psnr}, prefix="val")
            print(f"step 0: validation PSNR {psnr:.2f} dB")
    bar = tqdm(total=cfg.steps, initial=start, desc=stage.name, disable=not main, dynamic_ncols=True)
    losses: list[float] = []
    extras_log: dict[str, list[float]] = {}
    tick, last_loss, step = time.perf_counter(), None, start
    completed, mid_update = start, False  # what an interrupt may save: only whole steps, never half of one
    try:
        for step, batch in zip(range(start, cfg.steps), loader):
            lr = cosine_lr(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(mix_seed(cfg.seed, 3, step, rank))
            sctx = StepContext(step, sampler.items(step), ctx)
            inputs, targets = stage.hooks.prepare(batch, sctx)
            net.train()
            loss = forward_loss(net, inputs, targets, ctx)
            value = loss.detach().clone()
            if world > 1:
                dist.all_reduce(value)  # every rank sees the same mean, so all stop together on NaN
                value /= world
            last_loss = value.item()
            if not math.isfinite(last_loss):
                raise TrainingError(f"loss became {last_loss} at step {step}; stopped. {last_path} keeps the last "
                                    f"good state — lower --lr or set --grad-clip, then rerun to resume")
            mid_update = True  # from here until the stage's hooks finish, the state is part-way through a step
            optimizer_step(loss, model, optimizer, scaler, cfg.grad_clip)
            if ema is not None:
                update_ema(ema, model, cfg.ema_decay)
            for key, v in stage.hooks.after_step(sctx, inputs, targets).items():
                extras_log.setdefault(key, []).append(float(v))
            losses.append(last_loss)
            done = step + 1
            completed, mid_update = done, False
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
            if done % cfg.log_every == 0 or done == cfg.steps:
                elapsed = time.perf_counter() - tick
                record = {"step": done, "loss": float(np.mean(losses)), "lr": lr,
                          "images_per_s": len(losses) * cfg.batch_size / max(elapsed, 1e-9)}
                record.update({k: float(np.mean(v)) for k, v in extras_log.items()})
                log.write(record)
                losses, extras_log, tick = [], {}, time.perf_counter()
            validate = stage.val_set is not None and (
                (cfg.val_every and done % cfg.val_every == 0) or done == cfg.steps)
            if validate:
                if main:
                    psnr = validation_psnr(ema if ema is not None else model, stage.val_set, ctx)
                    log.write({"step": done, "val_psnr": psnr}, prefix="val")
                    bar.write(f"step {done}: validation PSNR {psnr:.2f} dB (best {max(psnr, best or psnr):.2f})")
                    if best is None or psnr > best:
                        best = psnr
                        save_checkpoint(best_path, {**checkpoint(done), "val_psnr": psnr})
                if world > 1:
                    dist.barrier()
            if main and (done % cfg.save_every == 0 or done == cfg.steps):
                save_last(done)
            step = done
    except KeyboardInterrupt:
        if main and world == 1 and completed > start and not mid_update:
            save_last(completed)  # the state after the last completed step: resuming from it stays exact
            print(f"\ninterrupted: saved {last_path} at step {completed}; rerun the same command to resume")
        elif main:
            print(f"\ninterrupted in the middle of a step: {last_path} keeps the last periodic checkpoint; "
                  "rerun the same command to resume from it")
        raise
    finally:
        bar.close()
        log.close()
    if main:
        print(f"finished {step} steps; last loss {last_loss:.4f}"
              + (f", best validation PSNR {best:.2f} dB" if best is not None else "") + f"; {run_dir}")
    return _finish(started_group, RunResult(run_dir, step, last_loss, best))


def _stored_config(cfg: TrainConfig, ckpt: dict[str, Any]) -> TrainConfig:
    from dwgn.training.config import config_from_dict

    try:
        return config_from_dict(type(cfg), ckpt["config"])
    except ValueError:
        return cfg  # a config from an older field set: nothing useful to compare


def _finish(started_group: bool, result: RunResult) -> RunResult:
    if started_group:
        dist.barrier()
        dist.destroy_process_group()
    return result
