"""Ablation of the dynamic weights: `dynamic = none | half | full` at equal training steps, several seeds.

    OMP_NUM_THREADS=1 python benchmarks/ablation.py [--steps 100] [--seeds 0,1,2] [--modes none,half,full]
        [--batch-size 4] [--crop 64] [--eval-crop 128] [--preset tiny] [--out runs/ablation]
        [--json benchmarks/results/ablation.json] [--threads 1]

Every (mode, seed) run is trained from scratch by the fine-tuning stage itself
(`dwgn.training.finetuning.main`, run dir `<out>/<mode>-s<seed>`), then scored per demo weather set with
`dwgn.restore` (8-bit output) and `dwgn.evaluation.metrics` (PSNR/SSIM on BT.601 Y, and RGB), on a fixed
center crop of each test image (`--eval-crop`, 0 = whole images) to keep the study cheap. Runs go seed by
seed (all modes of seed 0 first), so a study stopped early still compares the modes on the same seeds.

Resumable: the engine resumes a killed run from its last.pt, and a scored run keeps its scores in
`<run dir>/ablation_eval.json` (reused when its step count and eval crop match), so rerunning the same
command skips finished work. The JSON is rewritten after every run.

Statistics: per mode and set, mean and sample standard deviation over seeds; "overall" is each seed's
mean over the sets, then mean ± std over seeds. Each pair of modes is compared on the overall PSNR-Y by
the per-seed (paired: same seed = same data order) difference: its mean ± std, a paired t-test p-value,
and whether |mean difference| exceeds the seed spread (the larger of the two modes' stds).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: `python benchmarks/ablation.py`
    sys.path.insert(0, str(REPO))

from dwgn.data.datasets import test_sets  # noqa: E402
from dwgn.data.images import read_image  # noqa: E402
from dwgn.evaluation.metrics import all_metrics  # noqa: E402
from dwgn.data.transforms import center_crop  # noqa: E402
from dwgn.io import write_text_atomic  # noqa: E402
from dwgn.models.network import count_parameters  # noqa: E402

CACHE = "ablation_eval.json"
TIME_LOG = "ablation_time.json"
METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
INPUT = "input"  # the row of the unrestored inputs


# ---------------------------------------------------------------------------------------------- scoring
def score_pairs(pairs: list[tuple[Path, Path]], eval_crop: int, model: torch.nn.Module | None = None,
                desc: str = "") -> dict:
    """Mean metrics over a set: the model's 8-bit restorations (dwgn.restore), or the inputs themselves
    when model is None. Returns {"n": ..., "psnr_y": ..., ...}."""
    from dwgn.evaluation.restore import restore

    rows = []
    for inp_path, gt_path in tqdm(pairs, desc=desc, unit="img", leave=False):
        inp, gt = center_crop(read_image(inp_path), eval_crop), center_crop(read_image(gt_path), eval_crop)
        if inp.shape != gt.shape:
            raise ValueError(f"input {inp_path} {inp.shape} and ground truth {gt_path} {gt.shape} differ in "
                             "size; scores are computed at native size: fix or remove this pair")
        out = inp if model is None else restore(model, inp, tile=0)
        rows.append(all_metrics(out, gt))
    return {"n": len(rows), **{k: statistics.fmean(r[k] for r in rows) for k in METRICS}}


def score_sets(sets: dict[str, list[tuple[Path, Path]]], eval_crop: int, model: torch.nn.Module | None,
               label: str) -> dict[str, dict]:
    return {key: score_pairs(pairs, eval_crop, model, desc=f"{label} {key}") for key, pairs in sets.items()}


# ---------------------------------------------------------------------------------------------- one run
def run_name(mode: str, seed: int) -> str:
    return f"{mode}-s{seed}"


def train_argv(mode: str, seed: int, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The train.py flags of one run: from scratch, no validation (scored afterwards), no loader workers
    (one thread does the work; worker processes only compete for the shared cores)."""
    return ["--preset", args.preset, "--from-scratch", "--model.dynamic", mode, "--seed", str(seed),
            "--out", str(run_dir), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
            "--crop", str(args.crop), "--val-data", "none", "--num-workers", "0",
            "--save-every", str(max(1, min(25, args.steps)))]


def cached_scores(run_dir: Path, steps: int, eval_crop: int) -> dict | None:
    """The run's cached scores if they were measured at this step count and eval crop, else None."""
    path = run_dir / CACHE
    if not path.is_file():
        return None
    cached = json.loads(path.read_text())
    if cached.get("step") != steps or cached.get("eval_crop") != eval_crop:
        return None
    return cached


def run_one(mode: str, seed: int, args: argparse.Namespace, sets: dict[str, list[tuple[Path, Path]]]) -> dict:
    """Train (or resume, or skip) one run, then score it (or reuse its cached scores)."""
    from dwgn.training.checkpoint import load_checkpoint, load_model
    from dwgn.training.finetuning import main as train_main

    run_dir = Path(args.out) / run_name(mode, seed)
    cached = cached_scores(run_dir, args.steps, args.eval_crop)
    if cached is not None:
        print(f"{run_dir}: trained and scored already (cached in {CACHE})")
        return cached
    timing_path = run_dir / TIME_LOG
    spent = json.loads(timing_path.read_text())["train_s"] if timing_path.is_file() else 0.0
    start = time.perf_counter()
    status = train_main(train_argv(mode, seed, args, run_dir))
    if status != 0:
        raise SystemExit(f"ablation: training {run_dir} failed (exit status {status}); see the error above, "
                         "fix it and rerun the same command to resume")
    spent += time.perf_counter() - start
    timing_path.write_text(json.dumps({"train_s": spent}) + "\n")
    step = int(load_checkpoint(run_dir / "last.pt")["step"])
    if step != args.steps:
        raise SystemExit(f"ablation: {run_dir}/last.pt has {step} steps, the study asks for {args.steps}; "
                         "pass the same --steps as before, or another --out for a new study")
    model = load_model(run_dir / "last.pt")
    start = time.perf_counter()
    result = {"mode": mode, "seed": seed, "run_dir": str(run_dir), "step": step, "eval_crop": args.eval_crop,
              "params": count_parameters(model), "train_s": round(spent, 1),
              "results": score_sets(sets, args.eval_crop, model, run_name(mode, seed))}
    result["eval_s"] = round(time.perf_counter() - start, 1)
    write_text_atomic(run_dir / CACHE, json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def overall(results: dict[str, dict], metric: str) -> float:
    """One run's mean of `metric` over its sets (each set weighs the same)."""
    return statistics.fmean(r[metric] for r in results.values())


def summarise(runs: list[dict], modes: Sequence[str]) -> dict[str, dict]:
    """{mode: {set | "overall": {"<metric>_mean", "<metric>_std", "seeds"}}} over the runs of each mode."""
    summary: dict[str, dict] = {}
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        if not mine:
            continue
        keys = list(mine[0]["results"])
        for r in mine:
            if list(r["results"]) != keys:
                raise ValueError(f"run {r['run_dir']} was scored on sets {list(r['results'])}, others on {keys}; "
                                 f"delete its {CACHE} and rerun to score it again")
        entry: dict[str, dict] = {}
        for key in [*keys, "overall"]:
            cell: dict = {"seeds": len(mine)}
            for metric in ("psnr_y", "ssim_y"):
                values = [overall(r["results"], metric) if key == "overall" else r["results"][key][metric]
                          for r in mine]
                cell[f"{metric}_mean"], cell[f"{metric}_std"] = mean_std(values)
            entry[key] = cell
        summary[mode] = entry
    return summary


def compare(runs: list[dict], modes: Sequence[str], metric: str = "psnr_y") -> list[dict]:
    """Pairwise comparison of modes on the overall `metric`, paired by seed (seeds both modes finished)."""
    from scipy.stats import ttest_rel

    out = []
    for a, b in combinations(modes, 2):
        by_seed = {m: {r["seed"]: overall(r["results"], metric) for r in runs if r["mode"] == m} for m in (a, b)}
        seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
        if not seeds:
            continue
        diffs = [by_seed[b][s] - by_seed[a][s] for s in seeds]
        diff_mean, diff_std = mean_std(diffs)
        stds = [mean_std([by_seed[m][s] for s in seeds])[1] for m in (a, b)]
        spread = max(stds) if None not in stds else None
        p = float(ttest_rel([by_seed[b][s] for s in seeds], [by_seed[a][s] for s in seeds]).pvalue) \
            if len(seeds) > 1 and diff_std else None
        out.append({"a": a, "b": b, "metric": metric, "seeds": seeds, "b_minus_a_mean": diff_mean,
                    "b_minus_a_std": diff_std, "seed_spread": spread, "paired_t_p": p,
                    "exceeds_seed_spread": None if spread is None else abs(diff_mean) > spread})
    return out


# ---------------------------------------------------------------------------------------------- reports
def _cell(mean: float, std: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" + ("" if std is None else f"±{std:.{digits}f}")


def format_table(summary: dict[str, dict], baseline: dict[str, dict], metric: str, digits: int) -> str:
    """Rows: the input baseline, then each mode (mean ± std over seeds); columns: the sets and overall."""
    keys = [*baseline, "overall"]
    width = max(12, max(len(k) for k in keys) + 1)
    lines = [f"{metric.upper().replace('_', '-'):<8}{'seeds':>6}" + "".join(f"{k:>{width + 2}}" for k in keys)]
    base = [baseline[k][metric] for k in baseline]
    lines.append(f"{INPUT:<8}{'-':>6}" + "".join(f"{v:>{width + 2}.{digits}f}" for v in [*base, statistics.fmean(base)]))
    for mode, entry in summary.items():
        cells = [_cell(entry[k][f"{metric}_mean"], entry[k][f"{metric}_std"], digits) for k in keys]
        lines.append(f"{mode:<8}{entry['overall']['seeds']:>6}" + "".join(f"{c:>{width + 2}}" for c in cells))
    return "\n".join(lines)


def format_comparisons(comparisons: list[dict]) -> str:
    lines = []
    for c in comparisons:
        std = "" if c["b_minus_a_std"] is None else f" ± {c['b_minus_a_std']:.3f}"
        p = "" if c["paired_t_p"] is None else f", paired t-test p = {c['paired_t_p']:.3f}"
        verdict = "n/a" if c["exceeds_seed_spread"] is None else \
            ("exceeds" if c["exceeds_seed_spread"] else "within") + f" the seed spread ({c['seed_spread']:.3f} dB)"
        lines.append(f"{c['b']} - {c['a']}: {c['b_minus_a_mean']:+.3f}{std} dB overall PSNR-Y over seeds "
                     f"{c['seeds']}{p}; {verdict}")
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- CLI
def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,1,2, got {text!r}") from None


def _modes(text: str) -> list[str]:
    from dwgn.models.network import DYNAMIC_MODES

    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in DYNAMIC_MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {bad or text!r}; choose from {', '.join(DYNAMIC_MODES)}")
    return modes


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/ablation.py", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per run (equal for every mode)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--modes", type=_modes, default=["none", "half", "full"], help="comma-separated dynamic modes")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=64, help="training crop side")
    p.add_argument("--eval-crop", type=int, default=128, help="center crop of each test image; 0 = whole images")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--out", default="runs/ablation", help="parent of the run directories <mode>-s<seed>")
    p.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "ablation.json"))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared CPU)")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = get_parser().parse_args(argv)
    if args.steps <= 0 or args.batch_size <= 0 or args.crop <= 0 or args.eval_crop < 0:
        raise SystemExit("ablation: --steps, --batch-size and --crop must be positive, --eval-crop >= 0")
    torch.set_num_threads(args.threads)
    started, load = time.perf_counter(), os.getloadavg()
    sets = test_sets(["demo"])
    eval_note = f"center {args.eval_crop}x{args.eval_crop} crop of each test image" if args.eval_crop else "whole images"
    print(f"ablation: modes {args.modes}, seeds {args.seeds}, {args.steps} steps x batch {args.batch_size} x "
          f"crop {args.crop}, {args.preset} preset, from scratch; scored on {eval_note}")
    baseline = score_sets(sets, args.eval_crop, None, INPUT)
    study = {"preset": args.preset, "steps": args.steps, "batch_size": args.batch_size, "crop": args.crop,
             "seeds": args.seeds, "modes": args.modes, "from_scratch": True, "data": "synthetic demo set",
             "train_set": "datasets/demo/train (600 pairs)", "test_sets": {k: len(v) for k, v in sets.items()},
             "eval": f"PSNR/SSIM (BT.601 Y and RGB, 8-bit outputs of dwgn.restore) on {eval_note}",
             "eval_crop": args.eval_crop, "statistics": "mean ± sample std over seeds; comparisons paired by seed",
             "command": "OMP_NUM_THREADS=1 python benchmarks/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
             "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs (load average "
                        f"{load[0]:.1f} at start), torch {torch.__version__}, {args.threads} thread(s)"}
    runs: list[dict] = []
    payload: dict = {}
    for seed in args.seeds:
        for mode in args.modes:
            runs.append(run_one(mode, seed, args, sets))
            summary = summarise(runs, args.modes)
            payload = {"study": {**study, "wall_time_s": round(sum(r["train_s"] + r["eval_s"] for r in runs), 1),
                                 "this_invocation_s": round(time.perf_counter() - started, 1),
                                 "runs_done": len(runs)},
                       "input": baseline, "runs": runs, "summary": summary,
                       "comparisons": compare(runs, args.modes)}
            write_json(Path(args.json), payload)
    print()
    print(format_table(payload["summary"], baseline, "psnr_y", 2))
    print()
    print(format_table(payload["summary"], baseline, "ssim_y", 4))
    print()
    print(format_comparisons(payload["comparisons"]))
    print(f"\n(data: SYNTHETIC demo set; {eval_note}; mean ± std over seeds; wall time "
          f"{payload['study']['wall_time_s'] / 60:.1f} min of training and scoring) -> {args.json}")
    return payload


if __name__ == "__main__":
    main()
