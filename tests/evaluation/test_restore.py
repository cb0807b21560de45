"""restore(): any size and layout, tiling that agrees with whole-image inference, self-ensemble, errors."""

import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

import dwgn
from dwgn.data.paths import DEMO_CHECKPOINT
from dwgn.models.dynamic_conv import GlobalPool
from dwgn.evaluation.metrics import psnr
from dwgn.evaluation.restore import restore, tiled_forward, tiled_pools, to_uint8
from dwgn.models.network import recorded_pools


class CentreByMean(nn.Module):
    """Stand-in whose output depends on a global statistic: y = x - mean(x) + 0.5 (per channel)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = GlobalPool()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x - self.pool(x)) + 0.5


class Pointwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + 0.1


def _photo(h: int, w: int) -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[64:64 + h, 128:128 + w])


def _kaiming_tiny() -> nn.Module:
    """Tiny DwGN with PyTorch's default conv init: weights of trained size, so the global pools matter."""
    torch.manual_seed(0)
    model = dwgn.build_model("tiny")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    return model.eval()


def test_tiles_are_placed_and_blended_exactly():
    img = _photo(70, 101)
    whole = restore(Pointwise(), img, tile=0)
    tiled = restore(Pointwise(), img, tile=32, overlap=8)
    np.testing.assert_array_equal(tiled, whole)


def test_tiles_get_the_image_statistics_not_their_own():
    img = _photo(96, 128)
    model = CentreByMean()
    whole = restore(model, img, tile=0)
    tiled = restore(model, img, tile=48, overlap=16)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # float rounding only
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        naive = to_uint8(tiled_forward(model, x, 48, 16, pools=None))
    assert psnr(naive, whole) < psnr(tiled, whole) - 10


def test_pools_sweep_measures_every_pool_exactly_and_stops_after_the_last():
    """A tile as large as the image sees what the whole image saw, so the sweep must give back the whole image's
    own statistics, every one of the 35 (their sums in float32 too); the network's output conv, after the last
    pool, never runs in the sweep."""
    model = _kaiming_tiny()
    x = torch.from_numpy(_photo(128, 192)).permute(2, 0, 1)[None].float() / 255  # a multiple of 64: no padding
    with torch.inference_mode():
        with recorded_pools(model) as whole:
            model(x)
        calls = []
        handle = model.output.register_forward_hook(lambda *_: calls.append(1))
        try:
            measured = tiled_pools(model, x, 192, 0, None)
        finally:
            handle.remove()
    assert set(measured) == set(whole) and len(whole) == 35
    for name in whole:
        torch.testing.assert_close(measured[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)
    assert calls == []


def test_dwgn_tiled_matches_whole_image():
    model = dwgn.build_model("tiny").eval()
    img = _photo(128, 192)
    whole = restore(model, img, tile=0)
    tiled = restore(model, img, tile=64, overlap=16)
    assert psnr(tiled, whole) >= 40.0


@pytest.mark.slow
@pytest.mark.parametrize("which", ["random", "kaiming", "demo"])
def test_dwgn_tiled_matches_whole_image_512(which):
    if which == "demo" and not DEMO_CHECKPOINT.exists():
        pytest.skip(f"{DEMO_CHECKPOINT} not built yet")
    model = {"random": lambda: dwgn.build_model("tiny").eval(), "kaiming": _kaiming_tiny,
             "demo": lambda: dwgn.load_model(DEMO_CHECKPOINT)}[which]()
    img = data.astronaut()  # 512 x 512
    whole = restore(model, img, tile=0)
    tiled = restore(model, img, tile=256, overlap=64)
    assert psnr(tiled, whole) >= 40.0


@pytest.mark.slow
def test_shipped_model_tiled_matches_whole_image_to_60_db():
    """The shipped model at 512x512: tiles of 384 (2 x 2) give 68.1 dB from the whole-image output. Tiles of 256
    (3 x 3) give 58.4 dB: at a quarter of the image, the pixels within reach of a tile's border (its zero padding at
    every level, down to 8x8 windows at 1/8 scale) are a large share of every tile."""
    model = dwgn.load_model(DEMO_CHECKPOINT)
    img = data.astronaut()  # 512 x 512
    whole = restore(model, img, tile=0)
    assert psnr(restore(model, img, tile=384, overlap=64), whole) >= 60.0
    assert psnr(restore(model, img, tile=256, overlap=64), whole) >= 55.0


@pytest.mark.slow
def test_pooled_tiling_beats_naive_tiling():
    model = _kaiming_tiny()
    img = _photo(192, 256)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    whole = restore(model, img, tile=0)
    # tiles of 160 (padded to 192 inside the network) with 64 of overlap: the deepest level's 8x8 windows span
    # 64 image pixels, so smaller tiles of this randomly initialised network are dominated by their borders
    tiled = restore(model, img, tile=160, overlap=64)
    with torch.inference_mode():
        naive = to_uint8(tiled_forward(model, x, 160, 64, pools=None))
    assert psnr(tiled, whole) >= 45.0
    assert psnr(tiled, whole) > psnr(naive, whole) + 3


def test_odd_size_gray_and_rgba_keep_their_layout():
    model = dwgn.build_model("tiny").eval()
    rgb = _photo(37, 45)
    out = restore(model, rgb)
    assert out.shape == (37, 45, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(restore(model, rgb, tile=64), out)  # a tile larger than the image: whole

    alpha = np.arange(37 * 45, dtype=np.uint8).reshape(37, 45, 1)
    rgba = restore(model, np.concatenate([rgb, alpha], axis=2))
    assert rgba.shape == (37, 45, 4)
    np.testing.assert_array_equal(rgba[..., :3], out)
    np.testing.assert_array_equal(rgba[..., 3], alpha[..., 0])

    gray = rgb[..., 1]
    g_out = restore(model, gray)
    assert g_out.shape == (37, 45)
    rgb_of_gray = restore(model, np.repeat(gray[..., None], 3, axis=2))
    expected = np.round(rgb_of_gray @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    np.testing.assert_array_equal(g_out, expected)
    assert restore(model, gray[..., None]).shape == (37, 45, 1)


def test_deterministic_and_leaves_training_mode():
    model = dwgn.build_model("tiny").train()
    img = _photo(64, 80)
    first = restore(model, img, tile=64, overlap=16)
    assert model.training
    np.testing.assert_array_equal(restore(model, img, tile=64, overlap=16), first)


def test_self_ensemble():
    img = _photo(40, 56)
    # a flip/rotation-equivariant model gives the same image with and without the ensemble (up to the
    # float rounding of averaging 8 values); a wrong inverse transform would scramble the photo
    diff = restore(Pointwise(), img, self_ensemble=True).astype(int) - restore(Pointwise(), img)
    assert np.abs(diff).max() <= 1
    model = dwgn.build_model("tiny").eval()
    ens = restore(model, img, self_ensemble=True)
    assert ens.shape == img.shape
    assert not np.array_equal(ens, restore(model, img))


def test_bad_inputs_are_clear_errors():
    model = Pointwise()
    with pytest.raises(TypeError, match="uint8"):
        restore(model, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        restore(model, np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="overlap"):
        restore(model, _photo(64, 64), tile=32, overlap=32)


class Contrast(nn.Module):
    """y = 3 (x - channel mean) + 0.5, counting its calls: leaves [0, 1], so a second run on the clipped output
    would give another image."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(3.0))  # restore finds the device through the parameters
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.scale * (x - x.mean(dim=(-2, -1), keepdim=True)) + 0.5


def test_restore_runs_the_network_once_per_image_and_takes_no_pass_count():
    def ref(x):  # the model on an HxWx3 float image, from its definition
        return 3.0 * (x - x.mean(axis=(0, 1))) + 0.5

    img = _photo(24, 40)
    once = np.round(np.clip(ref(img / 255.0), 0, 1) * 255)
    twice = np.round(np.clip(ref(np.clip(ref(img / 255.0), 0, 1)), 0, 1) * 255)
    assert np.abs(once - twice).max() > 5  # a second run would show
    model = Contrast()
    got = restore(model, img).astype(int)
    assert model.calls == 1 and np.abs(got - once).max() <= 1  # rounding only
    restore(model, img, self_ensemble=True)
    assert model.calls == 1 + 8  # one run per flip/rotation, none on its own output
    for old in ({"passes": 2}, {"pass_gate": 35.0}, {"passes_run": []}):
        with pytest.raises(TypeError, match=next(iter(old))):
            restore(model, img, **old)


def test_amp_on_the_cpu_runs_the_network_under_bf16_autocast():
    """restore(amp=True) on the CPU is the network under CPU bf16 autocast (it used to ask CUDA's autocast, which
    left a CPU forward in float32); amp=False is the float32 forward."""
    torch.manual_seed(0)
    model = dwgn.build_model("tiny").eval()
    photo = _photo(64, 64)
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        full = to_uint8(model(x).float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = to_uint8(model(x).float())
    assert not np.array_equal(full, half)
    np.testing.assert_array_equal(restore(model, photo, tile=0, amp=True), half)
    np.testing.assert_array_equal(restore(model, photo, tile=0, amp=False), full)
    np.testing.assert_array_equal(restore(model, photo, tile=0), full)  # the CPU's default: float32


def _progress_lines(text: str) -> list[tuple[int, int]]:
    """(done, total) of every progress line of the tiles ('... 5/24 [...]'), in order."""
    import re

    return [tuple(map(int, m.groups())) for m in re.finditer(r"photo:.*?(\d+)/(\d+) \[", text)]


def test_progress_prints_a_line_per_tile_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    from dwgn.evaluation import restore as restoring

    monkeypatch.setattr(restoring, "PROGRESS_INTERVAL", 0.0)  # a line for every tile
    img = _photo(96, 128)
    # the pools sweep: tiles of 48 without overlap, y in {0, 48}, x in {0, 48, 80}: 6; the forward: overlapping by
    # 16, y in {0, 32, 48}, x in {0, 32, 64, 80}: 12
    restore(CentreByMean(), img, tile=48, overlap=16, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err  # plain lines, as a log shows them
    lines = _progress_lines(err)
    assert lines[0] == (0, 18) and lines[-1] == (18, 18)
    assert [done for done, _ in lines[1:-1]] == list(range(1, 19))  # one line per tile; the last again on closing
    assert "s/tile" in err or "tile/s" in err  # the rate, from which the time left is computed

    monkeypatch.setattr(restoring, "PROGRESS_INTERVAL", 3600.0)
    restore(CentreByMean(), img, tile=48, overlap=16, progress=True)
    assert _progress_lines(capsys.readouterr().err) == [(0, 18), (18, 18)]  # the start and the end only
    restore(CentreByMean(), img, tile=0, progress=True)
    restore(CentreByMean(), img, tile=48, overlap=16)
    assert capsys.readouterr().err == ""  # one forward: nothing to count; progress off by default


def test_restore_folder_shows_a_line_per_photo_and_the_tiles_of_each(tmp_path, capsys, monkeypatch):
    from dwgn.data.images import save_photo
    from dwgn.evaluation import restore as restoring
    from dwgn.evaluation.evaluate import restore_folder

    monkeypatch.setattr(restoring, "PROGRESS_INTERVAL", 0.0)
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png"):
        save_photo(tmp_path / "in" / name, _photo(96, 128))
    written, _ = restore_folder(CentreByMean(), tmp_path / "in", tmp_path / "out", tile=48, overlap=16)
    assert len(written) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "b.png" in err and "2/2" in err
    lines = _progress_lines(err)
    assert lines.count((18, 18)) == 4  # each photo's tiles, to the end (a line for the last tile and on closing)
