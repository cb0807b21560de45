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

from dwgn.models.dynamic_conv import cached_constant, conv1x1, group_conv3x3


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
        return cached_constant(self._masks, (height, width, str(device)), lambda: shifted_window_mask(
            height, width, self.window, self.shift, device)[:, None, None])

    def forward(self, static_qkv: Tensor, dynamic_qkv: Tensor) -> Tensor:
        b, _, h, w = static_qkv.shape
        bias = self.relative_bias() if self._bias is None else self._bias                   # (heads, N, N)
        shift = self._shift_mask(h, w, static_qkv.device) if self.shift else None           # (nW, 1, 1, N, N)
        t = torch.stack((static_qkv, dynamic_qkv))  # (2, B, 3C, H, W): each branch's gradient is contiguous
        # products in autocast's dtype if it is on (else the input's), logits and softmax in float32
        device = t.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else t.dtype
        logits = torch.float64 if dtype == torch.float64 else torch.float32
        with torch.autocast(device, enabled=False):
            return _WindowCrossAttention.apply(t.to(dtype), bias.to(logits), None if shift is None else shift.to(logits),
                                               self.window, self.shift, self.heads, self.scale)
        # (B, 2C, H, W): [static queries | dynamic queries]


class _WindowCrossAttention(torch.autograd.Function):
    """The window attention of both branches with swapped values, with a hand-written backward.

    t (2, B, 3C, H, W): [q | k | v] of the static (0) and dynamic (1) branch. Rolled by -shift (if any), cut into
    windows with one copy, laid out (x, branch, B, window, head, N, d); out_r = softmax(scale q_r k_r^T + bias
    (+ the shift mask)) v_{1-r}; back to (B, 2C, H, W) with one copy (rolled back). The bias (heads, N, N) gets
    the gradient of every logit that it was added to (one sum). 7 aten ops forward, 10 backward without a shift.
    """

    @staticmethod
    def forward(ctx, t: Tensor, bias: Tensor, shift_mask: Tensor | None, window: int, shift: int, heads: int,
                scale: float) -> Tensor:
        _, b, _, h, w = t.shape
        if shift:
            t = torch.roll(t, shifts=(-shift, -shift), dims=(3, 4))
        win = rearrange(t, "r b (x m d) (nh wh) (nw ww) -> x r b (nh nw) m (wh ww) d", x=3, m=heads, wh=window,
                        ww=window).contiguous()
        q, k, v = win.unbind(0)                                             # each (2, B, nW, heads, N, d)
        n, d = q.shape[-2:]
        mask = bias if shift_mask is None else (shift_mask.view(-1, 1, n, n) + bias)  # (heads | nW heads, N, N)
        scores = torch.matmul(q, k.transpose(-2, -1))                                   # (2, B, nW, heads, N, N)
        # logits in the mask's float32 whatever the products' dtype (the add promotes; no extra cast)
        attn = torch.softmax(torch.add(mask, scores, alpha=scale), dim=-1)
        low = attn.to(q.dtype)                                                          # a no-op in float32
        swapped = v.flip(0)                                                             # branch r meets v_{1-r}
        out = torch.matmul(low, swapped)                                                # (2, B, nW, heads, N, d)
        ctx.save_for_backward(q, k, attn, low, swapped)
        ctx.shape = (b, h, w, window, shift, heads, scale, bias.dtype)
        out = rearrange(out, "r b (nh nw) m (wh ww) d -> b (r m d) (nh wh) (nw ww)", nh=h // window, wh=window)
        return torch.roll(out, shifts=(shift, shift), dims=(2, 3)) if shift else out.contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, attn, low, swapped = ctx.saved_tensors
        b, h, w, window, shift, heads, scale, bias_dtype = ctx.shape
        if shift:
            grad = torch.roll(grad, shifts=(-shift, -shift), dims=(2, 3))
        grad = rearrange(grad, "b (r m d) (nh wh) (nw ww) -> r b (nh nw) m (wh ww) d", r=2, m=heads, wh=window,
                         ww=window).contiguous()                                        # (2, B, nW, heads, N, d)
        grad_attn = torch.matmul(grad.to(q.dtype), swapped.transpose(-2, -1)).to(attn.dtype)
        grad_win = q.new_empty((3, *q.shape))                                           # d [q | k | v], windows
        for r in range(2):  # d v_{1-r} = attn_r^T grad_r, written in place: no flip back
            torch.matmul(low[r].transpose(-2, -1), grad[r].to(q.dtype), out=grad_win[2, 1 - r])
        grad_logits = torch._softmax_backward_data(grad_attn, attn, -1, attn.dtype)   # float32
        grad_bias = grad_logits.sum(dim=(0, 1, 2)).to(bias_dtype)                        # (heads, N, N)
        grad_logits = grad_logits.to(q.dtype)
        flat = lambda x: x.view(-1, *x.shape[-2:])  # noqa: E731  (2 B nW heads, rows, cols) for baddbmm
        torch.baddbmm(flat(q), flat(grad_logits), flat(k), beta=0, alpha=scale, out=flat(grad_win[0]))
        torch.baddbmm(flat(k), flat(grad_logits).transpose(1, 2), flat(q), beta=0, alpha=scale,
                      out=flat(grad_win[1]))
        grad_t = rearrange(grad_win, "x r b (nh nw) m (wh ww) d -> r b (x m d) (nh wh) (nw ww)", nh=h // window,
                           wh=window)
        grad_t = torch.roll(grad_t, shifts=(shift, shift), dims=(3, 4)) if shift else grad_t.contiguous()
        return grad_t, grad_bias, None, None, None, None, None


_ONE_HOTS: dict[tuple, Tensor] = {}


def _one_hot(index: Tensor, like: Tensor) -> Tensor:
    """((2w-1)^2, N^2) 0/1 matrix: column i picks table entry index[i]; made once per window, device and dtype."""
    return cached_constant(_ONE_HOTS, (tuple(index.shape), like.device, like.dtype), lambda: F.one_hot(
        index.flatten().to(like.device), like.shape[-1]).t().to(like.dtype).contiguous())


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
            first = group[0]
            n, heads, window = len(group), first.heads, first.window
            tables = torch.stack([m.bias_table.view(heads, -1) for m in group])            # (n, heads, (2w-1)^2)
            # the gather as one product with a 0/1 matrix: its backward is one product too
            biases = torch.mm(tables.view(n * heads, -1), _one_hot(first.bias_index, tables))
            for m, bias in zip(group, biases.view(n, heads, window ** 2, window ** 2).unbind(0)):
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
