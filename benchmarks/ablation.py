"""Does dynamic weighting help? `none`, `half`, `full` and a parameter-matched `none`, trained identically.

    OMP_NUM_THREADS=1 python benchmarks/ablation.py [--steps 12000] [--batch-size 4] [--crop 64] [--lr 5e-4]
        [--preset tiny] [--seeds 0,1,2] [--variants none,half,full,none-matched] [--jobs 2] [--threads 1]
        [--heldout-crops 2] [--probe-crops 2] [--out runs/ablation]
        [--json benchmarks/results/ablation.json] [--figure figures/ablation.png]

Every (variant, seed) run is trained from scratch by the fine-tuning stage itself (`dwgn.training.finetuning`,
run dir `<out>/<variant>-s<seed>-<steps>`) on SYNTHETIC weather made on the fly from the demo's training photos
(`--synth.online true`); the seed fixes the initialisation and the data stream, so two variants with one seed
see the same samples in the same order. The learning rate warms up linearly over 100 steps, then stays at `--lr`;
the scored weights are an EMA (decay 0.999, about the last 1,000 steps). Each budget has its own run
directories, and a larger budget continues the same variant and seed's largest smaller one (the schedule is
the same up to there). Variants:
* none, half, full: `--model.dynamic` (docs/DESIGN.md §1.7);
* none-matched: `none` with the width raised until its parameter count is closest to `half`'s (the heads per
  level kept: head_dim grows with the width), so that a gap between `half` and `none` can be told apart
  from a gap in parameters. `tiny`: width 17, head_dim 17 (1,027,559 against half's 1,038,091, -1.0 %).

Each trained run is scored on what it never trained on, every image whole (`dwgn.evaluation.restore`, 8-bit):
* demo: the demo test sets (other photos than training, the training weather ranges), PSNR-Y and SSIM-Y per
  weather and their mean ("overall");
* heldout: `python -m dwgn.evaluation.heldout`'s set (the held-out photos under held-out weather settings,
  `--heldout-crops` crops of 256 px per photo and weather);
* probe: the separability analysis (`dwgn.analysis.separability`) on the held-out photos under held-out
  weather (`--probe-crops` crops per photo and weather): per block, the exact leave-one-out accuracy of a
  linear (ridge) probe that tells the weather from the generated kernels, from the pooled outputs of the
  static branch, of the dynamic branch (made with generated kernels, or in `none` with the static kernels
  in their place) and from the pooled block input.

Statistics over seeds: per variant mean ± sample std; paired differences (same seed = same data) `half - none`,
`half - none-matched`, `full - half` with a 95 % t-interval (mean ± t(0.975, n-1) s / sqrt(n)).

Resumable: the engine resumes a killed run from its last.pt, and a scored run keeps its scores in
`<run dir>/ablation_eval.json` (reused when the study's settings match), so rerunning the same command skips
finished work; `--jobs` runs that many at once (one process each, `--threads` threads each). The JSON and the
figure are rewritten whenever a run finishes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: `python benchmarks/ablation.py`
    sys.path.insert(0, str(REPO))

from dwgn.io import atomic_path, write_text_atomic  # noqa: E402
from dwgn.models.network import PRESETS, build_model, count_parameters  # noqa: E402

WARMUP, EMA = 100, 0.999
VARIANTS = ("none", "half", "full", "none-matched")
PAIRS = (("half", "none"), ("half", "none-matched"), ("full", "half"))
PROBE_FEATURES = {"kernels": "generated kernels", "branch": "dynamic branch output", "static": "static branch output",
                  "input": "block input"}
HELDOUT_SEED = 0  # the seed of `python -m dwgn.evaluation.heldout`'s set


# ---------------------------------------------------------------------------------------------- variants
def matched_none(preset: str) -> dict:
    """The `none` overrides whose parameter count is closest to `half`'s: the width raised in steps that keep
    the heads per level (head_dim = width / heads at level 1); glgf_groups 1, as `none` has no generator."""
    base = PRESETS[preset]
    heads = base.width // base.head_dim
    with torch.device("meta"):
        target = count_parameters(build_model(preset, dynamic="half"))
        best = None
        for width in range(base.width, 2 * base.width + 1, heads):
            overrides = {"dynamic": "none", "width": width, "head_dim": width // heads, "glgf_groups": 1}
            params = count_parameters(build_model(preset, **overrides))
            if best is None or abs(params - target) < abs(best[1] - target):
                best = (overrides, params)
    return best[0]


def variant_overrides(name: str, preset: str) -> dict:
    """ModelConfig overrides of one variant."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    return matched_none(preset) if name == "none-matched" else {"dynamic": name}


# ---------------------------------------------------------------------------------------------- one run
def run_name(variant: str, seed: int, steps: int) -> str:
    return f"{variant}-s{seed}-{steps}"


def shorter_run(out: Path, variant: str, seed: int, steps: int) -> Path | None:
    """The run directory of the same variant and seed with the largest budget below `steps` that holds a last.pt
    (None if none). After the warm-up the learning rate is constant, so a run of `steps` is that run continued:
    the study starts from its last.pt instead of from step 0. Budgets of at most WARMUP steps warm up over fewer
    steps and are never continued."""
    found = []
    for path in out.glob(f"{variant}-s{seed}-*"):
        budget = path.name.removeprefix(f"{variant}-s{seed}-")
        if budget.isdigit() and WARMUP < int(budget) < steps and (path / "last.pt").is_file():
            found.append((int(budget), path))
    return max(found)[1] if found else None


def settings(args: argparse.Namespace) -> dict:
    """What a cached score depends on: the training budget and the scoring."""
    return {"preset": args.preset, "steps": args.steps, "batch": args.batch_size, "crop": args.crop, "lr": args.lr,
            "schedule": schedule(args), "heldout_crops": args.heldout_crops, "probe_crops": args.probe_crops}


def schedule(args: argparse.Namespace) -> str:
    return f"Adam, {WARMUP}-step linear warm-up, then lr {args.lr} constant; EMA {EMA} weights scored"


def train_argv(variant: str, seed: int, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The train.py flags of one run: from scratch on weather made on the fly, no validation (scored
    afterwards), no loader workers (they would only compete for the cores)."""
    model = [f for key, value in variant_overrides(variant, args.preset).items()
             for f in (f"--model.{key}", str(value))]
    return ["--preset", args.preset, "--from-scratch", *model, "--seed", str(seed), "--out", str(run_dir),
            "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--crop", str(args.crop),
            "--lr", str(args.lr), "--lr_min", str(args.lr),
            "--warmup_steps", str(min(WARMUP, args.steps - 1)),
            "--ema_decay", str(EMA),
            "--synth.online", "true", "--val-data", "none", "--num-workers", "0",
            "--save-every", str(max(1, min(100, args.steps)))]


def with_overall(per_weather: dict[str, float]) -> dict[str, float]:
    return {**per_weather, "overall": statistics.fmean(per_weather.values())}


def score_demo(model: torch.nn.Module | None) -> dict[str, dict[str, float]]:
    """{"psnr_y": {weather: mean, "overall"}, "ssim_y": {...}} of the model's restorations of the demo test
    sets, whole images (the inputs themselves when model is None)."""
    from dwgn.analysis.separability import weather_of
    from dwgn.data.datasets import test_sets
    from dwgn.data.images import read_image
    from dwgn.evaluation.metrics import psnr, ssim
    from dwgn.evaluation.restore import restore

    out: dict[str, dict[str, float]] = {"psnr_y": {}, "ssim_y": {}}
    for key, pairs in test_sets(["demo"]).items():
        rows = []
        for inp_path, gt_path in pairs:
            inp, gt = read_image(inp_path), read_image(gt_path)
            res = inp if model is None else restore(model, inp, tile=0)
            rows.append((psnr(res, gt), ssim(res, gt)))
        out["psnr_y"][weather_of(key)] = statistics.fmean(r[0] for r in rows)
        out["ssim_y"][weather_of(key)] = statistics.fmean(r[1] for r in rows)
    return {k: with_overall(v) for k, v in out.items()}


def probe(model: torch.nn.Module, crops: int) -> dict:
    """Per block, the ridge probe's leave-one-out accuracy for each of PROBE_FEATURES (None where the block has
    no such feature), on the held-out photos under held-out weather; and the chance level and image count."""
    from dwgn.analysis.separability import record_features, separability
    from dwgn.data.images import read_image
    from dwgn.data.transforms import to_tensor
    from dwgn.evaluation.heldout import heldout_photos, weather_cases

    photos = [read_image(p) for p in heldout_photos()]
    cases = weather_cases(photos, crops, 256, True, seed=HELDOUT_SEED + 1)  # other crops than the scored ones
    images = [(weather, weather, f"photo{p}", to_tensor(degraded)) for weather, p, degraded, _ in cases]
    rec = record_features(model, images, total=len(images))
    found = separability(rec)
    blocks = {name: {feature: found[name]["ridge"][f"{key}_acc"] for feature, key in
                     (("kernels", "dynamic"), ("branch", "branch"), ("static", "static"), ("input", "input"))}
              for name in rec.blocks}
    return {"blocks": blocks, "n": len(rec.labels), "photos": len(photos), "chance": found["chance"]}


def run_one(variant: str, seed: int, args: argparse.Namespace) -> dict:
    """Train (or resume, or skip) one run, then score it (or reuse its cached scores)."""
    from dwgn.evaluation.heldout import evaluate, heldout_photos
    from dwgn.training.checkpoint import load_checkpoint, load_model
    from dwgn.training.finetuning import main as train_main

    torch.set_num_threads(args.threads)
    run_dir = Path(args.out) / run_name(variant, seed, args.steps)
    cache = run_dir / "ablation_eval.json"  # the run dir already names the budget
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("settings") == settings(args):
            return cached
    start = time.perf_counter()
    shorter = None if (run_dir / "last.pt").exists() else shorter_run(Path(args.out), variant, seed, args.steps)
    if shorter is not None:
        for name in ("log.jsonl", "last.pt"):  # last.pt last: its presence marks a run to resume
            if (shorter / name).is_file():
                with atomic_path(run_dir / name) as tmp:
                    shutil.copyfile(shorter / name, tmp)
        print(f"ablation: {run_dir.name} continues {shorter.name}", flush=True)
    status = train_main(train_argv(variant, seed, args, run_dir))
    if status != 0:
        raise RuntimeError(f"training {run_dir} failed (exit status {status}); see its error above, fix it and "
                           "rerun the same command to resume")
    train_s = time.perf_counter() - start
    step = int(load_checkpoint(run_dir / "last.pt")["step"])
    if step != args.steps:
        raise RuntimeError(f"{run_dir}/last.pt has {step} steps, the study asks for {args.steps}: this directory "
                           "belongs to another budget; move it aside or give another --out")
    model = load_model(run_dir / "last.pt")
    start = time.perf_counter()
    demo, demo_input = score_demo(model), score_demo(None)
    held = evaluate(model, heldout_photos(), crops=args.heldout_crops, seed=HELDOUT_SEED)["weather"]
    result = {
        "variant": variant, "seed": seed, "settings": settings(args), "params": count_parameters(model),
        "demo": demo["psnr_y"], "heldout": with_overall({w: v["restored"] for w, v in held.items()}),
        "input": {"demo": demo_input["psnr_y"], "heldout": with_overall({w: v["input"] for w, v in held.items()})},
        "ssim_y": {"demo": demo["ssim_y"], "heldout": with_overall({w: v["restored_ssim_y"] for w, v in held.items()}),
                   "input": {"demo": demo_input["ssim_y"],
                             "heldout": with_overall({w: v["input_ssim_y"] for w, v in held.items()})}},
        "probe": probe(model, args.probe_crops),
        "train_s": round(train_s, 1)}
    result["eval_s"] = round(time.perf_counter() - start, 1)
    write_text_atomic(cache, json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------------------------- statistics
def interval(values: Sequence[float]) -> dict:
    """{"mean", "std", "ci95": [lo, hi]} of values over seeds: a t-interval (std and ci95 None below 2 values)."""
    from scipy.stats import t

    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "std": None, "ci95": None}
    std = statistics.stdev(values)
    half = float(t.ppf(0.975, len(values) - 1)) * std / math.sqrt(len(values))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def summarise(runs: dict[str, dict[int, dict]]) -> dict:
    """{variant: {"demo"|"heldout": {"psnr_y"|"ssim_y": {weather|"overall": interval}}}} over seeds."""
    out = {}
    for variant, seeds in runs.items():
        entry = {}
        for where in ("demo", "heldout"):
            entry[where] = {"psnr_y": {w: interval([r[where][w] for r in seeds.values()]) for w in
                                       next(iter(seeds.values()))[where]},
                            "ssim_y": {w: interval([r["ssim_y"][where][w] for r in seeds.values()]) for w in
                                       next(iter(seeds.values()))["ssim_y"][where]}}
        out[variant] = entry
    return out


def paired(runs: dict[str, dict[int, dict]]) -> dict:
    """{"a - b": {"seeds", "demo"|"heldout": {"psnr_y"|"ssim_y": {weather|"overall": interval + "per_seed"}}}}
    for the PAIRS both of whose variants have runs, over the seeds both finished."""
    out = {}
    for a, b in PAIRS:
        if a not in runs or b not in runs:
            continue
        seeds = sorted(set(runs[a]) & set(runs[b]))
        if not seeds:
            continue
        entry: dict = {"seeds": seeds}
        for where in ("demo", "heldout"):
            entry[where] = {}
            for metric in ("psnr_y", "ssim_y"):
                def value(r: dict, w: str) -> float:
                    return r[where][w] if metric == "psnr_y" else r["ssim_y"][where][w]
                weathers = runs[a][seeds[0]][where]
                entry[where][metric] = {}
                for w in weathers:
                    diffs = [value(runs[a][s], w) - value(runs[b][s], w) for s in seeds]
                    entry[where][metric][w] = {**interval(diffs), "per_seed": diffs}
        out[f"{a} - {b}"] = entry
    return out


def probe_summary(runs: dict[str, dict[int, dict]]) -> dict:
    """{variant: {block: {feature: interval over seeds}}} of the probe accuracies (features a block has)."""
    out = {}
    for variant, seeds in runs.items():
        blocks = next(iter(seeds.values()))["probe"]["blocks"]
        out[variant] = {b: {f: interval([r["probe"]["blocks"][b][f] for r in seeds.values()])
                            for f in PROBE_FEATURES if blocks[b][f] is not None} for b in blocks}
    return out


def build_payload(runs: dict[str, dict[int, dict]], args: argparse.Namespace, command: str, machine: str) -> dict:
    first = next(r for seeds in runs.values() for r in seeds.values())
    variants = {}
    for variant, seeds in runs.items():
        overrides = variant_overrides(variant, args.preset)  # none-matched builds models to find its width
        variants[variant] = {
            "dynamic": overrides["dynamic"],
            "overrides": overrides,
            "params": next(iter(seeds.values()))["params"],
            "seeds": {str(s): {k: r[k] for k in ("demo", "heldout", "input", "ssim_y", "probe", "train_s", "eval_s")}
                      for s, r in sorted(seeds.items())}}
    half = runs.get("half", {})
    gains = [r["demo"]["overall"] - r["input"]["demo"]["overall"] for r in half.values()]
    return {"preset": args.preset, "steps": args.steps, "batch": args.batch_size, "crop": args.crop, "lr": args.lr,
            "data": "SYNTHETIC weather made on the fly from the demo's 40 training photos (train.py --synth.online)",
            "scoring": "whole images, 8-bit outputs, BT.601 Y; demo: the demo test sets; heldout: "
                       f"python -m dwgn.evaluation.heldout --crops {args.heldout_crops}; probe: ridge, exact "
                       f"leave-one-out, on {first['probe']['n']} held-out crops of {first['probe']['photos']} photos",
            "schedule": schedule(args),
            "statistics": "mean, sample std and 95 % t-interval over seeds; differences paired by seed",
            "command": command, "machine": machine,
            "half_gain_over_input_demo": {"per_seed": gains, "min": min(gains) if gains else None},
            # an answer needs every variant at every seed, at a budget where half gains >= 2 dB on the demo sets
            "complete": all(len(runs.get(v, {})) == len(args.seeds) for v in args.variants),
            "half_clears_2db": bool(gains) and min(gains) >= 2.0,
            "variants": variants, "summary": summarise(runs), "paired": paired(runs),
            "probe": {"chance": first["probe"]["chance"], "n": first["probe"]["n"], "accuracy": probe_summary(runs)}}


# ---------------------------------------------------------------------------------------------- report
def _ci(cell: dict, digits: int = 2) -> str:
    if cell["ci95"] is None:
        return f"{cell['mean']:+.{digits}f}"
    return f"{cell['mean']:+.{digits}f} [{cell['ci95'][0]:+.{digits}f}, {cell['ci95'][1]:+.{digits}f}]"


def format_report(payload: dict) -> str:
    lines = [f"{payload['preset']}, {payload['steps']} steps x batch {payload['batch']} x crop {payload['crop']}, "
             f"lr {payload['lr']} (SYNTHETIC weather); PSNR-Y in dB, mean ± std over seeds"]
    for where in ("demo", "heldout"):
        weathers = list(next(iter(payload["summary"].values()))[where]["psnr_y"])
        lines.append(f"\n{where:<14}{'params':>10}" + "".join(f"{w:>14}" for w in weathers))
        first = next(iter(payload["variants"].values()))["seeds"]
        inp = next(iter(first.values()))["input"][where]
        lines.append(f"{'input':<14}{'':>10}" + "".join(f"{inp[w]:>14.2f}" for w in weathers))
        for variant, entry in payload["summary"].items():
            cells = [f"{c['mean']:.2f}" + ("" if c["std"] is None else f"±{c['std']:.2f}")
                     for c in entry[where]["psnr_y"].values()]
            lines.append(f"{variant:<14}{payload['variants'][variant]['params']:>10,}" + "".join(f"{c:>14}" for c in cells))
    lines.append("\npaired differences, overall PSNR-Y (SSIM-Y), 95 % interval over seeds:")
    for name, entry in payload["paired"].items():
        lines.append(f"  {name:<20} demo {_ci(entry['demo']['psnr_y']['overall'])} dB "
                     f"({_ci(entry['demo']['ssim_y']['overall'], 4)}), heldout "
                     f"{_ci(entry['heldout']['psnr_y']['overall'])} dB ({_ci(entry['heldout']['ssim_y']['overall'], 4)}),"
                     f" seeds {entry['seeds']}")
    return "\n".join(lines)


def draw(payload: dict, path: Path) -> None:
    """figures/ablation.png: gains over the input per variant (seed dots), the paired differences with their
    intervals, and the probe accuracies per block."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(payload["variants"])
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    ax = axes[0]
    for k, where in enumerate(("demo", "heldout")):
        for i, v in enumerate(variants):
            gains = [s[where]["overall"] - s["input"][where]["overall"] for s in payload["variants"][v]["seeds"].values()]
            x = i + (k - 0.5) * 0.38
            ax.bar(x, statistics.fmean(gains), 0.36, color=("C0", "C1")[k], alpha=0.55,
                   label=where if i == 0 else None)
            ax.plot([x] * len(gains), gains, "k.", ms=5)
    ax.set_xticks(range(len(variants)), variants)
    ax.set_ylabel("PSNR-Y gain over the input (dB)")
    ax.set_title("gain per variant (dots: seeds)")
    ax.legend()
    ax = axes[1]
    names = list(payload["paired"])
    for k, where in enumerate(("demo", "heldout")):
        for i, name in enumerate(names):
            cell = payload["paired"][name][where]["psnr_y"]["overall"]
            y = i + (k - 0.5) * 0.3
            lo, hi = cell["ci95"] or (cell["mean"], cell["mean"])
            ax.errorbar(cell["mean"], y, xerr=[[cell["mean"] - lo], [hi - cell["mean"]]], fmt="o", capsize=4,
                        color=("C0", "C1")[k], label=where if i == 0 else None)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("paired difference, overall PSNR-Y (dB), 95 % interval")
    ax.set_title("differences paired by seed")
    if names:
        ax.legend()
    ax = axes[2]
    acc = payload["probe"]["accuracy"]
    curves = [(v, f) for v, f in (("half", "kernels"), ("half", "branch"), ("half", "static"), ("half", "input"),
                                  ("none", "branch"), ("none-matched", "branch")) if v in acc]
    blocks = list(next(iter(acc.values())))
    for v, f in curves:
        cells = [acc[v][b].get(f) for b in blocks]
        if any(c is None for c in cells):
            continue
        mean = [c["mean"] for c in cells]
        ax.plot(range(len(blocks)), mean, "o-" if v == "half" else "s--", label=f"{v}: {PROBE_FEATURES[f]}")
        if all(c["ci95"] for c in cells):
            ax.fill_between(range(len(blocks)), [c["ci95"][0] for c in cells], [c["ci95"][1] for c in cells],
                            alpha=0.12)
    ax.axhline(payload["probe"]["chance"], color="k", lw=0.8, ls=":", label="chance")
    ax.set_xticks(range(len(blocks)), [b.replace("coders.", "c").replace(".0", "") for b in blocks], rotation=30)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("weather probe accuracy (leave-one-out)")
    ax.set_title(f"which features tell the weather ({payload['probe']['n']} held-out crops)")
    ax.legend(fontsize=7, loc="lower left")
    seeds = max(len(v["seeds"]) for v in payload["variants"].values())
    fig.suptitle(f"dynamic = none | half | full, {payload['preset']}, {payload['steps']} steps "
                 f"(SYNTHETIC weather, {seeds} seed{'s' if seeds > 1 else ''})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- CLI
def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,1,2, got {text!r}") from None


def _variants(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in VARIANTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {bad or text!r}; choose from {', '.join(VARIANTS)}")
    return names


def get_parser() -> argparse.ArgumentParser:
    from dwgn.errors import ArgumentParser

    p = ArgumentParser(prog="python benchmarks/ablation.py", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12000, help="optimizer steps per run (the budget)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=64, help="training crop side (a multiple of 64)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam's learning rate after the warm-up")
    p.add_argument("--preset", default="tiny", choices=list(PRESETS))
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--variants", type=_variants, default=list(VARIANTS), help=f"from {','.join(VARIANTS)}")
    p.add_argument("--heldout-crops", type=int, default=2, help="scored crops per held-out photo and weather")
    p.add_argument("--probe-crops", type=int, default=2, help="probe crops per held-out photo and weather")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, one process each")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--out", default="runs/ablation", help="parent of the run directories "
                   "<variant>-s<seed>-<steps>")
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "ablation.json")
    p.add_argument("--figure", type=Path, default=REPO / "figures" / "ablation.png")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = get_parser().parse_args(argv)
    for flag in ("steps", "batch_size", "crop", "heldout_crops", "probe_crops", "jobs", "threads"):
        if getattr(args, flag) <= 0:
            raise SystemExit(f"ablation: --{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    load = os.getloadavg()
    command = "python benchmarks/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = (f"{platform.machine()} CPU, {os.cpu_count()} cores (load average {load[0]:.1f} at start), torch "
               f"{torch.__version__}, {args.jobs} run(s) at once x {args.threads} thread(s)")
    todo = [(v, s) for s in args.seeds for v in args.variants]  # seed by seed: a stopped study stays paired
    print(f"ablation: {len(todo)} runs ({', '.join(args.variants)} x seeds {args.seeds}), {args.steps} steps x batch "
          f"{args.batch_size} x crop {args.crop}, {args.preset}, {args.jobs} at once")
    runs: dict[str, dict[int, dict]] = {}
    payload: dict = {}

    def finished(result: dict) -> None:
        nonlocal payload
        runs.setdefault(result["variant"], {})[result["seed"]] = result
        payload = build_payload({v: dict(sorted(runs[v].items())) for v in args.variants if v in runs}, args,
                                command, machine)
        write_text_atomic(args.json, json.dumps(payload, indent=2) + "\n")
        draw(payload, args.figure)
        done = sum(map(len, runs.values()))
        print(f"ablation: {run_name(result['variant'], result['seed'], args.steps)} done ({done}/{len(todo)})",
              flush=True)

    if args.jobs == 1:  # in this process
        for v, s in todo:
            finished(run_one(v, s, args))
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(run_one, v, s, args) for v, s in todo]):
                finished(future.result())
    print(format_report(payload))
    print(f"-> {args.json}, {args.figure}")
    return payload


if __name__ == "__main__":
    main()
