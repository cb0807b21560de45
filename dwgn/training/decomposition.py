"""Stage 1: adversarial blind background decomposition (docs/DESIGN.md §2).

A clean crop B (B,3,H,W) in [0,1] is degraded by two learned mask generators into

    O = clip(B ⊙ M_b + D ⊙ M_d, 0, 1)

where D is a solid random colour per sample. The restoration network R minimises L1(R(O), B); the
generators maximise the same L1 with R frozen (its parameters take no gradient, but gradients flow
*through* R into O and the generators). The two updates alternate 1:1, network first.

Each generator is a small conv encoder-decoder that ends in n = 10 per-pixel logits at the input's
full size. Every pixel picks one of n Gaussian components with a hard, straight-through
Gumbel-softmax; component i has a learned global mean μ_i and spread σ_i and the mask value
is μ_i + σ_i·ε with ε ~ N(0, 1) per pixel and channel (reparameterised, so μ and σ learn too).

What keeps the generators learning (docs/pretraining.md has the measurements)
----------------------------------------------------------------------------
docs/DESIGN.md §2 as written (τ = 0.1 on unbounded logits, no cost on the degradation) collapses within
~50 steps to one fixed mask at the bound for every image, and the logit networks' gradient becomes
exactly zero. Four changes, inside the same frame:

* Bounded logits: ℓ = LOGIT_BOUND·tanh(z/LOGIT_BOUND) (z the net's raw output), so no component's
  probability exceeds 1/(1 + (n−1)e^(−2·LOGIT_BOUND)) ≈ 0.978 and the Gumbel noise keeps every choice
  open; a small penalty LOGIT_DECAY·mean((z/LOGIT_BOUND)²) keeps z out of tanh's flat tails.
* τ = 1: the hard forward sample argmax(ℓ + g) does not depend on τ at all; τ only shapes the
  straight-through surrogate gradient, and τ = 1 makes that surrogate the sampling distribution itself
  (τ = 0.1 multiplied the logit gaps by 10 and saturated the softmax).
* A budget: per image, the mean degradation share — (1 − M_b)/(1 − floor) for G_b and m_d for G_d —
  is at most BUDGET (0.4 of the range); a mask over budget is scaled down (differentiably). "Every pixel
  at the bound" is no longer reachable, so the adversary must choose *where* to degrade.
* An information term in the generators' objective (`information`): + ENTROPY_WEIGHT·[H(component
  histogram of the batch) + I(component; image | pixel)], in units of ln n. The first keeps several
  components in use; the second (entropy of the batch-average choice at a pixel minus the mean
  per-image entropy) is high only when different images choose different components at the same
  place, i.e. when the masks depend on the image.

The bound (why the adversary cannot erase the background)
---------------------------------------------------------
Without a bound the generators win trivially by setting M_b = 0: O no longer holds B and R can only
guess. We bound both masks:

* M_b ∈ [MASK_FLOOR, 1] with MASK_FLOOR = 0.3: μ_b,i = 0.3 + 0.7·sigmoid(a_i), σ_b,i = 0.1·sigmoid(s_i),
  and the sampled value is clamped to [0.3, 1]. Every pixel keeps at least 30 % of B's contrast, so
  an error in O is amplified at most 1/0.3 ≈ 3.3× when B is recovered (8-bit O still resolves B to
  ~1.3/255).
* M_d = (1 − M_b) ⊙ m_d with m_d ∈ [0, 1] (same parameterisation over [0, 1]): the distractor only
  fills the share of the pixel that the background gave up. This is the atmospheric-scattering /
  alpha-blending form I = J·t + A·(1 − t)·m that covers haze, snow flakes and rain drops.

Together: B·M_b + D·M_d ≤ M_b + (1 − M_b) = 1 and ≥ 0, so the clip never saturates, O is an exact
affine function of B per pixel with slope M_b ≥ 0.3, and B = (O − D ⊙ M_d) / M_b exactly
(`recover_background`; the tests measure both facts). The spread bound σ ≤ 0.1 keeps the per-pixel
noise a texture rather than a second, unbounded mask.

Initial values (the authors' code left μ and σ as uninitialised memory): μ_i evenly spaced over the
component's range at quantiles (i + 0.5)/n, i.e. a_i = logit((i + 0.5)/n); σ_i = 0.05 (s_i = 0).

Randomness (Gumbel noise, ε, D's colour) comes from `sample_noise`, a torch.Generator seeded from
(seed, step, rank), never the global RNG: a killed-and-resumed run draws exactly what an uninterrupted
run draws.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

N_COMPONENTS = 10
TAU = 1.0                 # straight-through surrogate temperature (the forward sample ignores it); paper 0.1
LOGIT_BOUND = 3.0         # logits ℓ = LOGIT_BOUND·tanh(z/LOGIT_BOUND)
LOGIT_DECAY = 1e-3        # penalty on (z/LOGIT_BOUND)² in the generators' objective
BUDGET = 0.4              # per image, mean degradation share (fraction of each mask's range) at most this
ENTROPY_WEIGHT = 0.25     # weight of the information term in the generators' objective (L1 is ~0.1)
MASK_FLOOR = 0.3          # every pixel keeps at least this fraction of the background
SIGMA_MAX = 0.1           # spread bound of every component
WIDTHS = (32, 64, 128)


# ---------------------------------------------------------------------------------------------
# Noise: every random number of the decomposition, drawn from (seed, step, rank)
# ---------------------------------------------------------------------------------------------
@dataclass
class DecompositionNoise:
    colour: Tensor     # (B,3,1,1) D's solid colour, uniform in [0,1]
    gumbel_b: Tensor   # (B,n,H,W) Gumbel(0,1) noise for G_b's component choice
    gumbel_d: Tensor   # (B,n,H,W)
    eps_b: Tensor      # (B,3,H,W) N(0,1) per pixel and channel
    eps_d: Tensor      # (B,3,H,W)

    def distractor(self, height: int, width: int) -> Tensor:
        return self.colour.expand(-1, -1, height, width)  # (B,3,1,1) -> (B,3,H,W)


def noise_seed(seed: int, step: int, rank: int = 0) -> int:
    """A well-mixed 64-bit seed for one (run seed, step, process) triple."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0])


def sample_noise(batch: int, height: int, width: int, *, seed: int, step: int, rank: int = 0,
                 n_components: int = N_COMPONENTS, device: str | torch.device = "cpu") -> DecompositionNoise:
    """Draw on the CPU (same numbers on every device), then move: a few hundred KB per step."""
    g = torch.Generator().manual_seed(noise_seed(seed, step, rank))

    def gumbel() -> Tensor:
        u = torch.rand(batch, n_components, height, width, generator=g).clamp_(1e-10, 1 - 1e-7)
        return -torch.log(-torch.log(u))

    noise = DecompositionNoise(
        colour=torch.rand(batch, 3, 1, 1, generator=g),
        gumbel_b=gumbel(),
        gumbel_d=gumbel(),
        eps_b=torch.randn(batch, 3, height, width, generator=g),
        eps_d=torch.randn(batch, 3, height, width, generator=g),
    )
    return DecompositionNoise(*(t.to(device) for t in
                                (noise.colour, noise.gumbel_b, noise.gumbel_d, noise.eps_b, noise.eps_d)))


def hard_gumbel_softmax(logits: Tensor, gumbel: Tensor, tau: float = TAU) -> Tensor:
    """One-hot over dim 1 in the forward pass, softmax gradient in the backward (straight-through)."""
    soft = F.softmax((logits + gumbel) / tau, dim=1)                             # (B,n,H,W)
    hard = F.one_hot(soft.argmax(dim=1), soft.shape[1]).permute(0, 3, 1, 2).to(soft.dtype)
    return hard - soft.detach() + soft


# ---------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------
def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class LogitNet(nn.Module):
    """U-Net-shaped encoder-decoder: (B,C_in,H,W) -> (B,n,H,W) logits at full size.

    Down: per level a k4 s2 conv then a 3×3 conv (widths 32-64-128, LeakyReLU 0.2); bottleneck three
    3×3 convs at 128; up: 3×3 conv to 4C then pixel shuffle (×2), concatenated with the skip and
    fused by a 3×3 conv; a last pixel shuffle returns to full size before the 3×3 logit head.
    """

    def __init__(self, in_channels: int, n_components: int = N_COMPONENTS,
                 widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.factor = 2 ** len(widths)
        self.downs = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.downs.append(nn.Sequential(nn.Conv2d(c, w, 4, 2, 1), _act(), nn.Conv2d(w, w, 3, 1, 1), _act()))
            c = w
        self.middle = nn.Sequential(*(m for _ in range(3) for m in (nn.Conv2d(c, c, 3, 1, 1), _act())))
        self.ups = nn.ModuleList()
        self.fuses = nn.ModuleList()
        for skip in reversed(widths[:-1]):  # 64, 32: up to the resolution of that skip
            self.ups.append(nn.Sequential(nn.Conv2d(c, 4 * c, 3, 1, 1), nn.PixelShuffle(2), _act()))
            self.fuses.append(nn.Sequential(nn.Conv2d(c + skip, skip, 3, 1, 1), _act()))
            c = skip
        self.last_up = nn.Sequential(nn.Conv2d(c, 4 * c, 3, 1, 1), nn.PixelShuffle(2), _act())
        self.head = nn.Conv2d(c, n_components, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        # zero pad to a multiple of 2^levels so every level halves exactly; cropped back
        x = F.pad(x, (0, -w % self.factor, 0, -h % self.factor))
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        x = self.middle(skips.pop())                      # (B,128,H/8,W/8)
        for up, fuse in zip(self.ups, self.fuses):
            x = fuse(torch.cat([up(x), skips.pop()], 1))  # (B,C/2,2h,2w)
        x = self.head(self.last_up(x))                    # (B,n,H,W)
        return x[..., :h, :w]


@dataclass
class MaskSample:
    mask: Tensor     # (B,3,H,W) mask values in [low, high]
    choice: Tensor   # (B,n,H,W) one-hot component per pixel (straight-through)
    probs: Tensor    # (B,n,H,W) softmax of the bounded logits: the choice's distribution
    raw: Tensor      # (B,n,H,W) the logit net's raw output z, before the tanh bound


class MaskGenerator(nn.Module):
    """Per-pixel hard choice among n Gaussian components; mask values in [low, high] (see module doc)."""

    def __init__(self, in_channels: int, *, low: float, high: float, n_components: int = N_COMPONENTS,
                 sigma_max: float = SIGMA_MAX, tau: float = TAU, logit_bound: float = LOGIT_BOUND) -> None:
        super().__init__()
        if not 0.0 <= low < high:
            raise ValueError(f"mask range must satisfy 0 <= low < high, got [{low}, {high}]")
        self.low, self.high, self.sigma_max, self.tau = low, high, sigma_max, tau
        self.logit_bound = logit_bound
        self.logits = LogitNet(in_channels, n_components)
        quantiles = (torch.arange(n_components, dtype=torch.float32) + 0.5) / n_components
        self.mean_logit = nn.Parameter(torch.logit(quantiles))          # μ_i evenly spread over the range
        self.spread_logit = nn.Parameter(torch.zeros(n_components))     # σ_i = sigma_max / 2 at start

    @property
    def means(self) -> Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(self.mean_logit)   # (n,)

    @property
    def spreads(self) -> Tensor:
        return self.sigma_max * torch.sigmoid(self.spread_logit)                    # (n,)

    def bounded_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(raw z, ℓ = L·tanh(z/L)), both (B,n,H,W)."""
        raw = self.logits(x)
        return raw, self.logit_bound * torch.tanh(raw / self.logit_bound)

    def sample(self, x: Tensor, gumbel: Tensor, eps: Tensor) -> MaskSample:
        raw, logits = self.bounded_logits(x)
        choice = hard_gumbel_softmax(logits, gumbel, self.tau)           # (B,n,H,W) one-hot
        mean = torch.einsum("bnhw,n->bhw", choice, self.means)[:, None]  # (B,1,H,W)
        spread = torch.einsum("bnhw,n->bhw", choice, self.spreads)[:, None]
        mask = (mean + spread * eps).clamp(self.low, self.high)          # (B,3,H,W)
        return MaskSample(mask, choice, F.softmax(logits, dim=1), raw)

    def forward(self, x: Tensor, gumbel: Tensor, eps: Tensor) -> Tensor:
        return self.sample(x, gumbel, eps).mask


def apply_budget(share: Tensor, budget: float) -> Tensor:
    """Scale each image's share map (B,C,H,W) in [0,1] down so that its mean is at most `budget`."""
    mean = share.mean(dim=(1, 2, 3), keepdim=True)                        # (B,1,1,1)
    return share * torch.clamp(budget / mean.clamp_min(1e-8), max=1.0)


@dataclass
class Degradation:
    output: Tensor      # O (B,3,H,W)
    mask_b: Tensor      # M_b (B,3,H,W) in [MASK_FLOOR, 1]
    mask_d: Tensor      # M_d (B,3,H,W) in [0, 1 - M_b]
    distractor: Tensor  # D (B,3,H,W)
    share_d: Tensor | None = None            # m_d (B,3,H,W) in [0, 1] after the budget: M_d = (1 − M_b)·m_d
    samples: tuple[MaskSample, MaskSample] | None = None   # G_b's and G_d's raw samples (before the budget)


class Decomposer(nn.Module):
    """G_b(B) and G_d([B, D]); forward degrades a clean batch. Its state_dict is the checkpoint's
    `generators` entry."""

    def __init__(self, n_components: int = N_COMPONENTS, floor: float = MASK_FLOOR,
                 budget: float = BUDGET) -> None:
        super().__init__()
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget must be in (0, 1], got {budget}")
        self.n_components = n_components
        self.floor, self.budget = floor, budget
        self.gen_b = MaskGenerator(3, low=floor, high=1.0, n_components=n_components)
        self.gen_d = MaskGenerator(6, low=0.0, high=1.0, n_components=n_components)

    def forward(self, clean: Tensor, noise: DecompositionNoise) -> Degradation:
        h, w = clean.shape[-2:]
        distractor = noise.distractor(h, w)
        sample_b = self.gen_b.sample(clean, noise.gumbel_b, noise.eps_b)
        sample_d = self.gen_d.sample(torch.cat([clean, distractor], 1), noise.gumbel_d, noise.eps_d)  # (B,6,H,W) in
        # the budget acts on each mask's share of its range: 1 − M_b over [0, 1 − floor], m_d over [0, 1]
        given_up = apply_budget((1.0 - sample_b.mask) / (1.0 - self.floor), self.budget)
        mask_b = 1.0 - (1.0 - self.floor) * given_up                     # (B,3,H,W) in [floor, 1]
        share_d = apply_budget(sample_d.mask, self.budget)               # m_d in [0, 1]
        mask_d = (1.0 - mask_b) * share_d
        # by the bound the sum already lies in [0, 1]; the clip only guards float rounding
        output = (clean * mask_b + distractor * mask_d).clamp(0.0, 1.0)
        return Degradation(output, mask_b, mask_d, distractor, share_d, (sample_b, sample_d))


def recover_background(degradation: Degradation) -> Tensor:
    """B = (O − D ⊙ M_d) / M_b: exact wherever the bound holds (the inversion the bound promises)."""
    d = degradation
    return (d.output - d.distractor * d.mask_d) / d.mask_b


# ---------------------------------------------------------------------------------------------
# The adversarial generator step
# ---------------------------------------------------------------------------------------------
def _entropy(p: Tensor, dim: int) -> Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim)


def information(probs: Tensor) -> tuple[Tensor, Tensor]:
    """(H of the batch's component histogram, I(component; image | pixel)), both in units of ln n.

    probs (B,n,H,W): per-pixel choice distributions. I(c; image | pixel) = mean over pixels of
    H(mean over images of p) − mean over images and pixels of H(p): zero when every image has the same
    distribution at a pixel, at most ln min(B, n) when the images choose different components there.
    """
    ln_n = math.log(probs.shape[1])
    usage = _entropy(probs.mean(dim=(0, 2, 3)), 0) / ln_n
    dependence = (_entropy(probs.mean(0), 0).mean() - _entropy(probs, 1).mean()) / ln_n
    return usage, dependence


def generator_objective(loss: Tensor, degraded: Degradation, *, entropy_weight: float = ENTROPY_WEIGHT,
                        logit_decay: float = LOGIT_DECAY) -> Tensor:
    """What the generators maximise: the network's L1 + the information term − the raw-logit penalty."""
    objective = loss
    for sample in degraded.samples or ():
        usage, dependence = information(sample.probs)
        objective = objective + entropy_weight * (usage + dependence)
        objective = objective - logit_decay * (sample.raw / LOGIT_BOUND).pow(2).mean()
    return objective


def generator_step(network: nn.Module, decomposer: nn.Module, optimizer: torch.optim.Optimizer,
                   clean: Tensor, noise: DecompositionNoise,
                   autocast: AbstractContextManager | None = None, *,
                   entropy_weight: float = ENTROPY_WEIGHT, logit_decay: float = LOGIT_DECAY) -> Tensor:
    """One ascent step of the generators with R frozen (see `generator_objective`); returns the network's
    L1 (before the step), a 0-d tensor on the device (reading it would wait for the step).

    R's parameters get requires_grad False for the step (restored after), so they receive no
    gradient, but O is NOT detached: the gradient reaches the generators through R.
    `decomposer` may be a DDP wrapper of a `Decomposer`; `network` should be the unwrapped module.
    `autocast` (e.g. bf16 on CUDA) wraps only the network's forward; the generators stay float32.
    The generators' gradients are left in place after the step (for monitoring, e.g. `logit_gradient_norms`).
    """
    frozen = [p for p in network.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        optimizer.zero_grad(set_to_none=True)
        degraded = decomposer(clean, noise)
        with autocast if autocast is not None else nullcontext():
            restored = network(degraded.output)
        loss = F.l1_loss(restored.float(), clean)
        objective = generator_objective(loss, degraded, entropy_weight=entropy_weight, logit_decay=logit_decay)
        (-objective).backward()   # maximise
        optimizer.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return loss.detach()


def logit_gradient_norms(decomposer: Decomposer) -> dict[str, Tensor]:
    """L2 norm of the gradient held by each logit network (after `generator_step`), 0-d tensors; 0 where none."""
    norms = {}
    for name, gen in (("grad_b", decomposer.gen_b), ("grad_d", decomposer.gen_d)):
        grads = [p.grad.detach().flatten() for p in gen.logits.parameters() if p.grad is not None]
        norms[name] = torch.cat(grads).norm() if grads else torch.zeros(())
    return norms


@torch.no_grad()
def degrade(decomposer: nn.Module, clean: Tensor, noise: DecompositionNoise) -> Tensor:
    """The network's input for its own step: O from the current generators, no graph kept."""
    return decomposer(clean, noise).output


def make_generator_optimizer(decomposer: nn.Module, lr: float = 2e-4) -> torch.optim.Adam:
    return torch.optim.Adam(decomposer.parameters(), lr=lr)


__all__ = [
    "BUDGET", "DecompositionNoise", "Decomposer", "Degradation", "ENTROPY_WEIGHT", "LOGIT_BOUND", "LOGIT_DECAY",
    "LogitNet", "MaskGenerator", "MaskSample", "MASK_FLOOR", "N_COMPONENTS", "SIGMA_MAX", "TAU", "apply_budget",
    "degrade", "generator_objective", "generator_step", "hard_gumbel_softmax", "information",
    "logit_gradient_norms", "make_generator_optimizer", "noise_seed", "recover_background", "sample_noise",
]
