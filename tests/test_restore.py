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
from dwgn.evaluation.restore import restore, tiled_forward, to_uint8


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
    """y = 3 (x - channel mean) + 0.5: goes outside [0, 1], and clipping that moves the next pass's mean."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x - x.mean(dim=(-2, -1), keepdim=True)) + 0.5


def test_passes_run_the_model_again_on_its_own_clipped_float_output():
    def ref_pass(x):  # the model on an HxWx3 float image, from its definition
        return 3.0 * (x - x.mean(axis=(0, 1))) + 0.5

    img = _photo(24, 40)
    assert (ref_pass(img / 255.0) > 1).mean() > 0.05  # the first pass does leave [0, 1]
    x = img / 255.0
    for passes in (1, 2, 3):
        got = restore(Contrast(), img, passes=passes).astype(int)
        assert np.abs(got - np.round(np.clip(ref_pass(x), 0, 1) * 255)).max() <= 1, passes  # rounding only
        x = np.clip(ref_pass(x), 0, 1)  # clipped, kept in float, before the next pass
    unclipped = np.round(np.clip(ref_pass(ref_pass(img / 255.0)), 0, 1) * 255)
    assert np.abs(restore(Contrast(), img, passes=2).astype(int) - unclipped).max() > 5  # the clip matters here
    assert restore(Contrast(), img, passes=2, self_ensemble=True).shape == img.shape
    for bad in (0, 1.5, True, float("inf"), float("nan"), "2", [2]):
        with pytest.raises(ValueError, match="passes must be a whole number >= 1"):
            restore(Contrast(), img, passes=bad)


class Scale(nn.Module):
    """y = 0.9 x: every pass changes the image by a tenth, so how much each pass changes it follows by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.9))  # restore finds the device through the parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def test_pass_gate_runs_a_further_pass_only_while_the_last_one_changed_the_image_more_than_the_gate():
    img = _photo(24, 40)
    x = img / 255.0

    def change_db(a, b):  # PSNR (peak 1) between a pass's input and its output, all pixels and channels
        return -10 * np.log10(np.mean((a - b) ** 2))

    d1, d2 = change_db(0.9 * x, x), change_db(0.81 * x, 0.9 * x)  # pass 1 changes more than pass 2 (d1 < d2)
    assert d2 - d1 == pytest.approx(-20 * np.log10(0.9), abs=1e-6)

    def expect(n):
        return np.round(np.clip(0.9 ** n * x, 0, 1) * 255)

    for gate, passes, n in [(d1 - 0.1, 3, 1),  # pass 1 changed it less than the gate asks: stop after one
                            (d1 + 0.1, 2, 2), (d1 + 0.1, 3, 2),  # pass 1 changed it enough, pass 2 did not
                            (d2 + 0.1, 3, 3), (d2 + 0.1, 2, 2)]:  # passes is still the most that run
        ran: list[int] = []
        got = restore(Scale(), img, passes=passes, pass_gate=gate, passes_run=ran).astype(int)
        assert ran == [n] and np.abs(got - expect(n)).max() <= 1, (gate, passes)

    def contrast(v):  # Contrast from its definition: it leaves [0, 1], so the clip between passes matters
        return 3.0 * (v - v.mean(axis=(0, 1))) + 0.5

    twice = np.round(np.clip(contrast(np.clip(contrast(x), 0, 1)), 0, 1) * 255)
    assert np.abs(restore(Contrast(), img, passes=2, pass_gate=1e3).astype(int) - twice).max() <= 1
    for bad in (float("nan"), float("inf"), True, "30"):
        with pytest.raises(ValueError, match="pass_gate must be a finite number of dB"):
            restore(Scale(), img, passes=2, pass_gate=bad)
    with pytest.raises(ValueError, match=r"pass_gate \(30 dB\) decides whether a second pass runs: it needs passes"):
        restore(Scale(), img, pass_gate=30)


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
