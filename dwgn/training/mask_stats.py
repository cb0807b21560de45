"""Health of Stage 1's adversary: is it still learning, and do its masks depend on the image?

Used by the pre-training tests (a short run must not collapse) and benchmarks/stage1.py. Every number
is measured on one `Degradation` from `Decomposer.forward`:

* corr_d / corr_d_expected: mean Pearson correlation of M_d (averaged over channels) between the
  different images of the batch, on the sampled masks and on the expected ones (Σ_i p_i·μ_i, before the
  budget: what the logit network asks for, free of the Gumbel and ε noise). The collapsed run of the paper's
  recipe (docs/pretraining.md §2) had the same checkerboard in every image: correlation ≈ 1.
* entropy_b / entropy_d: entropy, in bits, of the histogram of hard component choices over the batch
  (log2 10 ≈ 3.32 when all ten are used evenly; 0 for one component everywhere).
* on_bound_b / on_bound_d: fraction of values at the adversary's extreme (within 1 % of the range):
  M_b at the floor, m_d at 1.
* dependence_b / dependence_d: I(component; image | pixel) of the choice distributions, in bits
  (dwgn.training.decomposition.information): 0 when every image gets the same distribution at a pixel.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from dwgn.training.decomposition import Decomposer, Degradation, information


def mean_pairwise_correlation(maps: Tensor) -> float:
    """maps (B,...) -> mean Pearson correlation over pairs of different images. A pair of constant maps
    (no spatial structure: the same mask up to its level) counts 1, a constant map against a varying one 0."""
    flat = maps.flatten(1).double()                                      # (B,P)
    if flat.shape[0] < 2:
        raise ValueError("the correlation between images needs a batch of at least 2")
    centred = flat - flat.mean(1, keepdim=True)
    norm = centred.norm(dim=1, keepdim=True)
    unit = torch.where(norm > 1e-9, centred / norm.clamp_min(1e-12), torch.zeros_like(centred))
    flat_ = (norm.squeeze(1) <= 1e-9).double()                           # (B,) 1 for a constant map
    corr = unit @ unit.T + flat_[:, None] * flat_[None, :]               # (B,B)
    b = corr.shape[0]
    return float((corr.sum() - corr.diagonal().sum()) / (b * (b - 1)))


def choice_entropy_bits(choice: Tensor) -> float:
    """choice (B,n,H,W) one-hot -> entropy of its component histogram, in bits."""
    counts = choice.detach().sum(dim=(0, 2, 3))
    p = counts / counts.sum()
    p = p[p > 0]
    return float(-(p * torch.log2(p)).sum())


@torch.no_grad()
def mask_statistics(decomposer: Decomposer, degraded: Degradation) -> dict[str, float]:
    if degraded.samples is None or degraded.share_d is None:
        raise ValueError("mask_statistics needs a Degradation from Decomposer.forward (with its samples)")
    sample_b, sample_d = degraded.samples
    usage_d, dependence_d = information(sample_d.probs)
    usage_b, dependence_b = information(sample_b.probs)
    bits = math.log2(sample_b.choice.shape[1])
    expected_d = torch.einsum("bnhw,n->bhw", sample_d.probs, decomposer.gen_d.means)   # (B,H,W)
    tol_b = 0.01 * (1.0 - decomposer.floor)
    return {
        "corr_d": mean_pairwise_correlation(degraded.mask_d.mean(1)),
        "corr_d_expected": mean_pairwise_correlation(expected_d),
        "entropy_b": choice_entropy_bits(sample_b.choice),
        "entropy_d": choice_entropy_bits(sample_d.choice),
        "on_bound_b": float((degraded.mask_b <= decomposer.floor + tol_b).float().mean()),
        "on_bound_d": float((degraded.share_d >= 0.99).float().mean()),
        "dependence_b": float(dependence_b) * bits, "dependence_d": float(dependence_d) * bits,
        "mask_b": float(degraded.mask_b.mean()),
        "mask_d": float(degraded.mask_d.mean()),
        "max_entropy_bits": bits,
    }


__all__ = ["choice_entropy_bits", "mask_statistics", "mean_pairwise_correlation"]
