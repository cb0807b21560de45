"""The web page's "auto" mode: a photo of more than one megapixel (1024 x 1024 = 1,048,576 pixels) is restored in
512-px tiles, one of at most that many pixels whole, whatever its shape; the page reports which it did, and its
choice is restore()'s own default."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dwgn.app import service
from dwgn.app.service import MODES, Restorer
from dwgn.evaluation import restore as restore_module

MEGAPIXEL = 1024 * 1024


class Brighten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + 0.25


@pytest.fixture
def restorer(tmp_path, monkeypatch):
    """A Restorer whose restore() calls are recorded (the tile asked for) and answered without the network."""
    calls = []

    def recording_restore(model, image, **kwargs):
        calls.append(kwargs)
        return image

    monkeypatch.setattr(service, "restore", recording_restore)
    r = Restorer(Brighten(), "brighten.pt", max_megapixels=3.0, out_dir=tmp_path / "out")
    r.calls = calls
    return r


def upload(tmp_path, h: int, w: int):
    path = tmp_path / f"photo-{h}x{w}.png"
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path, compress_level=1)
    return path


@pytest.mark.parametrize("h, w, tiled", [
    (1024, 1024, False),  # exactly one megapixel: whole
    (1024, 1025, True), (1025, 1024, True),  # one column or row more: tiles
    (512, 2048, False), (513, 2048, True),  # the pixel count decides, not the longer side
    (2048, 512, False), (100, 3000, False),
])
def test_auto_tiles_above_one_megapixel_and_says_so(restorer, tmp_path, h, w, tiled):
    assert (h * w > MEGAPIXEL) == tiled
    result = restorer(upload(tmp_path, h, w), "auto")
    assert restorer.calls[-1]["tile"] == (512 if tiled else 0)
    assert result.mode == ("tiled, 512 px tiles" if tiled else "whole image")
    assert restore_module.auto_tile(h, w) == restorer.calls[-1]["tile"]  # restore(tile=None) decides the same


def test_auto_is_the_default_mode_and_the_other_modes_are_fixed(restorer, tmp_path):
    path = upload(tmp_path, 1024, 1025)
    assert restorer(path).mode == "tiled, 512 px tiles" and restorer.calls[-1]["tile"] == 512
    assert restorer(path, "whole image").mode == "whole image" and restorer.calls[-1]["tile"] == 0
    small = upload(tmp_path, 40, 60)
    assert restorer(small, "tiled").mode == "whole image"  # within one tile: nothing to tile
    assert restorer.calls[-1]["tile"] == 512
    assert MODES == {"auto": None, "whole image": 0, "tiled": 512}


def test_auto_really_tiles_a_photo_just_above_the_threshold(tmp_path):
    """Through the real restore(): a photo just above the threshold is tiled, and tiles of a pointwise model give
    its whole-image output (to rounding)."""
    model = Brighten().eval()
    rgb = np.broadcast_to(np.arange(1024, dtype=np.uint8)[None, :, None] * 3, (1025, 1024, 3)).copy()
    path = tmp_path / "ramp.png"
    Image.fromarray(rgb).save(path, compress_level=1)
    result = Restorer(model, "brighten.pt", max_megapixels=3.0, out_dir=tmp_path / "out")(path, "auto")
    assert result.mode == "tiled, 512 px tiles"
    expected = np.clip(np.round((rgb / 255 * 0.5 + 0.25) * 255), 0, 255)
    assert np.abs(result.output.astype(int) - expected).max() <= 1
