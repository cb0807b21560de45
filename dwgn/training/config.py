"""One typed configuration for both training stages (docs/DESIGN.md §6.3): the dataclasses, their defaults (the
embedded CPU demo), each field's `--help` text and allowed `choices` (`opt`), and the value checks (`validate`).
Reading them from flags, YAML files and stored checkpoints is dwgn/training/cli.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Sequence

from dwgn.errors import UserError
from dwgn.models.network import PRESETS, ModelConfig, validate_model

AMP_MODES = ("bf16", "fp16", "none")


class ConfigError(UserError, ValueError):
    """A configuration value or key that cannot be used; the message says which and how to fix it."""


def _tiny() -> ModelConfig:
    return replace(PRESETS["tiny"])


def opt(default: Any, help: str, choices: Sequence[str] = ()) -> Any:
    """A config field with its `--help` text and, for a closed set of values, the values allowed."""
    return field(default=default, metadata={"help": help, "choices": tuple(choices)})


@dataclass
class TrainConfig:
    """Fields shared by both stages: data, optimisation, logging and the network (`model`)."""

    preset: str = opt("tiny", "model preset; `--model.*` keys refine it", PRESETS)
    model: ModelConfig = field(default_factory=_tiny,
                               metadata={"help": "the network: --preset sets all its keys, these refine them"})
    data: str | None = opt(None, "data set root or list file; none = the embedded demo data")
    out: str | None = opt(None, "run directory; none = runs/<stage>-<preset>")
    restart: bool = opt(False, "move an existing run directory aside (dated name) and start over in it")
    steps: int = opt(200, "total optimizer steps (a larger value extends a finished run)")
    batch_size: int = opt(4, "GLOBAL batch, split evenly over torchrun processes")
    crop: int = opt(64, "training crop side in pixels (the paper: 128)")
    lr: float = opt(2e-4, "Adam peak learning rate")
    lr_min: float = opt(1e-6, "the cosine schedule ends here")
    warmup_steps: int = opt(0, "linear warm-up from lr/warmup_steps to lr over the first steps, then the cosine; "
                            "0 = none (soften Adam's first steps when --init is an already trained model)")
    betas: tuple[float, float] = opt((0.9, 0.999), "Adam betas, two numbers like 0.9,0.999")
    weight_decay: float = opt(0.0, "Adam weight decay")
    grad_clip: float = opt(0.0, "max gradient norm; 0 = no clipping")
    ema_decay: float = opt(0.0, "EMA of the weights in [0, 1) (validation and best.pt use it); 0 = no EMA")
    amp: str = opt("bf16", "CUDA autocast dtype (fp16 adds a GradScaler); the CPU trains in float32 unless "
                   "cpu_amp", AMP_MODES)
    cpu_amp: bool = opt(False, "on the CPU, run the forward under bfloat16 autocast too (loss and weights stay "
                        "float32); about 1.7x faster for `small` on CPUs with AVX-512 BF16 "
                        "(benchmarks/bench_training.py --cpu-amp); needs amp bf16")
    device: str = opt("auto", "auto (CUDA if present) | cpu | cuda | cuda:N")
    seed: int = opt(0, "seed of every random choice (data order, crops, initial weights)")
    num_workers: int = opt(2, "data-loader workers per process")
    log_every: int = opt(10, "steps between log.jsonl / TensorBoard lines")
    val_every: int = opt(50, "steps between validations, the first at step 0 (the starting weights); 0 = only at "
                         "the end")
    save_every: int = opt(50, "steps between last.pt checkpoints (and always at the end)")
    keep_every: int = opt(0, "steps between kept snapshots of the weights a user gets (the EMA when kept), "
                          "snapshots/step-NNNNNN.safetensors in float32, never overwritten; 0 = none")
    compile: bool = opt(False, "torch.compile every block (fullgraph); off until a GPU shows it faster")
    cuda_graphs: bool = opt(False, "capture the whole fixed-size step as a CUDA graph (CUDA; amp bf16 or none, "
                            "grad_clip 0, one process)")

    def validate(self) -> None:
        """Raise ConfigError for values the engine cannot run with (allowed values come from the fields)."""
        _check_choices(self)
        positive = ("steps", "batch_size", "crop", "log_every", "save_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.keep_every < 0:
            raise ConfigError(f"keep_every must be 0 (no snapshots) or a number of steps, got {self.keep_every}")
        for name in ("lr", "lr_min", "warmup_steps", "weight_decay", "grad_clip", "val_every", "num_workers", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_steps >= self.steps:
            raise ConfigError(f"warmup_steps must be below steps ({self.steps}), got {self.warmup_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        try:
            validate_model(self.model)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None
        multiple = 2 ** len(self.model.enc_blocks) * self.model.window  # DwGN.multiple: what the network pads to
        if self.crop % multiple:
            below, above = self.crop // multiple * multiple, (self.crop // multiple + 1) * multiple
            nearest = f"{below} or {above}" if below else str(above)
            raise ConfigError(f"crop {self.crop}: the {self.preset} network pads its input to a multiple of {multiple} "
                              f"(2^levels x window), so another crop trains on padding; use --crop {nearest}")
        if self.cpu_amp and self.amp != "bf16":
            raise ConfigError(f"cpu_amp runs the CPU forward in bfloat16: it needs amp bf16, got amp {self.amp} "
                              "(drop --cpu-amp, or set --amp bf16)")
        if self.cuda_graphs and (self.amp == "fp16" or self.grad_clip > 0):
            raise ConfigError("cuda_graphs captures a plain step: it needs amp bf16 or none (no fp16 GradScaler) "
                              "and grad_clip 0")


@dataclass
class SynthConfig:
    """`synth.*` (YAML: a `synth:` section): training on weather synthesised on the fly from clean photos
    (dwgn.data.datasets.SyntheticWeatherDataset), how the demo model is trained; not in the paper."""

    online: bool = opt(False, "train on SYNTHETIC weather made on the fly (a fresh degradation per sample) from "
                       "clean photos: the demo's training photos, or the clean images of --data")
    clean_share: float = opt(0.15, "share of clean -> clean training pairs")
    tone_share: float = opt(0.0, "share of training crops given a random global tone first (paler, flatter, darker "
                            "or tinted scenes; clean and weather pairs alike)")
    pair_tone_share: float = opt(0.0, "share of weather pairs given a random global tone after the weather, the same "
                                 "on input and target (the air of haze and fog toned too)")
    weather_side: int | None = opt(None, "side of the square the weather is made on before the training crop is cut "
                                   "from it (sizes of drops, flakes and streaks as on a photo of that side); "
                                   "none = the crop itself")
    clean_crop: int | None = opt(None, "side of the clean -> clean crops (e.g. as large as the photos to leave "
                                 "alone); other than --crop, each step's batch is then all clean or all weather, and "
                                 "--synth.clean-share the share of clean steps; none = --crop")
    weather_weights: tuple[float, ...] = opt((1.0, 1.0, 1.0, 1.0, 1.0), "relative sampling weights of "
                                             "snow,rainfog,raindrop,rain,haze (0 leaves one out)")

    def validate(self, crop: int) -> None:
        """Raise ConfigError for a value SyntheticWeatherDataset cannot use, or for synth.* keys set while
        synth.online is off (they would shape nothing)."""
        if not self.online and self != SynthConfig():
            changed = ", ".join(f"synth.{f.name}" for f in fields(self) if getattr(self, f.name) != f.default)
            raise ConfigError(f"{changed} set, but synth.online is off and the synth.* keys shape only synthetic "
                              "training; add --synth.online (online: true under synth: in YAML), or drop them")
        if not 0.0 <= self.clean_share < 1.0:
            raise ConfigError(f"synth.clean_share must be in [0, 1), got {self.clean_share} "
                              "(e.g. --synth.clean-share 0.35)")
        if not 0.0 <= self.tone_share <= 1.0:
            raise ConfigError(f"synth.tone_share must be in [0, 1], got {self.tone_share} "
                              "(e.g. --synth.tone-share 0.5)")
        if not 0.0 <= self.pair_tone_share <= 1.0:
            raise ConfigError(f"synth.pair_tone_share must be in [0, 1], got {self.pair_tone_share} "
                              "(e.g. --synth.pair-tone-share 0.5)")
        if self.weather_side is not None and self.weather_side < crop:
            raise ConfigError(f"synth.weather_side must be at least crop ({crop}), got {self.weather_side} "
                              f"(e.g. --synth.weather-side {2 * crop}, or none)")
        if self.clean_crop is not None and self.clean_crop <= 0:
            raise ConfigError(f"synth.clean_crop must be a positive side in px, got {self.clean_crop} "
                              f"(e.g. --synth.clean-crop {2 * crop}, or none for --crop)")
        from dwgn.data.weather import weather_cumulative

        try:
            weather_cumulative(self.weather_weights)
        except ValueError as err:
            raise ConfigError(f"synth.weather_weights: {err} (e.g. --synth.weather-weights 2,1,2,1,1)") from None


@dataclass
class FinetuneConfig(TrainConfig):
    """Stage 2 (train.py): all-weather fine-tuning from the pre-trained network (docs/DESIGN.md §3)."""

    init: str | None = opt(None, "pre-trained checkpoint; none = runs/pretrain-<preset>/last.pt")
    from_scratch: bool = opt(False, "start from random weights instead of --init")
    val_data: str | None = opt("auto", "validation pairs: auto (a held-out part of --data, or the demo sets "
                               "without --data), a test-set name or folder, or none (no validation)")
    val_images: int = opt(5, "pairs used for validation (spread over the sets)")
    val_crop: int | None = opt(128, "center crop of validation pairs; none = whole images")
    synth: SynthConfig = field(default_factory=SynthConfig, metadata={
        "help": "synthetic weather made on the fly (not in the paper; the demo model's training): synth.online "
                "turns it on, the other synth.* keys shape it"})

    def validate(self) -> None:
        super().validate()
        if self.val_images <= 0:
            raise ConfigError(f"val_images must be positive, got {self.val_images}")
        self.synth.validate(self.crop)


def _check_choices(cfg: Any, prefix: str = "") -> None:
    """Every field with `choices` metadata holds one of them (nested configs too)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            _check_choices(value, f"{prefix}{f.name}.")
        elif f.metadata.get("choices") and value not in f.metadata["choices"]:
            raise ConfigError(f"{prefix}{f.name} must be one of {', '.join(f.metadata['choices'])}, got {value!r}")


__all__ = ["AMP_MODES", "ConfigError", "FinetuneConfig", "SynthConfig", "TrainConfig", "opt"]
