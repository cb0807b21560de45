"""The one training loop shared by pre-training (Stage 1) and fine-tuning (Stage 2).

A stage calls `train(cfg, Stage(...))`; the interface (model, data sets, hooks) is described in
dwgn/training/stage.py, the run directory (resume, refusal of another config, log) in run_dir.py.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from dwgn.training.config import TrainConfig, config_to_dict, save_yaml
from dwgn.training.run_dir import RunLog, open_run, restart, rng_state, run_dir_for, set_rng_state
from dwgn.training.sampler import StepSampler, mix_seed
from dwgn.training.stage import EngineContext, RunResult, Stage, StageHooks, StepContext  # noqa: F401 (re-exported)

# The learning rate is a function of the step and the config (cosine_lr), so no scheduler state is saved.
ENGINE_KEYS = ("format_version", "model", "model_ema", "config", "step", "optimizer", "scaler", "rng",
               "best_val_psnr")


class TrainingError(UserError, RuntimeError):
    """The run cannot go on (non-finite loss or weights); the message names the step and what to do."""


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
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)  # one launch, not one per tensor
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


# ---------------------------------------------------------------- processes


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


def _all_finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


# ---------------------------------------------------------------- one run


@dataclass
class Run:
    """The state one run carries from step to step; `step` counts completed optimizer steps."""

    cfg: TrainConfig
    stage: Stage
    ctx: EngineContext
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: nn.Module | None
    step: int = 0
    best: float | None = None
    mid_step: bool = False                # True from the optimizer step until `step` counts it
    graph_step: CudaGraphStep | None = None  # cuda_graphs: captured on the first batch (acceleration.py)

    @property
    def model(self) -> nn.Module:
        return self.ctx.model

    @property
    def last_path(self) -> Path:
        return self.ctx.run_dir / "last.pt"

    @property
    def main(self) -> bool:
        return self.ctx.rank == 0

    def weights(self) -> dict[str, Any]:
        """The keys of both best.pt and last.pt."""
        return {"format_version": FORMAT_VERSION, "model": self.model.state_dict(),
                "model_ema": self.ema.state_dict() if self.ema is not None else None,
                "config": config_to_dict(self.cfg), "step": self.step}

    def save_last(self) -> None:
        if not _all_finite(self.model):
            raise TrainingError(f"weights became NaN/inf by step {self.step}; {self.last_path} keeps the last good "
                                "state — lower --lr or set --grad-clip, then rerun to resume")
        extras = self.stage.hooks.state_dict()
        clash = set(extras) & set(ENGINE_KEYS)
        if clash:
            raise ValueError(f"stage hooks return checkpoint keys {sorted(clash)} that the engine owns")
        save_checkpoint(self.last_path, {**self.weights(), "optimizer": self.optimizer.state_dict(),
                                         "scaler": self.scaler.state_dict(), "rng": rng_state(),
                                         "best_val_psnr": self.best, **extras})

    def save_snapshot(self) -> None:
        """The weights a user gets at this step (the EMA when kept), as a float32 release that later steps never
        overwrite: for the held-out check along a run, or `python -m dwgn.export A OUT --average B`."""
        save_checkpoint(self.ctx.run_dir / "snapshots" / f"step-{self.step:06d}.safetensors",
                        release_of(self.weights(), note=f"snapshot of {self.ctx.run_dir} at step {self.step}"))

    def resume(self, ckpt: dict[str, Any]) -> None:
        """Load everything last.pt holds (the architecture was checked by `start_run`)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("model_ema") is not None:  # ema_decay is part of the config
            self.ema.load_state_dict(ckpt["model_ema"])
        self.stage.hooks.load_state_dict(ckpt)
        self.step, self.best = int(ckpt["step"]), ckpt.get("best_val_psnr")
        set_rng_state(ckpt["rng"])

    def validate(self) -> float:
        """Validation PSNR of the weights a user gets (the EMA when kept); a new best writes best.pt."""
        psnr = validation_psnr(self.ema if self.ema is not None else self.model, self.stage.val_set, self.ctx)
        if self.step > 0 and (self.best is None or psnr > self.best):
            self.best = psnr
            save_checkpoint(self.ctx.run_dir / "best.pt", {**self.weights(), "val_psnr": psnr})
        return psnr

    def take_step(self, net: nn.Module, batch: Any, sampler: StepSampler) -> tuple[Tensor, float, dict[str, Any]]:
        """One optimizer step (plus the stage's own); returns (mean loss over ranks, lr, stage scalars).

        The loss and the stage's scalars stay where they were computed (0-d tensors, on the GPU for a GPU
        run): reading them would make the host wait for the step at every step. `_loop` reads them in one
        transfer at its next log, validation or save, and stops there if a loss is not finite."""
        cfg, ctx = self.cfg, self.ctx
        lr = cosine_lr(self.step, cfg)
        for group in self.optimizer.param_groups:
            if cfg.cuda_graphs:
                group["lr"].fill_(lr)  # a GPU tensor the captured Adam step reads
            else:
                group["lr"] = lr
        torch.manual_seed(mix_seed(cfg.seed, 3, self.step, ctx.rank))
        sctx = StepContext(self.step, sampler.items(self.step), ctx)
        inputs, targets = self.stage.hooks.prepare(batch, sctx)
        net.train()
        if cfg.cuda_graphs:
            if ctx.distributed:
                raise TrainingError("cuda_graphs runs in one process; drop it under torchrun")
            self.graph_step = self.graph_step or CudaGraphStep(self.model, self.optimizer, inputs, targets,
                                                               ctx.amp_dtype)
            self.mid_step = True
            loss = self.graph_step(inputs, targets)  # forward, backward and Adam step, replayed
        else:
            loss = l1_step_loss(net, inputs, targets, ctx.amp_dtype)
        value = loss.detach().clone()  # a copy: the CUDA graph's output is overwritten by the next replay
        if ctx.distributed:
            dist.all_reduce(value)  # every rank sees the same mean, so all stop together on NaN
            value /= ctx.world_size
        if self.graph_step is None:
            self.mid_step = True
            optimizer_step(loss, self.model, self.optimizer, self.scaler, cfg.grad_clip)
        if self.ema is not None:
            update_ema(self.ema, self.model, cfg.ema_decay)
        extras = self.stage.hooks.after_step(sctx, inputs, targets)
        return value, lr, {k: v.detach() if isinstance(v, Tensor) else float(v) for k, v in extras.items()}

    def checked_losses(self, pending: list[Tensor], first_step: int) -> list[float]:
        """The losses of steps first_step, first_step + 1, ... read in one transfer; stops at the first that is
        not finite. Called before anything is saved, so last.pt never holds the steps after it."""
        values = torch.stack(pending).float().tolist() if pending else []
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise TrainingError(f"loss became {value} at step {first_step + offset}; stopped. {self.last_path} "
                                    "keeps the last good state — lower --lr or set --grad-clip, then rerun to resume")
        return values


def host_means(series: dict[str, list[Any]]) -> dict[str, float]:
    """Mean of each list of scalars (floats or 0-d tensors, mostly on one device), read in one transfer."""
    tensors = [v for values in series.values() for v in values if isinstance(v, Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    means = [torch.stack([v.detach().float().reshape(()).to(device) if isinstance(v, Tensor) else
                          torch.tensor(float(v), device=device) for v in values]).mean() for values in series.values()]
    return dict(zip(series, torch.stack(means).tolist())) if means else {}


def start_run(cfg: TrainConfig, stage: Stage, device: torch.device, rank: int, world: int) -> tuple[Run, dict | None]:
    """Open (or restart) the run directory, build the optimizer and EMA, and load last.pt or initialise."""
    run_dir = run_dir_for(cfg, stage.name)
    if cfg.restart and rank == 0:
        moved = restart(run_dir)
        if moved is not None:
            print(f"--restart: moved the old run to {moved}; starting over in {run_dir}")
    if world > 1:
        dist.barrier()  # the old run is out of the way before any rank looks
    ckpt = open_run(cfg, run_dir)
    model = stage.model.to(device)
    if ckpt is not None and isinstance(getattr(model, "config", None), type(cfg.model)):
        check_architecture(checkpoint_model_config(ckpt, run_dir / "last.pt"), model.config, run_dir / "last.pt")
    ctx = EngineContext(cfg, run_dir, device, rank, world, model, amp_dtype_for(cfg, device))
    optimizer = capturable_adam(model, cfg.lr, cfg.betas, cfg.weight_decay) if cfg.cuda_graphs else \
        make_optimizer(model, cfg)
    run = Run(cfg, stage, ctx, optimizer,
              torch.amp.GradScaler(device.type, enabled=ctx.amp_dtype == torch.float16), ema=None)
    if ckpt is not None and int(ckpt["step"]) >= cfg.steps:
        run.step, run.best = int(ckpt["step"]), ckpt.get("best_val_psnr")
        return run, ckpt
    stage.hooks.setup(ctx)
    if ckpt is None and stage.initialize is not None:
        stage.initialize(model)
    if cfg.ema_decay > 0:
        run.ema = copy.deepcopy(model).requires_grad_(False)
    if ckpt is not None:
        run.resume(ckpt)
    return run, ckpt


# ---------------------------------------------------------------- the loop


def train(cfg: TrainConfig, stage: Stage) -> RunResult:
    """Run (or resume, or extend) a stage to `cfg.steps` optimizer steps; see the module docstring."""
    device, rank, world, started_group = setup_processes(cfg)
    run, ckpt = start_run(cfg, stage, device, rank, world)
    run_dir = run.ctx.run_dir
    if ckpt is not None and run.step >= cfg.steps:
        if run.main:
            print(f"{run_dir} is already finished ({run.step} of {cfg.steps} steps); pass a larger --steps "
                  f"to train on, or --out NEW_DIR to start a new run")
        return _finish(started_group, RunResult(run_dir, run.step, None, run.best, True))
    if run.main:
        save_yaml(cfg, run_dir / "config.yaml")
        _announce(run, resumed=ckpt is not None)
    log = RunLog(run_dir, run.step, run.main)
    try:
        last_loss = _loop(run, log)
    finally:
        log.close()
    if run.main:
        print(f"finished {run.step} steps; last loss {last_loss:.4f} (as in log.jsonl: the mean since the line before)"
              + (f", best validation PSNR {run.best:.2f} dB" if run.best is not None else "") + f"; {run_dir}")
    return _finish(started_group, RunResult(run_dir, run.step, last_loss, run.best))


def _announce(run: Run, resumed: bool) -> None:
    cfg, ctx = run.cfg, run.ctx
    if resumed:
        print(f"resuming {ctx.run_dir} at step {run.step} of {cfg.steps}")
    print(f"training {run.stage.name}: {cfg.preset} network, {len(run.stage.train_set)} samples, global batch "
          f"{cfg.batch_size} over {ctx.world_size} process(es) on {ctx.device}"
          f"{'' if ctx.amp_dtype is None else f' ({cfg.amp})'}, steps {run.step}->{cfg.steps}, run dir {ctx.run_dir}")


def _loop(run: Run, log: RunLog) -> float | None:
    """Steps run.step -> cfg.steps with logging, validation and checkpoints; on Ctrl-C saves the last whole step."""
    cfg, ctx, stage = run.cfg, run.ctx, run.stage
    start = run.step
    if run.main and start == 0 and stage.val_set is not None and cfg.val_every:  # the starting point, for the
        # curves (no best.pt); val_every 0 validates at the end only
        psnr = run.validate()
        log.write({"step": 0, "val_psnr": psnr}, prefix="val")
        print(f"step 0: validation PSNR {psnr:.2f} dB")
    sampler = StepSampler(len(stage.train_set), cfg.batch_size, cfg.seed, start, cfg.steps, ctx.rank, ctx.world_size)
    loader = DataLoader(stage.train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=ctx.device.type == "cuda")
    net = ctx.wrap(compile_blocks(run.model) if cfg.compile else run.model)
    bar = tqdm(total=cfg.steps, initial=start, desc=stage.name, disable=not run.main or None, dynamic_ncols=True)
    losses: list[float] = []    # read and checked, since the last log line
    pending: list[Tensor] = []  # not read yet (see Run.take_step)
    scalars: dict[str, list[Any]] = {}
    tick, last_loss = time.perf_counter(), None
    try:
        for batch in loader:
            loss, lr, extras = run.take_step(net, batch, sampler)
            run.step, run.mid_step = run.step + 1, False
            pending.append(loss)
            for key, value in extras.items():
                scalars.setdefault(key, []).append(value)
            bar.update(1)
            done = run.step
            log_now = done % cfg.log_every == 0 or done == cfg.steps
            val_now = stage.val_set is not None and ((cfg.val_every and done % cfg.val_every == 0)
                                                     or done == cfg.steps)
            save_now = done % cfg.save_every == 0 or done == cfg.steps
            if log_now or val_now or save_now:  # the host waits for the GPU here (every rank), not at every step
                losses += run.checked_losses(pending, done - len(pending))
                pending = []
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
            if log_now:
                elapsed = time.perf_counter() - tick
                last_loss = float(np.mean(losses))  # what log.jsonl records, and the closing line prints
                log.write({"step": done, "loss": last_loss, "lr": lr,
                           "images_per_s": len(losses) * cfg.batch_size / max(elapsed, 1e-9), **host_means(scalars)})
                losses, scalars, tick = [], {}, time.perf_counter()
            if val_now:
                if run.main:
                    psnr = run.validate()
                    log.write({"step": done, "val_psnr": psnr}, prefix="val")
                    bar.write(f"step {done}: validation PSNR {psnr:.2f} dB (best {run.best:.2f})")
                if ctx.distributed:
                    dist.barrier()
            if save_now and run.main:
                run.save_last()
            if cfg.keep_every and done % cfg.keep_every == 0 and run.main:
                run.save_snapshot()
    except KeyboardInterrupt:
        if run.main and not ctx.distributed and run.step > start and not run.mid_step:
            run.save_last()  # the state after the last completed step: resuming from it stays exact
            print(f"\ninterrupted: saved {run.last_path} at step {run.step}; rerun the same command to resume")
        elif run.main:
            print(f"\ninterrupted in the middle of a step: {run.last_path} keeps the last periodic checkpoint; "
                  "rerun the same command to resume from it")
        raise
    finally:
        bar.close()
    return last_loss


def _finish(started_group: bool, result: RunResult) -> RunResult:
    if started_group:
        dist.barrier()
        dist.destroy_process_group()
    return result
