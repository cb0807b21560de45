"""Dynamic-weights convolutions (docs/DESIGN.md §1.3 GLGF, §1.4 the two weight-adaptive convolutions).

* ``GlobalPool`` -- the global average pool, the only place where the network looks at the whole image.
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
    """Grouped local-global feature mapping: pooled input (B, C, 1, 1) -> (B, N) generated weights.

    z = sigmoid(A(p) + E(S(p)));  w = P(z) + s(z) 1_N  (docs/DESIGN.md §1.3), no biases.
    Parameters: C^2/g + 2 C + g C + N. Output j of the per-channel map P depends only on z[j // (N / C)], so
    each input channel's statistic generates its own block of N / C weights. On a 1x1 map the grouped 1x1
    convs are matrix products, computed as such; it runs in float32 (float64 for a float64 input) also under
    autocast.
    """

    def __init__(self, in_channels: int, num_weights: int, groups: int = 16) -> None:
        super().__init__()
        if in_channels % groups or num_weights % in_channels:
            raise ValueError(
                f"GLGF needs in_channels ({in_channels}) divisible by groups ({groups}) and num_weights "
                f"({num_weights}) divisible by in_channels; change width/head_dim/glgf_groups"
            )
        self.groups = groups
        self.local = nn.Conv2d(in_channels, in_channels, 1, groups=groups, bias=False)      # A: C -> C, g groups
        self.squeeze = nn.Conv2d(in_channels, groups, 1, groups=groups, bias=False)         # S: C -> g, g groups
        self.expand = nn.Conv2d(groups, in_channels, 1, bias=False)                         # E: g -> C
        self.per_channel = nn.Conv2d(in_channels, num_weights, 1, groups=in_channels, bias=False)  # P: C -> N
        self.shared = nn.Conv2d(in_channels, 1, 1, bias=False)                              # s: C -> 1

    def forward(self, pooled: Tensor) -> Tensor:
        b, c = pooled.shape[:2]
        g, k = self.groups, c // self.groups
        with torch.autocast(pooled.device.type, enabled=False):
            dtype = torch.float64 if pooled.dtype == torch.float64 else torch.float32
            p = pooled.view(b, g, k).to(dtype)                                                # p: (B, g, C/g)
            local = torch.einsum("bgi,goi->bgo", p, self.local.weight.view(g, k, k))          # A(p): (B, g, C/g)
            squeezed = torch.einsum("bgi,gi->bg", p, self.squeeze.weight.view(g, k))          # S(p): (B, g)
            z = torch.sigmoid(local.reshape(b, c) + squeezed @ self.expand.weight.view(c, g).t())  # (B, C)
            per_channel = z.unsqueeze(-1) * self.per_channel.weight.view(c, -1)              # P(z): (B, C, N/C)
            return per_channel.flatten(1) + z @ self.shared.weight.view(1, c).t()          # + s(z): (B, N)


class WeightAdaptiveConv1x1(nn.Module):
    """1x1 conv C_in -> C_out with a per-image kernel K, then spatial compensation (a 1-channel gate):

    y = K u;  m = mean over the C_out channels of y;  y * conv_3'(sigmoid(conv_3(m))).
    """

    def __init__(self, in_channels: int, out_channels: int, glgf_groups: int = 16) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.pool = GlobalPool()
        self.generator = GLGF(in_channels, out_channels * in_channels, glgf_groups)
        self.spatial1 = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.spatial2 = nn.Conv2d(1, 1, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c_in, h, w = x.shape
        # the generated vector read row-major as (C_out, C_in), the authors' layout: weight j = K[j // C_in, j % C_in]
        # (a transposed (C_in, C_out) reading is a different function)
        kernel = self.generator(self.pool(x)).view(b, self.out_channels, c_in).to(x.dtype)   # K: (B, C_out, C_in)
        u = x.reshape(b, c_in, h * w)
        y = torch.bmm(kernel, u).view(b, -1, h, w)                                           # (B, C_out, H, W)
        # the mean of y over its C_out channels is (the mean of K's rows) u: read from u, C_out / C_in times smaller
        m = torch.bmm(kernel.mean(dim=1, keepdim=True), u).view(b, 1, h, w)                # (B, 1, H, W)
        return y * self.spatial2(torch.sigmoid(self.spatial1(m)))


class WeightAdaptiveGroupConv3x3(nn.Module):
    """Grouped 3x3 conv on `channels` with a per-image kernel, then channel compensation (a linear gain per
    output channel from a second GLGF on the same pooled input)."""

    def __init__(self, channels: int, groups: int, glgf_groups: int = 16) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        self.channels, self.groups = channels, groups
        self.pool = GlobalPool()
        self.generator = GLGF(channels, 9 * channels * channels // groups, glgf_groups)
        self.compensation = GLGF(channels, channels, glgf_groups)

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        pooled = self.pool(x)                                                                # (B, C, 1, 1)
        kernel = self.generator(pooled).view(b, c, c // self.groups, 3, 3)  # read row-major like a Conv2d weight
        gain = self.compensation(pooled).view(b, c, 1, 1, 1)                                 # (B, C, 1, 1, 1)
        # conv(x) * gain[o] on output channel o = conv with filter o scaled: the kernel is far smaller than the output
        return per_image_group_conv3x3(x, kernel * gain, self.groups)


def per_image_group_conv3x3(x: Tensor, kernel: Tensor, groups: int, via: str | None = None) -> Tensor:
    """Grouped 3x3 conv (padding 1) of x (B, C, H, W) where image i has its own kernel[i] (C, C / groups, 3, 3).

    Two computations of the same function (`via`; None picks by device):
    * "conv" (CPU): one grouped conv with the batch folded into the groups (B * groups groups);
    * "bmm" (CUDA): im2col (F.unfold) and one batched product per (image, group). cuDNN runs a conv with thousands
      of groups as one small kernel per group (H100, bf16: 12,288 launches in one training step of the `small`
      network); the batched product is a few large kernels (benchmarks/gpu_group_conv.py)."""
    b, c, h, w = x.shape
    per = c // groups
    if (via or ("bmm" if x.is_cuda else "conv")) == "conv":
        # fold the batch into the groups: image i only ever meets its own kernel
        out = F.conv2d(x.reshape(1, b * c, h, w), kernel.reshape(b * c, per, 3, 3).to(x.dtype), padding=1,
                       groups=b * groups)
        return out.view(b, c, h, w)
    cols = F.unfold(x, 3, padding=1).view(b * groups, per * 9, h * w)  # rows: (input channel, tap) per group
    out = torch.bmm(kernel.reshape(b * groups, per, per * 9).to(cols.dtype), cols)
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
