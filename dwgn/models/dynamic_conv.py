"""Dynamic-weights convolutions (docs/DESIGN.md §1.3 GLGF, §1.4 the two weight-adaptive convolutions).

* ``GLGF`` -- the lightweight mapping layer that turns a pooled feature vector into N weights per image.
* ``WeightAdaptiveConv1x1`` -- a 1x1 conv whose kernel GLGF generates per image, with spatial compensation.
* ``WeightAdaptiveGroupConv3x3`` -- a grouped 3x3 conv whose kernel GLGF generates per image, with channel
  compensation.
* ``conv1x1`` / ``group_conv3x3`` -- pick the weight-adaptive conv or its static twin.
* ``hoisted_weights`` -- the parameter-only terms of all of a network's weight-adaptive convs, made once per
  forward (docs/DESIGN.md §1.10); the autograd functions below have hand-written backwards.

Every generated kernel is applied to the whole batch in one call: the 1x1 as a batched matmul, the 3x3 by
folding the batch into the groups of a single conv. Nothing depends on the batch size, so an image gives the
same output alone or in a batch (the authors' code skips the spatial compensation at batch 1).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

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

    @property
    def plain(self) -> bool:
        """Neither recording, replaying nor hooked: a plain mean, which a consumer may take itself (the GLGF
        functions average their input inside)."""
        return self.fixed is None and self.record is None and not (self._forward_hooks or self._forward_pre_hooks)

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


def _glgf_stack(source: Tensor, glgfs: tuple[GLGF, ...], mixing: Tensor | None = None,
                gain: Tensor | None = None) -> Tensor:
    """Run one GLGF, or a grouped 3x3's generator and compensation, on the global average of `source` through
    _GLGFStack: (B, C, N_1 / C), see there.

    `source`: the feature map (B, C, H, W), averaged inside the function (its gradient is then one product), or
    a pooled (B, C, 1, 1) when a GlobalPool records or replays (tiled inference). `mixing` (R C, C) and `gain`
    (C, C): the parameter-only matrices if the caller made them already (``hoisted_weights``), else they are
    made here."""
    c = source.shape[1]
    with torch.autocast(source.device.type, enabled=False):
        mixing, heads = _generator_inputs(glgfs, c, mixing, gain)
        return _GLGFStack.apply(source, mixing, *heads)


def _generator_inputs(glgfs: tuple[GLGF, ...], c: int, mixing: Tensor | None, gain: Tensor | None):
    """(mixing (R C, C), [per_channel, shared(, gain)]) for _GLGFStack; the matrices made here unless given."""
    first = glgfs[0]
    heads = [first.per_channel.weight.view(c, -1), first.shared.weight.view(c)]
    if mixing is None:
        mixing = mixing_matrices(glgfs).view(-1, c)
    if len(glgfs) == 2:
        heads.append(gain_matrices(glgfs[1:])[0] if gain is None else gain)
    return mixing, heads


def mixing_matrices(glgfs: tuple[GLGF, ...] | list[GLGF]) -> Tensor:
    """The first stage of R GLGFs with the same C and g as dense matrices: (R, C, C) (_MixingMatrices).

    GLGF's first stage is linear in the pooled vector p: z = sigmoid(p M^T), M = blockdiag(local) + expand . squeeze,
    M[c, l C/g + m] = expand[c, l] squeeze[l, m] + [c // (C/g) = l] local[l, c % (C/g), m]. M depends on the
    parameters only, so the network makes all its matrices of one shape at once (``hoisted_weights``)."""
    first = glgfs[0]
    g, c = first.squeeze.out_channels, first.local.in_channels
    r, k = len(glgfs), c // g
    if r == 1:
        local, squeeze, expand = first.local.weight, first.squeeze.weight, first.expand.weight
    else:
        local = torch.stack([m.local.weight for m in glgfs])
        squeeze = torch.stack([m.squeeze.weight for m in glgfs])
        expand = torch.stack([m.expand.weight for m in glgfs])
    return _MixingMatrices.apply(local.view(r, g, k, k), squeeze.view(r, g, k), expand.view(r, c, g),
                                 first.group_eye.to(local.dtype))


class _MixingMatrices(torch.autograd.Function):
    """M = blockdiag(local) + expand . squeeze for R GLGFs, (R, C, C), with a hand-written backward (5 aten ops:
    the diagonal blocks read once as a strided view, two weighted sums)."""

    @staticmethod
    def forward(ctx, local: Tensor, squeeze: Tensor, expand: Tensor, eye: Tensor) -> Tensor:
        r, g, k, _ = local.shape
        outer = expand.view(r, g, k, g, 1) * squeeze.view(r, 1, 1, g, k)                       # (R, g, k, g, k)
        ctx.save_for_backward(squeeze, expand)
        # plus local on the diagonal blocks: mixing[r, i, j, l, m] += [i = l] local[r, i, j, m]
        return torch.addcmul(outer, local.view(r, g, k, 1, k), eye.view(1, g, 1, g, 1)).view(r, g * k, g * k)

    @staticmethod
    def backward(ctx, grad: Tensor):
        squeeze, expand = ctx.saved_tensors
        r, g, k = squeeze.shape
        c = g * k
        grad = grad.contiguous()
        # d local[r, i, j, m] = grad[r, i k + j, i k + m]
        grad_local = grad.as_strided((r, g, k, k), (c * c, k * c + k, c, 1)).contiguous()
        blocks = grad.view(r, c, g, k)                                                          # [r, c, l, m]
        grad_expand = (blocks * squeeze.view(r, 1, g, k)).sum(dim=-1)                           # (R, C, g)
        grad_squeeze = (blocks * expand.view(r, c, g, 1)).sum(dim=1)                            # (R, g, k)
        return grad_local, grad_squeeze, grad_expand, None


def gain_matrices(glgfs: tuple[GLGF, ...] | list[GLGF]) -> Tensor:
    """The second stage of R one-weight-per-channel GLGFs (channel compensation) as matrices: (R, C, C).

    With N = C, out[b, c] = z[b, c] per_channel[c] + z[b] . shared = (z G)[b, c] for G = diag(per_channel) +
    shared 1^T: one product instead of two, and G depends on the parameters only (``hoisted_weights``)."""
    c = glgfs[0].local.in_channels
    if any(m.per_channel.weight.shape[0] != c for m in glgfs):
        raise ValueError("gain_matrices needs GLGFs with one generated weight per channel (N = C)")
    per_channel = torch.stack([m.per_channel.weight.view(c) for m in glgfs])                    # (R, C)
    shared = torch.stack([m.shared.weight.view(c) for m in glgfs])                              # (R, C)
    return _GainMatrices.apply(per_channel, shared)


def cached_constant(cache: dict, key: tuple, make: Callable[[], Tensor]) -> Tensor:
    """cache[key], made by make() on first use: constant tensors (identities, masks) are made once, not in every
    forward. Under torch.compile, or when make() returns a traced stand-in (torch.export, FX), nothing is kept:
    such a tensor lives in one trace only."""
    if key in cache:
        return cache[key]
    compiling = torch.compiler.is_compiling()
    # A kept constant must serve training too, and a tensor made in inference mode cannot be saved for backward;
    # `compiling` is checked first because dynamo cannot trace is_inference_mode_enabled().
    if not compiling and torch.is_inference_mode_enabled():
        with torch.inference_mode(False):
            value = make()
    else:
        value = make()
    if type(value) is torch.Tensor and not compiling:
        cache[key] = value
    return value


_EYES: dict[tuple, Tensor] = {}


def _eye(c: int, like: Tensor) -> Tensor:
    """The C x C identity, made once per size, device and dtype."""
    return cached_constant(_EYES, (c, like.device, like.dtype),
                           lambda: torch.eye(c, dtype=like.dtype, device=like.device))


class _GainMatrices(torch.autograd.Function):
    """G = diag(per_channel) + shared 1^T for R GLGFs, (R, C, C), with a hand-written backward (2 aten ops)."""

    @staticmethod
    def forward(ctx, per_channel: Tensor, shared: Tensor) -> Tensor:
        r, c = per_channel.shape
        return torch.addcmul(shared.view(r, c, 1), _eye(c, per_channel), per_channel.view(r, 1, c))

    @staticmethod
    def backward(ctx, grad: Tensor):
        r, c, _ = grad.shape
        grad = grad.contiguous()
        diagonal = grad.as_strided((r, c), (c * c, c + 1)).contiguous()
        return diagonal, grad.sum(dim=-1)


def _generate(x: Tensor, mixing: Tensor, per_channel: Tensor, shared: Tensor, gain: Tensor | None):
    """GLGF forward (see _GLGFStack): p, z, the generator head's output, the gains (or None), the kernel."""
    c = x.shape[1]
    # float32 (float64 for a float64 x); a Python choice: torch.promote_types would be an aten call per GLGF
    p = x.mean(dim=(2, 3), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)  # (B, C)
    z = torch.sigmoid(torch.mm(p, mixing.t()))                                                  # (B, rows)
    z1 = z[:, :c]
    out = torch.addcmul(torch.mv(z1, shared).view(-1, 1, 1), z1.unsqueeze(-1), per_channel)      # (B, C, N / C)
    if gain is None:
        return p, z, out, None, out
    gains = torch.mm(z[:, c:2 * c], gain)                                                       # (B, C)
    return p, z, out, gains, out * gains.unsqueeze(-1)


def _generate_backward(grad: Tensor, grad_extra: Tensor | None, p: Tensor, z: Tensor, per_channel: Tensor,
                       shared: Tensor, gain: Tensor | None, out: Tensor, gains: Tensor | None):
    """GLGF backward from d kernel (B, C, N / C) and d extra rows (B, q) or None: (d pre-sigmoid (B, rows),
    [d per_channel, d shared(, d gain)])."""
    b, c = p.shape
    grad = grad.to(z.dtype)
    if gain is not None:
        grad_gains = torch.bmm(grad.view(b * c, 1, -1), out.view(b * c, -1, 1)).view(b, c)      # (B, C)
        grad = grad * gains.unsqueeze(-1)
    z1 = z[:, :c]
    total = grad.sum(dim=(1, 2))                                                                # (B,): shared term
    grad_params = [torch.bmm(grad.permute(1, 2, 0), z1.t().unsqueeze(-1)).view(c, -1), torch.mv(z1.t(), total)]
    grad_z = [torch.addr(torch.bmm(grad.transpose(0, 1), per_channel.unsqueeze(-1)).view(c, b).t(), total, shared)]
    if gain is not None:
        grad_params.append(torch.mm(z[:, c:2 * c].t(), grad_gains))                             # d gain (C, C)
        grad_z.append(torch.mm(grad_gains, gain.t()))
    if z.shape[1] > len(grad_z) * c:  # extra rows
        grad_z.append(grad_extra.to(z.dtype) if grad_extra is not None else z.new_zeros(b, z.shape[1] - len(grad_z) * c))
    grad_pre = torch.ops.aten.sigmoid_backward(torch.cat(grad_z, dim=1) if len(grad_z) > 1 else grad_z[0], z)
    return grad_pre, grad_params


def _pool_gradient(p: Tensor, grad_pre: Tensor, mixing: Tensor, pixels: int) -> Tensor:
    """d x per pixel from the pool, (grad_pre M) / (H W), (B, C): one product (beta = 0: p only lends its shape)."""
    return torch.addmm(p, grad_pre, mixing, beta=0, alpha=1 / pixels)


class _GLGFStack(torch.autograd.Function):
    """One GLGF, or a grouped 3x3's kernel generator and its channel compensation, with a hand-written backward.

    p = mean over (H, W) of the input x (B, C, H, W), in float32; its gradient reaches x as one (B, C) product
    broadcast over the image (autograd's mean backward would make a full-size division). z = sigmoid(p M^T) for
    both GLGFs at once (one product; `mixing` = M, (C, C), or [M_1; M_2], (2 C, C), see ``mixing_matrices``).
    Generator head: out[b, c, :] = z_1[b, c] per_channel[c] + z_1[b] . shared. Inputs: x, mixing, per_channel
    (C, N / C), shared (C), and with two GLGFs the compensation's `gain` matrix (C, C) (``gain_matrices``):
    gain = z_2 G, the output is then out * gain, the kernel with the per-channel gain folded into filter c.
    Output: the kernel (B, C, N / C). The gradients of `mixing` and `gain` are one product each; the caller's
    autograd takes them back to the GLGFs' parameters.
    """

    @staticmethod
    def forward(ctx, x: Tensor, mixing: Tensor, per_channel: Tensor, shared: Tensor, gain: Tensor | None = None):
        ctx.source = (*x.shape[-2:], x.dtype)
        p, z, out, gains, kernel = _generate(x, mixing, per_channel, shared, gain)
        ctx.save_for_backward(p, mixing, z, per_channel, shared, gain, out, gains)
        return kernel

    @staticmethod
    def backward(ctx, grad: Tensor):
        p, mixing, z, per_channel, shared, gain, out, gains = ctx.saved_tensors
        b, c = p.shape
        h, w, dtype = ctx.source
        grad_pre, grad_params = _generate_backward(grad, None, p, z, per_channel, shared, gain, out, gains)
        grad_x = _pool_gradient(p, grad_pre, mixing, h * w).to(dtype).view(b, c, 1, 1)  # the same on every pixel
        return grad_x.expand(b, c, h, w), torch.mm(grad_pre.t(), p), *grad_params


class WeightAdaptiveConv1x1(nn.Module):
    """1x1 conv C_in -> C_out with a per-image kernel, then spatial compensation (a 1-channel gate)."""

    def __init__(self, in_channels: int, out_channels: int, glgf_groups: int = 16) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.pool = GlobalPool()
        self.generator = GLGF(in_channels, out_channels * in_channels, glgf_groups)
        self.spatial1 = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.spatial2 = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        # set for one forward by ``hoisted_weights``: the GLGF mixing matrix (C_in, C_in) and the two spatial
        # kernels expanded to the batch, (B, 1, 3, 3) each, made for all such convs of the network at once
        self._mixing: Tensor | None = None
        self._spatial: tuple[Tensor, Tensor] | None = None

    @property
    def generators(self) -> tuple[GLGF, ...]:
        """The GLGFs that read this conv's pooled input, in _GLGFStack's order."""
        return (self.generator,)

    def forward(self, x: Tensor, extra_rows: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """(B, C_in, H, W) -> (B, C_out, H, W). With `extra_rows` (q, C_in): also sigmoid(pooled x . row) for each
        row, (B, q), from the same pool and product as the generator's first stage (HDFN's alpha)."""
        b, _, h, w = x.shape
        if self._spatial is not None and self._spatial[0].shape[0] == b:
            spatial = self._spatial
        else:
            spatial = (self.spatial1.weight.expand(b, 1, 3, 3), self.spatial2.weight.expand(b, 1, 3, 3))
        # one dtype for the product: autocast's if it is on, else the input's (the generator runs in float32)
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        hooked = self.generator._forward_hooks or self.generator._forward_pre_hooks
        if not hooked and self.pool.plain:  # one function for all of it
            with torch.autocast(device, enabled=False):
                mixing, heads = _generator_inputs(self.generators, self.in_channels, self._mixing, None)
                if extra_rows is not None:
                    mixing = torch.cat((mixing, extra_rows.to(mixing.dtype)))
                out, extra = _WeightAdaptive1x1.apply(x, mixing, *heads, *spatial, self.out_channels, dtype)
            return out if extra_rows is None else (out, extra)
        # the generated vector is read row-major as (C_out, C_in), the authors' layout: weight j is
        # kernel[j // C_in, j % C_in] (a transposed (C_in, C_out) reading is a different function)
        pooled = self.pool(x)
        if hooked:
            kernel = self.generator(pooled)  # someone records the generated kernels: call it, so hooks run
        else:  # a GlobalPool that records or replays (tiled inference)
            kernel = _glgf_stack(pooled, self.generators, self._mixing)
        kernel = kernel.view(b, self.out_channels, self.in_channels)
        with torch.autocast(device, enabled=False):
            out = _SpatiallyCompensatedProduct.apply(kernel.to(dtype), x.to(dtype), spatial[0].to(dtype),
                                                     spatial[1].to(dtype))
            if extra_rows is None:
                return out
            return out, torch.sigmoid(pooled.float().flatten(1) @ extra_rows.float().t())


def _product(kernel: Tensor, flat: Tensor, weight1: Tensor, weight2: Tensor, h: int, w: int):
    """Forward of the spatially compensated product on flat (B, C_in, HW): (u, m, a, gate, out (B, C_out, HW))."""
    b = kernel.shape[0]
    u = torch.bmm(kernel, flat)                                                                    # (B, C_out, HW)
    m = u.mean(dim=1).view(1, b, h, w)                                                             # (1, B, H, W)
    a = torch.sigmoid(F.conv2d(m, weight1, padding=1, groups=b))
    gate = F.conv2d(a, weight2, padding=1, groups=b).view(b, 1, h * w)
    return u, m, a, gate, u * gate


def _product_backward(grad: Tensor, kernel: Tensor, flat: Tensor, u: Tensor, m: Tensor, a: Tensor, gate: Tensor,
                      weight1: Tensor, weight2: Tensor):
    """(C_out d u, d kernel, d weight1, d weight2); d x = K^T (C_out d u) / C_out is the caller's (one product)."""
    b, c_out, _ = kernel.shape
    hw = flat.shape[-1]
    grad = grad.reshape(b, c_out, hw)
    grad_gate = (grad * u).sum(dim=1).view(1, b, *m.shape[-2:])                                   # (1, B, H, W)
    conv = dict(stride=[1, 1], padding=[1, 1], dilation=[1, 1], transposed=False, output_padding=[0, 0], groups=b)
    grad_a, grad_w2, _ = torch.ops.aten.convolution_backward(grad_gate, a, weight2, None,
                                                             output_mask=[True, True, False], **conv)
    grad_pre = torch.ops.aten.sigmoid_backward(grad_a, a)
    grad_m, grad_w1, _ = torch.ops.aten.convolution_backward(grad_pre, m, weight1, None,
                                                             output_mask=[True, True, False], **conv)
    # d u = grad * gate + d m / C_out: kept as C_out d u (one op), the 1 / C_out goes into the two products
    scaled = torch.addcmul(grad_m.view(b, 1, hw), grad, gate, value=c_out)                         # (B, C_out, HW)
    grad_kernel = torch.baddbmm(kernel, scaled, flat.transpose(1, 2), beta=0, alpha=1 / c_out)
    return scaled, grad_kernel, grad_w1, grad_w2


class _SpatiallyCompensatedProduct(torch.autograd.Function):
    """out = gate * (K x) per image, gate = conv2(sigmoid(conv1(mean_o K x))), with a hand-written backward.

    The two 3x3 kernels come expanded to the batch, (B, 1, 3, 3), and get their gradient per image: summed over
    the batch by autograd (once for the whole network when ``hoisted_weights`` expanded them). The two 1->1 convs
    run as one depthwise conv over the batch (batch as channels): far faster on the CPU than over B images.

    Fewest kernels: u = K x is formed once and both the gate's input (a channel mean of u) and the output
    (u * gate) read it. In the backward, with G = grad * gate + d m / C_out (one fused op), d x = K^T G and
    d K = G x^T: the gate's two uses share one tensor (6 aten ops forward, 8 backward).
    """

    @staticmethod
    def forward(ctx, kernel: Tensor, x: Tensor, weight1: Tensor, weight2: Tensor) -> Tensor:
        b, c_out, c_in = kernel.shape
        h, w = x.shape[-2:]
        flat = x.reshape(b, c_in, h * w)                                                           # (B, C_in, HW)
        u, m, a, gate, out = _product(kernel, flat, weight1, weight2, h, w)
        ctx.save_for_backward(kernel, flat, u, m, a, gate, weight1, weight2)
        return out.view(b, c_out, h, w)                                                            # (B, C_out, H, W)

    @staticmethod
    def backward(ctx, grad: Tensor):
        kernel, flat, *rest = ctx.saved_tensors
        b, c_out, c_in = kernel.shape
        scaled, grad_kernel, grad_w1, grad_w2 = _product_backward(grad, kernel, flat, *rest)
        grad_x = torch.baddbmm(flat, kernel.transpose(1, 2), scaled, beta=0, alpha=1 / c_out)     # (B, C_in, HW)
        return grad_kernel, grad_x.view(b, c_in, *rest[1].shape[-2:]), grad_w1, grad_w2


class _WeightAdaptive1x1(torch.autograd.Function):
    """The whole weight-adaptive 1x1 in one function: pool, GLGF (as _GLGFStack, float32) and the spatially
    compensated product (as _SpatiallyCompensatedProduct, in `dtype`). One function, so that the pool's gradient
    joins d x inside the last product (no separate addition). Inputs: x (B, C_in, H, W), mixing (C_in + q, C_in),
    per_channel, shared, the two spatial kernels (B, 1, 3, 3), C_out, dtype. Outputs: (B, C_out, H, W) and the q
    extra rows' sigmoids (B, q) (HDFN's alpha reads one)."""

    @staticmethod
    def forward(ctx, x: Tensor, mixing: Tensor, per_channel: Tensor, shared: Tensor, weight1: Tensor, weight2: Tensor,
                c_out: int, dtype: torch.dtype):
        b, c_in, h, w = x.shape
        ctx.set_materialize_grads(False)
        p, z, out, _, _ = _generate(x, mixing, per_channel, shared, None)
        kernel = out.view(b, c_out, c_in).to(dtype)
        flat = x.reshape(b, c_in, h * w).to(dtype)
        u, m, a, gate, y = _product(kernel, flat, weight1.to(dtype), weight2.to(dtype), h, w)
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(p, mixing, z, per_channel, shared, out, kernel, flat, u, m, a, gate, weight1, weight2)
        return y.view(b, c_out, h, w), z[:, c_in:]

    @staticmethod
    def backward(ctx, grad: Tensor | None, grad_extra: Tensor | None):
        p, mixing, z, per_channel, shared, out, kernel, flat, u, m, a, gate, weight1, weight2 = ctx.saved_tensors
        b, c_out, c_in = kernel.shape
        h, w = m.shape[-2:]
        if grad is None:
            grad = u.new_zeros(u.shape)
        scaled, grad_kernel, grad_w1, grad_w2 = _product_backward(grad, kernel, flat, u, m, a, gate,
                                                                  weight1.to(kernel.dtype), weight2.to(kernel.dtype))
        grad_pre, (grad_per_channel, grad_shared) = _generate_backward(
            grad_kernel.view(b, c_in, -1), grad_extra, p, z, per_channel, shared, None, out, None)
        # the pool's share of d x, (grad_pre M) / (H W) per channel, is the starting value of the last product
        pooled = _pool_gradient(p, grad_pre, mixing, h * w).to(kernel.dtype).view(b, c_in, 1)
        grad_x = torch.baddbmm(pooled.expand(b, c_in, h * w), kernel.transpose(1, 2), scaled, alpha=1 / c_out)
        return (grad_x.view(b, c_in, h, w).to(ctx.x_dtype), torch.mm(grad_pre.t(), p), grad_per_channel, grad_shared,
                grad_w1.to(weight1.dtype), grad_w2.to(weight2.dtype), None, None)


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
        # set for one forward by ``hoisted_weights``: both GLGFs' mixing matrices (2 C, C) and the gain matrix (C, C)
        self._mixing: Tensor | None = None
        self._gain: Tensor | None = None

    @property
    def generators(self) -> tuple[GLGF, ...]:
        """The GLGFs that read this conv's pooled input, in _GLGFStack's order (kernel generator, compensation)."""
        return (self.generator, self.compensation)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        # channel compensation scales output channel o by a per-image gain: folded into filter o of the kernel
        if self.generator._forward_hooks or self.generator._forward_pre_hooks or self.compensation._forward_hooks \
                or self.compensation._forward_pre_hooks:
            # someone records the generated kernels (dwgn.analysis): call the modules so that their hooks run
            pooled = self.pool(x)
            gain = self.compensation(pooled).view(b, c, 1, 1, 1)
            kernel = self.generator(pooled).view(b, c, c // self.groups, 3, 3) * gain
        else:
            # both GLGFs read the same pooled vector: one fused function, gain folded in (same values)
            kernel = _glgf_stack(x if self.pool.plain else self.pool(x), self.generators, self._mixing, self._gain)
        return per_image_group_conv3x3(x, kernel.reshape(b, c, c // self.groups, 3, 3), self.groups)


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
        out = F.conv2d(x.reshape(1, b * c, h, w), kernel.reshape(b * c, per, 3, 3), padding=1, groups=b * groups)
        return out.view(b, c, h, w)
    cols = F.unfold(x, 3, padding=1).view(b * groups, per * 9, h * w)  # rows: (input channel, tap) per group
    out = torch.bmm(kernel.reshape(b * groups, per, per * 9).to(cols.dtype), cols)
    return out.view(b, c, h, w)


@contextmanager
def hoisted_weights(model: nn.Module, batch: int) -> Iterator[None]:
    """For one forward of `model` on `batch` images: every parameter-only term of its weight-adaptive convs, made
    once for all of them instead of once per conv (far fewer, larger kernels; the same function).

    * GLGF mixing matrices (``mixing_matrices``): one stack per (C, g), split among the convs;
    * the grouped 3x3s' gain matrices (``gain_matrices``): one stack per width;
    * the 1x1s' spatial-compensation kernels, expanded to the batch: their gradients are summed over the batch
      once for the network, not once per conv.
    The convs read these for the forward (`_mixing`, `_spatial`) and compute their own outside this context."""
    convs1 = [m for m in model.modules() if isinstance(m, WeightAdaptiveConv1x1)]
    convs3 = [m for m in model.modules() if isinstance(m, WeightAdaptiveGroupConv3x3)]
    try:
        with torch.autocast(next(model.parameters()).device.type, enabled=False):
            groups: dict[tuple, list[nn.Module]] = {}
            for conv in convs1 + convs3:
                glgf = conv.generator
                groups.setdefault((glgf.local.in_channels, glgf.squeeze.out_channels), []).append(conv)
            for (c, _), convs in groups.items():
                glgfs = [g for conv in convs for g in conv.generators]
                parts = mixing_matrices(glgfs).split([len(conv.generators) for conv in convs])
                for conv, part in zip(convs, parts):
                    conv._mixing = part.view(-1, c)
            by_width: dict[int, list[nn.Module]] = {}
            for conv in convs3:
                by_width.setdefault(conv.channels, []).append(conv)
            for convs in by_width.values():
                for conv, gain in zip(convs, gain_matrices([conv.compensation for conv in convs]).unbind(0)):
                    conv._gain = gain
            if convs1:
                kernels = torch.stack([w for m in convs1 for w in (m.spatial1.weight, m.spatial2.weight)])
                kernels = kernels.expand(-1, batch, -1, -1, -1).unbind(0)            # each (B, 1, 3, 3)
                for i, conv in enumerate(convs1):
                    conv._spatial = (kernels[2 * i], kernels[2 * i + 1])
        yield
    finally:
        for conv in convs1 + convs3:
            conv._mixing = None
        for conv in convs3:
            conv._gain = None
        for conv in convs1:
            conv._spatial = None


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
