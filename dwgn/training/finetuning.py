"""Stage 2: all-weather fine-tuning from the pre-trained network (docs/DESIGN.md §3); `train.py` calls main().

Adam 2e-4 (0.9, 0.999), cosine to 1e-6, L1 loss, random crops with the 8 flips/rotations (PairedDataset),
initialised from Stage 1's `runs/pretrain-<preset>/last.pt` unless `--from-scratch`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from torch import Tensor, nn
from torch.utils.data import Dataset

from dwgn.training.checkpoint import CheckpointError, load_weights
from dwgn.training.config import ConfigError, FinetuneConfig, parse_config
from dwgn.training.engine import Stage, TrainingError, run_dir_for, train
from dwgn.models.network import build_model
from dwgn.data.transforms import center_crop, to_tensor

STAGE = "finetune"


def init_path(cfg: FinetuneConfig) -> Path:
    """The pre-trained checkpoint to start from: `--init`, else Stage 1's default run directory."""
    return Path(cfg.init) if cfg.init else Path(f"runs/pretrain-{cfg.preset}/last.pt")


def check_init(cfg: FinetuneConfig) -> None:
    """Fail before any work if a fresh run has no pre-trained weights to start from."""
    path = init_path(cfg)
    if cfg.from_scratch or path.is_file():
        return
    raise CheckpointError(
        f"pre-trained weights {path} not found. Two ways on: run pre-training first "
        f"(python pre-training.py --preset {cfg.preset}), or fine-tune from random weights with --from-scratch "
        f"(or point --init at another pre-trained checkpoint).")


def load_pretrained(model: nn.Module, cfg: FinetuneConfig) -> None:
    """Stage.initialize: copy the pre-trained network's weights (its EMA if it kept one)."""
    if cfg.from_scratch:
        print("initialised from random weights (--from-scratch)")
        return
    ckpt = load_weights(model, init_path(cfg))  # refuses another architecture, naming the fields
    print(f"initialised from {init_path(cfg)} (pre-trained {ckpt['step']} steps)")


class CenterCropPairs(Dataset):
    """Validation pairs: whole images, or their center `crop` (kept cheap), as (input, target) tensors."""

    def __init__(self, pairs: list[tuple[Path, Path]], crop: int | None):
        self.pairs, self.crop = pairs, crop

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from dwgn.data.images import read_image

        inp, gt = (read_image(p) for p in self.pairs[i])
        if inp.shape != gt.shape:
            raise ValueError(f"validation pair {self.pairs[i][0]} / {self.pairs[i][1]}: sizes "
                             f"{inp.shape[:2]} and {gt.shape[:2]} differ")
        return to_tensor(center_crop(inp, self.crop)), to_tensor(center_crop(gt, self.crop))


def validation_pairs(cfg: FinetuneConfig) -> list[tuple[Path, Path]]:
    """`val_images` pairs taken in turn from each set named by `val_data` (e.g. every demo weather)."""
    if cfg.val_data is None:
        return []
    from dwgn.data.datasets import test_sets

    sets = test_sets([cfg.val_data])
    queues = [list(pairs) for _, pairs in sorted(sets.items()) if pairs]
    chosen: list[tuple[Path, Path]] = []
    while len(chosen) < cfg.val_images and any(queues):
        for queue in queues:
            if queue and len(chosen) < cfg.val_images:
                chosen.append(queue.pop(0))
    return chosen


def build_stage(cfg: FinetuneConfig, train_set: Dataset, val_set: Dataset | None) -> Stage:
    model = build_model(cfg.preset, **{k: getattr(cfg.model, k) for k in cfg.model.__dataclass_fields__})
    return Stage(STAGE, model, train_set, val_set, initialize=lambda m: load_pretrained(m, cfg))


def main(argv: Sequence[str] | None = None) -> int:
    """`python train.py [--key value ...]`; returns the exit status."""
    from dwgn.data.datasets import PairedDataset, training_pairs

    try:
        cfg = parse_config(FinetuneConfig, argv, prog="train.py")
        if not (run_dir_for(cfg, STAGE) / "last.pt").exists():
            check_init(cfg)
        pairs = training_pairs(cfg.data)
        if cfg.data is not None:  # the embedded default announces itself
            print(f"data: {len(pairs)} training pairs from {cfg.data}")
        val = validation_pairs(cfg)
        if val:
            print(f"validation: {len(val)} pairs from {cfg.val_data}"
                  f"{f', center {cfg.val_crop}px' if cfg.val_crop else ', whole images'}")
        stage = build_stage(cfg, PairedDataset(pairs, crop=cfg.crop, augment=True),
                            CenterCropPairs(val, cfg.val_crop) if val else None)
        train(cfg, stage)
    except (ConfigError, CheckpointError, TrainingError, FileNotFoundError, ValueError) as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    return 0
