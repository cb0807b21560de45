"""The figure of `python -m dwgn.analysis`: dynamic_weights.png.

Row 1: PCA of the generated kernels of a shallow, the bottleneck and the last block, one dot per image,
coloured by weather. Row 2: the same blocks' pooled static-branch features, for contrast. Row 3: HDFN's
alpha per weather and level, and the leave-one-out accuracy of every block (generated kernels, static
features, alpha, and the pooled block input the generators start from).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from dwgn.analysis.separability import Recording, dynamic_matrix, standardise  # noqa: E402
from dwgn.io import save_figure  # noqa: E402


def pca_2d(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) -> ((n, 2) scores on the first two principal components of the standardised features,
    (2,) their share of the variance). Fewer than two components (e.g. D = 1) are padded with zeros."""
    (z,) = standardise(np.asarray(features, dtype=np.float64))
    z = z - z.mean(axis=0)
    scores, share = np.zeros((len(z), 2)), np.zeros(2)
    if z.shape[1] == 0:
        return scores, share
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    k = min(2, len(s))
    scores[:, :k] = u[:, :k] * s[:k]
    total = float((s ** 2).sum())
    if total > 0:
        share[:k] = s[:k] ** 2 / total
    return scores, share


def representative_blocks(names: list[str]) -> list[str]:
    """Shallow (first), bottleneck (first `middle` block, else the middle one) and deep-decoder (last) blocks."""
    middle = next((n for n in names if n.startswith("middle")), names[len(names) // 2])
    chosen = [names[0], middle, names[-1]]
    return list(dict.fromkeys(chosen))  # a one- or two-block network shows each block once


def level_of(block: str) -> str:
    """`encoders.1.3` -> `encoders.1`, `middle.5` -> `middle`: the blocks sharing a resolution."""
    parts = block.split(".")
    return ".".join(parts[:-1])


def plot_analysis(rec: Recording, sep: dict, path: Path) -> None:
    weathers = sorted(set(rec.labels))
    colours = {w: plt.get_cmap("tab10")(i % 10) for i, w in enumerate(weathers)}
    labels = np.asarray(rec.labels)
    shown = representative_blocks(list(rec.blocks))
    fig = plt.figure(figsize=(4.2 * len(shown), 11.5), constrained_layout=True)
    grid = fig.add_gridspec(3, len(shown))

    for col, block in enumerate(shown):
        feats = rec.blocks[block]
        for row, (kind, matrix) in enumerate((("generated kernels", dynamic_matrix(feats)),
                                              ("pooled static features", feats.static))):
            ax = fig.add_subplot(grid[row, col])
            acc = sep[block]["dynamic_acc" if row == 0 else "static_acc"]
            ax.set_title(f"{block} (C={rec.channels[block]}): {kind}\n"
                         + (f"leave-one-out accuracy {100 * acc:.0f} %" if acc is not None else ""), fontsize=9)
            if matrix is None:
                ax.text(0.5, 0.5, "no generated weights\n(dynamic = none)", ha="center", va="center",
                        transform=ax.transAxes)
                ax.set_axis_off()
                continue
            scores, share = pca_2d(matrix)
            for w in weathers:
                pts = scores[labels == w]
                ax.scatter(pts[:, 0], pts[:, 1], s=18, color=colours[w], label=w, alpha=0.85, edgecolors="none")
            ax.set_xlabel(f"PC1 ({100 * share[0]:.0f} % of variance)", fontsize=8)
            ax.set_ylabel(f"PC2 ({100 * share[1]:.0f} %)", fontsize=8)
            ax.tick_params(labelsize=7)
            if row == 0 and col == 0:
                ax.legend(fontsize=8, markerscale=1.3, frameon=False)

    # alpha per level: each image's mean alpha over the level's blocks, one strip per weather
    levels = list(dict.fromkeys(level_of(b) for b in rec.blocks))
    ax = fig.add_subplot(grid[2, : max(1, len(shown) - 1)])
    rng = np.random.default_rng(0)  # jitter only
    spread = 0.8 / len(weathers)
    for li, level in enumerate(levels):
        alpha = np.mean([f.alpha for b, f in rec.blocks.items() if level_of(b) == level], axis=0)  # (n,)
        for wi, w in enumerate(weathers):
            x = li - 0.4 + spread * (wi + 0.5)
            vals = alpha[labels == w]
            ax.scatter(x + rng.uniform(-spread / 4, spread / 4, len(vals)), vals, s=10, color=colours[w],
                       alpha=0.7, edgecolors="none", label=w if li == 0 else None)
            ax.hlines(vals.mean(), x - spread / 2.5, x + spread / 2.5, color="black", linewidth=1.2)
    ax.set_xticks(range(len(levels)), levels, fontsize=8, rotation=20)
    ax.set_ylabel("alpha (share of the static branch)", fontsize=8)
    ax.set_title("HDFN's alpha per level and weather (bars: means)", fontsize=9)
    ax.tick_params(labelsize=7)

    # accuracy of every block
    ax = fig.add_subplot(grid[2, -1]) if len(shown) > 1 else None
    if ax is not None:
        blocks = list(rec.blocks)
        x = np.arange(len(blocks))
        kinds = (("dynamic_acc", "generated kernels"), ("static_acc", "static features"), ("alpha_acc", "alpha"),
                 ("input_acc", "pooled input"))
        for i, (key, name) in enumerate(kinds):
            vals = [np.nan if sep[b][key] is None else 100 * sep[b][key] for b in blocks]
            ax.bar(x + (i - 1.5) * 0.2, vals, 0.2, label=name)
        ax.axhline(100 * sep["chance"], color="gray", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(x, blocks, fontsize=7, rotation=60, ha="right")
        ax.set_ylim(0, 119)
        ax.set_ylabel("leave-one-out accuracy (%)", fontsize=8)
        ax.set_title("telling the weathers apart, per block (nearest class mean)", fontsize=9)
        ax.legend(fontsize=7, frameon=False, ncol=2)
        ax.tick_params(labelsize=7)

    meta = sep.get("_meta", {})
    fig.suptitle(f"Do DwGN's generated weights separate the weathers?  {Path(str(meta.get('checkpoint', ''))).name}"
                 f"  n={len(labels)}" + ("  (SYNTHETIC demo data)" if meta.get("synthetic") else ""), fontsize=11)
    save_figure(fig, path, dpi=110)
