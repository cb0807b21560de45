"""Dynamic-weights convolutions (docs/DESIGN.md §1.3 GLGF, §1.4 the two weight-adaptive convolutions).

* ``GLGF`` -- the lightweight mapping layer that turns a pooled feature vector into N weights per image.
* ``WeightAdaptiveConv1x1`` -- a 1x1 conv whose kernel GLGF generates per image, with spatial compensation.
* ``WeightAdaptiveGroupConv3x3`` -- a grouped 3x3 conv whose kernel GLGF generates per image, with channel
  compensation.
* ``conv1x1`` / ``group_conv3x3`` -- pick the weight-adaptive conv or its static twin.

Every generated kernel is applied to the whole batch in one call: the 1x1 as a batched matmul, the 3x3 by
folding the batch into the groups of a single conv. Nothing depends on the batch size, so an image gives the
same output alone or in a batch (the authors' code skips the spatial compensation at batch 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GlobalPool(nn.Module):
    """Global average pool, (B, C, H, W) -> (B, C, 1, 1), that can be recorded or replaced.

    It is the only place where the network looks at the whole image, so tiled inference records these
    values on the whole image and replays them on each tile (see ``network.recorded_pools``/``fixed_pools``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fixed: Tensor | None = None      # replayed value, (1 or B, C, 1, 1)
        self.record: list[Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.fixed is not None:
            return self.fixed.to(dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1, -1)
        pooled = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        if self.record is not None:
            self.record.append(pooled.detach())
        return pooled


class GLGF(nn.Module):
    """Grouped local-global feature mapping: pooled input (B, C_in, 1, 1) -> (B, N) generated weights.

    z = sigmoid(G_{C->C}(p) + W_{g->C}(G_{C->g}(p)));  w = per-channel_{C->N}(z) + W_{C->1}(z).
    Parameters: C_in^2/g + 2 C_in + g C_in + N.  Output channel j of the per-channel map depends only on
    z[j // (N / C_in)], so each input channel's statistic generates its own block of N / C_in weights.
    """

    def __init__(self, in_channels: int, num_weights: int, groups: int = 16) -> None:
        super().__init__()
        if in_channels % groups or num_weights % in_channels:
            raise ValueError(
                f"GLGF needs in_channels ({in_channels}) divisible by groups ({groups}) and num_weights "
                f"({num_weights}) divisible by in_channels; change width/head_dim/glgf_groups"
            )
        self.local = nn.Conv2d(in_channels, in_channels, 1, groups=groups, bias=False)
        self.squeeze = nn.Conv2d(in_channels, groups, 1, groups=groups, bias=False)
        self.expand = nn.Conv2d(groups, in_channels, 1, bias=False)
        self.per_channel = nn.Conv2d(in_channels, num_weights, 1, groups=in_channels, bias=False)
        self.shared = nn.Conv2d(in_channels, 1, 1, bias=False)

    def forward(self, pooled: Tensor) -> Tensor:
        # The 1x1 convs on a 1x1 map, written as matmuls on their weights: PyTorch's grouped conv loops over
        # groups on the CPU (thousands of tiny calls per step), these are a handful of batched products.
        b, c = pooled.shape[:2]
        g = self.squeeze.out_channels
        p = pooled.view(b, g, c // g, 1)                                                      # (B, g, C/g, 1)
        local = torch.matmul(self.local.weight.view(g, c // g, c // g), p).view(b, c)         # grouped C -> C
        squeezed = torch.matmul(self.squeeze.weight.view(g, 1, c // g), p).view(b, g)         # grouped C -> g
        z = torch.sigmoid(local + squeezed @ self.expand.weight.view(c, g).t())               # (B, C)
        per_channel = z[:, :, None] * self.per_channel.weight.view(c, -1)                     # (B, C, N/C)
        return per_channel.flatten(1) + z @ self.shared.weight.view(1, c).t()                 # (B, N)


class WeightAdaptiveConv1x1(nn.Module):
    """1x1 conv C_in -> C_out with a per-image kernel, then spatial compensation (a 1-channel gate)."""

    def __init__(self, in_channels: int, out_channels: int, glgf_groups: int = 16) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.pool = GlobalPool()
        self.generator = GLGF(in_channels, out_channels * in_channels, glgf_groups)
        self.spatial1 = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.spatial2 = nn.Conv2d(1, 1, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        # the generated vector is read row-major as (C_out, C_in), the authors' layout: weight j is
        # kernel[j // C_in, j % C_in] (a transposed (C_in, C_out) reading is a different function)
        kernel = self.generator(self.pool(x)).view(b, self.out_channels, self.in_channels)
        x = x.reshape(b, self.in_channels, h * w)
        # Spatial compensation gates the output y = K x per pixel: gate(mean_o y) * y. Both steps are linear
        # in y, so they are done on the C_in-channel input instead: mean_o y = (mean_o K) x, and
        # gate * (K x) = K (gate * x). Same function; the C_out-channel output is formed once, by the matmul.
        mean = torch.matmul(kernel.mean(dim=1, keepdim=True), x).view(1, b, h, w)  # (1, B, H, W): batch as channels
        # one depthwise conv over the batch: far faster on the CPU than a 1-channel conv over B images
        gate = F.conv2d(torch.sigmoid(F.conv2d(mean, self.spatial1.weight.expand(b, 1, 3, 3), padding=1, groups=b)),
                        self.spatial2.weight.expand(b, 1, 3, 3), padding=1, groups=b)
        out = torch.matmul(kernel, x * gate.view(b, 1, h * w))  # (B, C_out, C_in) @ (B, C_in, HW)
        return out.view(b, self.out_channels, h, w)


class WeightAdaptiveGroupConv3x3(nn.Module):
    """Grouped 3x3 conv on `channels` with a per-image kernel, then channel compensation (a linear gate)."""

    def __init__(self, channels: int, groups: int, glgf_groups: int = 16) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        self.channels, self.groups = channels, groups
        self.pool = GlobalPool()
        self.generator = GLGF(channels, 9 * channels * channels // groups, glgf_groups)
        self.compensation = GLGF(channels, channels, glgf_groups)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        pooled = self.pool(x)
        # channel compensation scales output channel o by a per-image gain: folded into filter o of the kernel
        gain = self.compensation(pooled).view(b, c, 1, 1, 1)
        kernel = (self.generator(pooled).view(b, c, c // self.groups, 3, 3) * gain).view(b * c, c // self.groups, 3, 3)
        # fold the batch into the groups: image i only ever meets its own kernel
        out = F.conv2d(x.reshape(1, b * c, h, w), kernel, padding=1, groups=b * self.groups)
        return out.view(b, c, h, w)


def conv1x1(in_channels: int, out_channels: int, dynamic: bool, glgf_groups: int = 16) -> nn.Module:
    """Weight-adaptive 1x1 conv, or its static twin (no bias) when ``dynamic`` is False."""
    if dynamic:
        return WeightAdaptiveConv1x1(in_channels, out_channels, glgf_groups)
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


def group_conv3x3(channels: int, groups: int, dynamic: bool, glgf_groups: int = 16) -> nn.Module:
    """Weight-adaptive grouped 3x3 conv, or its static twin (no bias) when ``dynamic`` is False."""
    if dynamic:
        return WeightAdaptiveGroupConv3x3(channels, groups, glgf_groups)
    return nn.Conv2d(channels, channels, 3, padding=1, groups=groups, bias=False)
