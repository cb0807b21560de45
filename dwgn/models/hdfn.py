"""HDFN: half-dynamic feed-forward network (docs/DESIGN.md §1.6).

A static and a dynamic branch (1x1 C->2C, GELU, grouped 3x3 with C groups) mixed per image by
alpha = sigmoid(1x1_{C/16->1}(1x1_{C->C/16}(GAP x))), the share of the static branch, then a 1x1 2C->C.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dwgn.models.dynamic_conv import GlobalPool, conv1x1, group_conv3x3


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

    def mixing_weight(self, x: Tensor) -> Tensor:
        """Per-image alpha, (B, 1, 1, 1): the share of the static branch."""
        return torch.sigmoid(self.alpha(self.pool(x)))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.mixing_weight(x)                                                        # (B, 1, 1, 1)
        # alpha static + (1 - alpha) dynamic, as one op
        return self.project(torch.lerp(self.dynamic(x), self.static(x), alpha))
