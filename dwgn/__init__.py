"""DwGN: all-in-one adverse weather removal with dynamically generated weights.

Public API (DESIGN.md §6): `build_model(preset, **overrides)`, `load_model(checkpoint_path)`,
`restore(model, image)`.
"""
from dwgn.checkpoint import load_model
from dwgn.network import PRESETS, DwGN, ModelConfig, build_model
# imported eagerly: a lazy `import dwgn.restore` would rebind the name `dwgn.restore` to the module
from dwgn.restore import restore

__all__ = ["DwGN", "ModelConfig", "PRESETS", "build_model", "load_model", "restore"]
