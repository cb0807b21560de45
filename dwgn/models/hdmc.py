"""HDMC: half-dynamic multi-head cross-attention (docs/DESIGN.md §1).

A static branch (ordinary convs) and a dynamic branch (weight-adaptive convs) each make q, k, v from the
same input. The branches then swap values -- the exclusive-generic interaction:
    out_s = softmax(q_s k_s^T / sqrt(d) + bias) v_d,    out_d = softmax(q_d k_d^T / sqrt(d) + bias) v_s
inside 8x8 windows (plain or shifted), with one relative-position bias table shared by both branches.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from dwgn.models.dynamic_conv import conv1x1, group_conv3x3


def shifted_window_mask(height: int, width: int, window: int, shift: int, device=None) -> Tensor:
    """(num_windows, window^2, window^2) additive mask: -100 between pixels that the roll brought together."""
    label = torch.zeros(height, width, device=device)
    spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, (hs, ws) in enumerate((hs, ws) for hs in spans for ws in spans):
        label[hs, ws] = i
    label = label.view(height // window, window, width // window, window).transpose(1, 2).reshape(-1, window * window)
    return (label[:, :, None] != label[:, None, :]).float() * -100.0  # (nW, N, N)


class WindowCrossAttention(nn.Module):
    """Window attention of two branches at once, with the values swapped between them."""

    def __init__(self, heads: int, head_dim: int, window: int, shift: int) -> None:
        super().__init__()
        self.heads, self.head_dim, self.window, self.shift = heads, head_dim, window, shift
        self.scale = head_dim ** -0.5
        self.bias_table = nn.Parameter(torch.zeros(heads, 2 * window - 1, 2 * window - 1))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = coords[:, :, None] - coords[:, None, :] + window - 1  # (2, N, N), each in [0, 2w-2]
        self.register_buffer("bias_index", rel[0] * (2 * window - 1) + rel[1], persistent=False)
        self._masks: dict[tuple, Tensor] = {}
        self._bias: Tensor | None = None  # (heads, N, N), set for one forward by ``hoisted_biases``

    def relative_bias(self) -> Tensor:
        """(heads, N, N): the bias table read at each pair's relative position (its gradient reaches the table)."""
        return self.bias_table.flatten(1)[:, self.bias_index]

    def _shift_mask(self, height: int, width: int, device: torch.device) -> Tensor:
        """(nW, 1, 1, N, N) -100/0 mask of the shifted windows, made once per image size and device."""
        key = (height, width, str(device))
        if key not in self._masks:
            self._masks[key] = shifted_window_mask(height, width, self.window, self.shift, device)[:, None, None]
        return self._masks[key]

    def forward(self, static_qkv: Tensor, dynamic_qkv: Tensor) -> Tensor:
        b, _, h, w = static_qkv.shape
        ws, s, heads, n = self.window, self.shift, self.heads, self.window ** 2
        nh, nw = h // ws, w // ws
        t = torch.stack((static_qkv, dynamic_qkv), dim=1)  # (B, 2, 3C, H, W)
        bias = self.relative_bias() if self._bias is None else self._bias  # (heads, N, N)
        # One copy into windows. Attention "heads" are (branch, head), and (window, branch, head) when shifted, so
        # the additive mask -- bias, plus the shift mask that differs per window -- broadcasts over the batch.
        if s:
            t = torch.roll(t, shifts=(-s, -s), dims=(3, 4))
            t = rearrange(t, "b r (x m d) (nh wh) (nw ww) -> x b (nh nw r m) (wh ww) d", x=3, m=heads, wh=ws, ww=ws)
            mask = (bias.expand(2, heads, n, n) + self._shift_mask(h, w, t.device)).view(nh * nw * 2 * heads, n, n)
            swap = (b, nh * nw, 2, heads * n, self.head_dim)
        else:
            t = rearrange(t, "b r (x m d) (nh wh) (nw ww) -> x (b nh nw) (r m) (wh ww) d", x=3, m=heads, wh=ws, ww=ws)
            mask = bias.expand(2, heads, n, n).reshape(2 * heads, n, n)  # (2*heads, N, N)
            swap = (b * nh * nw, 1, 2, heads * n, self.head_dim)
        q, k, v = t.unbind(0)  # each (batch, heads', N, d)
        v = v.view(swap).flip(2).view(v.shape)  # static queries meet dynamic values and vice versa
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), scale=self.scale)
        if s:
            out = rearrange(out, "b (nh nw r m) (wh ww) d -> b (r m d) (nh wh) (nw ww)", nh=nh, nw=nw, r=2, wh=ws)
            return torch.roll(out, shifts=(s, s), dims=(2, 3))
        return rearrange(out, "(b nh nw) (r m) (wh ww) d -> b (r m d) (nh wh) (nw ww)", nh=nh, nw=nw, r=2, wh=ws)
        # (B, 2C, H, W): [static queries | dynamic queries]


@contextmanager
def hoisted_biases(model: nn.Module) -> Iterator[None]:
    """For one forward of `model`: the relative-position biases of all its window attentions, read from their
    tables at once (one gather per heads/window shape instead of one per block; the same values)."""
    attentions = [m for m in model.modules() if isinstance(m, WindowCrossAttention)]
    groups: dict[tuple[int, int], list[WindowCrossAttention]] = {}
    for m in attentions:
        groups.setdefault((m.heads, m.window), []).append(m)
    try:
        for group in groups.values():
            tables = torch.stack([m.bias_table.flatten(1) for m in group])                 # (n, heads, (2w-1)^2)
            for m, bias in zip(group, tables[:, :, group[0].bias_index].unbind(0)):
                m._bias = bias
        yield
    finally:
        for m in attentions:
            m._bias = None


class HDMC(nn.Module):
    """Half-dynamic multi-head cross-attention on (B, C, H, W)."""

    def __init__(self, channels: int, head_dim: int, window: int, shift: int,
                 static_dynamic: bool, dynamic_dynamic: bool, glgf_groups: int = 16) -> None:
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"channels ({channels}) must be a multiple of head_dim ({head_dim})")
        heads = channels // head_dim
        self.static_qkv = nn.Sequential(
            conv1x1(channels, 3 * channels, static_dynamic, glgf_groups), nn.GELU(),
            group_conv3x3(3 * channels, 3 * heads, static_dynamic, glgf_groups))
        self.dynamic_qkv = nn.Sequential(
            conv1x1(channels, 3 * channels, dynamic_dynamic, glgf_groups), nn.GELU(),
            group_conv3x3(3 * channels, 3 * heads, dynamic_dynamic, glgf_groups))
        self.attention = WindowCrossAttention(heads, head_dim, window, shift)
        self.project = nn.Conv2d(2 * channels, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.attention(self.static_qkv(x), self.dynamic_qkv(x)))
