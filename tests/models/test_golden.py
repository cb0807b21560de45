"""A golden output of the shipped checkpoint: the network's output on one small photo, stored, so that a change to
the network's code (a dropped skip connection, a misread weight) that leaves every shape intact still shows.

The input, tests/fixtures/golden_input.png, is a 64 x 96 crop of scikit-image's chelsea.png (a test photo, never
trained on) with the project's rain streaks at seed 2024; tests/fixtures/golden_output_blocks.npy holds the means of
the network's float output over 4 x 4 pixel blocks, (3, 16, 24). They were written by `python tests/models/test_golden.py`
from checkpoints/dwgn-small-demo.safetensors; a re-export with the same weights keeps them valid (only new weights
call for rewriting them). The output moves by about 1e-7 between 1 and 2 threads; the tolerance is 2e-5."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import dwgn
from dwgn.data.paths import DEMO_CHECKPOINT
from dwgn.data.weather import synthesize

DATA = Path(__file__).resolve().parents[1] / "fixtures"
INPUT, BLOCKS = DATA / "golden_input.png", DATA / "golden_output_blocks.npy"
TOLERANCE = 2e-5
# a few single output values (channel, row, column) -> value, from the same run as the blocks
PIXELS = {(0, 0, 0): 0.5165546, (1, 31, 47): 0.2793146, (2, 63, 95): 0.0432912, (0, 20, 70): 0.6303539}


def make_input() -> np.ndarray:
    """The stored input as the project's generator makes it: uint8 (64, 96, 3)."""
    from skimage import data

    crop = data.chelsea()[60:124, 110:206]
    return np.clip(np.round(synthesize(crop, "rain", np.random.default_rng(2024)) * 255), 0, 255).astype(np.uint8)


def network_output(image: np.ndarray) -> torch.Tensor:
    """The shipped network once on the image: (3, H, W) float64, not clipped."""
    model = dwgn.load_model(DEMO_CHECKPOINT)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        return model(x)[0].double()


def blocks(out: torch.Tensor) -> np.ndarray:
    c, h, w = out.shape
    return out.reshape(c, h // 4, 4, w // 4, 4).mean(dim=(2, 4)).numpy()


def test_the_stored_input_is_what_the_weather_generator_makes():
    stored = np.asarray(Image.open(INPUT).convert("RGB"))
    made = make_input()
    assert stored.shape == made.shape == (64, 96, 3)
    assert np.abs(stored.astype(int) - made).max() <= 1 and (stored != made).mean() < 0.001


def test_the_shipped_checkpoint_gives_the_golden_output():
    image = np.array(Image.open(INPUT).convert("RGB"))
    out = network_output(image)
    expected = np.load(BLOCKS)
    assert expected.shape == (3, 16, 24)
    error = np.abs(blocks(out) - expected)
    worst = np.unravel_index(error.argmax(), error.shape)  # (channel, block row, block column)
    assert error.max() < TOLERANCE, f"block means off by up to {error.max():.2e}, most at {worst}"
    for (c, y, x), value in PIXELS.items():
        assert abs(float(out[c, y, x]) - value) < TOLERANCE, ((c, y, x), float(out[c, y, x]), value)
    # the output is a restoration of the input, not something else that happens to be stable
    restored_change = float(np.abs(out.numpy() - image.transpose(2, 0, 1) / 255).mean())
    assert 0.002 < restored_change < 0.05


if __name__ == "__main__":  # writes the golden files (new weights only; print the PIXELS to paste above)
    image = make_input()
    Image.fromarray(image).save(INPUT, optimize=True)
    out = network_output(image)
    np.save(BLOCKS, blocks(out).astype(np.float32))
    print({key: round(float(out[key]), 7) for key in PIXELS})
