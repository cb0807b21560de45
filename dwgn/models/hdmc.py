"""HDMC: half-dynamic multi-head cross-attention (docs/DESIGN.md §1.5).

A static branch (ordinary convs) and a dynamic branch (weight-adaptive convs) each make q, k, v from the
same input. The branches then swap values -- the exclusive-generic interaction:
    out_s = softmax(q_s k_s^T / sqrt(d) + R) v_d,    out_d = softmax(q_d k_d^T / sqrt(d) + R) v_s
inside 8x8 windows (plain or shifted), with one relative-position bias table R shared by both branches.
"""
from __future__ import annotations

from typing import Callable

import torch
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


def cached_constant(cache: dict, key: tuple, make: Callable[[], Tensor]) -> Tensor:
    """cache[key], made by make() on first use: a constant (the shift mask) is made once, not in every forward.
    Under torch.compile, or when make() returns a traced stand-in (torch.export, FX), nothing is kept: such a
    tensor lives in one trace only."""
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
        self._masks: dict[tuple, Tensor] = {}  # the shift mask per image size and device

    def relative_bias(self) -> Tensor:
        """R (heads, N, N): the bias table read at each pair's relative position (its gradient reaches the table)."""
        return self.bias_table.flatten(1)[:, self.bias_index]

    def shift_mask(self, height: int, width: int, device: torch.device) -> Tensor:
        """(nW, 1, N, N) -100/0 mask of the shifted windows, made once per image size and device."""
        return cached_constant(self._masks, (height, width, str(device)), lambda: shifted_window_mask(
            height, width, self.window, self.shift, device)[:, None])

    def windows(self, qkv: Tensor) -> Tensor:
        """(B, 3C, H, W), channels [q | k | v], head-major -> (3, B, nW, heads, N, d): rolled by -shift, cut into
        windows (one copy)."""
        if self.shift:
            qkv = torch.roll(qkv, shifts=(-self.shift, -self.shift), dims=(2, 3))
        return rearrange(qkv, "b (x m d) (nh wh) (nw ww) -> x b (nh nw) m (wh ww) d", x=3, m=self.heads,
                         wh=self.window, ww=self.window).contiguous()

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
        """softmax(q k^T / sqrt(d) + R (+ mask)) v per window and head: (B, nW, heads, N, d)."""
        logits = (q * self.scale) @ k.transpose(-2, -1)                                   # (B, nW, heads, N, N)
        # in place, the mask too (the logits are the largest tensors here), each cast to the logits' dtype (under
        # autocast bfloat16): an in-place add of float32 into bfloat16 fails in compiled CUDA backwards
        logits += bias.to(logits.dtype)
        if mask is not None:
            logits += mask.to(logits.dtype)
        return torch.softmax(logits, dim=-1) @ v

    def forward(self, static_qkv: Tensor, dynamic_qkv: Tensor) -> Tensor:
        """(B, 3C, H, W) of each branch -> (B, 2C, H, W) = [out_s | out_d]."""
        h, w = static_qkv.shape[-2:]
        q_s, k_s, v_s = self.windows(static_qkv)                                     # each (B, nW, heads, N, d)
        q_d, k_d, v_d = self.windows(dynamic_qkv)
        bias, mask = self.relative_bias(), self.shift_mask(h, w, static_qkv.device) if self.shift else None
        # the exclusive-generic interaction: each branch attends with its own queries and keys to the other's values
        out = torch.stack((self.attend(q_s, k_s, v_d, bias, mask), self.attend(q_d, k_d, v_s, bias, mask)))
        out = rearrange(out, "r b (nh nw) m (wh ww) d -> b (r m d) (nh wh) (nw ww)", nh=h // self.window,
                        wh=self.window)                                                      # (B, 2C, H, W)
        return torch.roll(out, shifts=(self.shift, self.shift), dims=(2, 3)) if self.shift else out


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
