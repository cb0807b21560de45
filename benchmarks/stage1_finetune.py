"""Does Stage 1 help Stage 2? `train.py` from Stage-1 weights against `--from-scratch`:
same steps, same data (the embedded synthetic demo set), same seeds; validation PSNR at equal steps,
mean and spread over the seeds. Each run is a plain train.py subprocess (the commands are in the JSON).

    OMP_NUM_THREADS=1 python benchmarks/stage1_finetune.py --init runs/stage1-init.pt --steps 150 \
        --seeds 0,1,2 --json benchmarks/results/stage1_finetune.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(arm: str, seed: int, args: argparse.Namespace) -> tuple[list[str], dict[int, float]]:
    out = Path(args.out) / f"{arm}-seed{seed}"
    start = ["--init", str(args.frozen_init)] if arm == "stage1" else ["--from-scratch"]
    cmd = [sys.executable, "train.py", *start, "--steps", str(args.steps), "--seed", str(seed),
           "--val-every", str(args.val_every), "--num-workers", "0", "--out", str(out)]
    if not (out / "log.jsonl").exists() or '"step": %d' % args.steps not in (out / "log.jsonl").read_text():
        subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       stdout=subprocess.DEVNULL)
    curve = {}
    for line in (REPO / out / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "val_psnr" in record:
            curve[record["step"]] = record["val_psnr"]
    return cmd, curve


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", required=True, help="Stage-1 checkpoint (last.pt of a pre-training run)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="runs/stage1-finetune")
    ap.add_argument("--json", default="benchmarks/results/stage1_finetune.json")
    args = ap.parse_args(argv)
    if not Path(args.init).is_file():
        print(f"error: --init {args.init} not found; pass a Stage-1 last.pt", file=sys.stderr)
        return 2
    import shutil

    import torch

    from dwgn.io import write_text_atomic

    seeds = [int(s) for s in args.seeds.split(",")]
    arms: dict[str, dict] = {}
    # scratch first: --init may be the last.pt of a Stage-1 run still going; it is copied (it is written
    # atomically) when the Stage-1 arm starts, and the JSON records how many Stage-1 steps it had
    args.frozen_init = Path(args.out) / "stage1-init.pt"
    for arm in ("scratch", "stage1"):
        if arm == "stage1" and not args.frozen_init.exists():
            args.frozen_init.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.init, args.frozen_init)
        curves, commands = {}, []
        for seed in seeds:
            cmd, curve = run(arm, seed, args)
            commands.append(" ".join(["python"] + cmd[1:]))
            curves[seed] = curve
            print(arm, seed, curve, flush=True)
        steps = sorted(set.intersection(*(set(c) for c in curves.values())))
        arms[arm] = {"commands": commands, "curves": {str(s): c for s, c in curves.items()},
                     "mean": {st: statistics.mean(c[st] for c in curves.values()) for st in steps},
                     "std": {st: statistics.stdev(c[st] for c in curves.values()) if len(seeds) > 1 else 0.0
                             for st in steps}}
    diff = {st: arms["stage1"]["mean"][st] - arms["scratch"]["mean"][st] for st in arms["stage1"]["mean"]}
    result = {"what": "validation PSNR (RGB, dB; 5 center crops of the synthetic demo test set) of train.py, "
                      "tiny, CPU: from Stage-1 weights vs --from-scratch, same steps/data/seeds",
              "init": args.init, "init_stage1_steps":
                  torch.load(args.frozen_init, map_location="cpu", weights_only=True)["step"], "seeds": seeds, "arms": arms,
              "stage1_minus_scratch": diff}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")
    print(json.dumps(diff, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
