"""Restore an image of any size: `restore(model, image)`, with tiled inference for large images.

Tiling DwGN is not just cutting the image: the weight generators (GLGF) and HDFN's alpha pool over the
*whole* input, so a tile restored on its own generates kernels from its own statistics and the tiles
disagree (seams, shifted colours). Every tile therefore runs under `fixed_pools` with the image's
statistics, measured at full resolution without ever holding the whole image's features:
1. `tiled_pools`: one sweep over the tiles, with forward hooks summing each global pool's input over the
   tile's core (the cores partition the image) -> the image-wide mean of every pool's input, up to the
   tiles' own border effects. With `pools` given, the sweep runs with those fixed (`refine` extra sweeps).
2. `tiled_forward`: the tiles again under `fixed_pools`, overlapping by `overlap` pixels and blended with
   raised-cosine ramps over the overlaps (tile borders, where zero padding and cut windows hurt, get
   little weight). Tiles are a multiple of the network's padding multiple (64), so they need no padding.
The scheme suggested first, one pass over the whole image shrunk to bounded size under `recorded_pools`
(`whole_image_pools`), does worse than naive tiling: features of a shrunk image have other means.
Measured (tiled vs whole-image PSNR of the 8-bit outputs, tiny preset; "Kaiming" = PyTorch's default
conv init, weights of trained size, standing in for a trained network until the demo checkpoint exists):
  512x512 astronaut, tile 256, overlap 64, Kaiming: naive 38.3 dB, shrunk whole image 54.0,
    tiled_pools (restore's default) 55.6, refine=1 56.6, exact whole-image pools (the ceiling) 56.6.
  192x256 crop, tile 128, overlap 32, Kaiming: naive 44.0, shrunk 38.9, tiled_pools 53.0, exact 52.9.
  512x512, N(0, 0.02) init (residual tiny, pools hardly matter): every scheme 81.0 dB.
Bound tested (tests/evaluation/test_restore.py): >= 40 dB at 512x512 (random, Kaiming, demo checkpoint if present);
the shipped model >= 60 dB with tiles of 384 (68.1 dB; 58.4 with tiles of 256). The pools sweep cuts the image without
overlap (`restore_tensor`). Repeat with benchmarks/bench_tiling.py [--checkpoint PATH].

Time and memory (benchmarks/bench_restore.py): a 4000x3000 photo at 512 px is 48 + 63 tile forwards of 81 GMAC. Every
restore runs inside `steady_heap` (glibc kept each large temporary's pages for one use only: system time equal to the
user time). 1024x1536, shipped model, 2 shared cores (load 5-7): 240 s wall, 1.4 s system time, peak 2.2 GB; with
glibc's default 472 s, 144 s system, 1.6 GB; one thread 170 s (at that load); bf16 autocast on this AVX2 CPU ~30x
slower than float32 (no bf16 instructions).
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import platform
import sys
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from dwgn.models.dynamic_conv import GlobalPool
from dwgn.models.network import fixed_pools, recorded_pools
from dwgn.training.acceleration import has_compiled_modules

AUTO_TILE_PIXELS = 1024 * 1024  # images larger than this are tiled when tile=None
DEFAULT_TILE = 512              # a multiple of 64, the network's padding multiple, so tiles need no padding
DEFAULT_OVERLAP = 64
PROGRESS_INTERVAL = 10.0        # seconds between progress lines when stderr is not a terminal
# Luma used only to return a gray image for a gray input (ITU-R 601, as PIL's "L" conversion)
_GRAY = np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------------------------- progress
class _Lines:
    """tqdm's output as plain lines, for a log or a pipe: tqdm redraws one line with carriage returns."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable=None, *, total: int | None = None, desc: str, unit: str, disable: bool = False,
                 interval: float | None = None) -> tqdm:
    """A tqdm bar on stderr with the count, the rate and the time left: redrawn in place on a terminal, elsewhere (a
    log, a pipe) a plain line when it starts, at most every `interval` seconds (None: PROGRESS_INTERVAL), and when
    it closes."""
    stream = sys.stderr
    if stream.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=stream, dynamic_ncols=True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=_Lines(stream), position=0,
                mininterval=PROGRESS_INTERVAL if interval is None else interval, miniters=1)


# ---------------------------------------------------------------------------------------------- tensors
@contextlib.contextmanager
def steady_heap() -> Iterator[None]:
    """Inside, freed memory stays in the process for the next tile (glibc only; elsewhere nothing changes).

    glibc hands every block above 32 MB to the kernel (mmap) and returns it on free (munmap), so each large
    temporary of every tile was paged in afresh: at 512 px tiles 3 million page faults and as much system time as
    user time per tile. Inside: no mmap blocks (M_MMAP_MAX 0), and the heap is not trimmed (M_TRIM_THRESHOLD);
    on leaving, glibc's defaults again, and malloc_trim(0) gives the freed memory back to the system."""
    libc = ctypes.CDLL(None) if platform.libc_ver()[0] == "glibc" else None
    if libc is None:
        yield
        return
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters (malloc.h)
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2 ** 31 - 1)
    try:
        yield
    finally:
        libc.mallopt(m_mmap_max, 65536)
        libc.mallopt(m_trim_threshold, 128 * 1024)
        libc.malloc_trim(0)


def _forward(model: nn.Module, x: Tensor, amp: bool) -> Tensor:
    """(B,3,H,W) -> (B,3,H,W) float32; bfloat16 autocast on x's device when amp (float16's range is the narrower;
    bf16 is what training uses)."""
    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with ctx:
        return model(x).float()


def whole_image_pools(model: nn.Module, x: Tensor, pool_pixels: int, amp: bool = False) -> dict[str, Tensor]:
    """Every global statistic of one forward pass over the whole image x (1,3,H,W), shrunk (antialiased
    bilinear) to at most `pool_pixels` pixels: {pool module name: (1,C,1,1)}. Not used by `restore`
    (measured worse than naive tiling, see above); kept for benchmarks/bench_tiling.py."""
    h, w = x.shape[-2:]
    if h * w > pool_pixels:
        scale = math.sqrt(pool_pixels / (h * w))
        size = (max(1, int(h * scale)), max(1, int(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)  # (1,3,h',w')
    with recorded_pools(model) as pools:
        _forward(model, x, amp)
    return pools  # filled when the context closes


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: stride tile - overlap, the last tile flush with the image's end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _ramp(size: int, overlap: int, rise: bool, fall: bool) -> Tensor:
    """1-D blending weight: raised-cosine rise/fall over `overlap` pixels on sides that have a neighbour
    (strictly positive everywhere, so every pixel has weight), 1 elsewhere."""
    w = torch.ones(size, dtype=torch.float64)
    n = min(overlap, size)
    if n > 0:
        edge = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n)
        if rise:
            w[:n] = torch.minimum(w[:n], edge)
        if fall:
            w[-n:] = torch.minimum(w[-n:], edge.flip(0))
    return w


def _boxes(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(y0, x0, th, tw) of every tile, row by row."""
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"tiling needs tile > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    th, tw = min(tile, h), min(tile, w)
    return [(y0, x0, th, tw) for y0 in _starts(h, tile, overlap) for x0 in _starts(w, tile, overlap)]


def _cores(starts: list[int], size: int, length: int) -> list[tuple[int, int]]:
    """Split [0, length) between tiles at the middle of each overlap: every pixel in exactly one core."""
    cuts = [0] + [(starts[i] + size + starts[i + 1]) // 2 for i in range(len(starts) - 1)] + [length]
    return list(zip(cuts[:-1], cuts[1:]))


class _PoolsMeasured(Exception):
    """Raised by `tiled_pools`' hooks once a tile's every global pool is measured, to stop its forward pass."""


def tiled_pools(model: nn.Module, x: Tensor, tile: int, overlap: int, pools: dict[str, Tensor] | None,
                amp: bool = False, progress: tqdm | None = None) -> dict[str, Tensor]:
    """One sweep over the tiles measuring what each global pool sees at full resolution: its input summed
    over the tile's core (the cores partition the image), summed over tiles, / image area -> {name:
    (1,C,1,1)}. pools None: each tile pools over itself meanwhile; given: they are fixed during the sweep,
    and a pool's new value is exact whenever the pools before it were. The mean is over the image itself:
    a whole-image pass would also average the zeros it pads to a multiple of 64 (a small difference when
    a side is not a multiple of 64). `progress`: a bar (`progress_bar`) that each tile advances by one."""
    _, _, h, w = x.shape
    boxes = _boxes(h, w, tile, overlap)
    ys, xs = sorted({b[0] for b in boxes}), sorted({b[1] for b in boxes})
    core_y, core_x = dict(zip(ys, _cores(ys, boxes[0][2], h))), dict(zip(xs, _cores(xs, boxes[0][3], w)))
    multiple = getattr(model, "multiple", 1)  # DwGN pads its input to this multiple
    sums: dict[str, Tensor] = {}
    current: dict[str, Tensor] = {}
    box: list = []

    def hook(name: str):
        def measure(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            f = inputs[0]  # (1,C,hf,wf): the tile (padded to the network's multiple) at this level's scale
            (y0, y1), (x0, x1), th, tw = box
            sy = f.shape[-2] / (th + -th % multiple)
            sx = f.shape[-1] / (tw + -tw % multiple)
            core = f[..., round(y0 * sy):round(y1 * sy), round(x0 * sx):round(x1 * sx)]
            # area-weighted: a core of k feature pixels stands for k/(sy*sx) image pixels. Summed in float32 (PyTorch
            # sums in blocks: relative error ~2e-7 on a 512² map), 30 times faster than a float64 sum of the tile;
            # the tiles' sums add up in float64
            current[name] = core.sum(dim=(2, 3), keepdim=True, dtype=torch.float32).double() / (sy * sx)  # (1,C,1,1)
            if len(current) == len(names):
                raise _PoolsMeasured  # the rest of the forward pass (the last block's end, the output) is not needed
        return measure

    names = [n for n, m in model.named_modules() if isinstance(m, GlobalPool)]
    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n in names]
    try:
        with fixed_pools(model, pools) if pools is not None else contextlib.nullcontext():
            for y0, x0, th, tw in boxes:
                cy, cx = core_y[y0], core_x[x0]
                box[:] = [(cy[0] - y0, cy[1] - y0), (cx[0] - x0, cx[1] - x0), th, tw]
                current.clear()
                try:
                    _forward(model, x[..., y0:y0 + th, x0:x0 + tw], amp)
                except _PoolsMeasured:
                    pass
                for name, value in current.items():
                    sums[name] = sums.get(name, 0) + value
                if progress is not None:
                    progress.update()
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n in names if n not in sums]
    if missing:
        raise RuntimeError(f"global pool {missing[0]} was not run by the forward pass; cannot tile this model")
    return {name: (sums[name] / (h * w)).float() for name in names}


def tiled_forward(model: nn.Module, x: Tensor, tile: int, overlap: int, pools: dict[str, Tensor] | None,
                  amp: bool = False, progress: tqdm | None = None) -> Tensor:
    """x (1,3,H,W) -> (1,3,H,W), restored tile by tile and blended. `pools` (from `tiled_pools`) gives
    each tile the image's statistics; None lets each tile pool over itself (naive tiling, kept only to
    measure what the pools buy: benchmarks/bench_tiling.py). `progress`: a bar that each tile advances by one."""
    _, _, h, w = x.shape
    boxes = _boxes(h, w, tile, overlap)
    out = torch.zeros(1, 3, h, w, dtype=torch.float64, device=x.device)
    weight = torch.zeros(1, 1, h, w, dtype=torch.float64, device=x.device)
    ctx = fixed_pools(model, pools) if pools is not None else contextlib.nullcontext()
    with ctx:
        for y0, x0, th, tw in boxes:
            patch = _forward(model, x[..., y0:y0 + th, x0:x0 + tw], amp)  # (1,3,th,tw)
            wy = _ramp(th, overlap, rise=y0 > 0, fall=y0 + th < h)
            wx = _ramp(tw, overlap, rise=x0 > 0, fall=x0 + tw < w)
            wt = (wy[:, None] * wx[None, :]).to(x.device)  # (th,tw)
            out[..., y0:y0 + th, x0:x0 + tw] += patch.double() * wt
            weight[..., y0:y0 + th, x0:x0 + tw] += wt
            if progress is not None:
                progress.update()
    return out.div_(weight).float()


# ------------------------------------------------------------------------------------- self-ensemble
def _transform(x: Tensor, k: int) -> Tensor:
    """The k-th of the 8 flips/rotations (k in 0..7): rotate by 90*(k%4), then flip W if k >= 4."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def _inverse(x: Tensor, k: int) -> Tensor:
    x = x.flip(-1) if k >= 4 else x
    return torch.rot90(x, -(k % 4), dims=(-2, -1))


# -------------------------------------------------------------------------------------------- images
def _as_rgb(image: np.ndarray) -> tuple[np.ndarray, str, np.ndarray | None]:
    """-> (HxWx3 RGB of the image's dtype, writable, layout 'gray'|'rgb'|'rgba', alpha or None)."""
    if not isinstance(image, np.ndarray) or image.dtype not in (np.uint8, np.uint16):
        dtype = getattr(image, "dtype", type(image).__name__)
        raise TypeError(f"restore() takes an HxWx3 uint8 (or uint16) image, got {dtype}; read files with "
                        "dwgn.data.images.read_photo")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        gray = image.reshape(image.shape[:2])
        return np.repeat(gray[..., None], 3, axis=2), "gray", None
    if image.ndim == 3 and image.shape[2] in (3, 4):
        alpha = image[..., 3].copy() if image.shape[2] == 4 else None
        rgb = np.ascontiguousarray(image[..., :3])
        return (rgb if rgb.flags.writeable else rgb.copy()), "rgba" if alpha is not None else "rgb", alpha
    raise ValueError(f"restore() takes an HxWx3 RGB (or HxW gray, HxWx4 RGBA) image, got shape {image.shape}")


def to_uint8(x: Tensor) -> np.ndarray:
    """(1,3,H,W) float in [0,1] (values outside are clipped) -> HxWx3 uint8, rounded to nearest."""
    return x[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # (H,W,3)


def _to_dtype(x: Tensor, dtype: np.dtype) -> np.ndarray:
    """(1,3,H,W) float in [0,1] -> HxWx3 of `dtype` (uint8 or uint16), clipped and rounded to nearest."""
    if dtype == np.uint8:
        return to_uint8(x)
    return x[0].clamp(0, 1).mul(65535).round().to(torch.int32).permute(1, 2, 0).cpu().numpy().astype(np.uint16)


def auto_tile(h: int, w: int) -> int:
    """The tile that tile=None picks for an h x w image: DEFAULT_TILE above AUTO_TILE_PIXELS, else 0 (whole)."""
    return DEFAULT_TILE if h * w > AUTO_TILE_PIXELS else 0


def tile_side(model: nn.Module, tile: int) -> int:
    """The side of the tiles `restore(model, ..., tile=tile)` uses: `tile` rounded up to the model's padding
    multiple (a padded tile would see zeros where image should be); 0 stays 0 (whole image)."""
    multiple = getattr(model, "multiple", 1)
    return -(-tile // multiple) * multiple


def restore_tensor(model: nn.Module, x: Tensor, tile: int | None = None, overlap: int = DEFAULT_OVERLAP,
                   self_ensemble: bool = False, amp: bool = False, refine: int = 0,
                   progress: bool = False) -> Tensor:
    """x (1,3,H,W) float in [0,1] on the model's device -> restored (1,3,H,W), not clipped."""
    h, w = x.shape[-2:]
    tile = auto_tile(h, w) if tile is None else tile_side(model, tile)

    tiled = bool(tile) and (h > tile or w > tile)
    if tiled and has_compiled_modules(model):  # the per-tile pool hooks would recompile the blocks for every tile
        raise ValueError(f"tiled inference ({h}x{w} image, tile {tile}) does not run on a compiled model; restore "
                         "with tile=0 or with a model that was not compiled")
    # The pools sweeps cut the image without overlap: their cores partition it either way, and what tile borders do
    # to the image-wide means is small (demo model, 512x512, tiles of 256: 58.4 dB from the whole-image output instead
    # of 59.1; of 384: 68.1 both), for a quarter fewer tiles (48 instead of 63 at 512 px on a 4000x3000 photo).
    pool_tiles, tiles = (len(_boxes(h, w, tile, 0)), len(_boxes(h, w, tile, overlap))) if tiled else (0, 0)
    bar = progress_bar(total=(pool_tiles * (1 + refine) + tiles) * (8 if self_ensemble else 1), desc=f"{w}x{h} photo",
                       unit="tile", disable=not (progress and tiled))

    def one(v: Tensor) -> Tensor:
        if not tiled:
            return _forward(model, v, amp)
        pools = tiled_pools(model, v, tile, 0, None, amp, bar)
        for _ in range(refine):
            pools = tiled_pools(model, v, tile, 0, pools, amp, bar)
        return tiled_forward(model, v, tile, overlap, pools, amp, bar)

    with steady_heap(), bar:
        return sum(_inverse(one(_transform(x, k)), k) for k in range(8)) / 8 if self_ensemble else one(x)


def restore(model: nn.Module, image: np.ndarray, tile: int | None = None, overlap: int = DEFAULT_OVERLAP,
            self_ensemble: bool = False, device: str | torch.device | None = None, amp: bool | None = None,
            refine: int = 0, progress: bool = False) -> np.ndarray:
    """Restore one photo: HxWx3 uint8 RGB in, HxWx3 uint8 out (gray HxW and RGBA HxWx4 keep their layout;
    the alpha channel passes through untouched; uint16 in gives uint16 out). Read-only arrays are fine.

    tile: None tiles automatically above AUTO_TILE_PIXELS (tiles of DEFAULT_TILE), 0 never tiles, N uses
    N x N tiles (N rounded up to a multiple of 64) overlapping by `overlap`; refine: extra sweeps that
    re-measure the global statistics with the previous ones fixed (module docstring; 0 is usually enough).
    self_ensemble averages the 8 flips/rotations. progress: a bar of the tiles on stderr (`progress_bar`; tiled
    images only), with the time left.
    device: None uses the model's device, otherwise the model is moved there. amp: bfloat16 autocast, default on
    CUDA only (amp=True on the CPU runs it there too: faster on CPUs with bf16 instructions, ~2-3 digits per value).
    The output is deterministic: the same input gives bitwise the same image.
    """
    rgb, layout, alpha = _as_rgb(image)
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    amp = dev.type == "cuda" if amp is None else amp
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            peak = 65535 if rgb.dtype == np.uint16 else 255
            pixels = torch.from_numpy(rgb.astype(np.int32) if peak == 65535 else rgb)  # torch lacks uint16 ops
            x = pixels.to(dev).permute(2, 0, 1)[None].float() / peak  # (1,3,H,W)
            restored = restore_tensor(model, x, tile, overlap, self_ensemble, amp, refine, progress)
            out = _to_dtype(restored, rgb.dtype)  # (H,W,3)
    finally:
        model.train(was_training)
    if layout == "gray":
        gray = np.clip(np.round(out @ _GRAY), 0, np.iinfo(out.dtype).max).astype(out.dtype)  # (H,W,3) -> (H,W)
        return gray.reshape(image.shape)
    if layout == "rgba":
        return np.concatenate([out, alpha[..., None]], axis=2)  # (H,W,4)
    return out
