"""ONNX export of a DwGN network (batch 1, height and width dynamic), checked against PyTorch with ONNX Runtime.

The graph comes from torch.onnx's dynamo exporter (torch.export + onnxscript). The older TorchScript
exporter cannot export this network: the weight-adaptive 1x1's spatial gate convolves with a kernel
expanded to the batch size, which it traces as a kernel of unknown shape and refuses.
What the export keeps dynamic, checked by `check_onnx` at sizes that are and are not multiples of 64:
- the zero padding to a multiple of 64 and the crop back (DwGN.forward): shape arithmetic in the graph;
- the dynamic-weights convs: the generated kernels are tensors computed in the graph, not initializers;
- the shifted-window mask: rebuilt from the padded size (the PyTorch module's per-size cache is emptied
  first, so no traced size is baked in as a constant);
- GlobalPool: a plain mean over the image. Its record/fixed hooks (tiled inference) must be off, so the
  ONNX model restores whole images only: tile outside it, or restore large photos with PyTorch.
Needs `onnx` and `onnxscript` (and `onnxruntime` for the check): `pip install -r requirements-app.txt`.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from dwgn.errors import UserError
from dwgn.io import atomic_path
from dwgn.models.dynamic_conv import GlobalPool
from dwgn.models.hdmc import WindowCrossAttention

EXAMPLE_SIZE = (96, 160)              # the traced input: not square, not a multiple of 64
CHECK_SIZES = ((128, 192), (100, 150))  # one multiple of 64, one not
TOLERANCE = 1e-4                      # max |ONNX Runtime - PyTorch| in fp32, inputs in [0, 1]
INPUT_NAME, OUTPUT_NAME = "image", "restored"
INSTALL_HINT = "pip install -r requirements-app.txt (onnx, onnxscript, onnxruntime)"


class OnnxUnavailable(UserError, ImportError):
    """onnx/onnxscript/onnxruntime is not installed (an optional extra)."""


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise OnnxUnavailable(f"ONNX export needs {', '.join(missing)}: {INSTALL_HINT}")


def export_onnx(model: nn.Module, path: str | Path, example_size: tuple[int, int] = EXAMPLE_SIZE) -> Path:
    """Write `model` (fp32, eval) as ONNX: input "image" (1,3,H,W) float32 in [0,1] -> "restored" (1,3,H,W).
    Written atomically (dwgn.io.atomic_path): a failed export leaves no half file."""
    _require("onnx", "onnxscript")
    path = Path(path)
    model = model.float().eval()
    for name, module in model.named_modules():
        if isinstance(module, GlobalPool) and (module.fixed is not None or module.record is not None):
            raise RuntimeError(f"GlobalPool {name} is fixed or recording (inside fixed_pools/recorded_pools); "
                               "export outside those contexts")
        if isinstance(module, WindowCrossAttention):
            module._masks.clear()  # cached per concrete size: would enter the graph as a constant
    x = torch.rand(1, 3, *example_size)  # (1,3,H,W)
    dynamic = torch.export.Dim.DYNAMIC
    with atomic_path(path) as tmp, _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(model, (x,), None, dynamo=True, verbose=False,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes={"x": {2: dynamic, 3: dynamic}})
        program.save(str(tmp))
    return path


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's harmless chatter, silenced for the export only: its Python warnings (deprecations,
    constant-folding notes) and the log lines of torch.onnx and onnxscript below ERROR (e.g. "torchvision is
    not installed. Skipping torchvision::nms", one per torchvision op, which this network does not use)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def onnx_session(path: str | Path):
    """An ONNX Runtime CPU session for an exported model."""
    _require("onnxruntime")
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_onnx(model: nn.Module, path: str | Path, sizes: tuple[tuple[int, int], ...] = CHECK_SIZES,
               seed: int = 0) -> dict[tuple[int, int], float]:
    """Max |ONNX Runtime - PyTorch| over random (1,3,h,w) inputs in [0,1], one per size: {(h, w): diff}."""
    session = onnx_session(path)
    generator = torch.Generator().manual_seed(seed)
    diffs = {}
    model = model.float().eval()
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()  # (1,3,h,w)
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape:
            raise RuntimeError(f"ONNX output {got.shape} for input {tuple(x.shape)}, PyTorch {expected.shape}")
        diffs[(h, w)] = float(np.abs(got - expected).max())
    return diffs


__all__ = ["CHECK_SIZES", "EXAMPLE_SIZE", "TOLERANCE", "OnnxUnavailable", "check_onnx", "export_onnx", "onnx_session"]
