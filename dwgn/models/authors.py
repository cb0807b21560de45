"""The authors' parameter names (their public code, class WAformer) mapped to ours, one name piece at a time.

Their network and ours hold the same tensors: every one of the 1,744 tensors of the paper network has
exactly one counterpart of the same shape, under a name that differs only in the pieces of RENAMES (no
reshape, no transpose: our weight-adaptive 1x1 reads its generated kernel in their (C_out, C_in) layout).
`to_ours` rewrites a name; `convert_state_dict` maps a whole state_dict, infers our ModelConfig from the
shapes and refuses anything that is not mapped exactly once with the right shape.
"""
from __future__ import annotations

from dataclasses import fields, replace

from torch import Tensor

from dwgn.errors import UserError
from dwgn.models.network import PRESETS, ModelConfig, build_model

# (their pieces, our pieces): whole dot-separated pieces, longest match first; the pieces not listed
# (encoders, middle, decoders, downs, ups, hdmc, hdfn, the module indices, weight, bias) are the same.
RENAMES: tuple[tuple[str, str], ...] = (
    ("intro", "stem"),                                                    # 3x3 conv 3 -> C
    ("ending", "output"),                                                 # 3x3 conv C -> 3
    ("ln1", "norm1"),                                                     # LayerNorm before HDMC
    ("ln2", "norm2"),                                                     # LayerNorm before HDFN
    ("hdmc.conv", "hdmc.static_qkv"),                                     # static branch: 1x1, GELU, grouped 3x3
    ("hdmc.dynamic", "hdmc.dynamic_qkv"),                                 # dynamic branch: the same, weight-adaptive
    ("hdmc.att.relative_position_params", "hdmc.attention.bias_table"),   # (heads, 2w-1, 2w-1)
    ("hdmc.conv1_1", "hdmc.project"),                                     # 1x1 2C -> C, with bias
    ("hdfn.conv", "hdfn.static"),                                         # static branch
    ("hdfn.dynamic", "hdfn.dynamic"),                                     # dynamic branch
    ("hdfn.linear", "hdfn.alpha"),                                        # 1x1 C -> C/16 -> 1 for alpha
    ("hdfn.conv1_1", "hdfn.project"),                                     # 1x1 2C -> C
    ("glgf", "generator"),                                                # GLGF generating the kernel
    ("glgf_c", "compensation"),                                           # GLGF of the 3x3's channel gain
    ("conv1", "spatial1"),                                                # 1x1's spatial compensation, first 3x3
    ("conv2", "spatial2"),                                                # ... and second 3x3
    ("wn_fc1_l", "local"),                                                # GLGF: grouped 1x1 C -> C
    ("wn_fc1_g1", "squeeze"),                                             # GLGF: grouped 1x1 C -> g
    ("wn_fc1_g2", "expand"),                                              # GLGF: 1x1 g -> C
    ("wn_fc2_l", "per_channel"),                                          # GLGF: per-channel 1x1 C -> N
    ("wn_fc2_g", "shared"),                                               # GLGF: 1x1 C -> 1
)

# one key of our network per ModelConfig field that its shape reveals
_STEM, _TABLE = "stem.weight", "encoders.0.0.hdmc.attention.bias_table"
_SQUEEZE = "encoders.0.0.hdmc.dynamic_qkv.0.generator.squeeze.weight"


class AuthorsMappingError(UserError, ValueError):
    """A state_dict that cannot be mapped one-to-one onto our network; the message names the keys."""


def _rename(key: str, table: tuple[tuple[str, str], ...]) -> str:
    pieces, out, i = key.split("."), [], 0
    rules = sorted(((a.split("."), b.split(".")) for a, b in table), key=lambda r: -len(r[0]))
    while i < len(pieces):
        for source, target in rules:
            if pieces[i:i + len(source)] == source:
                out += target
                i += len(source)
                break
        else:
            out.append(pieces[i])
            i += 1
    return ".".join(out)


def to_ours(key: str) -> str:
    """`encoders.0.0.hdmc.dynamic.0.glgf.wn_fc2_l.weight` -> `encoders.0.0.hdmc.dynamic_qkv.0.generator.per_channel.weight`."""
    return _rename(key, RENAMES)


def to_authors(key: str) -> str:
    """The inverse of `to_ours`."""
    return _rename(key, tuple((b, a) for a, b in RENAMES))


def _blocks(keys: set[str], prefix: str) -> tuple[int, ...]:
    """Blocks per level under `prefix` (`encoders`, `decoders`): encoders.L.I.* -> count of I for each L."""
    levels: dict[int, set[int]] = {}
    for k in keys:
        parts = k.split(".")
        if parts[0] == prefix and len(parts) > 2 and parts[1].isdigit() and parts[2].isdigit():
            levels.setdefault(int(parts[1]), set()).add(int(parts[2]))
    return tuple(len(levels[level]) for level in sorted(levels))


def infer_config(state: dict[str, Tensor]) -> ModelConfig:
    """Our ModelConfig from the shapes of a state_dict under our names (dynamic is always `half`)."""
    missing = [to_authors(k) for k in (_STEM, _TABLE, _SQUEEZE) if k not in state]
    if missing:
        raise AuthorsMappingError(f"cannot infer the architecture: key(s) {', '.join(missing)} missing")
    keys = set(state)
    width = state[_STEM].shape[0]
    heads, side = state[_TABLE].shape[0], state[_TABLE].shape[-1]
    middle = len({k.split(".")[1] for k in keys if k.startswith("middle.")})
    return ModelConfig(width=width, enc_blocks=_blocks(keys, "encoders"), middle_blocks=middle,
                       dec_blocks=_blocks(keys, "decoders"), head_dim=width // max(heads, 1),
                       window=(side + 1) // 2, glgf_groups=state[_SQUEEZE].shape[0], dynamic="half")


def matching_preset(config: ModelConfig) -> str | None:
    """The name of the preset whose network `config` builds (with dynamic `half`), if any."""
    return next((n for n, p in PRESETS.items() if replace(p, dynamic="half") == config), None)


def describe_preset(config: ModelConfig) -> str:
    """`preset 'paper'`, or the nearest preset and how the config differs from it."""
    def differences(preset: ModelConfig) -> list[str]:
        return [f"{f.name} {getattr(config, f.name)} vs {getattr(preset, f.name)}" for f in fields(ModelConfig)
                if getattr(config, f.name) != getattr(preset, f.name)]

    name, diff = min(((n, differences(replace(p, dynamic="half"))) for n, p in PRESETS.items()), key=lambda t: len(t[1]))
    if not diff:
        return f"preset {name!r}"
    if len(diff) <= 3:
        return f"no preset; resembles {name!r} except {', '.join(diff)}"
    return "no preset (" + ", ".join(f"{f.name} {getattr(config, f.name)}" for f in fields(ModelConfig)) + ")"


def _listing(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def convert_state_dict(theirs: dict[str, Tensor]) -> tuple[dict[str, Tensor], ModelConfig]:
    """Map the authors' state_dict (with or without DataParallel's `module.` prefix) onto ours.

    Refused, naming the keys, unless every key maps to exactly one of ours with the same shape and every
    one of ours is covered. Returns our state_dict and the ModelConfig that builds the network."""
    not_tensors = sorted(k for k, v in theirs.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise AuthorsMappingError(f"not a state_dict: {len(not_tensors)} value(s) are not tensors ({_listing(not_tensors)})")
    sources: dict[str, list[str]] = {}
    for key in theirs:
        sources.setdefault(to_ours(key.removeprefix("module.")), []).append(key)
    twice = sorted(k for keys in sources.values() if len(keys) > 1 for k in keys)
    if twice:
        raise AuthorsMappingError(f"key(s) map to the same tensor more than once: {_listing(twice)}")
    state = {ours: theirs[keys[0]] for ours, keys in sources.items()}
    config = infer_config(state)
    try:
        expected = {k: v.shape for k, v in build_model("paper", **{f.name: getattr(config, f.name)
                                                                   for f in fields(ModelConfig)}).state_dict().items()}
    except ValueError as err:
        raise AuthorsMappingError(f"the shapes describe no network we can build ({describe_preset(config)}): {err}") from None
    problems = []
    extra = sorted(sources[k][0] for k in state if k not in expected)
    if extra:
        problems.append(f"unexpected key(s) {_listing(extra)}")
    missing = sorted(to_authors(k) for k in expected if k not in state)
    if missing:
        problems.append(f"missing key(s) {_listing(missing)}")
    shapes = sorted(f"{sources[k][0]} {tuple(v.shape)} (expected {tuple(expected[k])})"
                    for k, v in state.items() if k in expected and v.shape != expected[k])
    if shapes:
        problems.append(f"wrong shape(s) {_listing(shapes, 3)}")
    if problems:
        raise AuthorsMappingError("; ".join(problems) + f" -- for an architecture read as {describe_preset(config)}")
    return {k: state[k] for k in expected}, config


__all__ = ["RENAMES", "AuthorsMappingError", "convert_state_dict", "describe_preset", "infer_config",
           "matching_preset", "to_authors", "to_ours"]
