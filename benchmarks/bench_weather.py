"""Time the weather synthesisers on one core: python benchmarks/bench_weather.py [--size 256] [--repeats 50].

Prints milliseconds per image for each weather (median over repeats, fresh seed each call): wall
time, and CPU time of this thread (what one core spends; robust when the machine is shared), with
the ratio to the fastest, measured in the same run. Set OMP_NUM_THREADS=1 for a one-core figure.
"""
import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dwgn.data.images import read_image  # noqa: E402
from dwgn.data.photos import packaged_photos  # noqa: E402
from dwgn.data.weather import WEATHERS, synthesize  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    img = read_image(packaged_photos("test")[1])[: args.size, : args.size].astype(np.float32) / 255.0
    times = {}
    for weather in WEATHERS:
        synthesize(img, weather, np.random.default_rng(0))  # warm-up
        wall, cpu = [], []
        for seed in range(args.repeats):
            w0, c0 = time.perf_counter(), time.thread_time()
            synthesize(img, weather, np.random.default_rng(seed))
            wall.append(time.perf_counter() - w0)
            cpu.append(time.thread_time() - c0)
        times[weather] = (1000 * float(np.median(wall)), 1000 * float(np.median(cpu)))
    fastest = min(c for _, c in times.values())
    print(f"weather synthesis, {args.size}x{args.size}, one thread, median of {args.repeats}:")
    for weather, (wall_ms, cpu_ms) in times.items():
        print(f"  {weather:9s} wall {wall_ms:6.1f} ms  cpu {cpu_ms:6.1f} ms  ({cpu_ms / fastest:.1f}x fastest)")


if __name__ == "__main__":
    main()
