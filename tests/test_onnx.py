"""ONNX export (`python -m dwgn.export CKPT --onnx model.onnx`): batch 1, any height and width, the dynamic-weights
convs inside the graph; ONNX Runtime agrees with PyTorch to 1e-4 at a size that is a multiple of 64 and one
that is not; the README's ONNX-Runtime-only snippet restores a photo like `dwgn.restore`."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("onnxscript", reason="ONNX export is an extra: pip install -r requirements-app.txt")
pytest.importorskip("onnxruntime", reason="ONNX export is an extra: pip install -r requirements-app.txt")

from dwgn.evaluation.restore import restore  # noqa: E402
from dwgn.export import main  # noqa: E402
from dwgn.models.dynamic_conv import GlobalPool  # noqa: E402
from dwgn.models.network import build_model, recorded_pools  # noqa: E402
from dwgn.onnx_export import CHECK_SIZES, TOLERANCE, check_onnx, export_onnx, onnx_session  # noqa: E402
from dwgn.training.checkpoint import FORMAT_VERSION, load_model, save_checkpoint  # noqa: E402
from dwgn.training.config import FinetuneConfig
from dwgn.training.cli import config_to_dict  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
QUIET: dict[str, object] = {}  # what the export command wrote to stderr, and the warnings a command line shows


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`tiny` with PyTorch's default conv init (outputs far from the input, unlike the N(0, 0.02) init),
    saved as a checkpoint and exported by the command line -> (model, onnx path, printed text), with what the
    command wrote to stderr and the warnings a command line would show in QUIET."""
    torch.manual_seed(0)
    model = build_model("tiny")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    cfg = FinetuneConfig()
    cfg.model = model.config
    root = tmp_path_factory.mktemp("onnx")
    save_checkpoint(root / "tiny.pt", {"format_version": FORMAT_VERSION, "model": model.state_dict(),
                                       "config": config_to_dict(cfg), "step": 1})
    import contextlib
    import io
    import warnings

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main([str(root / "tiny.pt"), "--onnx", str(root / "model.onnx")]) == 0
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)  # a CLI's defaults
    QUIET.update(stderr=err.getvalue(), warnings=[str(w.message) for w in seen if not issubclass(w.category, hidden)])
    return load_model(root / "tiny.pt"), root / "model.onnx", out.getvalue()


def test_the_export_prints_no_library_warnings(exported):
    """torch.onnx and onnxscript log lines ("torchvision is not installed. Skipping ...") and warnings stay out
    of the command's output: stderr is empty."""
    assert QUIET == {"stderr": "", "warnings": []}
    import logging

    assert logging.getLogger("torch.onnx").level == logging.NOTSET  # silenced for the export only


def test_onnx_runtime_agrees_with_pytorch_at_any_size(exported):
    model, path, printed = exported
    assert any(h % 64 for h, _ in CHECK_SIZES) and any(h % 64 == 0 and w % 64 == 0 for h, w in CHECK_SIZES)
    assert "ONNX Runtime vs PyTorch" in printed and "sha256 " in printed
    sizes = CHECK_SIZES + ((37, 250), (8, 8))
    diffs = check_onnx(model, path, sizes, seed=1)
    assert max(diffs.values()) <= TOLERANCE, diffs
    # the check is not vacuous: the network changes its input by far more than the tolerance
    x = torch.rand(1, 3, 100, 150)
    with torch.no_grad():
        assert (model(x) - x).abs().max() > 0.05


def test_onnx_graph_has_batch_one_and_dynamic_height_width(exported):
    _, path, _ = exported
    (inp,), (out,) = onnx_session(path).get_inputs(), onnx_session(path).get_outputs()
    assert (inp.name, out.name) == ("image", "restored")
    assert inp.shape[:2] == [1, 3] and all(isinstance(d, str) for d in inp.shape[2:])
    assert out.shape[2:] == inp.shape[2:]


def test_export_refuses_a_network_with_fixed_pools(tmp_path):
    model = build_model("tiny").eval()
    with recorded_pools(model) as pools, torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    from dwgn.models.network import fixed_pools

    with fixed_pools(model, pools), pytest.raises(RuntimeError, match="GlobalPool .* is fixed or recording"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    assert all(m.fixed is None for m in model.modules() if isinstance(m, GlobalPool))


def readme_snippet() -> str:
    """The README's python block right after the marker `<!-- onnx-runtime-snippet -->`."""
    text = README.read_text()
    match = re.search(r"<!-- onnx-runtime-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its ONNX Runtime snippet marker"
    return match.group(1)


def test_readme_onnx_runtime_snippet_restores_like_pytorch(exported, tmp_path, monkeypatch):
    model, path, _ = exported
    code = readme_snippet()
    assert "torch" not in code and "import dwgn" not in code  # ONNX Runtime, numpy and PIL alone
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=95)
    (tmp_path / "dwgn-small-demo.onnx").symlink_to(path)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    got = np.asarray(Image.open(tmp_path / "restored.png"))
    expected = restore(model, np.array(Image.open(tmp_path / "photo.jpg").convert("RGB")), tile=0)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert got.shape == expected.shape == (90, 130, 3)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999  # fp32 rounding may flip a rare pixel by one level
