"""Do the generated weights separate the weathers? `python -m dwgn.analysis [--checkpoint PATH] [--test-set ...]`

DwGN's claim: the weights its generators (GLGF) produce are instance-exclusive -- images of different weather
get different kernels -- while the static branch learns what every weather shares. For each test image this
module records, in every block (forward hooks only, the network is untouched):
* dynamic: the kernels generated for the dynamic branch (HDMC's 1x1 C->3C and grouped 3x3, HDFN's 1x1 C->2C
  and grouped 3x3), i.e. the GLGF outputs, flattened;
* static:  the global average pool of the static branch's outputs (HDMC's q_s|k_s|v_s, 3C; HDFN's, 2C);
* branch:  the same pool of the dynamic branch's outputs (q_d|k_d|v_d and HDFN's), made with the generated
  kernels -- or, in a model with dynamic="none", with the static kernels that stand in their place: the
  feature to compare between the two;
* alpha:   HDFN's per-image share of the static branch;
* input:   the global pool of the block's normalised input, the statistic HDMC's generators start from (a
  reference: generated kernels are a function of it, so they cannot separate what it does not);
labelled by the weather of the set the image came from. A nearest-class-mean classifier on standardised
features, scored leave-one-out over images, then says per block how well each kind of feature tells the
weathers apart (`separability.json`), and `dynamic_weights.png` shows PCA projections and alpha per level.

Images are centre-cropped to at most `--crop` pixels a side (never resized): this is an analysis of the
network's internal statistics, not a metric, and a crop keeps a CPU run to a few minutes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

DEFAULT_OUT = Path("results/analysis")
CLASSIFIER = ("nearest class mean on standardised features (statistics from the training fold), leave-one-out; "
              "`ridge`: a ridge classifier (one-hot targets, unpenalised intercept, K = Z Z^T / D, lambda 1; "
              "features standardised with all images' statistics), exact leave-one-out")
RIDGE_LAMBDA = 1.0
# Generated kernels inside a block (DwGNBlock); a model with dynamic="none" has none of them.
GENERATORS = {
    "hdmc_1x1": "hdmc.dynamic_qkv.0.generator",
    "hdmc_3x3": "hdmc.dynamic_qkv.2.generator",
    "hdfn_1x1": "hdfn.dynamic.0.generator",
    "hdfn_3x3": "hdfn.dynamic.2.generator",
}
STATIC_BRANCHES = {"hdmc": "hdmc.static_qkv", "hdfn": "hdfn.static"}
DYNAMIC_BRANCHES = {"hdmc": "hdmc.dynamic_qkv", "hdfn": "hdfn.dynamic"}
BLOCK_INPUT = "norm1"  # LN(x): its global pool is what HDMC's generators map to kernels
ALPHA = "hdfn.alpha"  # its output is alpha's logit, (B, 1, 1, 1)
# The weather each named test set holds; demo-<weather> sets are <weather>; any other folder is its own key.
WEATHER_OF_SET = {"snow100k-s": "snow", "snow100k-l": "snow", "outdoor-rain": "rainfog",
                  "raindrop-a": "raindrop", "raindrop-b": "raindrop"}


def weather_of(set_key: str) -> str:
    """Label of a test set: `snow100k-l` -> snow, `demo-haze` -> haze, a folder -> its key."""
    return WEATHER_OF_SET.get(set_key, set_key.removeprefix("demo-"))


# ---------------------------------------------------------------------------------------------- recording
@dataclass
class BlockFeatures:
    """What one block produced for n images (rows in image order)."""

    dynamic: dict[str, np.ndarray] = field(default_factory=dict)  # generator part -> (n, kept weights)
    dynamic_size: dict[str, int] = field(default_factory=dict)    # part -> weights generated per image
    static: np.ndarray | None = None                              # (n, 5C): pooled static HDMC | HDFN outputs
    branch: np.ndarray | None = None                              # (n, 5C): the same of the dynamic branches
    alpha: np.ndarray | None = None                               # (n,)
    input: np.ndarray | None = None                               # (n, C): pooled LN(block input)


@dataclass
class Recording:
    blocks: dict[str, BlockFeatures]  # block module name (forward order) -> features
    labels: list[str]                 # weather per image
    sets: list[str]                   # test-set key per image
    files: list[str]                  # input file per image
    channels: dict[str, int]          # block -> channels C


def blocks_of(model: nn.Module) -> dict[str, nn.Module]:
    """Every DwGN block (a module with `hdmc` and `hdfn`), in forward order: encoders, middle, decoders."""
    found = {name: m for name, m in model.named_modules() if hasattr(m, "hdmc") and hasattr(m, "hdfn")}
    if not found:
        raise ValueError(f"{type(model).__name__} has no DwGN blocks (modules with .hdmc and .hdfn) to analyse")
    return found


def _keep_index(size: int, cap: int, seed: int) -> np.ndarray | None:
    """A fixed random subset of `cap` of `size` weights (sorted), or None to keep all. Within one input
    channel's block of a generated kernel every weight is an affine function of the same two numbers
    (GLGF: w_j = a_j z_c + s.z), so a random subset keeps what separates images."""
    if size <= cap:
        return None
    return np.sort(np.random.default_rng(seed).choice(size, cap, replace=False))


def record_features(model: nn.Module, images: Iterable[tuple[str, str, str, Tensor]],
                    max_features: int = 8192, total: int | None = None) -> Recording:
    """Run each image alone (batch of 1) and record every block's generated kernels, pooled static-branch
    outputs and alpha. `images` yields (weather, set key, file, (3, H, W) tensor in [0, 1]). Each generator's
    output is kept whole up to `max_features` weights, else a fixed random subset of that many."""
    blocks = blocks_of(model)
    device = next(model.parameters()).device
    captured: dict[tuple[str, str], Tensor] = {}
    handles = []

    def hook(key: tuple[str, str]):
        def save(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            captured[key] = output.detach()
        return save

    for bname, block in blocks.items():
        modules = dict(block.named_modules())
        targets = {**{("dyn", p): path for p, path in GENERATORS.items()},
                   **{("static", p): path for p, path in STATIC_BRANCHES.items()},
                   **{("branch", p): path for p, path in DYNAMIC_BRANCHES.items()}, ("alpha", ""): ALPHA,
                   ("input", ""): BLOCK_INPUT}
        for (kind, part), path in targets.items():
            if path in modules:
                handles.append(modules[path].register_forward_hook(hook((bname, f"{kind}:{part}"))))
            elif kind != "dyn":
                raise ValueError(f"block {bname} has no {path}: not a DwGN block this analysis knows")

    rows: dict[str, dict[str, list[np.ndarray]]] = {b: {} for b in blocks}
    keep: dict[tuple[str, str], np.ndarray | None] = {}
    sizes: dict[tuple[str, str], int] = {}
    labels, sets, files = [], [], []
    try:
        with torch.inference_mode():
            for weather, key, file, image in tqdm(images, total=total, desc="analysis", unit="img"):
                captured.clear()
                model(image[None].to(device))  # (1, 3, H, W): one image, so nothing depends on a batch
                for (bname, what), out in captured.items():
                    kind, part = what.split(":")
                    if kind == "dyn":
                        vec = out.reshape(-1).float().cpu().numpy()  # (N,) generated weights
                        if (bname, part) not in keep:
                            sizes[bname, part] = vec.size
                            keep[bname, part] = _keep_index(vec.size, max_features, seed=len(keep))
                        idx = keep[bname, part]
                        vec = vec if idx is None else vec[idx]
                    elif kind in ("static", "branch", "input"):
                        vec = out.float().mean(dim=(2, 3)).reshape(-1).cpu().numpy()  # (B=1, C', H, W) -> (C',)
                    else:
                        vec = torch.sigmoid(out.float()).reshape(-1).cpu().numpy()  # (1,)
                    rows[bname].setdefault(what, []).append(vec)
                labels.append(weather), sets.append(key), files.append(file)
    finally:
        for h in handles:
            h.remove()
    if not labels:
        raise ValueError("no images to analyse")

    out: dict[str, BlockFeatures] = {}
    for bname, parts in rows.items():
        feats = BlockFeatures()
        for part in GENERATORS:
            if f"dyn:{part}" in parts:
                feats.dynamic[part] = np.stack(parts[f"dyn:{part}"])
                feats.dynamic_size[part] = sizes[bname, part]
        feats.static = np.concatenate([np.stack(parts[f"static:{p}"]) for p in STATIC_BRANCHES], axis=1)
        feats.branch = np.concatenate([np.stack(parts[f"branch:{p}"]) for p in DYNAMIC_BRANCHES], axis=1)
        feats.alpha = np.stack(parts["alpha:"])[:, 0]
        feats.input = np.stack(parts["input:"])
        out[bname] = feats
    channels = {b: int(m.norm1.weight.numel()) for b, m in blocks.items()}
    return Recording(out, labels, sets, files, channels)


def dynamic_matrix(feats: BlockFeatures) -> np.ndarray | None:
    """(n, D): every generated kernel of the block side by side, or None when the block generates none."""
    return np.concatenate(list(feats.dynamic.values()), axis=1) if feats.dynamic else None


# --------------------------------------------------------------------------------------------- classifier
def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Zero mean, unit variance per feature with the statistics of `train`; a feature constant over `train`
    carries no information there and is dropped (it would divide by zero)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    live = std > 1e-12 * max(float(np.abs(mean).max(initial=0.0)), 1.0)
    return [(a[:, live] - mean[live]) / std[live] for a in (train, *others)]


def _checked(features: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float64).reshape(len(labels), -1)  # (n, D)
    y = np.asarray(labels)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"separability needs at least two weathers, got {list(classes)}: give more test sets")
    return x, y, classes


def nearest_mean_accuracy(features: np.ndarray, labels: Sequence[str]) -> float:
    """Leave-one-out accuracy of a nearest-class-mean classifier on standardised features.

    For each image, standardisation statistics and class means come from the other images only, so the
    held-out image never informs its own prediction. The held-out statistics are updated from the
    all-image sums (no (n-1) x D copy per fold), and the standardisation's mean cancels out of the
    distance: |(q - m) / s - (c - m) / s| = |(q - c) / s|. features: (n, D)."""
    x, y, classes = _checked(features, labels)
    n = len(y)
    total, total_sq = x.sum(axis=0), (x * x).sum(axis=0)  # (D,)
    counts = np.array([(y == c).sum() for c in classes])
    sums = np.stack([x[y == c].sum(axis=0) for c in classes])  # (K, D)
    correct = 0
    for i in range(n):
        mean = (total - x[i]) / (n - 1)
        var = np.maximum((total_sq - x[i] * x[i]) / (n - 1) - mean * mean, 0.0)
        live = var > 1e-24 * np.maximum(mean * mean, 1.0)  # constant over the other images: no information
        own = int(np.searchsorted(classes, y[i]))
        k_sums, k_counts = sums.copy(), counts.copy()
        k_sums[own] -= x[i]
        k_counts[own] -= 1
        present = k_counts > 0
        centres = k_sums[present][:, live] / k_counts[present, None]  # (K', D')
        dist = (((x[i, live] - centres) ** 2) / var[live]).sum(axis=1)
        correct += classes[present][int(np.argmin(dist))] == y[i]
    return correct / n


def ridge_accuracy(features: np.ndarray, labels: Sequence[str], lam: float = RIDGE_LAMBDA) -> float:
    """Leave-one-out accuracy of a ridge classifier (least squares on one-hot targets, unpenalised intercept)
    on standardised features. Unlike the nearest mean it learns which directions tell the weathers apart,
    so variation that all weathers share (image content) weighs less.

    Exact leave-one-out in closed form: the fit is a linear smoother Y_hat = H Y with
    H = 11^T/n + K (K + lam I)^-1, K = Z Z^T / D (an average over features, so one lambda suits any D), and
    the held-out prediction is Y - (Y - Y_hat) / (1 - H_ii). The standardisation uses every image's
    statistics (no labels involved), the one difference from `nearest_mean_accuracy`'s per-fold refit."""
    x, y, classes = _checked(features, labels)
    n = len(y)
    (z,) = standardise(x)
    kernel = z @ z.T / max(z.shape[1], 1)  # (n, n)
    hat = 1.0 / n + kernel @ np.linalg.inv(kernel + lam * np.eye(n))
    targets = (y[:, None] == classes[None]).astype(np.float64)  # (n, K) one-hot
    held_out = targets - (targets - hat @ targets) / (1.0 - np.diag(hat))[:, None]
    return float(np.mean(classes[np.argmax(held_out, axis=1)] == y))


def chance_accuracy(labels: Sequence[str]) -> float:
    """The accuracy of always answering the commonest weather (1/K when the weathers are balanced)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())


def separability(rec: Recording) -> dict:
    """{block: {dynamic_acc, static_acc, branch_acc, alpha_acc, input_acc (nearest mean), n, dims, parts:
    {generator: acc}, ridge: {dynamic_acc, static_acc, branch_acc, input_acc with the ridge classifier}}, chance}."""
    out: dict = {}
    for bname, feats in tqdm(rec.blocks.items(), desc="classifier", unit="block"):
        dyn = dynamic_matrix(feats)
        out[bname] = {
            "dynamic_acc": None if dyn is None else nearest_mean_accuracy(dyn, rec.labels),
            "static_acc": nearest_mean_accuracy(feats.static, rec.labels),
            "branch_acc": nearest_mean_accuracy(feats.branch, rec.labels),
            "alpha_acc": nearest_mean_accuracy(feats.alpha[:, None], rec.labels),
            "input_acc": nearest_mean_accuracy(feats.input, rec.labels),
            "n": len(rec.labels),
            "channels": rec.channels[bname],
            "dynamic_dim": None if dyn is None else int(dyn.shape[1]),
            "static_dim": int(feats.static.shape[1]),
            "parts": {p: nearest_mean_accuracy(v, rec.labels) for p, v in feats.dynamic.items()},
            # (no ridge on alpha alone: a linear score of one number ranks the weathers along a line)
            "ridge": {"dynamic_acc": None if dyn is None else ridge_accuracy(dyn, rec.labels),
                      "static_acc": ridge_accuracy(feats.static, rec.labels),
                      "branch_acc": ridge_accuracy(feats.branch, rec.labels),
                      "input_acc": ridge_accuracy(feats.input, rec.labels)},
        }
    out["chance"] = chance_accuracy(rec.labels)
    return out


def format_table(sep: dict) -> str:
    """Compact per-block table: the accuracies of both classifiers."""
    def pct(x: float | None) -> str:
        return "   -" if x is None else f"{100 * x:4.0f}"

    blocks = [k for k in sep if k not in ("chance", "_meta")]
    width = max(len("block"), *(len(b) for b in blocks))
    lines = [f"{'':<{width}}       nearest class mean            ridge   (% correct, leave-one-out)",
             f"{'block':<{width}}    C  dynamic static alpha input  dynamic static alpha input"]
    for b in blocks:
        r = sep[b]
        cols = [pct(r[k]) for k in ("dynamic_acc", "static_acc", "alpha_acc", "input_acc")]
        cols += [pct(r["ridge"].get(k)) for k in ("dynamic_acc", "static_acc", "alpha_acc", "input_acc")]
        lines.append(f"{b:<{width}} {r['channels']:4d}    {cols[0]}   {cols[1]}  {cols[2]}  {cols[3]}     "
                     f"{cols[4]}   {cols[5]}  {cols[6]}  {cols[7]}")
    lines.append(f"chance (commonest weather): {100 * sep['chance']:.0f} %, n = {blocks and sep[blocks[0]]['n']}")
    return "\n".join(lines)
