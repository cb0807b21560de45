"""The paper's network written from its equations (docs/DESIGN.md §1), slowly and plainly, for the tests.

Every function takes plain tensors -- a state_dict under our parameter names and a key prefix -- never our
modules, so a test compares the modules with an independent reading of the equations. Per image, per
window and per head with Python loops where the network batches; nothing is shared with dwgn.models.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

State = dict[str, Tensor]


def glgf(p: Tensor, local: Tensor, squeeze: Tensor, expand: Tensor, per_channel: Tensor, shared: Tensor,
         groups: int) -> Tensor:
    """z = sigmoid(G_{C->C}(p) + W_{g->C}(G_{C->g}(p))); w = per-channel_{C->N}(z) + W_{C->1}(z). (B, N)."""
    z = torch.sigmoid(F.conv2d(p, local, groups=groups) + F.conv2d(F.conv2d(p, squeeze, groups=groups), expand))
    return (F.conv2d(z, per_channel, groups=p.shape[1]) + F.conv2d(z, shared)).flatten(1)


def _glgf(p: Tensor, s: State, prefix: str, groups: int) -> Tensor:
    return glgf(p, *(s[f"{prefix}{n}.weight"] for n in ("local", "squeeze", "expand", "per_channel", "shared")),
                groups=groups)


def dynamic_1x1(x: Tensor, generated: Tensor, spatial1: Tensor, spatial2: Tensor, c_out: int) -> Tensor:
    """One image (1, C_in, H, W): kernel read row-major as (C_out, C_in), then spatial compensation."""
    y = F.conv2d(x, generated.view(c_out, x.shape[1], 1, 1))
    gate = F.conv2d(torch.sigmoid(F.conv2d(y.mean(dim=1, keepdim=True), spatial1, padding=1)), spatial2, padding=1)
    return y * gate


def dynamic_3x3(x: Tensor, generated: Tensor, gain: Tensor, cgroup: int) -> Tensor:
    """One image (1, W, H, W): grouped kernel read row-major as (W, W/cgroup, 3, 3), then the channel gain."""
    w = x.shape[1]
    return F.conv2d(x, generated.view(w, w // cgroup, 3, 3), padding=1, groups=cgroup) * gain.view(1, w, 1, 1)


def branch(x: Tensor, s: State, prefix: str, out_channels: int, cgroup: int, dynamic: bool, glgf_groups: int) -> Tensor:
    """1x1 C -> out_channels, GELU, grouped 3x3 with `cgroup` groups; static, or weight-adaptive per image."""
    if not dynamic:
        y = F.gelu(F.conv2d(x, s[prefix + "0.weight"]))
        return F.conv2d(y, s[prefix + "2.weight"], padding=1, groups=cgroup)
    images = []
    for image in x.split(1):
        g = _glgf(image.mean(dim=(2, 3), keepdim=True), s, prefix + "0.generator.", glgf_groups)
        y = F.gelu(dynamic_1x1(image, g, s[prefix + "0.spatial1.weight"], s[prefix + "0.spatial2.weight"], out_channels))
        p = y.mean(dim=(2, 3), keepdim=True)
        gen, gain = _glgf(p, s, prefix + "2.generator.", glgf_groups), _glgf(p, s, prefix + "2.compensation.", glgf_groups)
        images.append(dynamic_3x3(y, gen, gain, cgroup))
    return torch.cat(images)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """LayerNorm over the channels of (B, C, H, W), eps 1e-6: F.layer_norm on channels-last."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps=1e-6).permute(0, 3, 1, 2)


def relative_bias(table: Tensor, window: int) -> Tensor:
    """(heads, N, N): B[h, m, n] = table[h, dy + w - 1, dx + w - 1] with (dy, dx) = position m - position n."""
    n = window * window
    out = torch.empty(table.shape[0], n, n, dtype=table.dtype)
    for m in range(n):
        for k in range(n):
            dy, dx = m // window - k // window, m % window - k % window
            out[:, m, k] = table[:, dy + window - 1, dx + window - 1]
    return out


def shift_mask(height: int, width: int, window: int, shift: int, wy: int, wx: int) -> Tensor:
    """(N, N) for window (wy, wx) of the image rolled by -shift: -100 between two pixels unless both or
    neither came around the bottom edge, and both or neither around the right edge (they were not neighbours)."""
    n = window * window
    mask = torch.zeros(n, n)
    if not shift:
        return mask

    def wrapped(m: int) -> tuple[bool, bool]:
        y, x = wy * window + m // window, wx * window + m % window
        return y + shift >= height, x + shift >= width

    for m in range(n):
        for k in range(n):
            if wrapped(m) != wrapped(k):
                mask[m, k] = -100.0
    return mask


def cross_window_attention(qkv_s: Tensor, qkv_d: Tensor, table: Tensor, head_dim: int, window: int,
                           shift: int) -> Tensor:
    """out_s = softmax(q_s k_s^T / sqrt(d) + B) v_d, out_d = softmax(q_d k_d^T / sqrt(d) + B) v_s in each
    window and head; (B, 3C, H, W) twice -> (B, 2C, H, W) = [out_s | out_d]. Channels: q | k | v, head-major."""
    b, c3, h, w = qkv_s.shape
    c, heads = c3 // 3, c3 // 3 // head_dim
    if shift:
        qkv_s, qkv_d = (torch.roll(t, shifts=(-shift, -shift), dims=(2, 3)) for t in (qkv_s, qkv_d))
    bias = relative_bias(table, window)
    out = torch.zeros(b, 2 * c, h, w, dtype=qkv_s.dtype)
    for i in range(b):
        for wy in range(h // window):
            for wx in range(w // window):
                rows, cols = slice(wy * window, (wy + 1) * window), slice(wx * window, (wx + 1) * window)
                mask = shift_mask(h, w, window, shift, wy, wx).to(qkv_s.dtype)

                def tokens(t: Tensor, part: int, head: int) -> Tensor:  # (N, d), pixels row by row
                    ch = slice(part * c + head * head_dim, part * c + (head + 1) * head_dim)
                    return t[i, ch, rows, cols].reshape(head_dim, -1).t()

                for head in range(heads):
                    for branch_index, (own, other) in enumerate(((qkv_s, qkv_d), (qkv_d, qkv_s))):
                        q, k, v = tokens(own, 0, head), tokens(own, 1, head), tokens(other, 2, head)
                        attn = torch.softmax(q @ k.t() / head_dim ** 0.5 + bias[head] + mask, dim=-1)
                        ch = slice(branch_index * c + head * head_dim, branch_index * c + (head + 1) * head_dim)
                        out[i, ch, rows, cols] = (attn @ v).t().reshape(head_dim, window, window)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(2, 3))
    return out


def hdmc(x: Tensor, s: State, prefix: str, head_dim: int, window: int, shift: int, glgf_groups: int,
         static_dynamic: bool = False) -> Tensor:
    c = x.shape[1]
    cgroup = 3 * c // head_dim
    qkv_s = branch(x, s, prefix + "static_qkv.", 3 * c, cgroup, static_dynamic, glgf_groups)
    qkv_d = branch(x, s, prefix + "dynamic_qkv.", 3 * c, cgroup, True, glgf_groups)
    att = cross_window_attention(qkv_s, qkv_d, s[prefix + "attention.bias_table"], head_dim, window, shift)
    return F.conv2d(att, s[prefix + "project.weight"], s[prefix + "project.bias"])


def hdfn_alpha(x: Tensor, s: State, prefix: str) -> Tensor:
    """alpha = sigmoid(W2 W1 GAP(x)), one per image: (B,)."""
    p = x.mean(dim=(2, 3))                                           # (B, C)
    w1, w2 = s[prefix + "alpha.0.weight"].flatten(1), s[prefix + "alpha.1.weight"].flatten(1)
    return torch.sigmoid(p @ w1.t() @ w2.t()).flatten()


def hdfn(x: Tensor, s: State, prefix: str, glgf_groups: int, static_dynamic: bool = False) -> Tensor:
    """project(alpha * static + (1 - alpha) * dynamic): alpha is the share of the STATIC branch."""
    c = x.shape[1]
    static = branch(x, s, prefix + "static.", 2 * c, c, static_dynamic, glgf_groups)
    dynamic = branch(x, s, prefix + "dynamic.", 2 * c, c, True, glgf_groups)
    alpha = hdfn_alpha(x, s, prefix).view(-1, 1, 1, 1)
    return F.conv2d(alpha * static + (1 - alpha) * dynamic, s[prefix + "project.weight"])


def block(x: Tensor, s: State, prefix: str, head_dim: int, window: int, shift: int, glgf_groups: int) -> Tensor:
    """x = x + HDMC(LN1(x)); x = x + HDFN(LN2(x)), the paper's half-dynamic block."""
    x = x + hdmc(layer_norm(x, s[prefix + "norm1.weight"], s[prefix + "norm1.bias"]), s, prefix + "hdmc.",
                 head_dim, window, shift, glgf_groups)
    return x + hdfn(layer_norm(x, s[prefix + "norm2.weight"], s[prefix + "norm2.bias"]), s, prefix + "hdfn.", glgf_groups)
