"""One typed configuration for both training stages (docs/DESIGN.md §6).

Precedence, lowest to highest: the dataclass defaults (the embedded CPU demo) -> the model preset
(`--preset` or `preset:` in YAML; it replaces the whole `model`) -> the YAML file (`--config F`) ->
`--key value` flags. Flags use hyphens or underscores (`--batch-size` == `--batch_size`), nested keys
are dotted (`--model.width 16`), values are converted to the field's type (`--model.enc-blocks 1,1,1`
is a tuple of ints, `--from-scratch` alone is True, `none` is None where a field allows it). Integers are
whole numbers (`12`, `1e4`); `1.5` or `1.5e0` for an integer key is an error, never truncated.
An unknown key is an error naming it and the valid keys. Each field's metadata holds its `--help` text
and, for a closed set of values, the allowed `choices`.
"""
from __future__ import annotations

import types
import typing
from decimal import Decimal, InvalidOperation
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from dwgn.errors import UserError
from dwgn.models.network import PRESETS, ModelConfig, validate_model

AMP_MODES = ("bf16", "fp16", "none")
T = TypeVar("T")


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


@dataclass
class PretrainConfig(TrainConfig):
    """Stage 1 (pre-training.py): blind background decomposition (docs/DESIGN.md §2).

    The pre-training stage may subclass this with its own extra fields; the parser handles any
    dataclass."""

    degradation: str = opt("adversarial", "adversarial (learned masks, the paper) or weather (synthetic weather)",
                           ("adversarial", "weather"))


def _check_choices(cfg: Any, prefix: str = "") -> None:
    """Every field with `choices` metadata holds one of them (nested configs too)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            _check_choices(value, f"{prefix}{f.name}.")
        elif f.metadata.get("choices") and value not in f.metadata["choices"]:
            raise ConfigError(f"{prefix}{f.name} must be one of {', '.join(f.metadata['choices'])}, got {value!r}")


# ---------------------------------------------------------------- conversion of values


def _valid_keys(cls: Any, prefix: str = "") -> list[str]:
    return [prefix + f.name for f in fields(cls)]


# Fine-tuning keys that moved into the `synth` group (configs written before it name them at the top level).
MOVED_KEYS = {"online_weather": "synth.online", **{k: f"synth.{k}" for k in (
    "clean_share", "tone_share", "pair_tone_share", "weather_side", "clean_crop", "weather_weights")}}


def _moved(key: str) -> str:
    """'; it is now synth.x: --synth.x, or x under synth: in YAML' for a key that moved, else ''."""
    new = MOVED_KEYS.get(key)
    if new is None:
        return ""
    group, name = new.split(".")
    return f"; it is now {new}: --{new.replace('_', '-')}, or {name} under {group}: in YAML"


def _integer(value: Any) -> int:
    """A whole number: 12, "12", "1e4" or 2.0 are read; 1.5, "1.5" and "1.5e0" are refused."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, int):
        return value
    try:
        number = Decimal(str(value).strip().replace("_", ""))
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise ValueError("not a whole number")
    return int(number)


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Convert a YAML or command-line value to the field's declared type (a type the parser does not know
    is a bug in the config class: TypeError)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"config field {key}: only `X | None` unions are supported, got {hint}")
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0], key, source)
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
            return _integer(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError("a boolean is not a number")
            return float(value)
        if hint is str:
            if isinstance(value, (dict, list, tuple)):
                raise ValueError("not a string")
            return str(value)
        if origin is tuple and typing.get_args(hint):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise ValueError("not a list")
            args = typing.get_args(hint)
            if len(args) == 2 and args[1] is Ellipsis:
                element_types = [args[0]] * len(items)
            elif len(items) != len(args):
                raise ValueError(f"needs {len(args)} values, got {len(items)}")
            else:
                element_types = list(args)
            return tuple(_coerce(v.strip() if isinstance(v, str) else v, t, key, source)
                         for v, t in zip(items, element_types))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key '{key}' (from {source}): cannot read {value!r} as "
                          f"{getattr(hint, '__name__', hint)} ({err})") from None
    raise TypeError(f"config field {key} has type {hint}, which the parser cannot convert; "
                    "use bool, int, float, str, tuple[...] or X | None")


def set_value(cfg: Any, key: str, value: Any, source: str = "code") -> None:
    """Set a dotted key ("model.width") on a config, converting the value; unknown keys are errors."""
    parts = key.replace("-", "_").split(".")
    target, prefix = cfg, ""
    for depth, name in enumerate(parts):
        names = {f.name: f for f in fields(target)}
        if name not in names:
            if not prefix and name in MOVED_KEYS and "synth" in names:
                raise ConfigError(f"unknown config key '{name}' (from {source}){_moved(name)}")
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
        setattr(target, name, _coerce(value, hint, prefix + name, source))


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for k, v in mapping.items():
        if isinstance(v, dict):
            items += _flatten(v, f"{prefix}{k}.")
        else:
            items.append((f"{prefix}{k}", v))
    return items


def _bool_keys(cls: Any, prefix: str = "") -> set[str]:
    """Dotted names of the boolean fields, nested groups included ("synth.online")."""
    hints, out = typing.get_type_hints(cls), set()
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            out |= _bool_keys(hints[f.name], f"{prefix}{f.name}.")
        elif hints[f.name] is bool:
            out.add(prefix + f.name)
    return out


def _parse_flags(cls: Any, argv: Sequence[str]) -> list[tuple[str, str | bool]]:
    """`--key value`, `--key=value`, or a bare `--flag` for booleans -> [(key, raw value)]."""
    bool_keys = _bool_keys(cls)
    pairs, i = [], 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r}; options look like --key value (see --help)")
        key, eq, raw = token[2:].partition("=")
        key = key.replace("-", "_")
        if key in MOVED_KEYS and any(f.name == "synth" for f in fields(cls)):
            raise ConfigError(f"unknown option {token.partition('=')[0]}{_moved(key)}")
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


def _help_lines(cfg: Any, prefix: str = "") -> list[str]:
    lines = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            lines += [f"  {prefix}{f.name}.*: {f.metadata.get('help', '')}", *_help_lines(value, f"{prefix}{f.name}.")]
            continue
        choices = f.metadata.get("choices")
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else ("none" if value is None else value)
        text = f.metadata.get("help", "") + (f" {{{', '.join(choices)}}}" if choices else "")
        lines.append(f"  --{(prefix + f.name).replace('_', '-'):22s} {str(shown):12s} {text}")
    return lines


def help_text(cls: Any, prog: str) -> str:
    """Every key with its default, what it is, and (in braces) the values it takes."""
    doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    return "\n".join([f"usage: {prog} [--config FILE.yaml] [--key value ...]", "", doc, "",
                      "Later sources win: defaults < --preset < --config YAML < flags. Hyphens or underscores; "
                      "booleans alone mean true; none clears an optional value.", "",
                      f"  {'--key':24s} {'default':12s} meaning", *_help_lines(cls())])


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_config(cls: type[T], argv: Sequence[str] | None = None, prog: str = "dwgn") -> T:
    """Resolve defaults, preset, `--config` YAML and flag overrides into a validated `cls` instance.

    `--help` prints every key with its default and meaning and exits 0 (SystemExit)."""
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
        cfg.preset = str(presets[-1])  # checked by validate() with the other fields' allowed values
        if cfg.preset in PRESETS:
            cfg.model = replace(PRESETS[cfg.preset])
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


def _require_every_field(cls: Any, data: dict, source: str) -> None:
    """A stored config must name every field: none is filled in silently with a default."""
    missing = [key for key, _ in _flatten(config_to_dict(cls())) if key not in dict(_flatten(data))]
    if missing:
        raise ConfigError(f"{source}: the stored config lacks {', '.join(missing)} (written by an older "
                          "version?); nothing is filled in with defaults: add the missing keys, or retrain")


def upgrade_stored_config(data: dict) -> dict:
    """A stored config (a run's last.pt, a release's metadata) in today's shape: the synthetic-weather keys that
    configs written before the `synth` group hold at the top level move under `synth` (MOVED_KEYS), and
    `self_feed_share`, a removed training option, is dropped where it was off (0); a run that used it keeps
    the key, so resuming it is refused as another config. Everything else is returned as stored."""
    out = {k: v for k, v in data.items() if k not in MOVED_KEYS}
    moved = {MOVED_KEYS[k].split(".")[1]: v for k, v in data.items() if k in MOVED_KEYS}
    if moved:
        out["synth"] = {**moved, **(data.get("synth") or {})}
    if out.get("self_feed_share") == 0:
        del out["self_feed_share"]
    return out


def config_from_dict(cls: type[T], data: dict, source: str = "checkpoint") -> T:
    """Inverse of config_to_dict (after upgrade_stored_config); values are type-converted, unknown and missing
    keys are errors."""
    data = upgrade_stored_config(data)
    _require_every_field(cls, data, source)
    cfg = cls()
    for key, value in _flatten(dict(data)):
        set_value(cfg, key, value, source)
    return cfg


def save_yaml(cfg: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(_yaml_ready(config_to_dict(cfg)), sort_keys=False))


def config_diff(a: Any, b: Any) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (value in a, value in b)}, in a's order, for every key whose values differ between two configs,
    each a dataclass or a nested dict as stored (lists read as tuples); a key only one side has is paired with
    '<absent>'."""
    flat_a, flat_b = ({key: tuple(v) if isinstance(v, list) else v
                       for key, v in _flatten(config_to_dict(c) if is_dataclass(c) else c)} for c in (a, b))
    pairs = {key: (flat_a.get(key, "<absent>"), flat_b.get(key, "<absent>")) for key in {**flat_a, **flat_b}}
    return {key: (va, vb) for key, (va, vb) in pairs.items() if va != vb}


__all__ = [
    "AMP_MODES", "MOVED_KEYS", "ConfigError", "FinetuneConfig", "PretrainConfig", "SynthConfig", "TrainConfig",
    "config_diff", "config_from_dict", "config_to_dict", "help_text", "load_yaml", "opt", "parse_config", "save_yaml",
    "set_value", "upgrade_stored_config",
]
