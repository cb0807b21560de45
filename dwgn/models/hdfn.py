"""HDFN: half-dynamic feed-forward network (docs/DESIGN.md §1).

A static and a dynamic branch (1x1 C->2C, GELU, grouped 3x3 with C groups) mixed per image by
alpha = sigmoid(1x1_{C/16->1}(1x1_{C->C/16}(GAP x))), then a 1x1 2C->C. The two bias-free 1x1s of alpha are one row
(``HDFN.alpha_row``), which joins the dynamic 1x1's generator product when that conv is weight-adaptive.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from dwgn.models.dynamic_conv import GlobalPool, WeightAdaptiveConv1x1, conv1x1, group_conv3x3


class HDFN(nn.Module):
    def __init__(self, channels: int, static_dynamic: bool, dynamic_dynamic: bool, glgf_groups: int = 16) -> None:
        super().__init__()
        hidden = 2 * channels
        self.static = nn.Sequential(
            conv1x1(channels, hidden, static_dynamic, glgf_groups), nn.GELU(),
            group_conv3x3(hidden, channels, static_dynamic, glgf_groups))
        self.dynamic = nn.Sequential(
            conv1x1(channels, hidden, dynamic_dynamic, glgf_groups), nn.GELU(),
            group_conv3x3(hidden, channels, dynamic_dynamic, glgf_groups))
        squeezed = max(channels // 16, 1)
        self.pool = GlobalPool()
        self.alpha = nn.Sequential(nn.Conv2d(channels, squeezed, 1, bias=False), nn.Conv2d(squeezed, 1, 1, bias=False))
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)
        self._alpha_row: Tensor | None = None  # (1, C), set for one forward by ``hoisted_alpha_rows``

    def mixing_weight(self, x: Tensor) -> Tensor:
        """Per-image alpha, (B, 1, 1, 1): the share of the static branch."""
        return torch.sigmoid(self.alpha(self.pool(x)))

    def alpha_row(self) -> Tensor:
        """alpha = sigmoid(pooled x . row): the two bias-free 1x1s of alpha as one row, (1, C)."""
        return self.alpha[1].weight.flatten(1) @ self.alpha[0].weight.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        first = self.dynamic[0]
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in (self.alpha, *self.alpha))
        if isinstance(first, WeightAdaptiveConv1x1) and self.pool.plain and not hooked:
            # alpha reads the same pooled x as the dynamic 1x1's generator: its row joins that product
            row = self.alpha_row() if self._alpha_row is None else self._alpha_row
            y, alpha = first(x, extra_rows=row)
            dynamic = self.dynamic[2](self.dynamic[1](y))
            alpha = alpha.view(-1, 1, 1, 1).to(dynamic.dtype)  # float32 from the generator; bf16 under autocast
        else:
            alpha, dynamic = self.mixing_weight(x), self.dynamic(x)
        return self.project(_Mix.apply(self.static(x), dynamic, alpha))


@contextmanager
def hoisted_alpha_rows(model: nn.Module) -> Iterator[None]:
    """For one forward of `model`: every HDFN's alpha row (``HDFN.alpha_row``), made at once per width."""
    hdfns = [m for m in model.modules() if isinstance(m, HDFN)]
    groups: dict[tuple, list[HDFN]] = {}
    for m in hdfns:
        groups.setdefault(tuple(m.alpha[0].weight.shape), []).append(m)
    try:
        for group in groups.values():
            second = torch.stack([m.alpha[1].weight.flatten(1) for m in group])             # (n, 1, C/16)
            first = torch.stack([m.alpha[0].weight.flatten(1) for m in group])              # (n, C/16, C)
            for m, row in zip(group, torch.bmm(second, first).unbind(0)):
                m._alpha_row = row
        yield
    finally:
        for m in hdfns:
            m._alpha_row = None


class _Mix(torch.autograd.Function):
    """out = alpha static + (1 - alpha) dynamic = torch.lerp(dynamic, static, alpha), alpha (B, 1, 1, 1), with a
    hand-written backward: 4 aten ops instead of autograd's 8 for lerp."""

    @staticmethod
    def forward(ctx, static: Tensor, dynamic: Tensor, alpha: Tensor) -> Tensor:
        ctx.save_for_backward(static, dynamic, alpha)
        return torch.lerp(dynamic, static, alpha)

    @staticmethod
    def backward(ctx, grad: Tensor):
        static, dynamic, alpha = ctx.saved_tensors
        b = grad.shape[0]
        grad_static = grad * alpha
        # d alpha[b] = sum over (C, H, W) of grad * (static - dynamic): one batched dot product
        grad_alpha = torch.bmm(grad.reshape(b, 1, -1), (static - dynamic).reshape(b, -1, 1)).view(alpha.shape)
        return grad_static, grad - grad_static, grad_alpha
