"""One tile's forward pass on the CPU, per way of running the network, with the compute limit beside it.

    python benchmarks/bench_tile.py [--size 512] [--threads 1] [--rounds 3] [--ops 10]

`dwgn.restore` spends its time in forward passes of one tile (512² by default), so this is the number that a
faster way of running the network must improve. The ways, each timed in turn, round after round (A B C A B C),
in this one process:
  eager           the network as `dwgn.load_model` returns it (float32, NCHW): what `restore` runs;
  channels_last   the same weights and input in channels-last memory format (oneDNN's preferred layout);
  onnxruntime     the ONNX export (`dwgn.onnx_export`) in ONNX Runtime, all graph optimisations on (needs
                  `pip install -r requirements-app.txt`; skipped without it).
Printed per way: the median time, its ratio to eager, the largest |difference| from eager's output, and the
compute limit: the tile's multiply-accumulates (dwgn.profile.count) at the speed of a plain 2048² float32 matmul
measured here with the same threads. Then eager's time by aten op (`--ops N`).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_restore import DEFAULT_CHECKPOINT, load, matmul_gmacs, photo  # noqa: E402


def ways(model, threads: int, workdir: Path) -> dict:
    """{name: callable (1,3,H,W) tensor -> output tensor}."""
    found = {"eager": model}
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    found["channels_last"] = lambda x: cl(x.contiguous(memory_format=torch.channels_last))
    try:
        import onnxruntime as ort

        from dwgn.onnx_export import export_onnx

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        runtime = ort.InferenceSession(str(export_onnx(model, workdir / "tile.onnx")), options,
                                       providers=["CPUExecutionProvider"])
        name = runtime.get_inputs()[0].name
        found["onnxruntime"] = lambda x: torch.from_numpy(runtime.run(None, {name: x.numpy()})[0])
    except ImportError as err:
        print(f"onnxruntime skipped: {err}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--size", type=int, default=512, help="tile side (default 512, restore's tile)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=10, help="print the N aten ops with the most time in eager")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from dwgn.evaluation.restore import steady_heap
    from dwgn.profile import count

    model = load(args.checkpoint)
    x = torch.from_numpy(photo(args.size, args.size)).permute(2, 0, 1)[None].float().div(255)
    macs = count(model, (args.size, args.size))[1]
    gmacs = matmul_gmacs(args.threads)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode(), steady_heap():
        runs = ways(model, args.threads, Path(tmp))
        reference = model(x)
        diff = {name: float((run(x) - reference).abs().max()) for name, run in runs.items()}  # also the warm-up
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - start)
        with torch.profiler.profile() as prof:
            model(x)
    eager = statistics.median(times["eager"])
    print(f"{args.size}² tile, {args.threads} thread(s), torch {torch.__version__}; {macs / 1e9:.1f} GMAC, matmul "
          f"{gmacs:.1f} GMAC/s -> compute limit {macs / gmacs / 1e9:.2f} s")
    print(f"{'way':<14} {'median s':>8} {'x eager':>8} {'max |diff|':>10}")
    for name, values in times.items():
        t = statistics.median(values)
        print(f"{name:<14} {t:>8.2f} {t / eager:>8.2f} {diff[name]:>10.1e}")
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    print("eager, share of its time by aten op (torch.profiler, one forward):")
    for e in ops[:args.ops]:
        print(f"  {e.key:<30} {100 * e.self_cpu_time_total / total:5.1f} %  ({e.count} calls)")


if __name__ == "__main__":
    main()
