"""Reading the training configs (dwgn/training/config.py) from flags, YAML and stored dicts, with jsonargparse.

jsonargparse reads the dataclasses below: one flag per key, nested keys dotted (`--model.width 16`), the YAML
file of `--config F`, stored dicts (`parse_object`), type checks (an integer key refuses 1.5, 1e4 and true; a
tuple its wrong length or element type), unknown keys refused, and `--help`. It was chosen over tyro or
simple-parsing because it does YAML files, dotted flags and plain-dict parsing in one parser and raises its errors
as exceptions (`exit_on_error=False`), which become one ConfigError line here.

This module adds what is this project's: the precedence, lowest to highest, dataclass defaults (the embedded CPU
demo) -> the model preset (`--preset` or `preset:` in YAML; it replaces the whole `model`) -> the YAML file ->
flags, wherever `--config` stands; the spellings of docs/DESIGN.md §6 (hyphens or underscores, `--batch-size` ==
`--batch_size`; a boolean flag alone is true; comma lists `--model.enc-blocks 1,1,1`; `none` clears an optional
value); each field's `--help` text and allowed `choices` from its metadata (`opt`; validate() checks the choices);
and errors naming the key, where it came from and the valid keys, or the new name of a key that moved into `synth`.
"""
from __future__ import annotations

import re
import types
import typing
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, Namespace

from dwgn.models.network import PRESETS, ModelConfig
from dwgn.training.config import ConfigError

T = TypeVar("T")


# ---------------------------------------------------------------- parsing (jsonargparse)


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


def _keys(cls: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Every dotted key ("steps", "model", "model.width") -> (type hint, dataclass field); groups included."""
    hints, out = typing.get_type_hints(cls), {}
    for f in fields(cls):
        out[prefix + f.name] = (hints[f.name], f)
        if is_dataclass(hints[f.name]):
            out.update(_keys(hints[f.name], f"{prefix}{f.name}."))
    return out


def _parser(cls: Any, prog: str = "dwgn", model: ModelConfig | None = None) -> ArgumentParser:
    """jsonargparse's parser of `cls` (`--config F.yaml` and one flag per key); `model`, when given, is the
    default of the `model` group (the preset). Help texts come from the fields' metadata, and a boolean flag
    given alone means true."""
    doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    description = (f"{doc} Later sources win: defaults < --preset < --config YAML < flags. Flags take hyphens or "
                   "underscores (--batch-size, --batch_size); a boolean flag alone means true; lists are "
                   "comma-separated (0.9,0.999) or [0.9,0.999]; none (or null) clears an optional value.")
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False, allow_abbrev=False,
                            print_config=None)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file of keys (configs/*.yaml); flags "
                        "given with it override its values")
    parser.add_class_arguments(cls)
    if model is not None:
        parser.set_defaults({f"model.{f.name}": getattr(model, f.name) for f in fields(model)})
    keys = _keys(cls)
    for action in parser._actions:
        if action.dest in keys:
            hint, f = keys[action.dest]
            choices = f.metadata.get("choices")
            action.help = (f"a YAML file or mapping of the {action.dest}.* keys below" if is_dataclass(hint) else
                           f.metadata.get("help", "") + (f" {{{', '.join(choices)}}}" if choices else ""))
            if hint is bool:
                action.nargs, action.const = "?", True
    for name, group in parser.groups.items():
        group.title = name if name in keys else cls.__name__
        group.description = keys[name][1].metadata.get("help") if name in keys else None
    return parser


def _value(text: str, hint: Any) -> str:
    """A command-line value in jsonargparse's spelling: a comma list -> `[a,b]`, `none` -> `null` for an optional
    key (for a string key like `--model.dynamic`, `none` stays a value)."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    inner = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if optional and text.strip().lower() == "none":
        return "null"
    if typing.get_origin(inner) is tuple and not text.lstrip().startswith("["):
        return f"[{text}]"
    return text


def _command_line(cls: Any, argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(`--config F` pairs, the other flags) in jsonargparse's spelling: `--batch-size` -> `--batch_size`,
    `--x=v` -> `--x v`, values as `_value` writes them. Old flat synth names are refused with their new one."""
    keys = _keys(cls)
    configs: list[str] = []
    flags: list[str] = []
    target, hint = flags, None
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            name = name.replace("-", "_")
            if name in MOVED_KEYS and "synth" in keys:
                raise ConfigError(f"unknown option --{token[2:].partition('=')[0]}{_moved(name)}")
            target, hint = (configs if name == "config" else flags), keys.get(name, (None,))[0]
            target.append(f"--{name}")
            if not eq:
                continue
            token = value
        target.append(token if hint is None else _value(token, hint))
        target, hint = flags, None
    return configs, flags


def _origin(key: str, flags: Sequence[str], source: str) -> str:
    """Where a key's value came from: its flag and the value given there (`--steps 'x'`), else `source`."""
    if f"--{key}" not in flags:
        return source
    given = flags[flags.index(f"--{key}") + 1:][:1]
    return f"--{key} {given[0]!r}" if given and not given[0].startswith("--") else f"--{key}"


def _config_error(err: Exception, cls: Any, source: str, flags: Sequence[str] = ()) -> ConfigError:
    """jsonargparse's message on one line, naming the key, where it came from (the flag, else `source`) and, for an
    unknown key, the valid ones (or the new name of a key that moved into synth)."""
    text = " ".join(str(err).split())
    keys = _keys(cls)
    unknown = (re.match(r"Group '([\w.]+)' does not accept option '(\w+)'", text)
               or re.match(r"()Option '(\w+)' is not accepted", text)
               or re.match(r"()unrecognized arguments: --([\w.]+)", text))
    if unknown:
        group, name = unknown.groups()
        key = f"{group}.{name}" if group else name
        origin = _origin(key, flags, source)
        if not group and key in MOVED_KEYS and "synth" in keys:
            return ConfigError(f"unknown config key '{key}' (from {origin}){_moved(key)}")
        parent = key.rpartition(".")[0]
        while parent and parent not in keys:  # --synth.online for a stage without synth: the top-level keys
            parent = parent.rpartition(".")[0]
        valid = [k for k in keys if k.rpartition(".")[0] == parent]
        return ConfigError(f"unknown config key '{key}' (from {origin}); valid keys: {', '.join(valid)}")
    if text.startswith("unrecognized arguments: "):
        return ConfigError(f"unexpected argument {text.split(': ', 1)[1]!r}; options look like --key value")
    if text.startswith("Unexpected config"):
        return ConfigError(f"{source} must hold a mapping of keys to values, got: {text.split(': ', 1)[1]}")
    named = re.match(r'Parser key "([\w.]+)": (.*)', text)
    if named and named.group(1) == "config":
        return ConfigError(f"--config: {named.group(2)}; pass an existing YAML file (see configs/)")
    if named:
        key, problem = named.groups()
        origin = _origin(key, flags, source)
        return ConfigError(f"config key '{key}' (from {origin}): {problem}")
    return ConfigError(f"{text} (from {source})" if source not in text and not text.startswith("argument --")
                       else text)


def _instance(cls: type[T], parser: ArgumentParser, parse: Callable[[], Any], source: str,
              flags: Sequence[str] = ()) -> T:
    """`cls` from what `parse()` (a jsonargparse parse of `parser`) returns; its errors become ConfigError."""
    try:
        parsed = parse()
    except ArgumentError as err:
        raise _config_error(err, cls, source, flags) from None
    for key, (hint, _) in _keys(cls).items():
        if is_dataclass(hint) and not isinstance(parsed[key], Namespace):
            raise ConfigError(f"config key '{key}' (from {source}) needs a mapping of its keys, got {parsed[key]!r}")
    built = parser.instantiate(parsed)
    return cls(**{f.name: built[f.name] for f in fields(cls)})


def parse_config(cls: type[T], argv: Sequence[str] | None = None, prog: str = "dwgn") -> T:
    """Resolve defaults, preset, `--config` YAML and flag overrides into a validated `cls` instance.

    `--help` prints every key with its default and meaning and exits 0 (SystemExit)."""
    try:
        configs, flags = _command_line(cls, argv or [])
        args = configs + flags  # the YAML first: flags override it wherever --config stands
        source = configs[-1] if configs else "the command line"
        # once to learn the preset (from the YAML or a flag), then with the preset's network as `model`'s default
        cfg = _instance(cls, parser := _parser(cls, prog), lambda: parser.parse_args(args), source, flags)
        if cfg.preset in PRESETS:  # an unknown preset is refused by validate() with the other allowed values
            parser = _parser(cls, prog, model=PRESETS[cfg.preset])
            cfg = _instance(cls, parser, lambda: parser.parse_args(args), source, flags)
    except ConfigError as err:
        raise ConfigError(f"{err} (see --help)") from None
    cfg.validate()
    return cfg


# ---------------------------------------------------------------- plain-dict round trip


def config_to_dict(cfg: Any) -> dict:
    """Nested dict of plain Python types (tuples kept), fit for YAML and weights_only checkpoints."""
    return asdict(cfg)


def _yaml_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _yaml_ready(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_yaml_ready(v) for v in value]
    return value


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for k, v in mapping.items():
        if isinstance(v, dict):
            items += _flatten(v, f"{prefix}{k}.")
        else:
            items.append((f"{prefix}{k}", v))
    return items


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
    """Inverse of config_to_dict (after upgrade_stored_config); values are type-checked, unknown and missing
    keys are errors."""
    data = upgrade_stored_config(data)
    _require_every_field(cls, data, source)
    parser = _parser(cls)
    return _instance(cls, parser, lambda: parser.parse_object(data), source)


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


__all__ = ["MOVED_KEYS", "config_diff", "config_from_dict", "config_to_dict", "parse_config", "save_yaml",
           "upgrade_stored_config"]
