"""The DwGN encoder-decoder (docs/DESIGN.md §1): stem, 3 encoder levels, middle, 3 decoder levels, output conv."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dwgn.models.dynamic_conv import GlobalPool
from dwgn.models.hdfn import HDFN
from dwgn.models.hdmc import HDMC, WindowCrossAttention

DYNAMIC_MODES = ("half", "none", "full")


@dataclass
class ModelConfig:
    """Every knob of the network. `paper` is docs/DESIGN.md §1; `tiny` trains in seconds on a CPU.
    Each field's `help` (and `choices`) is what `--help` of the training scripts prints."""

    width: int = field(default=32, metadata={"help": "channels at level 1 (doubles each level)"})
    enc_blocks: tuple[int, ...] = field(default=(4, 4, 6), metadata={"help": "blocks per encoder level, e.g. 4,4,6"})
    middle_blocks: int = field(default=8, metadata={"help": "blocks at the bottleneck"})
    dec_blocks: tuple[int, ...] = field(default=(6, 4, 4), metadata={"help": "blocks per decoder level, deepest first"})
    head_dim: int = field(default=32, metadata={"help": "channels per attention head"})
    window: int = field(default=8, metadata={"help": "attention window side"})
    glgf_groups: int = field(default=16, metadata={"help": "groups g of the weight generator (GLGF)"})
    dynamic: str = field(default="half", metadata={
        "help": "which convolutions get generated weights: half (paper), none (all static), full (both branches)",
        "choices": DYNAMIC_MODES})


PRESETS = {
    "paper": ModelConfig(),
    "tiny": ModelConfig(width=16, enc_blocks=(1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1), head_dim=16),
    # tiny's depth at paper's width (3.3 M parameters, 6.4 MB in float16): a GPU-trained demo size
    "small": ModelConfig(width=32, enc_blocks=(1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1), head_dim=16),
}


def validate_model(config: ModelConfig) -> ModelConfig:
    if config.dynamic not in DYNAMIC_MODES:
        raise ValueError(f"dynamic={config.dynamic!r}: choose one of {', '.join(DYNAMIC_MODES)}")
    if len(config.enc_blocks) != len(config.dec_blocks):
        raise ValueError(f"enc_blocks {config.enc_blocks} and dec_blocks {config.dec_blocks} need one entry per level")
    for level in range(len(config.enc_blocks) + 1):
        c = config.width * 2 ** level
        if c % config.head_dim or c % config.glgf_groups:
            raise ValueError(f"width {c} at level {level} must be a multiple of head_dim ({config.head_dim}) "
                             f"and glgf_groups ({config.glgf_groups})")
    return config


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of (B, C, H, W), eps 1e-6, with a weight and a bias."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # on (B, C, H, W) as it lies: F.layer_norm on the channels-last view needs two transposing copies, 2.8 times
        # the time of these passes for a 32-channel 512² map on a 2-core CPU
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # at least float32 (under autocast too, as F.layer_norm)
        centred = x - x.mean(dim=1, keepdim=True)                                           # (B, C, H, W)
        var = centred.square().mean(dim=1, keepdim=True)                                    # (B, 1, H, W), biased
        normed = centred * torch.rsqrt(var + self.eps)
        return torch.addcmul(self.bias.view(-1, 1, 1), normed, self.weight.view(-1, 1, 1))


class DwGNBlock(nn.Module):
    """x = x + HDMC(LN(x)); x = x + HDFN(LN(x))."""

    def __init__(self, channels: int, head_dim: int, window: int, shift: int, dynamic: str, glgf_groups: int) -> None:
        super().__init__()
        static_dynamic, dynamic_dynamic = dynamic == "full", dynamic != "none"
        self.norm1 = LayerNorm2d(channels)
        self.hdmc = HDMC(channels, head_dim, window, shift, static_dynamic, dynamic_dynamic, glgf_groups)
        self.norm2 = LayerNorm2d(channels)
        self.hdfn = HDFN(channels, static_dynamic, dynamic_dynamic, glgf_groups)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.hdmc(self.norm1(x))
        return x + self.hdfn(self.norm2(x))


class Downsample(nn.Sequential):
    """Bilinear x0.5, then 3x3 conv C -> 2C."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Upsample(scale_factor=0.5, mode="bilinear", align_corners=False),
                         nn.Conv2d(channels, 2 * channels, 3, padding=1))


class Upsample(nn.Sequential):
    """Bilinear x2, then 3x3 conv C -> C/2 (the skip is added by the network)."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         nn.Conv2d(channels, channels // 2, 3, padding=1))


class DwGN(nn.Module):
    """The encoder / middle / decoder network; returns input - output_conv(features)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config = validate_model(config)

        def level(channels: int, blocks: int) -> nn.Sequential:
            # even blocks use plain windows, odd blocks shifted windows
            return nn.Sequential(*(DwGNBlock(channels, config.head_dim, config.window,
                                             config.window // 2 if i % 2 else 0, config.dynamic, config.glgf_groups)
                                   for i in range(blocks)))

        c = config.width
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        for blocks in config.enc_blocks:
            self.encoders.append(level(c, blocks))
            self.downs.append(Downsample(c))
            c *= 2
        self.middle = level(c, config.middle_blocks)
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for blocks in config.dec_blocks:
            self.ups.append(Upsample(c))
            c //= 2
            self.decoders.append(level(c, blocks))
        self.output = nn.Conv2d(c, 3, 3, padding=1)
        self.multiple = 2 ** len(config.enc_blocks) * config.window
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """The authors' initialisation (docs/DESIGN.md §1): conv weights N(0, 0.02), conv biases keep PyTorch's
        default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the relative-position bias table a normal of std 0.02
        truncated at 2 std; LayerNorms start at weight 1, bias 0 (as constructed)."""
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, WindowCrossAttention):
            nn.init.trunc_normal_(module.bias_table, std=0.02, a=-0.04, b=0.04)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        # zero-pad right/bottom to a multiple of 2^levels * window, crop back at the end
        x = F.pad(x, (0, -w % self.multiple, 0, -h % self.multiple))
        f = self.stem(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            f = encoder(f)
            skips.append(f)
            f = down(f)  # (B, 2C, H/2, W/2)
        f = self.middle(f)
        for up, decoder, skip in zip(self.ups, self.decoders, skips[::-1]):
            f = decoder(up(f) + skip)  # (B, C/2, 2H, 2W)
        return (x - self.output(f))[..., :h, :w]


def build_model(preset: str = "paper", **overrides) -> DwGN:
    """`build_model("tiny", dynamic="none")`: a preset of PRESETS with ModelConfig fields overridden."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    names = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; valid: {', '.join(sorted(names))}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return DwGN(replace(PRESETS[preset], **overrides))


def count_parameters(module: nn.Module) -> int:
    """Every parameter's element count (the number the paper and the design table quote)."""
    return sum(p.numel() for p in module.parameters())


def _pools(model: nn.Module) -> dict[str, GlobalPool]:
    return {name: m for name, m in model.named_modules() if isinstance(m, GlobalPool)}


@contextmanager
def recorded_pools(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Collect every whole-image statistic of a forward pass: {module name: (B, C, 1, 1)}."""
    pools, found = _pools(model), {}
    for m in pools.values():
        m.record = []
    try:
        yield found
    finally:
        for name, m in pools.items():
            if m.record:
                found[name] = m.record[-1]
            m.record = None


@contextmanager
def fixed_pools(model: nn.Module, stats: dict[str, Tensor]) -> Iterator[None]:
    """Forward passes inside use `stats` (from `recorded_pools`) instead of pooling their own input."""
    pools = _pools(model)
    missing = sorted(set(pools) - set(stats))
    if missing:
        raise ValueError(f"no recorded statistic for {len(missing)} pool(s), e.g. {missing[0]}: "
                         "record them with recorded_pools() on the same network")
    for name, m in pools.items():
        m.fixed = stats[name]
    try:
        yield
    finally:
        for m in pools.values():
            m.fixed = None
