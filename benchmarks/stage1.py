"""Stage 1 health over a long run, on the CPU with `tiny`: does the adversary keep learning,
and does the network learn to recover the background?

Runs pre-training through the engine (dwgn.training.pretraining, the same code as pre-training.py) with
a hook that, at every snapshot, records
  (1) the gradient norms of both logit networks after the generators' step, and the mask statistics
      of dwgn.training.mask_stats on the training batch and on held-out crops;
  (2) recovery on held-out crops of the packaged TEST photos with fixed noise: PSNR of R(O) and of O
      against B, on the current generators' masks and on frozen sets of O made by earlier snapshots
      (the first one, and the one at --fixed-at), so a gain is not just the adversary's latest trick;
  (3) O for the first images, drawn as a grid (snapshots x images) into --figure.
All images are the packaged photos (synthetic degradations of real photos; not ImageNet).

    OMP_NUM_THREADS=1 python benchmarks/stage1.py --steps 2000 --every 200 --crop 64 \
        --out runs/stage1-bench --json benchmarks/results/stage1.json --figure figures/stage1_degradations.png
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dwgn.data.images import read_image
from dwgn.data.photos import packaged_photos
from dwgn.data.transforms import to_tensor
from dwgn.io import save_figure, write_text_atomic
from dwgn.training.cli import config_to_dict, parse_config
from dwgn.training.decomposition import logit_gradient_norms, sample_noise
from dwgn.training.engine import train
from dwgn.training.mask_stats import mask_statistics
from dwgn.training.pretraining import AdversarialDecomposition, PretrainingConfig, build_stage, training_set


def held_out_crops(count: int, size: int) -> Tensor:
    """`count` crops (count,3,size,size) on a fixed grid of the packaged test photos."""
    photos = [to_tensor(read_image(p)) for p in packaged_photos("test")]
    crops = []
    for i in range(count):
        im = photos[i % len(photos)]
        k = i // len(photos)                                   # k-th crop of this photo, along its diagonal
        _, h, w = im.shape
        t = (k + 0.5) / math.ceil(count / len(photos))
        y, x = int(t * (h - size)), int(t * (w - size))
        crops.append(im[:, y:y + size, x:x + size])
    return torch.stack(crops)


def psnr(a: Tensor, b: Tensor) -> float:
    """Mean over images of RGB PSNR (peak 1)."""
    mse = ((a.clamp(0, 1) - b) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


class Monitored(AdversarialDecomposition):
    def __init__(self, cfg: PretrainingConfig, every: int, fixed_at: int, crops: Tensor, figure_images: int):
        super().__init__(cfg)
        self.every, self.fixed_at, self.crops, self.figure_images = every, fixed_at, crops, figure_images
        n, _, h, w = crops.shape
        self.held_noise = sample_noise(n, h, w, seed=12345, step=0)   # fixed: the same draw at every snapshot
        self.frozen: dict[str, Tensor] = {}
        self.records: list[dict] = []
        self.pictures: list[tuple[int, np.ndarray]] = []
        self.tick = time.perf_counter()
        self.on_snapshot = lambda: None

    def after_step(self, step, model, inputs, targets):
        out = super().after_step(step, model, inputs, targets)
        done = step + 1
        if done == 1 or done % self.every == 0:
            self.snapshot(done, model, targets, out)
        return out

    @torch.no_grad()
    def snapshot(self, done: int, model: torch.nn.Module, targets: Tensor, logged: dict) -> None:
        norms = {k: float(v) for k, v in logit_gradient_norms(self.decomposer).items()}
        record: dict = {"step": done, "seconds": round(time.perf_counter() - self.tick, 1),
                        **norms, "generator_lr": self.generator_lr(done - 1),
                        "train": mask_statistics(self.decomposer, self.decomposer(targets, self.noise))}
        held = self.decomposer(self.crops, self.held_noise)
        record["held_out"] = mask_statistics(self.decomposer, held)
        if done == 1:
            self.frozen["first"] = held.output.clone()
        if done == self.fixed_at:
            self.frozen[f"step{done}"] = held.output.clone()
        was_training = model.training
        model.eval()
        for name, degraded in {"current": held.output, **self.frozen}.items():
            restored = model(degraded)
            record[f"psnr_{name}"] = {"input": psnr(degraded, self.crops), "restored": psnr(restored, self.crops)}
            record[f"psnr_{name}"]["gain"] = record[f"psnr_{name}"]["restored"] - record[f"psnr_{name}"]["input"]
        model.train(was_training)
        record["means_b"] = [round(v, 3) for v in self.decomposer.gen_b.means.tolist()]
        record["means_d"] = [round(v, 3) for v in self.decomposer.gen_d.means.tolist()]
        self.records.append(record)
        pics = held.output[: self.figure_images].permute(0, 2, 3, 1).numpy()
        self.pictures.append((done, (pics * 255).round().astype(np.uint8)))
        print(json.dumps({k: record[k] for k in ("step", "grad_b", "grad_d")}
                         | {"corr_d": record["held_out"]["corr_d"], "corr_d_expected": record["held_out"]["corr_d_expected"],
                            "entropy_d": record["held_out"]["entropy_d"], "gain": record["psnr_current"]["gain"]}),
              flush=True)
        self.on_snapshot()


def draw(pictures: list[tuple[int, np.ndarray]], clean: Tensor, path: Path, rows: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = sorted({round(i * (len(pictures) - 1) / max(rows - 1, 1)) for i in range(min(rows, len(pictures)))})
    chosen = [pictures[i] for i in picks]
    cols = chosen[0][1].shape[0]
    fig, axes = plt.subplots(len(chosen) + 1, cols, figsize=(1.6 * cols, 1.6 * (len(chosen) + 1)), squeeze=False)
    grid = [("clean B", (clean[:cols].permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8))]
    grid += [(f"O, step {s}", imgs) for s, imgs in chosen]
    for r, (label, imgs) in enumerate(grid):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(imgs[c])
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle("Stage 1 adversary over training (tiny, CPU; held-out crops, fixed noise)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)


def summarise(records: list[dict], fixed_at: int) -> dict:
    """Worst cases over the snapshots; correlations also without the step-1 snapshot (the untrained
    logit nets share tiny positional artefacts, correlated between images but carrying no degradation)."""
    trained = [r for r in records if r["step"] > 1] or records
    summary = {
        "snapshots": len(records), "last_step": records[-1]["step"],
        "max_corr_d_expected_held_out_after_step1": max(r["held_out"]["corr_d_expected"] for r in trained),
        "min_dependence_bits_after_step1": min(min(r["held_out"]["dependence_b"], r["held_out"]["dependence_d"])
                                              for r in trained),
        "min_logit_grad_norm": min(min(r["grad_b"], r["grad_d"]) for r in records),
        "max_corr_d_held_out": max(r["held_out"]["corr_d"] for r in records),
        "max_corr_d_expected_held_out": max(r["held_out"]["corr_d_expected"] for r in records),
        "min_entropy_bits": min(min(r["held_out"]["entropy_b"], r["held_out"]["entropy_d"]) for r in records),
        "max_on_bound": max(max(r[k]["on_bound_b"], r[k]["on_bound_d"]) for r in records for k in ("train", "held_out")),
        "gain_current_first_last": [records[0]["psnr_current"]["gain"], records[-1]["psnr_current"]["gain"]],
        "gain_first_masks_first_last": [records[0]["psnr_first"]["gain"], records[-1]["psnr_first"]["gain"]],
    }
    fixed = [r for r in records if f"psnr_step{fixed_at}" in r]
    if fixed:
        summary[f"gain_step{fixed_at}_masks_first_last"] = [fixed[0][f"psnr_step{fixed_at}"]["gain"],
                                                           fixed[-1][f"psnr_step{fixed_at}"]["gain"]]
    return summary


def write_results(args: argparse.Namespace, argv: list[str] | None, cfg: PretrainingConfig, hooks: "Monitored",
                  crops: Tensor, seconds: float) -> dict:
    """JSON and figure, rewritten at every snapshot (a run stopped early still leaves its results)."""
    summary = summarise(hooks.records, args.fixed_at)
    result = {"what": "Stage 1 health; packaged photos = synthetic degradations of real photos, CPU, tiny",
              "command": "python benchmarks/stage1.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "config": config_to_dict(cfg), "held_out_crops": args.held_out, "wall_seconds": round(seconds),
              "torch": torch.__version__, "summary": summary, "snapshots": hooks.records}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")
    draw(hooks.pictures, crops, Path(args.figure), args.figure_rows)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--fixed-at", type=int, default=400, help="freeze this snapshot's held-out O as a fixed set")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--held-out", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/stage1-bench")
    ap.add_argument("--json", default="benchmarks/results/stage1.json")
    ap.add_argument("--figure", default="figures/stage1_degradations.png")
    ap.add_argument("--figure-rows", type=int, default=6)
    ap.add_argument("--extra", nargs="*", default=[], help="more pre-training flags, e.g. --entropy-weight 0.1")
    ap.add_argument("--resummarise", action="store_true", help="only recompute the summary of --json")
    args = ap.parse_args(argv)
    if args.resummarise:
        result = json.loads(Path(args.json).read_text())
        result["summary"] = summarise(result["snapshots"], args.fixed_at)
        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")
        print(json.dumps(result["summary"], indent=1))
        return 0
    if Path(args.out, "last.pt").exists():
        print(f"error: {args.out}/last.pt exists; the benchmark needs a fresh run: pass another --out", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    cfg = parse_config(PretrainingConfig, ["--steps", str(args.steps), "--crop", str(args.crop), "--batch-size",
                                           str(args.batch), "--seed", str(args.seed), "--out", args.out,
                                           "--num-workers", "0", "--save-every", str(args.every),
                                           "--log-every", "10", *args.extra])
    crops = held_out_crops(args.held_out, args.crop)
    stage = build_stage(cfg, training_set(cfg))
    hooks = Monitored(cfg, args.every, args.fixed_at, crops, figure_images=min(6, args.held_out))
    stage.hooks = hooks
    start = time.perf_counter()
    hooks.on_snapshot = lambda: write_results(args, argv, cfg, hooks, crops, time.perf_counter() - start)
    train(cfg, stage)
    print(json.dumps(write_results(args, argv, cfg, hooks, crops, time.perf_counter() - start), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
