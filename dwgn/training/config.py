"""One typed configuration for both training stages (docs/DESIGN.md §6).

Precedence, lowest to highest: the dataclass defaults (the embedded CPU demo) -> the model preset
(`--preset` or `preset:` in YAML; it replaces the whole `model`) -> the YAML file (`--config F`) ->
`--key value` flags. Flags use hyphens or underscores (`--batch-size` == `--batch_size`), nested keys
are dotted (`--model.width 16`), values are converted to the field's type (`--model.enc-blocks 1,1,1`
is a tuple of ints, `--from-scratch` alone is True, `none` is None where a field allows it).
An unknown key is an error naming it and the valid keys.
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from dwgn.models.network import DYNAMIC_MODES, PRESETS, ModelConfig

AMP_MODES = ("bf16", "fp16", "none")
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message says which and how to fix it."""


def _tiny() -> ModelConfig:
    return replace(PRESETS["tiny"])


@dataclass
class TrainConfig:
    """Fields shared by both stages: data, optimisation, logging and the network (`model`)."""

    preset: str = "tiny"                  # model preset from dwgn.models.network.PRESETS; `model.*` refine it
    model: ModelConfig = field(default_factory=_tiny)
    data: str | None = None               # data set root or list file; None -> the embedded default
    out: str | None = None                # run directory; None -> runs/<stage>-<preset>
    steps: int = 200                      # total optimizer steps (a larger value extends a finished run)
    batch_size: int = 4                   # GLOBAL batch, split evenly over torchrun processes
    crop: int = 64                        # training crop side (the paper: 128; 64 = one padding unit, cheap on a CPU)
    lr: float = 2e-4                      # Adam peak learning rate
    lr_min: float = 1e-6                  # cosine schedule ends here
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 0.0                # max gradient norm; 0 = no clipping
    ema_decay: float = 0.0                # EMA of the weights; 0 = no EMA
    amp: str = "bf16"                     # CUDA autocast dtype: bf16 | fp16 (with GradScaler) | none; CPU is float32
    device: str = "auto"                  # auto (CUDA if present) | cpu | cuda | cuda:N
    seed: int = 0
    num_workers: int = 2                  # data-loader workers per process
    log_every: int = 10                   # steps between log.jsonl / TensorBoard lines
    val_every: int = 50                   # steps between validations (0 = only at the end)
    save_every: int = 50                  # steps between last.pt checkpoints (and always at the end)

    def validate(self) -> None:
        """Raise ConfigError for values the engine cannot run with."""
        positive = ("steps", "batch_size", "crop", "log_every", "save_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("lr", "lr_min", "weight_decay", "grad_clip", "val_every", "num_workers", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.model.dynamic not in DYNAMIC_MODES:
            raise ConfigError(f"model.dynamic must be one of {', '.join(DYNAMIC_MODES)}, got {self.model.dynamic!r}")
        if len(self.betas) != 2:
            raise ConfigError(f"betas needs two values like 0.9,0.999, got {self.betas}")


@dataclass
class FinetuneConfig(TrainConfig):
    """Stage 2 (train.py): all-weather fine-tuning from the pre-trained network (docs/DESIGN.md §3)."""

    init: str | None = None               # pre-trained checkpoint; None -> runs/pretrain-<preset>/last.pt
    from_scratch: bool = False            # start from random weights instead of --init
    val_data: str | None = "demo"         # test-set name or folder for validation PSNR; none = no validation
    val_images: int = 5                   # pairs used for validation (spread over the sets)
    val_crop: int | None = 128            # center crop of validation pairs; none = whole images

    def validate(self) -> None:
        super().validate()
        if self.val_images <= 0:
            raise ConfigError(f"val_images must be positive, got {self.val_images}")


@dataclass
class PretrainConfig(TrainConfig):
    """Stage 1 (pre-training.py): blind background decomposition (docs/DESIGN.md §2).

    The pre-training stage may subclass this with its own extra fields; the parser handles any
    dataclass."""

    degradation: str = "adversarial"      # adversarial (learned masks) | weather (synthetic weather)

    def validate(self) -> None:
        super().validate()
        if self.degradation not in ("adversarial", "weather"):
            raise ConfigError(f"degradation must be adversarial or weather, got {self.degradation!r}")


# ---------------------------------------------------------------- conversion of values


def _valid_keys(cls: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(cls):
        keys.append(prefix + f.name)
    return keys


def _coerce(value: Any, hint: Any, default: Any, key: str, source: str) -> Any:
    """Convert a YAML or command-line value to the field's declared type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0], default, key, source)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0"):
                return False
            raise ValueError("not a boolean")
        if hint is int:
            if isinstance(value, bool):
                raise ValueError("a boolean is not an integer")
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("not a whole number")
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError("a boolean is not a number")
            return float(value)
        if hint is str:
            if isinstance(value, (dict, list)):
                raise ValueError("not a string")
            return str(value)
        if hint is tuple or origin is tuple:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise ValueError("not a list")
            element = type(default[0]) if default else str
            return tuple(_coerce(v.strip() if isinstance(v, str) else v, element, None, key, source) for v in items)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key '{key}' (from {source}): cannot read {value!r} as {getattr(hint, '__name__', hint)} ({err})") from None
    return value


def set_value(cfg: Any, key: str, value: Any, source: str = "code") -> None:
    """Set a dotted key ("model.width") on a config, converting the value; unknown keys are errors."""
    parts = key.replace("-", "_").split(".")
    target, prefix = cfg, ""
    for depth, name in enumerate(parts):
        names = {f.name: f for f in fields(target)}
        if name not in names:
            valid = ", ".join(_valid_keys(target, prefix))
            raise ConfigError(f"unknown config key '{prefix + name}' (from {source}); valid keys: {valid}")
        hint = typing.get_type_hints(type(target))[name]
        current = getattr(target, name)
        if depth < len(parts) - 1:
            if not is_dataclass(current):
                raise ConfigError(f"config key '{prefix + name}' (from {source}) has no sub-keys")
            target, prefix = current, prefix + name + "."
            continue
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{prefix + name}' (from {source}) needs a mapping of its fields, got {value!r}")
            for sub, v in value.items():
                set_value(cfg, f"{prefix}{name}.{sub}", v, source)
            return
        setattr(target, name, _coerce(value, hint, current, prefix + name, source))


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for k, v in mapping.items():
        if isinstance(v, dict):
            items += _flatten(v, f"{prefix}{k}.")
        else:
            items.append((f"{prefix}{k}", v))
    return items


def _parse_flags(cls: Any, argv: Sequence[str]) -> list[tuple[str, str | bool]]:
    """`--key value`, `--key=value`, or a bare `--flag` for booleans -> [(key, raw value)]."""
    bool_keys = {f.name for f in fields(cls) if typing.get_type_hints(cls)[f.name] is bool}
    pairs, i = [], 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r}; options look like --key value (see --help)")
        key, eq, raw = token[2:].partition("=")
        key = key.replace("-", "_")
        if eq:
            pairs.append((key, raw))
            i += 1
        elif key in bool_keys and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            pairs.append((key, True))
            i += 1
        elif i + 1 < len(argv):
            pairs.append((key, argv[i + 1]))
            i += 2
        else:
            raise ConfigError(f"option --{key.replace('_', '-')} needs a value")
    return pairs


def help_text(cls: Any, prog: str) -> str:
    lines = [f"usage: {prog} [--config FILE.yaml] [--key value ...]", "", "keys (default):"]
    default = cls()
    for key, value in _flatten(config_to_dict(default)):
        lines.append(f"  --{key.replace('_', '-'):24s} {value!r}")
    return "\n".join(lines)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_config(cls: type[T], argv: Sequence[str] | None = None, prog: str = "dwgn") -> T:
    """Resolve defaults, preset, `--config` YAML and flag overrides into a validated `cls` instance.

    `--help` prints every key with its default and exits 0 (SystemExit)."""
    argv = list(argv or [])
    if "-h" in argv or "--help" in argv:
        print(help_text(cls, prog))
        raise SystemExit(0)
    flags = _parse_flags(cls, argv)
    yaml_file = [v for k, v in flags if k == "config"]
    flags = [(k, v) for k, v in flags if k != "config"]
    from_yaml: list[tuple[str, Any]] = []
    source_yaml = ""
    if yaml_file:
        source_yaml = str(yaml_file[-1])
        from_yaml = _flatten(load_yaml(source_yaml))
    cfg = cls()
    presets = [v for k, v in from_yaml if k == "preset"] + [v for k, v in flags if k == "preset"]
    if presets:
        preset = str(presets[-1])
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        cfg.preset, cfg.model = preset, replace(PRESETS[preset])
    for key, value in from_yaml:
        if key != "preset":
            set_value(cfg, key, value, source=source_yaml)
    for key, value in flags:
        if key != "preset":
            set_value(cfg, key, value, source=f"--{key.replace('_', '-')}")
    cfg.validate()
    return cfg


# ---------------------------------------------------------------- plain-dict round trip


def config_to_dict(cfg: Any) -> dict:
    """Nested dict of plain Python types (tuples kept), fit for YAML and weights_only checkpoints."""
    return {f.name: config_to_dict(v) if is_dataclass(v := getattr(cfg, f.name)) else v for f in fields(cfg)}


def _yaml_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _yaml_ready(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_yaml_ready(v) for v in value]
    return value


def config_from_dict(cls: type[T], data: dict, source: str = "checkpoint") -> T:
    """Inverse of config_to_dict; values are type-converted, unknown keys are errors."""
    cfg = cls()
    if "preset" in data and data["preset"] in PRESETS:
        cfg.preset, cfg.model = data["preset"], replace(PRESETS[data["preset"]])
    for key, value in _flatten(dict(data)):
        set_value(cfg, key, value, source)
    return cfg


def model_config_from_dict(data: dict, source: str = "checkpoint") -> ModelConfig:
    cfg = ModelConfig()
    for key, value in data.items():
        set_value(cfg, key, value, source)
    return cfg


def save_yaml(cfg: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(_yaml_ready(config_to_dict(cfg)), sort_keys=False))


def differing_fields(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted names of fields whose values differ between two configs of the same class."""
    out = []
    for f in fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if is_dataclass(va) and is_dataclass(vb):
            out += differing_fields(va, vb, f"{prefix}{f.name}.")
        elif va != vb:
            out.append(f"{prefix}{f.name}")
    return out


__all__ = [
    "AMP_MODES", "ConfigError", "FinetuneConfig", "PretrainConfig", "TrainConfig", "config_from_dict",
    "config_to_dict", "differing_fields", "load_yaml", "model_config_from_dict", "parse_config",
    "save_yaml", "set_value",
]
