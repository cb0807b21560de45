"""How tiled restoration blends its tiles (dwgn/evaluation/restore.py): raised-cosine ramps over the overlaps,
r(i) = 1/2 - 1/2 cos(pi (i + 1/2) / n) for pixel i of an n-pixel overlap, rising on a tile's side that has a
neighbour before it and falling (the mirror image) on a side with one after it. Where two neighbours overlap by
exactly n pixels their weights sum to one; elsewhere the blend divides by the summed weights. Checked on the
ramp itself and on `tiled_forward` with a model that paints every tile with its own number."""
import math

import pytest
import torch
from torch import nn

from dwgn.evaluation.restore import _ramp, tiled_forward


def rise(n: int) -> torch.Tensor:
    """The raised cosine, written from its formula."""
    return torch.tensor([0.5 - 0.5 * math.cos(math.pi * (i + 0.5) / n) for i in range(n)], dtype=torch.float64)


class TileNumber(nn.Module):
    """Returns, for the k-th tile it is called on (row by row), a tile of the value k."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(x, float(self.calls))
        self.calls += 1
        return out


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-6) -> None:
    assert actual.shape == expected.shape
    difference = float((actual.double() - expected.double()).abs().max())
    assert difference <= atol, f"off by {difference}: {actual.tolist()} vs {expected.tolist()}"


def blend(h: int, w: int, tile: int, overlap: int) -> torch.Tensor:
    """(H, W): the first channel of tiled_forward's output for TileNumber."""
    model = TileNumber()
    with torch.no_grad():
        out = tiled_forward(model, torch.zeros(1, 3, h, w), tile, overlap, pools=None)
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 0], out[0, 2])
    return out[0, 0].double()


@pytest.mark.parametrize("n", [1, 2, 5, 8, 64])
def test_ramp_rises_and_falls_as_mirror_images_and_neighbours_sum_to_one(n):
    size = 3 * n + 7
    both = _ramp(size, n, rise=True, fall=True)
    close(both[:n], rise(n), atol=1e-12)
    close(both[-n:], rise(n).flip(0), atol=1e-12)  # the fall mirrors the rise
    assert torch.equal(both[n:-n], torch.ones(size - 2 * n, dtype=torch.float64))
    assert (both > 0).all() and (both <= 1).all()
    assert torch.equal(both, both.flip(0))  # symmetric
    # tile A's fall over the overlap plus tile B's rise over the same pixels: exactly one
    close(both[-n:] + both[:n], torch.ones(n, dtype=torch.float64), atol=1e-12)
    assert torch.equal(_ramp(size, n, rise=True, fall=False)[n:], torch.ones(size - n, dtype=torch.float64))
    assert torch.equal(_ramp(size, n, rise=False, fall=True)[:-n], torch.ones(size - n, dtype=torch.float64))
    assert torch.equal(_ramp(size, n, rise=False, fall=False), torch.ones(size, dtype=torch.float64))
    assert torch.equal(_ramp(size, 0, rise=True, fall=True), torch.ones(size, dtype=torch.float64))


def test_one_row_of_tiles_blends_the_neighbours_numbers_by_the_ramp():
    # width 80, tiles of 32 overlapping by 8: tiles at x = 0, 24, 48; overlaps [24, 32) and [48, 56)
    out = blend(32, 80, tile=32, overlap=8)
    r = rise(8)
    expected = torch.cat([torch.zeros(24), r, torch.ones(16), 1 + r, torch.full((24,), 2.0)]).double()
    for row in out:
        close(row, expected)


def test_four_tiles_blend_separably_in_the_shared_corner():
    # 56 x 56, tiles of 32 overlapping by 8: tiles 0 1 / 2 3 at y, x in {0, 24}
    out = blend(56, 56, tile=32, overlap=8)
    r = rise(8)
    ramp = torch.cat([torch.zeros(24), r, torch.ones(24)]).double()  # each axis: the share of the second tile
    expected = 2 * ramp[:, None] + ramp[None, :]  # tile number 2 * row + column, weights summing to one
    close(out, expected)
    close(out[24:32, 24:32], 2 * r[:, None] + r[None, :])


def test_a_last_tile_flush_with_the_edge_overlaps_more_and_the_blend_is_normalised():
    # width 70, tiles of 32, overlap 8: x = 0, 24, 38 (the last flush with the edge): tiles 1 and 2 share
    # [38, 56), 18 px; tile 2 rises over [38, 46), tile 1 falls over [48, 56), both weigh 1 in [46, 48)
    out = blend(32, 70, tile=32, overlap=8)[0]
    r, f = rise(8), rise(8).flip(0)
    close(out[24:32], r)  # tiles 0 and 1: a regular overlap
    close(out[38:46], (1 * 1 + 2 * r) / (1 + r))
    close(out[46:48], torch.full((2,), 1.5, dtype=torch.float64))
    close(out[48:56], (1 * f + 2 * 1) / (f + 1))
    close(out[56:], torch.full((14,), 2.0, dtype=torch.float64))
