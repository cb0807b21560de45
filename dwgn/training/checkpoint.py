"""Checkpoints: written atomically, loaded with weights_only=True, rebuilt from their own config.

Keys (docs/DESIGN.md §6): `format_version`, `model` (raw weights), `model_ema` (if EMA is used), `config`
(nested dict; `config["model"]` rebuilds the network), `step` (completed optimizer steps); `last.pt`
adds `optimizer`, `scaler`, `rng` (Python, NumPy, torch, CUDA; restored on resume) and stage extras
such as `generators` (Stage 1). No scheduler state: the learning rate is a function of step and config.

A release (`python -m dwgn.export`) may instead be a `.safetensors` file: the weights as its tensors and
every other key (config, step, ...) in one JSON string, its metadata entry "dwgn"; it loads into the same
dict. One entry, keys sorted: safetensors writes metadata entries in no fixed order, and a release's
bytes (and SHA-256) should not change from one export to the next.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from dwgn.errors import UserError
from dwgn.io import atomic_path
from dwgn.training.config import ConfigError
from dwgn.training.cli import config_diff, config_from_dict
from dwgn.models.network import ModelConfig

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "config", "step")
SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_METADATA_KEY = "dwgn"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the network it is loaded into."""


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> None:
    """Write atomically (dwgn.io.atomic_path): a crash mid-write leaves the previous file intact.
    A `.safetensors` path holds a release only (`release_bytes`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        if Path(path).suffix == SAFETENSORS_SUFFIX:
            fh.write(release_bytes(ckpt))
        else:
            torch.save(ckpt, fh)
        fh.flush()
        os.fsync(fh.fileno())  # on disk before the rename: a power cut cannot leave an empty last.pt


class UnsafeCheckpointError(CheckpointError):
    """A torch file that pickles Python objects, so it could only be read by running code from it."""


def read_torch_file(path: str | Path) -> Any:
    """torch.load on the CPU with weights_only=True (no code runs on load); errors name the file and why."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise CheckpointError(f"checkpoint {path} cannot be read: not a torch checkpoint (truncated or another format?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        reason = next((ln.strip() for ln in lines if "Unsupported" in ln or "GLOBAL" in ln), lines[0])
        raise UnsafeCheckpointError(
            f"checkpoint {path} holds more than tensors and plain Python types, so it is not loaded "
            f"(weights_only=True; no code may run on load): {reason}") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated or not a torch file?): {err}") from None


def release_bytes(ckpt: dict[str, Any]) -> bytes:
    """A release checkpoint as safetensors: `ckpt["model"]` as the tensors, every other key in one JSON
    string (so `config` and `step` come back typed). Training state cannot go in it."""
    try:
        rest = json.dumps({k: v for k, v in ckpt.items() if k != "model"}, sort_keys=True)
    except TypeError as err:  # a tensor outside "model": EMA weights, optimizer state
        raise CheckpointError(f"a .safetensors file holds one set of weights and JSON metadata ({err}): keep "
                              "training checkpoints as .pt and release with `python -m dwgn.export SRC DST.safetensors`") from None
    tensors = {k: v.contiguous() for k, v in ckpt["model"].items()}
    return safetensors.torch.save(tensors, {SAFETENSORS_METADATA_KEY: rest})


def _load_safetensors(path: Path) -> dict[str, Any]:
    """The dict `release_bytes` was made from; no code runs (safetensors holds only tensors and strings)."""
    try:
        ckpt: dict[str, Any] = {"model": safetensors.torch.load_file(path, device="cpu")}
        with safetensors.safe_open(path, framework="pt") as fh:
            metadata = fh.metadata() or {}
        ckpt.update(json.loads(metadata.get(SAFETENSORS_METADATA_KEY, "{}")))
    except (SafetensorError, OSError, ValueError, TypeError) as err:  # ValueError: bad JSON, not a dict
        raise CheckpointError(f"checkpoint {path} cannot be read as safetensors (truncated, or metadata that "
                              f"DwGN did not write?): {err}") from None
    return ckpt


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load on the CPU with weights_only=True (no code runs on load) and check the required keys; a
    `.safetensors` file is read with safetensors (its metadata holds the other keys)."""
    path = Path(path)
    if path.suffix != SAFETENSORS_SUFFIX:
        ckpt = read_torch_file(path)
    elif not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    else:
        ckpt = _load_safetensors(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} is a {type(ckpt).__name__}, expected a dict with keys {REQUIRED_KEYS}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks keys {missing}; it was not written by DwGN's training engine")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format_version {ckpt['format_version']}, this code reads {FORMAT_VERSION}")
    return ckpt


def checkpoint_model_config(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> ModelConfig:
    try:
        return config_from_dict(ModelConfig, ckpt["config"]["model"], source=str(path))
    except (KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(f"checkpoint {path} has no usable config['model']: {err}") from None


def check_architecture(ckpt_config: ModelConfig, model_config: ModelConfig, path: str | Path) -> None:
    """Refuse weights of another architecture, naming the config fields that differ."""
    diff = config_diff(ckpt_config, model_config)
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"checkpoint {path} is for another architecture ({detail}); "
                              f"pick the matching --preset/--model.* flags or another checkpoint")


def model_weights(ckpt: dict[str, Any], prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """The network's weights in a checkpoint: the EMA weights when the run kept them (and they are preferred)."""
    if prefer_ema and ckpt.get("model_ema") is not None:
        return ckpt["model_ema"]
    return ckpt["model"]


def release_of(ckpt: dict[str, Any], weights: dict[str, torch.Tensor] | None = None,
               dtype: torch.dtype | None = None, note: str = "", **extra: Any) -> dict[str, Any]:
    """What `load_model` needs of a checkpoint and nothing else: its format version, config and step, and
    `weights` (default: model_weights(ckpt)) on the CPU, floating ones cast to `dtype` (None: kept), with
    `note` and any `extra` keys. Optimizer, RNG and stage state are left out."""
    weights = model_weights(ckpt) if weights is None else weights
    model = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu()
             for k, v in weights.items()}
    return {"format_version": ckpt["format_version"], "model": model, "config": ckpt["config"],
            "step": ckpt["step"], "note": note, **extra}


def load_weights(model: nn.Module, path: str | Path, prefer_ema: bool = True) -> dict[str, Any]:
    """Load a checkpoint's weights (EMA if present and preferred) into `model` after checking its
    architecture; returns the checkpoint."""
    ckpt = load_checkpoint(path)
    model_config = getattr(model, "config", None)
    if isinstance(model_config, ModelConfig):
        check_architecture(checkpoint_model_config(ckpt, path), model_config, path)
    state = model_weights(ckpt, prefer_ema)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit the network: {str(err).splitlines()[0]}") from None
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network from `ckpt["config"]["model"]` alone, load its (EMA) weights, `.eval()`. Every other
    key is ignored, among them the `inference` entry ({"passes", "pass_gate"}) that releases exported with
    `--passes` (dwgn.export up to commit 6836b52) carry: the network always runs once."""
    from dwgn.models.network import build_model

    ckpt = load_checkpoint(path)
    model = build_model("paper", **asdict(checkpoint_model_config(ckpt, path)))  # every field overridden
    state = model_weights(ckpt)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit its own config: {str(err).splitlines()[0]}") from None
    return model.to(device).eval()


__all__ = ["FORMAT_VERSION", "CheckpointError", "UnsafeCheckpointError", "check_architecture",
           "checkpoint_model_config", "load_checkpoint", "load_model", "load_weights", "model_weights",
           "read_torch_file", "release_bytes", "save_checkpoint"]
