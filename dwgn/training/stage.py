"""What a training stage gives the engine, and what the engine gives it back.

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
        after_step(step, input, target) -> dict[str, float | Tensor]
                                        runs after the network's optimizer step (Stage 1: the generators'
                                        adversarial step on `step.model`, the unwrapped network); returned
                                        scalars (floats or 0-d tensors, best left on the device: the engine
                                        reads them all in one transfer when it logs) are logged, as means
                                        over the steps since the last line, next to `loss`.
        state_dict() -> dict            extra top-level keys for last.pt, e.g. {"generators": {...}} (tensors
                                        and plain types only); `load_state_dict(ckpt)` gets the whole last.pt.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from dwgn.training.config import TrainConfig


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
    items: list[tuple[int, int, int]]     # this rank's (dataset index, sample seed, step seed) triples
    engine: EngineContext

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def model(self) -> nn.Module:
        return self.engine.model

    @property
    def seeds(self) -> list[int]:
        return [item[1] for item in self.items]


class StageHooks:
    """No-op defaults; a stage overrides what it needs (see the module docstring)."""

    def setup(self, ctx: EngineContext) -> None:
        pass

    def prepare(self, batch: Any, step: StepContext) -> tuple[Tensor, Tensor]:
        inputs, targets = batch[0], batch[1]
        return inputs.to(step.device, non_blocking=True), targets.to(step.device, non_blocking=True)

    def after_step(self, step: StepContext, inputs: Tensor, targets: Tensor) -> dict[str, float | Tensor]:
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
