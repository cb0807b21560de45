"""Stage 2: all-weather fine-tuning from the pre-trained network (docs/DESIGN.md §3); `train.py` calls main().

Adam 2e-4 (0.9, 0.999), cosine to 1e-6, L1 loss, random crops with the 8 flips/rotations (PairedDataset),
initialised from Stage 1's `runs/pretrain-<preset>/last.pt` unless `--from-scratch`.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import Tensor, nn
from torch.utils.data import Dataset

from dwgn.errors import DataError, run_main
from dwgn.training.checkpoint import CheckpointError, load_weights
from dwgn.training.config import FinetuneConfig
from dwgn.training.cli import parse_config
from dwgn.training.engine import Stage, run_dir_for, train
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
            raise DataError(f"validation pair {self.pairs[i][0]} / {self.pairs[i][1]}: sizes "
                            f"{inp.shape[:2]} and {gt.shape[:2]} differ")
        return to_tensor(center_crop(inp, self.crop)), to_tensor(center_crop(gt, self.crop))


def hold_out(pairs: list[tuple[Path, Path]], n: int, seed: int) -> tuple[list, list]:
    """(training pairs, validation pairs): `n` pairs (at most half) drawn with `seed` and kept out of training."""
    held = min(n, len(pairs) // 2)
    if held == 0:
        raise DataError(f"--data has {len(pairs)} pair(s): too few to hold some out for validation; "
                        "give --val-data DIR (pairs kept apart) or --val-data none")
    chosen = set(np.random.default_rng(seed).choice(len(pairs), size=held, replace=False).tolist())
    return ([p for i, p in enumerate(pairs) if i not in chosen], [p for i, p in enumerate(pairs) if i in chosen])


def validation_pairs(cfg: FinetuneConfig) -> list[tuple[Path, Path]]:
    """`val_images` pairs taken in turn from each set named by `val_data` (e.g. every demo weather);
    `auto` without --data means the demo sets (with --data, `split_data` holds pairs out instead)."""
    if cfg.val_data is None:
        return []
    from dwgn.data.datasets import test_sets

    sets = test_sets(["demo" if cfg.val_data == "auto" else cfg.val_data])
    queues = [list(pairs) for _, pairs in sorted(sets.items()) if pairs]
    chosen: list[tuple[Path, Path]] = []
    while len(chosen) < cfg.val_images and any(queues):
        for queue in queues:
            if queue and len(chosen) < cfg.val_images:
                chosen.append(queue.pop(0))
    return chosen


def split_data(cfg: FinetuneConfig) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]], str]:
    """(training pairs, validation pairs, where validation comes from). With --data and `--val-data auto`,
    validation is a held-out part of that data, never the demo set."""
    from dwgn.data.datasets import training_pairs

    pairs = training_pairs(cfg.data)
    if cfg.data is not None and cfg.val_data == "auto":
        pairs, val = hold_out(pairs, cfg.val_images, cfg.seed)
        return pairs, val, f"held out of {cfg.data} (not trained on)"
    return pairs, *named_validation(cfg)


def named_validation(cfg: FinetuneConfig) -> tuple[list[tuple[Path, Path]], str]:
    """(validation_pairs, where they come from) for validation that is not held out of --data."""
    return validation_pairs(cfg), "the demo test sets" if cfg.val_data == "auto" else str(cfg.val_data)


ONLINE_SAMPLES_PER_PHOTO = 1000  # --synth.online: an "epoch" visits each photo this many times (fresh crops)


def online_training_set(cfg: FinetuneConfig) -> Dataset:
    """--synth.online: weather made on the fly from clean photos (the demo's training photos without
    --data, else the clean images under --data), shaped by the other `synth.*` keys; validation stays on the
    demo test sets (`auto`)."""
    from dwgn.data.datasets import SyntheticWeatherDataset, check_images
    from dwgn.data.demo import train_photo_paths
    from dwgn.data.imagenet import scan_images

    if cfg.data is None:
        paths, source = train_photo_paths(), "the demo's training photos"
    else:
        data = Path(cfg.data)
        if not data.is_dir():
            raise DataError(f"--synth.online --data {data}: give a folder of clean photos "
                            "(the weather is synthesised from them), or drop --data for the demo's photos")
        paths, source = scan_images(data), str(data)  # refuses a folder without images, naming it
        check_images(paths, f"clean photos of {data}")  # before step 1, not when a batch reaches a bad one
    synth = cfg.synth
    dataset = SyntheticWeatherDataset(paths, crop=cfg.crop, length=ONLINE_SAMPLES_PER_PHOTO * len(paths),
                                      clean_share=synth.clean_share, weights=synth.weather_weights,
                                      tone_share=synth.tone_share, weather_side=synth.weather_side,
                                      clean_crop=synth.clean_crop, pair_tone_share=synth.pair_tone_share)
    mix = "" if dataset.cumulative is None else ", weathers " + ", ".join(
        f"{w} {p:.0%}" for w, p in zip(dataset.weathers, np.diff(dataset.cumulative, prepend=0.0)))
    print(f"data: SYNTHETIC weather made on the fly from {len(paths)} clean photos ({source}), "
          + (f"{synth.clean_share:.0%} of steps clean -> clean {synth.clean_crop}² pairs" if dataset.clean_crop
             else f"{synth.clean_share:.0%} clean -> clean pairs") + mix
          + (f", {synth.tone_share:.0%} of crops toned first" if synth.tone_share else "")
          + (f", {synth.pair_tone_share:.0%} of weather pairs toned after the weather" if synth.pair_tone_share else "")
          + (f", weather made on {synth.weather_side}² squares" if dataset.weather_side else ""))
    return dataset


def build_stage(cfg: FinetuneConfig, train_set: Dataset, val_set: Dataset | None) -> Stage:
    model = build_model(cfg.preset, **asdict(cfg.model))
    return Stage(STAGE, model, train_set, val_set, initialize=lambda m: load_pretrained(m, cfg))


def main(argv: Sequence[str] | None = None) -> int:
    """`python train.py [--key value ...]`; errors propagate to `dwgn.errors.run_main`."""
    from dwgn.data.datasets import PairedDataset

    cfg = parse_config(FinetuneConfig, argv, prog="train.py")
    if cfg.restart or not (run_dir_for(cfg, STAGE) / "last.pt").exists():
        check_init(cfg)
    if cfg.synth.online:
        train_set: Dataset = online_training_set(cfg)
        val, val_source = named_validation(cfg)
    else:
        pairs, val, val_source = split_data(cfg)
        if cfg.data is not None:  # the embedded default announces itself
            print(f"data: {len(pairs)} training pairs from {cfg.data}")
        train_set = PairedDataset(pairs, crop=cfg.crop, augment=True)
    if val:
        print(f"validation: {len(val)} pairs from {val_source}"
              f"{f', center {cfg.val_crop}px' if cfg.val_crop else ', whole images'}")
    stage = build_stage(cfg, train_set, CenterCropPairs(val, cfg.val_crop) if val else None)
    train(cfg, stage)
    return 0


if __name__ == "__main__":
    run_main(main, "train.py")
