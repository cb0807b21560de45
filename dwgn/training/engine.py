"""The one training loop of pre-training (Stage 1) and fine-tuning (Stage 2): `train(cfg, stage)`.

`train` reads top to bottom: processes, run directory, network, optimizer and EMA, resume; then per step the
batch, forward, L1 loss, backward, clip, Adam step, EMA, the stage's own step, and the log, validation and
checkpoints. What it calls lives beside it: the run directory's rules, log.jsonl and the RNG state in run_dir.py,
the sampler in sampler.py, checkpoint files in checkpoint.py, and the CUDA-graph step and compilation in
acceleration.py.

A stage hands over a `Stage`:
  `model`      the network, built from `cfg.model`, on the CPU (train moves it and wraps DDP);
  `train_set`  a Dataset whose `__getitem__((index, sample_seed, step_seed))` returns a tensor or a tuple of
               tensors; every random choice of a sample comes from its seeds (docs/DESIGN.md §4.3);
  `val_set`    optional, items `(input, target)` (3,H,W) in [0,1]: PSNR every `val_every` steps and at the end;
  `initialize` optional, `initialize(model)` on a fresh start only (never on resume): e.g. pre-trained weights;
  `hooks`      a `StageHooks` (no-op defaults) for what the stage adds to each step: Stage 1's mask generators
               make the input from clean crops (`prepare`) and take their own adversarial step after the
               network's (`after_step`), and their weights and optimizer go into last.pt (`state_dict`).

Determinism: for step s the global batch position j gets dataset index perm_epoch[(s*B + j) % N] and
sample seed hash(seed, s, j), and torch's RNG is re-seeded with hash(seed, s, rank) before `prepare`;
so a resumed run, any number of data-loader workers, and (for per-sample randomness) any number of
processes give the same result. Under torchrun (RANK set) each rank takes its slice of the global batch.
"""
from __future__ import annotations

import copy
import math
import os
import time
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

from dwgn.errors import UserError
from dwgn.training.acceleration import CudaGraphStep, capturable_adam, compile_blocks, l1_step_loss
from dwgn.training.checkpoint import (FORMAT_VERSION, check_architecture, checkpoint_model_config, release_of,
                                     save_checkpoint)
from dwgn.training.config import TrainConfig
from dwgn.training.cli import config_to_dict, save_yaml
from dwgn.training.run_dir import RunLog, open_run, restart, rng_state, run_dir_for, set_rng_state
from dwgn.training.sampler import StepSampler, mix_seed

# The learning rate is a function of the step and the config (cosine_lr), so no scheduler state is saved.
ENGINE_KEYS = ("format_version", "model", "model_ema", "config", "step", "optimizer", "scaler", "rng",
               "best_val_psnr")


class TrainingError(UserError, RuntimeError):
    """The run cannot go on (non-finite loss or weights); the message names the step and what to do."""


# ---------------------------------------------------------------- what a stage gives train()


class StageHooks:
    """What a stage adds to each step; these defaults add nothing. The batch arrives on the device."""

    def setup(self, device: torch.device, rank: int, amp_dtype: torch.dtype | None) -> None:
        """Once, after the process group is ready and before a resume restores state: build extra modules
        on `device` (wrap a trainable one with `ddp`), make their optimizer."""

    def prepare(self, batch: Any, step: int) -> tuple[Tensor, Tensor]:
        """The network's (input, target) for step `step` (0-based) from the collated batch."""
        return batch[0], batch[1]

    def after_step(self, step: int, model: nn.Module, inputs: Tensor, targets: Tensor) -> dict[str, float | Tensor]:
        """After the network's optimizer step (`model`: the unwrapped network). The scalars returned (floats or
        0-d tensors, best left on the device) are logged as means over the steps since the last line."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Extra top-level keys of last.pt, e.g. {"generators": {...}} (tensors and plain types only)."""
        return {}

    def load_state_dict(self, ckpt: dict[str, Any], path: Path) -> None:
        """Restore from the whole of last.pt (`path`, for messages) on resume."""


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
    last_loss: float | None                              # the last loss line of log.jsonl
    best_val_psnr: float | None
    already_finished: bool = False


# ---------------------------------------------------------------- pieces (also used by benchmarks)


def cosine_lr(step: int, cfg: TrainConfig) -> float:
    """Learning rate for step `step` of `cfg.steps`: after a linear warm-up over cfg.warmup_steps (step k < warmup
    gets lr (k + 1) / warmup), cosine from cfg.lr at the end of the warm-up down to cfg.lr_min at cfg.steps."""
    warmup = cfg.warmup_steps
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min((step - warmup) / (cfg.steps - warmup), 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def amp_dtype_for(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA; on the CPU plain float32, or bfloat16 autocast with cfg.cpu_amp."""
    if device.type == "cpu" and cfg.cpu_amp:
        return torch.bfloat16
    if device.type != "cuda" or cfg.amp == "none":
        return None
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)  # one launch, not one per tensor
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


@torch.no_grad()
def validation_psnr(model: nn.Module, val_set: Dataset, device: torch.device,
                    amp_dtype: torch.dtype | None = None) -> float:
    """Mean RGB PSNR (peak 1) over `val_set`, one image at a time (sizes may differ). A training monitor;
    the paper's protocol (Y channel on saved 8-bit images) is dwgn.evaluation's job."""
    was_training = model.training
    model.eval()
    values = []
    for i in range(len(val_set)):
        inputs, targets = val_set[i][:2]
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            restored = model(inputs[None].to(device))
        mse = F.mse_loss(restored.float().clamp(0, 1), targets[None].to(device).float()).item()
        values.append(10 * math.log10(1.0 / max(mse, 1e-10)))
    model.train(was_training)
    return float(np.mean(values))


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


def ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` wrapped in DDP (gradients averaged over the processes) under torchrun, else itself."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def checked_losses(pending: list[Tensor], first_step: int, last_path: Path) -> list[float]:
    """The losses of steps first_step, first_step + 1, ... read in one transfer; stops at the first that is
    not finite. Called before anything is saved, so last.pt never holds the steps after it."""
    values = torch.stack(pending).float().tolist() if pending else []
    for offset, value in enumerate(values):
        if not math.isfinite(value):
            raise TrainingError(f"loss became {value} at step {first_step + offset}; stopped. {last_path} keeps the "
                                "last good state — lower --lr or set --grad-clip, then rerun to resume")
    return values


def host_means(series: dict[str, list[Any]]) -> dict[str, float]:
    """Mean of each list of scalars (floats or 0-d tensors, mostly on one device), read in one transfer."""
    tensors = [v for values in series.values() for v in values if isinstance(v, Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    means = [torch.stack([v.detach().float().reshape(()).to(device) if isinstance(v, Tensor) else
                          torch.tensor(float(v), device=device) for v in values]).mean() for values in series.values()]
    return dict(zip(series, torch.stack(means).tolist())) if means else {}


# ---------------------------------------------------------------- the loop


def train(cfg: TrainConfig, stage: Stage) -> RunResult:
    """Run (or resume, or extend) a stage to `cfg.steps` optimizer steps; see the module docstring."""
    # ---- processes and the run directory: resume from last.pt, or refuse another config
    device, rank, world, started_group = setup_processes(cfg)
    main = rank == 0
    if cfg.cuda_graphs and world > 1:
        raise TrainingError("cuda_graphs runs in one process; drop it under torchrun")
    run_dir = run_dir_for(cfg, stage.name)
    last_path = run_dir / "last.pt"
    if cfg.restart and main:
        moved = restart(run_dir)
        if moved is not None:
            print(f"--restart: moved the old run to {moved}; starting over in {run_dir}")
    if world > 1:
        dist.barrier()  # the old run is out of the way before any rank looks
    ckpt = open_run(cfg, run_dir)  # None for a fresh run
    model = stage.model.to(device)
    if ckpt is not None and isinstance(getattr(model, "config", None), type(cfg.model)):
        check_architecture(checkpoint_model_config(ckpt, last_path), model.config, last_path)
    step, best = (0, None) if ckpt is None else (int(ckpt["step"]), ckpt.get("best_val_psnr"))
    if step >= cfg.steps:
        if main:
            print(f"{run_dir} is already finished ({step} of {cfg.steps} steps); pass a larger --steps "
                  f"to train on, or --out NEW_DIR to start a new run")
        return _finish(started_group, RunResult(run_dir, step, None, best, True))

    # ---- network, optimizer, gradient scaler (fp16 only), EMA, the stage's own state; resume
    amp_dtype = amp_dtype_for(cfg, device)
    optimizer = (capturable_adam(model, cfg.lr, cfg.betas, cfg.weight_decay) if cfg.cuda_graphs
                 else make_optimizer(model, cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    stage.hooks.setup(device, rank, amp_dtype)
    if ckpt is None and stage.initialize is not None:
        stage.initialize(model)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay > 0 else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("model_ema") is not None:  # ema_decay is part of the config
            ema.load_state_dict(ckpt["model_ema"])
        stage.hooks.load_state_dict(ckpt, last_path)
        set_rng_state(ckpt["rng"])
    if main:
        save_yaml(cfg, run_dir / "config.yaml")
        if ckpt is not None:
            print(f"resuming {run_dir} at step {step} of {cfg.steps}")
        print(f"training {stage.name}: {cfg.preset} network, {len(stage.train_set)} samples, global batch "
              f"{cfg.batch_size} over {world} process(es) on {device}{'' if amp_dtype is None else f' ({cfg.amp})'}"
              f", steps {step}->{cfg.steps}, run dir {run_dir}")

    def weights() -> dict[str, Any]:  # what best.pt, last.pt and the snapshots hold of the run
        return {"format_version": FORMAT_VERSION, "model": model.state_dict(),
                "model_ema": ema.state_dict() if ema is not None else None, "config": config_to_dict(cfg), "step": step}

    def save_last() -> None:
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise TrainingError(f"weights became NaN/inf by step {step}; {last_path} keeps the last good state — "
                                "lower --lr or set --grad-clip, then rerun to resume")
        extras = stage.hooks.state_dict()
        if set(extras) & set(ENGINE_KEYS):
            raise ValueError(f"stage hooks return checkpoint keys {sorted(set(extras) & set(ENGINE_KEYS))} that the "
                             "engine owns")
        save_checkpoint(last_path, {**weights(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                    "rng": rng_state(), "best_val_psnr": best, **extras})

    # ---- the steps
    sampler = StepSampler(len(stage.train_set), cfg.batch_size, cfg.seed, step, cfg.steps, rank, world)
    loader = DataLoader(stage.train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda")
    net = ddp(compile_blocks(model) if cfg.compile else model, device)
    graph: CudaGraphStep | None = None  # cuda_graphs: the whole step, captured on the first batch
    log = RunLog(run_dir, step, main)
    bar = tqdm(total=cfg.steps, initial=step, desc=stage.name, disable=not main or None, dynamic_ncols=True)
    start, mid_step = step, False       # mid_step: from the optimizer update until `step` counts it
    losses: list[float] = []            # read and checked, since the last log line
    pending: list[Tensor] = []          # not read yet: reading a loss makes the host wait for the GPU
    scalars: dict[str, list[Any]] = {}  # the stage's, since the last log line
    tick, last_loss = time.perf_counter(), None
    try:
        if main and start == 0 and stage.val_set is not None and cfg.val_every:  # the starting point, for the
            # curves (no best.pt); val_every 0 validates at the end only
            psnr = validation_psnr(ema if ema is not None else model, stage.val_set, device, amp_dtype)
            log.write({"step": 0, "val_psnr": psnr}, prefix="val")
            print(f"step 0: validation PSNR {psnr:.2f} dB")
        for batch in loader:
            lr = cosine_lr(step, cfg)
            for group in optimizer.param_groups:
                if cfg.cuda_graphs:
                    group["lr"].fill_(lr)  # a GPU tensor the captured Adam step reads
                else:
                    group["lr"] = lr
            torch.manual_seed(mix_seed(cfg.seed, 3, step, rank))
            batch = (batch.to(device, non_blocking=True) if isinstance(batch, Tensor)
                     else [t.to(device, non_blocking=True) for t in batch])
            inputs, targets = stage.hooks.prepare(batch, step)
            net.train()
            if cfg.cuda_graphs:  # forward, loss, backward and Adam step replayed; the loss is read below
                graph = graph or CudaGraphStep(model, optimizer, inputs, targets, amp_dtype)
                mid_step = True
                loss = graph(inputs, targets)
            else:
                loss = l1_step_loss(net, inputs, targets, amp_dtype)  # forward under autocast, L1 in float32
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)  # clip the true gradients, not fp16-scaled ones
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                mid_step = True
                scaler.step(optimizer)
                scaler.update()
            loss = loss.detach().clone()  # a copy: the CUDA graph's output is overwritten by the next replay
            if world > 1:
                dist.all_reduce(loss)  # every rank sees the same mean, so all stop together on NaN
                loss /= world
            if ema is not None:
                update_ema(ema, model, cfg.ema_decay)
            extras = stage.hooks.after_step(step, model, inputs, targets)
            step, mid_step = step + 1, False
            pending.append(loss)  # stays on the device until the next log, validation or save
            for key, value in extras.items():
                scalars.setdefault(key, []).append(value.detach() if isinstance(value, Tensor) else float(value))
            bar.update(1)

            log_now = step % cfg.log_every == 0 or step == cfg.steps
            val_now = stage.val_set is not None and ((cfg.val_every and step % cfg.val_every == 0) or step == cfg.steps)
            save_now = step % cfg.save_every == 0 or step == cfg.steps
            if log_now or val_now or save_now:  # the host waits for the GPU here (every rank), not at every step
                losses += checked_losses(pending, step - len(pending), last_path)
                pending = []
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
            if log_now:
                elapsed = time.perf_counter() - tick
                last_loss = float(np.mean(losses))  # what log.jsonl records, and the closing line prints
                log.write({"step": step, "loss": last_loss, "lr": lr,
                           "images_per_s": len(losses) * cfg.batch_size / max(elapsed, 1e-9), **host_means(scalars)})
                losses, scalars, tick = [], {}, time.perf_counter()
            if val_now:
                if main:  # the weights a user gets (the EMA when kept); a new best writes best.pt
                    psnr = validation_psnr(ema if ema is not None else model, stage.val_set, device, amp_dtype)
                    if best is None or psnr > best:
                        best = psnr
                        save_checkpoint(run_dir / "best.pt", {**weights(), "val_psnr": psnr})
                    log.write({"step": step, "val_psnr": psnr}, prefix="val")
                    bar.write(f"step {step}: validation PSNR {psnr:.2f} dB (best {best:.2f})")
                if world > 1:
                    dist.barrier()
            if save_now and main:
                save_last()
            if cfg.keep_every and step % cfg.keep_every == 0 and main:  # float32, never overwritten: for the
                # held-out check along a run, or `python -m dwgn.export A OUT --average B`
                save_checkpoint(run_dir / "snapshots" / f"step-{step:06d}.safetensors",
                                release_of(weights(), note=f"snapshot of {run_dir} at step {step}"))
    except KeyboardInterrupt:
        if main and world == 1 and step > start and not mid_step:
            save_last()  # the state after the last completed step: resuming from it stays exact
            print(f"\ninterrupted: saved {last_path} at step {step}; rerun the same command to resume")
        elif main:
            print(f"\ninterrupted in the middle of a step: {last_path} keeps the last periodic checkpoint; "
                  "rerun the same command to resume from it")
        raise
    finally:
        bar.close()
        log.close()
    if main:
        print(f"finished {step} steps; last loss {last_loss:.4f} (as in log.jsonl: the mean since the line before)"
              + (f", best validation PSNR {best:.2f} dB" if best is not None else "") + f"; {run_dir}")
    return _finish(started_group, RunResult(run_dir, step, last_loss, best))


def _finish(started_group: bool, result: RunResult) -> RunResult:
    if started_group:
        dist.barrier()
        dist.destroy_process_group()
    return result
