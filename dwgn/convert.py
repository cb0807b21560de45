"""Convert weights trained with the authors' code: `python -m dwgn.convert AUTHORS.pth OUT.pt`.

Reads what their scripts save -- `{'model': state_dict, 'optimizer': ..., 'epoch': N}` (ckpt_epoch_N.pth,
latest.pth, Stage 1's pre_training.pth) or a bare state_dict, with or without DataParallel's `module.`
prefix -- with weights_only=True, maps every tensor to ours by the name table of dwgn.models.authors,
infers the architecture from the shapes and writes our release checkpoint (format_version, model, config,
step), loadable by `dwgn.load_model`, `test.py --checkpoint OUT.pt` and `train.py --init OUT.pt`.
Nothing is written unless every tensor maps exactly once with the right shape.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor

from dwgn.errors import ArgumentParser, UserError, run_main
from dwgn.models.authors import AuthorsMappingError, convert_state_dict, describe_preset, matching_preset
from dwgn.models.network import ModelConfig
from dwgn.training.checkpoint import (FORMAT_VERSION, UnsafeCheckpointError, read_torch_file,
                                      save_checkpoint)
from dwgn.training.cli import config_from_dict

SOURCE = "the authors' DwGN code (class WAformer)"


def _state_dict_of(obj: Any, path: Path) -> tuple[dict, Any]:
    """(state_dict, epoch or None) from a loaded file: {'model': sd, ...} or a bare state_dict."""
    if not isinstance(obj, dict):
        raise AuthorsMappingError(f"{path} holds a {type(obj).__name__}, not a state_dict or a dict with 'model'")
    if "format_version" in obj:
        raise AuthorsMappingError(f"{path} is already a DwGN checkpoint: load it directly, no conversion needed")
    if isinstance(obj.get("model"), dict):
        return obj["model"], obj.get("epoch")
    if obj and all(isinstance(v, Tensor) for v in obj.values()):
        return obj, None
    raise AuthorsMappingError(f"{path} is a dict with keys {sorted(map(str, obj))[:8]} but no 'model' state_dict")


def convert(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Convert `src` (the authors' checkpoint) to our release checkpoint at `dst`; returns what was written."""
    src, dst = Path(src), Path(dst)
    try:
        loaded = read_torch_file(src)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(
            f"{err}. This converter never runs code from a file; if you trust it, keep only its weights with "
            f"`python -c \"import torch; c = torch.load('{src}', weights_only=False); "
            f"torch.save(c.get('model', c), 'weights.pth')\"` and convert weights.pth") from None
    theirs, epoch = _state_dict_of(loaded, src)
    try:
        state, config = convert_state_dict(theirs)
    except AuthorsMappingError as err:
        raise AuthorsMappingError(f"{src}: {err}") from None
    release = {
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().clone().contiguous() for k, v in state.items()},
        "config": {"model": asdict(config)},
        "step": 0,  # no optimizer step of ours; their epoch count is kept below
        "converted_from": {"file": src.name, "source": SOURCE, "epoch": epoch, "preset": describe_preset(config)},
    }
    save_checkpoint(dst, release)
    return release


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m dwgn.convert", description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="checkpoint saved by the authors' scripts (.pth)")
    parser.add_argument("dst", type=Path, help="our checkpoint to write (.pt)")
    args = parser.parse_args(argv)
    if args.src.resolve() == args.dst.resolve():
        raise UserError(f"{args.dst} would overwrite the source; choose another output path")
    release = convert(args.src, args.dst)  # CheckpointError / AuthorsMappingError: one line via run_main
    origin = release["converted_from"]
    epoch = f", epoch {origin['epoch']}" if origin["epoch"] is not None else ""
    preset = matching_preset(config_from_dict(ModelConfig, release["config"]["model"]))
    train_flags = f"--preset {preset}" if preset else "--model.* flags of this architecture"
    print(f"wrote {args.dst}: {len(release['model']):,} tensors from {args.src}{epoch}, {origin['preset']}\n"
          f"use it with: test.py --checkpoint {args.dst}  |  train.py {train_flags} --init {args.dst}")
    return 0


if __name__ == "__main__":
    run_main(main, "python -m dwgn.convert")
