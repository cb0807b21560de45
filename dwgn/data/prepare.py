"""`python dataset/prepare.py`: build the demo set, draw the weather figure, check downloaded sets.

  --demo [--out DIR] [--seed S]   build the embedded synthetic all-weather set (default datasets/demo);
    [--train-per-weather N]       N training pairs per weather, F of all training pairs clean -> clean
    [--clean-share F]
  --figure [PATH]                 draw figures/weather_examples.png
  --check DIR [--json] [--decode] check one set or a parent of several: pairs per set, missing,
    [--write-lists]               unpaired, size-mismatched (and with --decode, unreadable) files,
                                  totals against docs/DESIGN.md §4. Only reads; --write-lists also writes
                                  each set's checked pairs to DIR/.../dwgn_pairs.txt (read first by the loaders)
Exit status: 0 all good, 1 the check found problems, 2 a mistake (e.g. no data set at DIR).
"""
from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from dwgn.data import layouts
from dwgn.data.images import image_size, read_image
from dwgn.data.paths import DEMO_ROOT, REPO
from dwgn.errors import ArgumentParser


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def check_set(root: Path, decode: bool = False, write_list: bool = False) -> dict:
    """Check one set folder (or list file): {layout, name, pairs, expected, problems: {kind: [detail]}, list}.
    Reads only, unless `write_list` (then the checked pairs go to root/dwgn_pairs.txt)."""
    root = Path(root)
    if root.is_file():
        scan = layouts.scan_list(root)
    elif (root / "allweather.txt").is_file():
        scan = layouts.scan_list(root / "allweather.txt")
    else:
        scan = layouts.scan_folders(root)  # never trust an old dwgn_pairs.txt when checking
    base = root.parent if root.is_file() else root
    problems: dict[str, list[str]] = {}
    for kind, paths in scan.skipped().items():
        problems[kind] = [_rel(p, base) for p in paths]
    name = layouts.identify(root)
    is_training = name == "allweather" or "train" in [p.lower() for p in root.parts[-3:]]
    good = []
    for inp, gt in tqdm(scan.pairs, desc=f"checking {root.name}", unit="pair", leave=False, disable=None):
        try:
            if decode:
                a, b = read_image(inp).shape[:2], read_image(gt).shape[:2]
            else:
                a, b = image_size(inp), image_size(gt)
        except (ValueError, FileNotFoundError) as e:
            problems.setdefault("unreadable", []).append(str(e))
            continue
        if a != b:
            problems.setdefault("size mismatch", []).append(
                f"{_rel(inp, base)} is {a[1]}x{a[0]}, {_rel(gt, base)} is {b[1]}x{b[0]}")
            continue
        if is_training and layouts.outdoor_rain_scene(inp) in layouts.OUTDOOR_RAIN_TEST_SCENES:
            problems.setdefault("Outdoor-Rain test scene in a training set (left out of training)", []).append(
                _rel(inp, base))
        good.append((inp, gt))
    expected = layouts.EXPECTED_PAIRS.get(name) if name else None
    if expected is not None and len(scan.pairs) != expected:
        hint = ""
        if name in ("raindrop-a", "raindrop-b"):
            other = "raindrop-b" if name == "raindrop-a" else "raindrop-a"
            if len(scan.pairs) == layouts.EXPECTED_PAIRS[other]:
                hint = f" - this looks like {other} (test_a and test_b are often mixed up)"
        problems["wrong total"] = [f"expected {expected} pairs for {name} (docs/DESIGN.md §4), "
                                   f"found {len(scan.pairs)}{hint}"]
    scan.pairs = good
    listed = None
    if write_list and root.is_dir() and good:
        try:
            listed = str(layouts.write_pairs_list(scan, root))
        except OSError as e:
            problems.setdefault("list not written", []).append(f"could not write {root / layouts.PAIRS_LIST}: {e}")
    return {"layout": scan.layout, "name": name, "pairs": len(good), "expected": expected,
            "problems": problems, "list": listed}


def check(root: Path, decode: bool = False, write_lists: bool = False) -> dict[str, dict]:
    """Check every set at or below `root`; keyed by set path. Reads only unless `write_lists`."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"--check {root} does not exist; give a data set folder or a folder holding sets")
    sets = layouts.find_sets(root)
    if not sets:
        raise FileNotFoundError(f"no data set found at or below {root}: looked for folders holding "
                                "input|data|synthetic beside gt|label, or an allweather.txt (see dataset/README.md)")
    report = {}
    for s in sets:
        try:
            report[str(s)] = check_set(s, decode=decode, write_list=write_lists)
        except (FileNotFoundError, ValueError) as e:
            report[str(s)] = {"layout": None, "name": layouts.identify(s), "pairs": 0, "expected": None,
                              "problems": {"unusable": [str(e)]}, "list": None}
    return report


def _print_report(report: dict[str, dict], examples: int = 3) -> None:
    """One table row per set, then each kind of problem with its count and first few examples."""
    width = max(len("set"), *(len(p) for p in report))
    print(f"{'set':<{width}}  {'name':<12} {'layout':<12} {'pairs':>7} {'expected':>9}  problems")
    for path, r in report.items():
        count = sum(len(v) for v in r["problems"].values())
        expected = "-" if r["expected"] is None else str(r["expected"])
        print(f"{path:<{width}}  {r['name'] or '-':<12} {r['layout'] or '-':<12} {r['pairs']:>7} {expected:>9}  "
              f"{count or 'none'}")
        for kind, details in r["problems"].items():
            more = f" ... (+{len(details) - examples}, --json lists all)" if len(details) > examples else ""
            print(f"    {kind} ({len(details)}): {'; '.join(details[:examples])}{more}")
        if r["list"]:
            print(f"    list written: {r['list']}")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python dataset/prepare.py",
                            description="Build the demo set, draw the weather figure, or check data sets.")
    parser.add_argument("--demo", action="store_true", help="build the embedded synthetic all-weather set")
    parser.add_argument("--out", type=Path, default=None, help=f"demo set folder (default {DEMO_ROOT})")
    parser.add_argument("--seed", type=int, default=0, help="demo set seed")
    parser.add_argument("--train-per-weather", type=int, default=None, metavar="N",
                        help="with --demo: training pairs per weather (default 400 with the fetched photos, else 120)")
    parser.add_argument("--clean-share", type=float, default=None, metavar="F",
                        help="with --demo: fraction of the training pairs that are clean -> clean (default 0.15)")
    parser.add_argument("--figure", nargs="?", const=REPO / "figures" / "weather_examples.png", type=Path,
                        default=None, help="draw the weather examples figure (default figures/weather_examples.png)")
    parser.add_argument("--check", type=Path, default=None, metavar="DIR", help="check one set or a parent of several")
    parser.add_argument("--json", action="store_true", help="with --check: print the report as JSON")
    parser.add_argument("--decode", action="store_true", help="with --check: decode every image (slow; finds "
                        "truncated files)")
    parser.add_argument("--write-lists", action="store_true", help="with --check: write each set's checked pairs "
                        "to <set>/dwgn_pairs.txt (the loaders read it first; --check alone writes nothing)")
    args = parser.parse_args(argv)
    if not (args.demo or args.figure or args.check):
        parser.error("give --demo, --figure or --check DIR")
    if (args.json or args.decode or args.write_lists) and not args.check:
        parser.error("--json, --decode and --write-lists go with --check DIR")
    if (args.train_per_weather is not None or args.clean_share is not None) and not args.demo:
        parser.error("--train-per-weather and --clean-share go with --demo")
    if args.train_per_weather is not None and args.train_per_weather < 1:
        parser.error(f"--train-per-weather must be at least 1, got {args.train_per_weather}")
    if args.clean_share is not None and not 0.0 <= args.clean_share < 1.0:
        parser.error(f"--clean-share must be in [0, 1), got {args.clean_share}")
    status = 0
    if args.demo:
        from dwgn.data.demo import CLEAN_SHARE, build_demo

        out = args.out if args.out is not None else DEMO_ROOT
        share = CLEAN_SHARE if args.clean_share is None else args.clean_share
        build_demo(out, seed=args.seed, train_per_weather=args.train_per_weather, clean_share=share)
        print(f"built the SYNTHETIC demo set in {out} (manifest.json lists its contents)")
    if args.figure:
        from dwgn.data.demo import make_figure

        print(f"wrote {make_figure(args.figure, seed=args.seed)}")
    if args.check:
        report = check(args.check, decode=args.decode, write_lists=args.write_lists)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            _print_report(report)
        status = 1 if any(r["problems"] for r in report.values()) else 0
    return status
