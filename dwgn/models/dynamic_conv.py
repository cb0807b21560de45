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
        # the g x g identity that places the grouped 1x1 on the diagonal blocks (not a parameter, not saved)
        self.register_buffer("group_eye", torch.eye(groups), persistent=False)

    def forward(self, pooled: Tensor) -> Tensor:
        return _glgf_stack(pooled, (self,)).view(pooled.shape[0], -1)                           # (B, N)


def _glgf_stack(pooled: Tensor, glgfs: tuple[GLGF, ...]) -> Tensor:
    """Run R GLGFs of one pooled input (B, C, 1, 1) through _GLGFStack: (B, C, N_1 / C), see there for R = 2.

    GLGF is a few small products on pooled vectors: run in float32 whatever the autocast, in one autograd
    function with a hand-written backward (6 aten ops forward, 13 backward for one GLGF)."""
    b, c = pooled.shape[:2]
    heads = [w for m in glgfs for w in (m.per_channel.weight.view(c, -1), m.shared.weight.view(c))]
    with torch.autocast(pooled.device.type, enabled=False):
        (out,) = _GLGFStack.apply(pooled.float().view(b, c), *_mixing_weights(glgfs), *heads)
    return out


def _mixing_weights(glgfs: tuple[GLGF, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """eye (g, g), local (R, g, C/g, C/g), squeeze (R, g, C/g), expand (R, C, g) of R GLGFs with the same C and g."""
    g = glgfs[0].squeeze.out_channels
    c = glgfs[0].local.in_channels
    r, k = len(glgfs), c // g
    if r == 1:
        m = glgfs[0]
        return m.group_eye, m.local.weight.view(1, g, k, k), m.squeeze.weight.view(1, g, k), m.expand.weight.view(1, c, g)
    return (glgfs[0].group_eye, torch.stack([m.local.weight.view(g, k, k) for m in glgfs]),
            torch.stack([m.squeeze.weight.view(g, k) for m in glgfs]),
            torch.stack([m.expand.weight.view(c, g) for m in glgfs]))


class _GLGFStack(torch.autograd.Function):
    """R GLGFs that read the same pooled vector p (B, C), with a hand-written backward.

    The first stage is linear in p, so it is one dense matrix per GLGF: M = blockdiag(local) + expand . squeeze
    (C, C) with M[c, l C/g + m] = expand[c, l] squeeze[l, m] + [c // (C/g) = l] local[l, c % (C/g), m], and
    z_r = sigmoid(p M_r^T) for all R at once (one product). Head r: out_r[b, c, :] = z_r[b, c] per_channel_r[c]
    + z_r[b] . shared_r. R = 1: one GLGF, output out_1. R = 2: the grouped 3x3's kernel generator and its
    channel compensation (head 2 of width 1), output out_1 * out_2, the kernel with the per-channel gain folded in.
    Inputs: p, eye (g, g) the identity, local (R, g, k, k), squeeze (R, g, k), expand (R, C, g), per_channel_1
    (C, N_1 / C), shared_1 (C), and for R = 2 the gain's per_channel_2 (C, 1), shared_2 (C). Output: a 1-tuple,
    out_1 (B, C, N_1 / C) or the folded kernel (B, C, N_1 / C).
    """

    @staticmethod
    def forward(ctx, p: Tensor, eye: Tensor, local: Tensor, squeeze: Tensor, expand: Tensor, per_channel: Tensor, shared: Tensor,
                gain_per_channel: Tensor | None = None, gain_shared: Tensor | None = None):
        r, g, k, _ = local.shape
        heads = (per_channel, shared, gain_per_channel, gain_shared)
        c = g * k
        outer = expand.view(r, g, k, g, 1) * squeeze.view(r, 1, 1, g, k)                       # (R, g, k, g, k)
        # plus local on the diagonal blocks: mixing[r, i, j, l, m] += [i = l] local[r, i, j, m]
        mixing = torch.addcmul(outer, local.view(r, g, k, 1, k), eye.view(1, g, 1, g, 1)).view(r * c, c)
        z = torch.sigmoid(torch.mm(p, mixing.t()))                                              # (B, R C)
        outs = []
        for i in range(r):
            zi, weight, bias = z[:, i * c:(i + 1) * c], heads[2 * i], heads[2 * i + 1]
            outs.append(torch.addcmul(torch.mv(zi, bias).view(-1, 1, 1), zi.unsqueeze(-1), weight))
        ctx.save_for_backward(p, squeeze, expand, mixing, z, *heads[:2 * r], *(outs if r == 2 else ()))
        return (outs[0] * outs[1],) if r == 2 else (outs[0],)                                   # (B, C, N_1 / C)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        p, squeeze, expand, mixing, z, *rest = ctx.saved_tensors
        r, g, k = squeeze.shape
        b, c = p.shape
        heads = rest[:2 * r]
        if r == 2:
            gen, gain = rest[2 * r:]
            grad = grads[0].to(z.dtype)
            grads = (grad * gain, torch.bmm(grad.view(b * c, 1, -1), gen.view(b * c, -1, 1)).view(b, c, 1))
        grad_heads, grad_z = [], []
        for i in range(r):
            zi, per_channel, shared = z[:, i * c:(i + 1) * c], heads[2 * i], heads[2 * i + 1]
            grad = grads[i].to(z.dtype)                                                         # (B, C, N_r / C)
            total = grad.sum(dim=(1, 2))                                                        # (B,): shared term
            grad_heads.append(torch.bmm(grad.permute(1, 2, 0), zi.t().unsqueeze(-1)).view(c, -1))
            grad_heads.append(torch.mv(zi.t(), total))
            grad_z.append(torch.addr(torch.bmm(grad.transpose(0, 1), per_channel.unsqueeze(-1)).view(c, b).t(),
                                     total, shared))                                            # (B, C)
        grad_pre = torch.ops.aten.sigmoid_backward(torch.cat(grad_z, dim=1) if r > 1 else grad_z[0], z)
        grad_p = torch.mm(grad_pre, mixing)                                                     # (B, C)
        # d mixing = grad_pre^T p is never formed (R C^2 values): its three parts as products over the batch
        grad_pre = grad_pre.view(b, r, c)
        pg = p.view(b, g, k)
        grad_local = (grad_pre.view(b, r, g, k, 1) * pg.view(b, 1, g, 1, k)).sum(dim=0)         # (R, g, k, k)
        squeezed = torch.bmm(pg.transpose(0, 1), squeeze.permute(1, 2, 0))                      # (g, B, R)
        grad_expand = torch.bmm(grad_pre.permute(1, 2, 0), squeezed.permute(2, 1, 0))            # (R, C, g)
        through_expand = torch.bmm(grad_pre.transpose(0, 1), expand)                            # (R, B, g)
        grad_squeeze = (through_expand.transpose(0, 1).unsqueeze(-1) * pg.unsqueeze(1)).sum(dim=0)  # (R, g, k)
        return grad_p, None, grad_local, grad_squeeze, grad_expand, *grad_heads


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
        # one dtype inside the autograd function: autocast's if it is on, else the input's
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        with torch.autocast(device, enabled=False):
            return _SpatiallyCompensatedProduct.apply(kernel.to(dtype), x.to(dtype), self.spatial1.weight.to(dtype),
                                                      self.spatial2.weight.to(dtype))


class _SpatiallyCompensatedProduct(torch.autograd.Function):
    """out = gate * (K x) per image, gate = conv2(sigmoid(conv1(mean_o K x))), with a hand-written backward.

    Both steps are linear in y = K x, so they are done on the C_in-channel input: mean_o y = (mean_o K) x and
    gate * (K x) = K (gate * x); the C_out-channel output is formed once, by the last product. The two 1->1 convs
    run as one depthwise conv over the batch (batch as channels): far faster on the CPU than over B images.
    """

    @staticmethod
    def forward(ctx, kernel: Tensor, x: Tensor, weight1: Tensor, weight2: Tensor) -> Tensor:
        b, c_out, c_in = kernel.shape
        h, w = x.shape[-2:]
        flat = x.reshape(b, c_in, h * w)                                                           # (B, C_in, HW)
        mean = kernel.mean(dim=1, keepdim=True)                                                    # (B, 1, C_in)
        m = torch.bmm(mean, flat).view(1, b, h, w)                                                 # (1, B, H, W)
        a = torch.sigmoid(F.conv2d(m, weight1.expand(b, 1, 3, 3), padding=1, groups=b))
        gate = F.conv2d(a, weight2.expand(b, 1, 3, 3), padding=1, groups=b).view(b, 1, h * w)
        gated = flat * gate                                                                        # (B, C_in, HW)
        ctx.save_for_backward(kernel, flat, mean, m, a, gate, gated, weight1, weight2)
        return torch.bmm(kernel, gated).view(b, c_out, h, w)                                       # (B, C_out, H, W)

    @staticmethod
    def backward(ctx, grad: Tensor):
        kernel, flat, mean, m, a, gate, gated, weight1, weight2 = ctx.saved_tensors
        b, c_out, c_in = kernel.shape
        hw = flat.shape[-1]
        grad = grad.reshape(b, c_out, hw)
        grad_gated = torch.bmm(kernel.transpose(1, 2), grad)                                       # (B, C_in, HW)
        grad_gate = (grad_gated * flat).sum(dim=1).view(1, b, *m.shape[-2:])                       # (1, B, H, W)
        conv = dict(stride=[1, 1], padding=[1, 1], dilation=[1, 1], transposed=False, output_padding=[0, 0], groups=b)
        grad_a, grad_w2, _ = torch.ops.aten.convolution_backward(grad_gate, a, weight2.expand(b, 1, 3, 3), None,
                                                                 output_mask=[True, True, False], **conv)
        grad_pre = torch.ops.aten.sigmoid_backward(grad_a, a)
        grad_m, grad_w1, _ = torch.ops.aten.convolution_backward(grad_pre, m, weight1.expand(b, 1, 3, 3), None,
                                                                 output_mask=[True, True, False], **conv)
        grad_m = grad_m.view(b, 1, hw)
        grad_mean = torch.bmm(grad_m, flat.transpose(1, 2))                                        # (B, 1, C_in)
        # d kernel: from the product, plus the mean's share 1/C_out on every output row
        grad_kernel = torch.baddbmm(grad_mean.expand(b, c_out, c_in), grad, gated.transpose(1, 2), beta=1 / c_out)
        grad_x = torch.baddbmm(grad_gated * gate, mean.transpose(1, 2), grad_m)                    # (B, C_in, HW)
        return (grad_kernel, grad_x.view(b, c_in, *m.shape[-2:]), grad_w1.sum(0, keepdim=True),
                grad_w2.sum(0, keepdim=True))


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
        if self.generator._forward_hooks or self.generator._forward_pre_hooks or self.compensation._forward_hooks \
                or self.compensation._forward_pre_hooks:
            # someone records the generated kernels (dwgn.analysis): call the modules so that their hooks run
            gain = self.compensation(pooled).view(b, c, 1, 1, 1)
            kernel = self.generator(pooled).view(b, c, c // self.groups, 3, 3) * gain
        else:
            # both GLGFs read the same pooled vector: one fused function, gain folded in (same values)
            kernel = _glgf_stack(pooled, (self.generator, self.compensation))
        kernel = kernel.reshape(b * c, c // self.groups, 3, 3)
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
