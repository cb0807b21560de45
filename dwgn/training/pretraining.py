"""Stage 1: pre-training (docs/DESIGN.md §2) on the shared engine; `pre-training.py` calls main().

`--degradation adversarial` (the paper): clean crops B are degraded by the learned mask generators of
dwgn.training.decomposition; each step the network takes its L1 step on O = clip(B⊙M_b + D⊙M_d) (made under
no_grad in `prepare`), then the generators take their ascent step through the frozen, just-updated
network (`after_step`): 1:1, network first, Adam for both, both on the same cosine schedule (the
generators' rate is `generator_lr` times the network's cosine factor, so the two players' relative
speed stays fixed and the adversary does not outrun a network whose rate has decayed). The adversary's
bounded logits, budget and information term are dwgn.training.decomposition's (the changes and
their reasons: docs/pretraining.md).
`--degradation weather`: the same images with synthetic weather (dwgn.data.weather), no generators.

The run directory is `runs/pretrain-<preset>` (or `--out`); `last.pt` holds the network for
fine-tuning and, for resume, `generators` = {"model": generator weights, "optimizer": their Adam}.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from dwgn.training.checkpoint import CheckpointError
from dwgn.training.config import ConfigError, TrainConfig, opt
from dwgn.training.cli import parse_config
from dwgn.training.decomposition import (BUDGET, ENTROPY_WEIGHT, MASK_FLOOR, Decomposer, DecompositionNoise,
                                         generator_step, logit_gradient_norms, make_generator_optimizer,
                                         sample_noise)
from dwgn.errors import run_main
from dwgn.training.engine import Stage, StageHooks, cosine_lr, ddp, train
from dwgn.models.network import build_model

STAGE = "pretrain"


@dataclass
class PretrainingConfig(TrainConfig):
    """Stage 1 (pre-training.py): blind background decomposition (docs/DESIGN.md §2). Defaults are the CPU demo
    (a few minutes on 2 cores); configs/ holds the paper's (batch 4, 128² crops, 2 ImageNet epochs)."""

    degradation: str = opt("adversarial", "adversarial (learned masks, the paper) or weather (synthetic weather)",
                           ("adversarial", "weather"))
    steps: int = opt(100, "total optimizer steps (a larger value extends a finished run)")
    generator_lr: float = opt(2e-4, "peak Adam learning rate of the mask generators, on the network's cosine "
                              "schedule (the paper: 2e-4)")
    mask_floor: float = opt(MASK_FLOOR, "every pixel keeps at least this fraction of B, in (0, 1) "
                            "(see dwgn/training/decomposition.py)")
    mask_budget: float = opt(BUDGET, "per image, the mean share of each mask's range the adversary may use, "
                             "in (0, 1] (docs/pretraining.md)")
    entropy_weight: float = opt(ENTROPY_WEIGHT, "weight of the adversary's information term (component use + "
                                "image dependence), >= 0 (docs/pretraining.md)")

    def validate(self) -> None:
        super().validate()
        if self.generator_lr <= 0:
            raise ConfigError(f"generator_lr must be positive, got {self.generator_lr}")
        if not 0.0 < self.mask_floor < 1.0:
            raise ConfigError(f"mask_floor must be in (0, 1) so the background stays recoverable and the "
                              f"adversary has room; got {self.mask_floor}")
        if not 0.0 < self.mask_budget <= 1.0:
            raise ConfigError(f"mask_budget must be in (0, 1] (the mean share of the mask range an image may "
                              f"use); got {self.mask_budget}")
        if self.entropy_weight < 0:
            raise ConfigError(f"entropy_weight must be >= 0, got {self.entropy_weight}")


class AdversarialDecomposition(StageHooks):
    """What `--degradation adversarial` adds to the engine's step: the generators, their optimizer and their step."""

    def __init__(self, cfg: PretrainingConfig) -> None:
        self.cfg = cfg
        self.noise: DecompositionNoise | None = None

    def setup(self, device: torch.device, rank: int, amp_dtype: torch.dtype | None) -> None:
        # fixed initial weights for a given seed, whatever the global RNG did before
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            self.decomposer = Decomposer(floor=self.cfg.mask_floor, budget=self.cfg.mask_budget).to(device)
        self.wrapped = ddp(self.decomposer, device)  # DDP under torchrun: generator gradients averaged
        self.optimizer = make_generator_optimizer(self.decomposer, self.cfg.generator_lr)
        self.rank = rank
        # bf16 autocast is safe without a gradient scaler; fp16 would need one, so the generators' step runs float32
        self.amp_dtype = amp_dtype if amp_dtype == torch.bfloat16 else None

    def prepare(self, batch: Tensor, step: int) -> tuple[Tensor, Tensor]:
        clean = batch                                                # (B,3,H,W) clean crops on the device
        b, _, h, w = clean.shape
        self.noise = sample_noise(b, h, w, seed=self.cfg.seed, step=step, rank=self.rank, device=clean.device)
        with torch.no_grad():
            degraded = self.decomposer(clean, self.noise)
        self.masks = {"mask_b": degraded.mask_b.mean(), "mask_d": degraded.mask_d.mean()}  # read when logged
        return degraded.output, clean

    def after_step(self, step: int, model: nn.Module, inputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        amp = None if self.amp_dtype is None else torch.autocast(targets.device.type, dtype=self.amp_dtype)
        for group in self.optimizer.param_groups:
            group["lr"] = self.generator_lr(step)
        loss = generator_step(model, self.wrapped, self.optimizer, targets, self.noise, autocast=amp,
                              entropy_weight=self.cfg.entropy_weight)
        return {"generator_loss": loss, **self.masks, **logit_gradient_norms(self.decomposer)}

    def generator_lr(self, step: int) -> float:
        """`generator_lr` times the network's cosine factor at `step` (the same schedule for both players)."""
        factor = cosine_lr(step, self.cfg) / self.cfg.lr if self.cfg.lr > 0 else 1.0
        return self.cfg.generator_lr * factor

    def state_dict(self) -> dict[str, Any]:
        return {"generators": {"model": self.decomposer.state_dict(), "optimizer": self.optimizer.state_dict()}}

    def load_state_dict(self, ckpt: dict[str, Any], path: Path) -> None:
        if not isinstance(ckpt.get("generators"), dict):
            raise CheckpointError(f"{path} has no generators (a --degradation weather run?); "
                                  f"resume it with --degradation weather, or start anew with another --out")
        try:
            self.decomposer.load_state_dict(ckpt["generators"]["model"])
            self.optimizer.load_state_dict(ckpt["generators"]["optimizer"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"checkpoint {path}: its generators do not fit this code "
                                  f"({str(err).splitlines()[0]}); start anew with another --out") from None


class NoGenerators(StageHooks):
    """`--degradation weather`: the engine's defaults, but refuse to resume an adversarial run silently."""

    def load_state_dict(self, ckpt: dict[str, Any], path: Path) -> None:
        if ckpt.get("generators") is not None:
            raise CheckpointError(f"{path} was pre-trained with --degradation adversarial; resume it "
                                  "with that, or start a weather run with another --out")


def build_stage(cfg: PretrainingConfig, train_set: Dataset) -> Stage:
    # the network's initial weights depend on --seed alone, not on whatever used the global RNG before
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.preset, **asdict(cfg.model))
    hooks = AdversarialDecomposition(cfg) if cfg.degradation == "adversarial" else NoGenerators()
    return Stage(STAGE, model, train_set, hooks=hooks)


def training_set(cfg: PretrainingConfig) -> Dataset:
    from dwgn.data.datasets import CleanImageDataset, SyntheticWeatherDataset, pretraining_images

    paths = pretraining_images(cfg.data)  # says in one line when it falls back to the packaged photos
    if cfg.data is not None:
        print(f"data: {len(paths)} pre-training images from {cfg.data}")
    if cfg.degradation == "weather":
        return SyntheticWeatherDataset(paths, crop=cfg.crop)
    return CleanImageDataset(paths, crop=cfg.crop)


def main(argv: Sequence[str] | None = None) -> int:
    """`python pre-training.py [--key value ...]`; errors propagate to `dwgn.errors.run_main`."""
    cfg = parse_config(PretrainingConfig, argv, prog="pre-training.py")
    print(f"degradation: {cfg.degradation}"
          + (f" (learned masks, background floor {cfg.mask_floor})" if cfg.degradation == "adversarial" else ""))
    train(cfg, build_stage(cfg, training_set(cfg)))
    return 0


if __name__ == "__main__":
    run_main(main, "pre-training.py")
