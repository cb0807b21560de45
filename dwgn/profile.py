"""Parameters and MACs of a preset: `python -m dwgn.profile --preset paper --size 256 [--json]`.

MACs are counted with ptflops' `aten` backend, which sees every convolution and matmul as it runs --
including the ones whose weights GLGF generates. ptflops' legacy `pytorch` backend hooks modules only and
misses them (57.7 instead of 107.5 GMACs on the paper model), so the backend is always passed explicitly.
"""
from __future__ import annotations

import json

import torch
from torch import nn

from dwgn.models.network import DYNAMIC_MODES, PRESETS, build_model, count_parameters
from dwgn.errors import ArgumentParser


def count(model: nn.Module, size: int | tuple[int, int]) -> tuple[int, int]:
    """(parameters, multiply-accumulates) of one forward pass on a 3 x H x W image."""
    from ptflops import get_model_complexity_info

    h, w = (size, size) if isinstance(size, int) else size
    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, _ = get_model_complexity_info(model, (3, h, w), as_strings=False, backend="aten",
                                            print_per_layer_stat=False, verbose=False)
    model.train(was_training)
    return count_parameters(model), int(macs)


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(prog="python -m dwgn.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--dynamic", default=None, choices=DYNAMIC_MODES, help="ablation (default: the preset's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    overrides = {"dynamic": args.dynamic} if args.dynamic else {}
    params, macs = count(build_model(args.preset, **overrides), args.size)
    report = {"preset": args.preset, "dynamic": args.dynamic or PRESETS[args.preset].dynamic, "size": args.size,
              "params": params, "macs": macs,
              "params_by_dynamic": {d: count_parameters(build_model(args.preset, dynamic=d)) for d in DYNAMIC_MODES}}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"params: {params:,}  MACs: {macs / 1e9:.2f} GMac  ({args.preset}, dynamic={report['dynamic']}, "
              f"{args.size}x{args.size})")
        print("params by ablation: " + ", ".join(f"{d} {n:,}" for d, n in report["params_by_dynamic"].items()))
    return report


if __name__ == "__main__":
    from dwgn.errors import run_main

    run_main(main, "python -m dwgn.profile")
