"""DwGN: all-in-one adverse weather removal with dynamically generated weights."""
from dwgn.network import PRESETS, DwGN, ModelConfig, build_model

__all__ = ["DwGN", "ModelConfig", "PRESETS", "build_model", "load_model", "restore"]


def load_model(checkpoint_path, device="cpu"):
    """Rebuild a network from a checkpoint alone (loaded with weights_only=True)."""
    from dwgn.checkpoint import load_model as _load

    return _load(checkpoint_path, device=device)


def restore(model, image, **kwargs):
    """HxWx3 uint8 in, HxWx3 uint8 out; large images are restored in tiles."""
    from dwgn.restore import restore as _restore

    return _restore(model, image, **kwargs)
