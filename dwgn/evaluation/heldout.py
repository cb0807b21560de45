"""Held-out evaluation: photos never trained on, weather settings outside the training ranges.

    python -m dwgn.evaluation.heldout [--checkpoint PATH] [--crops 2] [--size 256] [--settings heldout]
                                      [--photos heldout] [--weathers snow,rainfog,raindrop,rain,haze]
                                      [--heldout-params haze_airlight,...] [--clean-sides 256,512,768]
                                      [--tile N [--overlap PX]]
                                      [--json PATH] [--figure PNG|JPG]

Photos: the packaged test photos (dwgn.data.photos) plus the fetched held-out photos
(dwgn.data.photo_sources, when `python dataset/fetch_photos.py` has been run); none of them is ever a
training photo. Weather: for every photo, `--crops` random size x size crops, each degraded by every
weather with `heldout=True` (dwgn.data.weather.HELDOUT_RANGES; `--settings train` uses the training
ranges instead), seeded from (seed, photo, crop, weather) so the set is the same on every machine.
Reported per weather: mean PSNR-Y (BT.601, 8-bit, dwgn.evaluation.metrics) of the input and of the
restored image against the clean crop (their SSIM-Y in the JSON), and of a reference that is not a model: the
best global colour correction (`global_fit`: per image and channel, the affine map of the input fitted to the clean
crop by least squares; it sees the answer), which shows how much of each weather's loss a single per-image correction
would recover. Clean photos: each held-out photo, scaled to at most
CLEAN_SIDE px, restored as it is; PSNR-Y and PSNR-RGB of restored against the photo, per photo and
mean (a model that leaves clean photos alone scores high); `--figure` draws them in and out with the
difference magnified. `--clean-sides` repeats the clean-photo check with each photo scaled to at most each of those
sides (the report's table and the JSON's `clean_by_side`): a model trained on small crops may leave a photo alone
at 256 px and not at 512. `--tile N` restores every image in N x N tiles (dwgn.evaluation.restore: overlapping by
`--overlap`, each tile run with the image-wide statistics of the global pools) instead of whole, as `test.py --tile N`
does: whether a model's trouble with a large photo comes from the size it sees at once (the default, 0, restores
every image whole, as the aims are measured). SYNTHETIC weather: not a benchmark.

`--photos train` runs the same measurement on the demo's TRAINING photos instead (dwgn.data.demo), for
choosing between models -- a checkpoint, a weight average's `--mix` (`python -m dwgn.export --average`)
-- without looking at the held-out photos that then judge the choice. It is labelled as such and is not a
result. `--weathers` measures some weathers only (their numbers are those of the full run: every case keeps its
seed); the mean gain is then over those weathers, and the report says so. `--heldout-params haze_airlight`
draws only the named parameters (keys of dwgn.data.weather.HELDOUT_RANGES) outside the training ranges and
every other one inside them, to find which extrapolation a model fails at.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from dwgn.data.images import read_image
from dwgn.errors import ArgumentParser, run_main
from dwgn.data.photo_sources import fetched_photos
from dwgn.data.photos import packaged_photos
from dwgn.data.weather import HELDOUT_RANGES, WEATHERS, Heldout, check_heldout_keys, synthesize
from dwgn.evaluation.metrics import psnr, ssim
from dwgn.evaluation.restore import DEFAULT_OVERLAP, restore, tile_side
from dwgn.io import write_text_atomic

CLEAN_SIDE = 512
_SETTINGS = ("heldout", "train")
_PHOTOS = ("heldout", "train")


def heldout_photos(fetched: list[Path] | None = None) -> list[Path]:
    """The packaged test photos, then the fetched held-out photos (`fetched`, else looked up)."""
    return packaged_photos("test") + (fetched_photos("heldout") if fetched is None else fetched)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8) if img.dtype != np.uint8 else img


def _scaled(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    f = side / max(h, w)
    return img if f >= 1.0 else cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)


def global_fit(degraded: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """uint8 a_c * degraded_c + b_c per channel c, with (a_c, b_c) the least-squares fit to `clean` (an oracle:
    it needs the clean image). A flat channel gets a_c = 0, b_c = the clean channel's mean."""
    x = degraded.reshape(-1, 3).astype(np.float64)
    y = clean.reshape(-1, 3).astype(np.float64)
    dx, dy = x - x.mean(0), y - y.mean(0)
    var = (dx * dx).mean(0)
    a = np.divide((dx * dy).mean(0), var, out=np.zeros(3), where=var > 0)
    out = a * x + (y.mean(0) - a * x.mean(0))
    return np.clip(np.round(out), 0, 255).astype(np.uint8).reshape(degraded.shape)


def weather_cases(photos: list[np.ndarray], crops: int, size: int, heldout: Heldout, seed: int = 0,
                  weathers: tuple[str, ...] = WEATHERS) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    """(weather, photo index, degraded uint8, clean uint8) for every photo, crop and weather in `weathers`
    (each case seeded by its weather's place in WEATHERS, so a subset gives the same cases as the full set).

    A photo smaller than size x size is scaled up first (the packaged test photos are at least 300 px)."""
    cases = []
    for p, photo in enumerate(photos):
        h, w = photo.shape[:2]
        if min(h, w) < size:
            f = size / min(h, w)
            photo = cv2.resize(photo, (max(size, round(w * f)), max(size, round(h * f))), interpolation=cv2.INTER_CUBIC)
            h, w = photo.shape[:2]
        for c in range(crops):
            where = np.random.default_rng([seed, 7, p, c])
            top, left = int(where.integers(0, h - size + 1)), int(where.integers(0, w - size + 1))
            clean = photo[top:top + size, left:left + size]
            for k, weather in enumerate(WEATHERS):
                if weather not in weathers:
                    continue
                rng = np.random.default_rng([seed, 8, p, c, k])
                cases.append((weather, p, _to_uint8(synthesize(clean, weather, rng, heldout=heldout)), clean))
    return cases


def _tiling_ok(tile: int, overlap: int) -> bool:
    """tile 0 (whole images), or a side in px with 0 <= overlap < tile (restore checks it only when it tiles)."""
    return int(tile) == tile and tile >= 0 and overlap >= 0 and (tile == 0 or overlap < tile)


def evaluate(model: nn.Module, paths: list[Path], crops: int = 2, size: int = 256, settings: str = "heldout",
             seed: int = 0, photo_set: str = "heldout", weathers: tuple[str, ...] = WEATHERS,
             heldout_params: tuple[str, ...] | None = None, clean_outputs: list | None = None,
             clean_sides: tuple[int, ...] = (), tile: int = 0, overlap: int = DEFAULT_OVERLAP) -> dict:
    """{"weather": {w: {"input": dB, "restored": dB, "global_fit": dB, "n": int, "input_ssim_y", "restored_ssim_y"}},
    "mean_gain": dB,
    "global_fit_gain": dB, "clean": {...}}, and with `clean_sides` also "clean_by_side": {str(side): {"per_photo":
    [{"photo", "psnr_y"}], "mean_psnr_y", "min_psnr_y", "lowest"}} (each photo scaled to at most that side).
    `tile` 0 restores every image whole; N restores images larger than N x N in N x N tiles (`restore`'s tiling,
    `overlap` px of overlap); the result records both.
    `clean_outputs`, a list, receives (name, clean photo, restored, PSNR-Y) for every clean photo (for
    `results_figure.draw_clean`)."""
    bad_sides = [s for s in clean_sides if int(s) != s or s < 64]
    if bad_sides:
        raise ValueError(f"clean_sides must be whole numbers of pixels >= 64, got {bad_sides}")
    if not _tiling_ok(tile, overlap):
        raise ValueError(f"tile must be 0 (whole images) or a side in px with 0 <= overlap < tile, got tile {tile}, "
                         f"overlap {overlap}")
    if settings not in _SETTINGS:
        raise ValueError(f"settings must be one of {', '.join(_SETTINGS)}, got {settings!r}")
    unknown = [w for w in weathers if w not in WEATHERS]
    if unknown or not weathers:
        raise ValueError(f"unknown weathers {unknown or 'none given'}; choose from {', '.join(WEATHERS)}")
    held: Heldout = settings == "heldout"
    if heldout_params is not None:
        if settings != "heldout":
            raise ValueError("heldout_params picks parameters to hold out: it goes with settings 'heldout'")
        held = frozenset(heldout_params)
        check_heldout_keys(held)
    photos = [read_image(p) for p in paths]
    scores: dict[str, dict[str, list[float]]] = {w: {"input": [], "restored": [], "global_fit": [],
                                                     "input_ssim_y": [], "restored_ssim_y": []}
                                                 for w in WEATHERS if w in weathers}
    for weather, _, degraded, clean in weather_cases(photos, crops, size, held, seed, weathers):
        scores[weather]["input"].append(psnr(degraded, clean))
        restored = restore(model, degraded, tile=tile, overlap=overlap)
        scores[weather]["restored"].append(psnr(restored, clean))
        scores[weather]["input_ssim_y"].append(ssim(degraded, clean))
        scores[weather]["restored_ssim_y"].append(ssim(restored, clean))
        scores[weather]["global_fit"].append(psnr(global_fit(degraded, clean), clean))
    per_weather = {w: {"input": statistics.fmean(s["input"]), "restored": statistics.fmean(s["restored"]),
                       "global_fit": statistics.fmean(s["global_fit"]), "n": len(s["input"]),
                       "input_ssim_y": statistics.fmean(s["input_ssim_y"]),
                       "restored_ssim_y": statistics.fmean(s["restored_ssim_y"])}
                   for w, s in scores.items()}
    clean_rows = []
    for path, photo in zip(paths, photos):
        img = _scaled(photo, CLEAN_SIDE)
        out = restore(model, img, tile=tile, overlap=overlap)
        clean_rows.append({"photo": path.name, "psnr_y": psnr(out, img), "psnr_rgb": psnr(out, img, y_channel=False)})
        if clean_outputs is not None:
            clean_outputs.append((path.name, img, out, clean_rows[-1]["psnr_y"]))
    by_side = {}
    for side in dict.fromkeys(clean_sides):  # in the order given, each once
        rows = ([{"photo": r["photo"], "psnr_y": r["psnr_y"]} for r in clean_rows] if side == CLEAN_SIDE else
                [{"photo": p.name, "psnr_y": psnr(restore(model, img, tile=tile, overlap=overlap), img)}
                 for p, img in ((p, _scaled(photo, side)) for p, photo in zip(paths, photos))])
        lowest = min(rows, key=lambda r: r["psnr_y"])
        by_side[str(side)] = {"per_photo": rows, "mean_psnr_y": statistics.fmean(r["psnr_y"] for r in rows),
                              "min_psnr_y": lowest["psnr_y"], "lowest": lowest["photo"]}
    result = {
        "settings": settings, "photo_set": photo_set, "weathers": list(scores),
        "heldout_params": sorted(HELDOUT_RANGES) if held is True else sorted(held) if held else [],
        "photos": [p.name for p in paths], "crops": crops, "size": size, "seed": seed,
        "tile": tile_side(model, tile), "overlap": overlap if tile else 0,  # the tile restore used
        "weather": per_weather,
        "mean_gain": statistics.fmean(v["restored"] - v["input"] for v in per_weather.values()),
        "global_fit_gain": statistics.fmean(v["global_fit"] - v["input"] for v in per_weather.values()),
        "clean": {"per_photo": clean_rows,
                  "mean_psnr_y": statistics.fmean(r["psnr_y"] for r in clean_rows),
                  "mean_psnr_rgb": statistics.fmean(r["psnr_rgb"] for r in clean_rows)},
    }
    if by_side:
        result["clean_by_side"] = by_side
    return result


def format_report(result: dict) -> str:
    photo_set = result.get("photo_set", "heldout")
    what = "held-out photos" if photo_set == "heldout" else "TRAINING photos (for choosing a model, not a result)"
    settings = result["settings"]
    if settings == "heldout" and sorted(result.get("heldout_params", HELDOUT_RANGES)) != sorted(HELDOUT_RANGES):
        settings += f" (only {', '.join(result['heldout_params'])} outside the training ranges)"
    lines = [f"SYNTHETIC weather, {settings} settings, {len(result['photos'])} {what} x "
             f"{result['crops']} crops of {result['size']} px; PSNR-Y (dB)"
             + (f"; restored in {result['tile']} px tiles (overlap {result['overlap']} px)" if result.get("tile") else ""),
             f"{'weather':<10}{'input':>8}{'restored':>10}{'gain':>8}{'n':>5}   global fit (oracle, not a model)"]
    for w, v in result["weather"].items():
        lines.append(f"{w:<10}{v['input']:>8.2f}{v['restored']:>10.2f}{v['restored'] - v['input']:>+8.2f}{v['n']:>5}"
                     f"   {v['global_fit']:.2f} ({v['global_fit'] - v['input']:+.2f})")
    if len(result["weather"]) < len(WEATHERS):
        lines.append(f"(mean gain over {', '.join(result['weather'])} only, not the five weathers)")
    lines.append(f"{'mean gain':<10}{'':>18}{result['mean_gain']:>+8.2f}{'':>5}   ({result['global_fit_gain']:+.2f})")
    lines.append(f"clean photos (restored vs clean, at most {CLEAN_SIDE} px{'' if photo_set == 'heldout' else ', TRAINING photos'}):")
    for r in result["clean"]["per_photo"]:
        lines.append(f"  {r['photo']:<22} PSNR-Y {r['psnr_y']:6.2f}   PSNR-RGB {r['psnr_rgb']:6.2f}")
    lines.append(f"  {'mean':<22} PSNR-Y {result['clean']['mean_psnr_y']:6.2f}   "
                 f"PSNR-RGB {result['clean']['mean_psnr_rgb']:6.2f}")
    by_side = result.get("clean_by_side")
    if by_side:
        sides = list(by_side)
        lines.append("clean photos by size (PSNR-Y; each photo scaled to at most that many px):")
        lines.append(f"  {'photo':<22}" + "".join(f"{s + ' px':>10}" for s in sides))
        for i, photo in enumerate(r["photo"] for r in by_side[sides[0]]["per_photo"]):
            lines.append(f"  {photo:<22}" + "".join(f"{by_side[s]['per_photo'][i]['psnr_y']:>10.2f}" for s in sides))
        lines.append(f"  {'mean':<22}" + "".join(f"{by_side[s]['mean_psnr_y']:>10.2f}" for s in sides))
        lines.append(f"  {'lowest':<22}" + "".join(f"{by_side[s]['min_psnr_y']:>10.2f}" for s in sides))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from dwgn.evaluation.evaluate import DEFAULT_CHECKPOINT, load_checkpoint_model

    parser = ArgumentParser(prog="python -m dwgn.evaluation.heldout", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help=f"default: {DEFAULT_CHECKPOINT.name}")
    parser.add_argument("--crops", type=int, default=2, help="crops per photo (each under every weather)")
    parser.add_argument("--size", type=int, default=256, help="crop side in px")
    parser.add_argument("--settings", choices=_SETTINGS, default="heldout",
                        help="weather parameters: outside the training ranges (heldout) or inside (train)")
    parser.add_argument("--photos", choices=_PHOTOS, default="heldout",
                        help="held-out photos (the result), or the demo's training photos (to choose a model)")
    parser.add_argument("--weathers", default=",".join(WEATHERS),
                        help="comma-separated weathers to measure (default: all five; the mean is over these)")
    parser.add_argument("--heldout-params", default=None,
                        help="comma-separated weather parameters to draw outside the training ranges (the others "
                             f"inside them); default: all. Keys: {','.join(HELDOUT_RANGES)}")
    parser.add_argument("--clean-sides", default="",
                        help="comma-separated sides in px (e.g. 256,512,768): also check the clean photos scaled to "
                             "at most each of them")
    parser.add_argument("--tile", type=int, default=0,
                        help="restore in N x N tiles (rounded up to a multiple of 64) with image-wide statistics, as "
                             "test.py --tile N does; default 0: every image whole, as the aims are measured")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap in px (with --tile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    parser.add_argument("--figure", type=Path, default=None,
                        help="also draw the clean photos in and out here (lowest PSNR-Y first; PNG or JPEG by the "
                             "suffix)")
    args = parser.parse_args(argv)
    weathers = tuple(w.strip() for w in args.weathers.split(",") if w.strip())
    unknown = [w for w in weathers if w not in WEATHERS]
    if unknown or not weathers:
        print(f"error: --weathers {args.weathers!r}: unknown {unknown or 'empty'}; choose from {','.join(WEATHERS)}",
              file=sys.stderr)
        return 2
    params = None if args.heldout_params is None else tuple(k.strip() for k in args.heldout_params.split(",") if k.strip())
    if params is not None:
        bad = sorted(set(params) - set(HELDOUT_RANGES))
        if bad or not params or args.settings != "heldout":
            why = f"unknown {bad}" if bad else "empty" if not params else "it goes with --settings heldout"
            print(f"error: --heldout-params {args.heldout_params!r}: {why}; keys: {','.join(HELDOUT_RANGES)}",
                  file=sys.stderr)
            return 2
    words = [v.strip() for v in args.clean_sides.split(",") if v.strip()]
    sides = tuple(int(v) for v in words if v.isdigit())
    if len(sides) < len(words) or any(v < 64 for v in sides):
        print(f"error: --clean-sides {args.clean_sides!r}: comma-separated whole numbers of px, each at least 64 "
              "(e.g. 256,512,768)", file=sys.stderr)
        return 2
    if not _tiling_ok(args.tile, args.overlap):
        print(f"error: --tile {args.tile} --overlap {args.overlap}: --tile is 0 (whole images) or a side in px, and "
              "the overlap at least 0 and smaller than the tile (e.g. --tile 256 --overlap 64)", file=sys.stderr)
        return 2
    if args.crops <= 0 or args.size < 64:
        print(f"error: --crops must be positive and --size at least 64 (got {args.crops}, {args.size})",
              file=sys.stderr)
        return 2
    model = load_checkpoint_model(args.checkpoint, "cpu" if not torch.cuda.is_available() else "cuda")
    if args.photos == "train":
        from dwgn.data.demo import train_photo_paths

        paths = train_photo_paths()
    else:
        fetched = fetched_photos("heldout")
        if not fetched:
            print("note: only the packaged test photos (run `python dataset/fetch_photos.py` for 8 more)")
        paths = heldout_photos(fetched)
    outputs: list | None = [] if args.figure else None
    result = evaluate(model, paths, args.crops, args.size, args.settings, args.seed, args.photos, weathers, params,
                      outputs, sides, args.tile, args.overlap)
    print(format_report(result))
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.figure:
        from dwgn.evaluation.results_figure import draw_clean

        name = Path(args.checkpoint or DEFAULT_CHECKPOINT).name  # the checkpoint load_checkpoint_model loaded
        which = "held-out" if args.photos == "heldout" else "TRAINING"
        tiled = f", in {result['tile']} px tiles" if result["tile"] else ""
        title = f"Clean {which} photos through {name} (at most {CLEAN_SIDE} px{tiled})"
        print(f"wrote {draw_clean(outputs, args.figure, title)}")
    return 0


if __name__ == "__main__":
    run_main(main, "python -m dwgn.evaluation.heldout")
