"""Release a checkpoint: `python -m dwgn.export SRC [DST.safetensors|DST.pt] [--onnx MODEL.onnx]`.

DST keeps what `dwgn.load_model` needs (format_version, config, step and the weights -- the EMA weights
when the run kept them) and drops the optimizer, scheduler, RNG and Stage-1 generators. A `.safetensors`
DST stores the weights as tensors and the rest (the model config included) as JSON strings in the file's
metadata: nothing in it can run code. float16 (the default) halves the size; weights are cast back to
float32 when loaded. --onnx writes the network as ONNX (fp32, batch 1, any height and width) and checks it
against PyTorch with ONNX Runtime (dwgn/onnx_export.py). Every written file's SHA-256 is printed.

--average OTHER [--mix W] releases the weight average (1 - W) * SRC + W * OTHER of two checkpoints of the
same architecture (each one's EMA weights when it kept them), computed in float32 before the cast: a
"model soup" of two fine-tuning runs from a common start. Choose W on the training photos and
weather (`python -m dwgn.evaluation.heldout --photos train --settings train`), never on the held-out
photos the release is then judged on.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

from dwgn.errors import ArgumentParser, run_main
from dwgn.training.checkpoint import (SAFETENSORS_SUFFIX, CheckpointError, check_architecture,
                                      checkpoint_model_config, load_checkpoint, load_model, model_weights,
                                      release_of, save_checkpoint)

PROG = "python -m dwgn.export"
RELEASE_SUFFIXES = (SAFETENSORS_SUFFIX, ".pt", ".pth")


def average_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], mix: float,
                    names: tuple[str, str] = ("SRC", "OTHER")) -> dict[str, torch.Tensor]:
    """(1 - mix) * a + mix * b per floating tensor, in float32 (so a float16 release loses nothing more
    before the cast to the release's dtype); integer tensors (counters) must agree and are kept. The two
    state dicts must hold the same keys and shapes."""
    if not 0.0 <= mix <= 1.0:
        raise CheckpointError(f"--mix must be in [0, 1] (the share of {names[1]}), got {mix}")
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise CheckpointError(f"cannot average {names[0]} and {names[1]}: different weights "
                              f"(only in {names[0]}: {only_a[:3]}, only in {names[1]}: {only_b[:3]})")
    out = {}
    for key, ta in a.items():
        tb = b[key]
        if ta.shape != tb.shape:
            raise CheckpointError(f"cannot average {names[0]} and {names[1]}: {key} has shape "
                                  f"{tuple(ta.shape)} vs {tuple(tb.shape)}")
        if ta.is_floating_point():
            out[key] = torch.lerp(ta.float(), tb.float(), mix)
        elif torch.equal(ta, tb):
            out[key] = ta.clone()
        else:
            raise CheckpointError(f"cannot average {names[0]} and {names[1]}: integer tensor {key} differs")
    return out


def export(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16, note: str = "",
           average: str | Path | None = None, mix: float = 0.5) -> dict:
    """Write the release of checkpoint `src` to `dst` (format from its suffix); returns what was written.
    With `average`, the release holds (1 - mix) * src + mix * average (same architecture only). Keys of SRC
    other than format_version, config, step and note (an old release's `inference` entry among them) are not
    carried over."""
    if Path(dst).suffix not in RELEASE_SUFFIXES:
        raise CheckpointError(f"release {dst}: name it *.safetensors (recommended) or *.pt")
    ckpt = load_checkpoint(src)
    weights = model_weights(ckpt)
    extra = {}
    if average is not None:
        other = load_checkpoint(average)
        check_architecture(checkpoint_model_config(other, average), checkpoint_model_config(ckpt, src), average)
        weights = average_weights(weights, model_weights(other), mix, (str(src), str(average)))
        extra = {"averaged_with": str(average), "mix": mix}
    release = release_of(ckpt, weights, dtype, note or ckpt.get("note", ""), exported_from=Path(src).name, **extra)
    save_checkpoint(dst, release)
    return release


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe(path: Path, what: str) -> str:
    return f"wrote {path}: {what}, {path.stat().st_size / 2 ** 20:.1f} MB, sha256 {sha256(path)}"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("src", help="a checkpoint: training (best.pt, last.pt) or a release (.pt, .safetensors)")
    parser.add_argument("dst", nargs="?", help="the release to write: *.safetensors or *.pt")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="of DST's weights")
    parser.add_argument("--note", default="", help="free text stored in DST (what it was trained on); "
                        "default: SRC's note")
    parser.add_argument("--average", metavar="OTHER", help="release the weight average of SRC and OTHER "
                        "(a checkpoint of the same architecture)")
    parser.add_argument("--mix", type=float, default=0.5, help="with --average: the share W of OTHER, "
                        "(1 - W) * SRC + W * OTHER (default 0.5)")
    parser.add_argument("--onnx", metavar="PATH", help="also write the network as ONNX (fp32) and check it")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime check of --onnx")
    args = parser.parse_args(argv)
    if args.dst is None and args.onnx is None:
        parser.error("nothing to write: give DST (*.safetensors or *.pt) and/or --onnx PATH")
    if args.average is not None and args.dst is None:
        parser.error("--average needs DST: the averaged release is written there (and --onnx exports DST)")
    if args.dst is not None:
        release = export(args.src, args.dst, getattr(torch, args.dtype), args.note, args.average, args.mix)
        what = f"step {release['step']}, {args.dtype}"
        if args.average is not None:
            what += f", {1 - args.mix:g} x {args.src} + {args.mix:g} x {args.average}"
        print(_describe(Path(args.dst), what))
    if args.onnx is not None:
        from dwgn.onnx_export import CHECK_SIZES, TOLERANCE, check_onnx, export_onnx

        model = load_model(args.dst if args.average is not None else args.src)
        export_onnx(model, args.onnx)
        print(_describe(Path(args.onnx), "ONNX, fp32, input 'image' (1,3,H,W) in [0,1], H and W any"))
        if not args.no_check:
            diffs = check_onnx(model, args.onnx, CHECK_SIZES)
            print("ONNX Runtime vs PyTorch, max abs difference: "
                  + ", ".join(f"{h}x{w} {d:.1e}" for (h, w), d in diffs.items()) + f" (tolerance {TOLERANCE:g})")
            if max(diffs.values()) > TOLERANCE:
                print(f"{PROG}: the ONNX model disagrees with PyTorch beyond {TOLERANCE:g}: an export bug",
                      file=sys.stderr)
                return 1
    return 0


def run(argv: list[str] | None = None) -> None:
    """Exit with main's status; a user's mistake (missing file, bad checkpoint, no ONNX packages) is one
    `error:` line and exit code 2 (dwgn.errors.run_main)."""
    run_main(main, PROG, argv)


if __name__ == "__main__":
    run()
