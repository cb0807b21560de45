"""Synthetic adverse weather for the embedded demo set and for weather-based pre-training.

Each synthesiser maps a clean image (H, W, 3) float32 in [0, 1] to a degraded one of the same shape,
drawing every random parameter from the `np.random.Generator` it is given, so a sample is reproduced
exactly from its seed. All work is vectorised numpy/OpenCV (loops run over layers or drops, never
over pixels): about 1-10 ms per 256x256 image on one core (see benchmarks/bench_weather.py).

The models follow the benchmarks the demo stands in for:
- rain: Rain100-style streaks: sparse impulses smeared by an oriented line kernel, screen-blended.
- rainfog: Outdoor-Rain (Li et al., CVPR 2019): streaks plus the atmospheric scattering model
  I = T (J + S) + (1 - T) A with T = exp(-beta d) over a depth proxy d made without a depth network.
- raindrop: RainDrop (Qian et al., CVPR 2018): drops on glass act as small lenses; each shows an
  inverted, minified, defocused view of the scene around it, with soft edges and a darker rim.
- snow: Snow100K: several layers of flakes, from many small sharp ones to few large blurred ones.
- haze: the scattering model alone (RESIDE-style) over the same depth proxy.

Held-out settings: every synthesiser takes `heldout=False`. With `heldout=True` the main parameters
(streak density, length and angle; fog/haze density and airlight; snow heaviness and wind; drop
count and size) are drawn from HELDOUT_RANGES, which lie outside the training ranges TRAIN_RANGES
(heavier weather, steeper wind), so an evaluation can measure extrapolation (dwgn.evaluation.heldout).
Both tables are docs/DESIGN.md §4.2's "Weather parameters"; `recorded_draws()` lists the values actually drawn.
The training draws are unchanged by this option: the same seed gives the same image as before. `heldout` may
also be a set of HELDOUT_RANGES keys: only those parameters are drawn from their held-out ranges, the others
from the training ranges (to find which extrapolation a model fails at).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import cv2
import numpy as np

WEATHERS: tuple[str, ...] = ("snow", "rainfog", "raindrop", "rain", "haze")

# (low, high) of the uniform draws used for training; HELDOUT_RANGES are disjoint from them. A key in
# SIGNED is drawn as a magnitude in its held-out range with a random sign (training: symmetric range).
TRAIN_RANGES: dict[str, tuple[float, float]] = {
    "streak_angle": (-30.0, 30.0), "streak_density": (0.0015, 0.006), "streak_length": (10.0, 40.0),
    "rainfog_beta": (0.5, 1.6), "rainfog_airlight": (0.75, 0.95),
    "haze_beta": (0.5, 1.8), "haze_airlight": (0.7, 1.0),
    "snow_heaviness": (0.4, 1.6), "snow_wind": (-40.0, 40.0),
    "drop_count": (15, 50), "drop_radius": (4.0, 26.0),
}
HELDOUT_RANGES: dict[str, tuple[float, float]] = {
    "streak_angle": (30.0, 40.0), "streak_density": (0.006, 0.008), "streak_length": (40.0, 50.0),
    "rainfog_beta": (1.6, 2.0), "rainfog_airlight": (0.95, 1.0),
    "haze_beta": (1.8, 2.2), "haze_airlight": (0.6, 0.7),
    "snow_heaviness": (1.6, 2.0), "snow_wind": (40.0, 50.0),
    "drop_count": (50, 60), "drop_radius": (26.0, 30.0),
}
SIGNED = ("streak_angle", "snow_wind")


def weather_cumulative(weights: tuple[float, ...], weathers: tuple[str, ...] = WEATHERS) -> np.ndarray:
    """The cumulative sampling probabilities of `weathers` for relative `weights` (one per weather, >= 0,
    not all 0); a ValueError names the bad value."""
    if len(weights) != len(weathers):
        raise ValueError(f"weather weights: one number per weather ({', '.join(weathers)}), got {len(weights)}")
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weather weights must be finite, >= 0 and not all 0, got {tuple(weights)}")
    return np.cumsum(w / w.sum())


Heldout = bool | frozenset  # True: every parameter held out; False: none; a frozenset of keys: those only


def check_heldout_keys(keys: frozenset) -> None:
    """A ValueError naming any key that is not a weather parameter (and the valid ones)."""
    unknown = sorted(set(keys) - set(HELDOUT_RANGES))
    if unknown:
        raise ValueError(f"unknown weather parameters {unknown}; choose from {', '.join(HELDOUT_RANGES)}")


def _held(key: str, heldout: Heldout) -> bool:
    return heldout if isinstance(heldout, bool) else key in heldout


def _range(key: str, heldout: Heldout) -> tuple[float, float]:
    return (HELDOUT_RANGES if _held(key, heldout) else TRAIN_RANGES)[key]


_draws: ContextVar[list | None] = ContextVar("weather_draws", default=None)


@contextmanager
def recorded_draws() -> Iterator[list[tuple[str, float]]]:
    """Inside the block every main parameter a synthesiser draws (a key of TRAIN_RANGES) is appended as
    (key, value) to the list it yields, in the order drawn; the images are the same as without it."""
    draws: list[tuple[str, float]] = []
    token = _draws.set(draws)
    try:
        yield draws
    finally:
        _draws.reset(token)


def _noted(key: str, value: float) -> float:
    draws = _draws.get()
    if draws is not None:
        draws.append((key, value))
    return value


def _draw(rng: np.random.Generator, key: str, heldout: Heldout) -> float:
    """One parameter: uniform over its training range, or over its held-out range (random sign if SIGNED)."""
    if not _held(key, heldout):
        return _noted(key, float(rng.uniform(*TRAIN_RANGES[key])))
    value = float(rng.uniform(*HELDOUT_RANGES[key]))
    return _noted(key, value * (1.0 if rng.random() < 0.5 or key not in SIGNED else -1.0))


def _check(img: np.ndarray) -> np.ndarray:
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return np.clip(img.astype(np.float32, copy=False), 0.0, 1.0)


def _line_kernel(length: int, angle_deg: float, width: float = 1.0) -> np.ndarray:
    """A normalised line of `length` px at `angle_deg` from vertical (a motion-blur kernel)."""
    size = length | 1  # odd, so the line is centred
    k = np.zeros((size, size), np.float32)
    c = size // 2
    a = np.deg2rad(angle_deg)
    dx, dy = np.sin(a) * (length - 1) / 2, np.cos(a) * (length - 1) / 2
    cv2.line(k, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))),
             1.0, thickness=1, lineType=cv2.LINE_AA)
    if width > 1.0:
        k = cv2.GaussianBlur(k, (0, 0), (width - 1.0) * 0.5 + 1e-3)
    return k / max(float(k.sum()), 1e-6)


def _streaks(h: int, w: int, rng: np.random.Generator, heldout: Heldout = False) -> np.ndarray:
    """A rain-streak layer (H, W) in [0, 1]: 1-3 sub-layers sharing a wind direction.

    Streaks are drawn as anti-aliased segments (one cv2.polylines call per intensity group, which
    is ~10x faster than smearing impulses with a long kernel), then softened along and across.
    """
    angle = _draw(rng, "streak_angle", heldout)
    layer = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        sub = np.zeros((h, w), np.float32)
        n = int(_draw(rng, "streak_density", heldout) * h * w)
        length = _draw(rng, "streak_length", heldout)
        a = np.deg2rad(angle + rng.uniform(-4.0, 4.0))
        lengths = length * rng.uniform(0.6, 1.4, size=n)
        x0 = rng.uniform(-0.2 * w, 1.2 * w, size=n)
        y0 = rng.uniform(-0.2 * h, 1.2 * h, size=n)
        seg = np.stack([np.stack([x0, y0], -1),
                        np.stack([x0 + np.sin(a) * lengths, y0 + np.cos(a) * lengths], -1)], 1)  # (n, 2, 2)
        seg = np.round(seg * 16).astype(np.int32)  # 4 fractional bits for sub-pixel positions
        for group, value in zip(np.array_split(seg, 3), rng.uniform(0.45, 1.0, size=3)):
            cv2.polylines(sub, list(group), False, float(value), thickness=1, lineType=cv2.LINE_AA, shift=4)
        sub = cv2.filter2D(sub, -1, _line_kernel(7, np.rad2deg(a)), borderType=cv2.BORDER_REFLECT)
        width = rng.uniform(0.3, 1.0)
        sub = cv2.GaussianBlur(sub, (0, 0), width) * (1.0 + width) * rng.uniform(0.6, 1.0)
        layer = np.maximum(layer, sub)
    return np.clip(layer, 0.0, 1.0)


def _screen(img: np.ndarray, layer: np.ndarray, colour: float = 1.0) -> np.ndarray:
    """Screen blend of a (H, W) light layer: brightens like light scattered by drops, never clips hard."""
    return 1.0 - (1.0 - img) * (1.0 - colour * layer[..., None])


def _smooth_field(h: int, w: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """A low-frequency random field (H, W), zero mean, unit-ish amplitude."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def depth_proxy(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Relative depth (H, W) in [0, 1] (1 = far) without a depth network.

    Three cues: outdoor scenes recede towards the top of the frame; bright, desaturated regions
    (sky, distant walls) tend to be far (the dark-channel observation); plus a smooth random field
    so the haze is not a pure gradient.
    """
    h, w = img.shape[:2]
    rows = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None] ** rng.uniform(0.6, 1.6)
    dark = cv2.blur(img.min(axis=2), (max(3, w // 16), max(3, h // 16)))
    d = rng.uniform(0.5, 0.8) * rows + rng.uniform(0.1, 0.4) * dark + 0.12 * _smooth_field(h, w, 6, rng)
    d = d - d.min()
    return d / max(float(d.max()), 1e-6)


def _scatter(img: np.ndarray, depth: np.ndarray, beta: float, airlight: np.ndarray) -> np.ndarray:
    """Atmospheric scattering: I = J T + A (1 - T), T = exp(-beta d)."""
    t = np.exp(-beta * depth)[..., None]
    return img * t + airlight[None, None, :] * (1.0 - t)


def _airlight(rng: np.random.Generator, key: str, heldout: Heldout) -> np.ndarray:
    """The airlight colour: a grey drawn uniformly over `key`'s range, tinted by up to +-0.03 per channel."""
    grey = _noted(key, rng.uniform(*_range(key, heldout)))
    return np.clip(grey + rng.uniform(-0.03, 0.03, size=3), 0.0, 1.0).astype(np.float32)


def add_rain(img: np.ndarray, rng: np.random.Generator, heldout: Heldout = False) -> np.ndarray:
    """Rain streaks (Rain100-like)."""
    img = _check(img)
    s = _streaks(img.shape[0], img.shape[1], rng, heldout)
    return np.clip(_screen(img, s, rng.uniform(0.75, 0.95)), 0.0, 1.0).astype(np.float32)


def add_rain_fog(img: np.ndarray, rng: np.random.Generator, heldout: Heldout = False) -> np.ndarray:
    """Outdoor-Rain style: streaks on the scene, then veiling by the scattering model."""
    img = _check(img)
    h, w = img.shape[:2]
    d = depth_proxy(img, rng)
    # Distant parts of a rainy scene are also slightly defocused by the rain curtain.
    soft = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 1.2))
    scene = img + (soft - img) * d[..., None]
    rainy = _screen(scene, _streaks(h, w, rng, heldout), rng.uniform(0.7, 0.9))
    beta = _draw(rng, "rainfog_beta", heldout)
    out = _scatter(rainy, d, beta, _airlight(rng, "rainfog_airlight", heldout))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def add_haze(img: np.ndarray, rng: np.random.Generator, heldout: Heldout = False) -> np.ndarray:
    """Homogeneous haze over the depth proxy (RESIDE-like ranges)."""
    img = _check(img)
    depth = depth_proxy(img, rng)
    beta = _draw(rng, "haze_beta", heldout)
    out = _scatter(img, depth, beta, _airlight(rng, "haze_airlight", heldout))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def add_snow(img: np.ndarray, rng: np.random.Generator, heldout: Heldout = False) -> np.ndarray:
    """Snow100K-like flakes: layers of small sharp, medium and large blurred flakes, wind-smeared."""
    img = _check(img)
    h, w = img.shape[:2]
    heaviness = _draw(rng, "snow_heaviness", heldout)  # ~S to ~L
    wind = _draw(rng, "snow_wind", heldout)
    alpha = np.zeros((h, w), np.float32)
    #              flake sigma (px), density per px, motion length (px)
    layers = [((0.5, 0.9), 0.004, (1, 4)), ((1.0, 1.8), 0.0012, (2, 6)), ((2.2, 4.0), 0.00025, (3, 9))]
    for sigma_range, density, motion in layers:
        if rng.random() < 0.15:  # some images lack a layer, as in the benchmark
            continue
        sigma = rng.uniform(*sigma_range)
        flakes = (rng.random((h, w), dtype=np.float32) < density * heaviness).astype(np.float32)
        flakes *= rng.uniform(0.6, 1.0, size=(h, w)).astype(np.float32)
        blob = cv2.GaussianBlur(flakes, (0, 0), sigma)
        blob *= 2.0 * np.pi * sigma**2 * rng.uniform(0.9, 1.4)  # peak ~1 per flake
        length = int(rng.integers(*motion))
        if length > 1:
            blob = cv2.filter2D(blob, -1, _line_kernel(length, wind), borderType=cv2.BORDER_REFLECT) * 1.3
        alpha = 1.0 - (1.0 - alpha) * (1.0 - np.clip(blob, 0.0, 1.0))
    colour = rng.uniform(0.88, 1.0)
    out = img * (1.0 - alpha[..., None]) + colour * alpha[..., None]
    veil = rng.uniform(0.0, 0.12) * heaviness / 1.6  # heavy snow also whitens the air
    out = out * (1.0 - veil) + veil * colour
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def add_raindrops(img: np.ndarray, rng: np.random.Generator, heldout: Heldout = False) -> np.ndarray:
    """Raindrops on glass: each drop shows an inverted, minified, blurred view of its surroundings."""
    img = _check(img)
    h, w = img.shape[:2]
    scale = np.sqrt(h * w) / 256.0
    # Per-pixel offset from the owning drop's centre, its radius and its lens power; 0 outside drops.
    off_x = np.zeros((h, w), np.float32)
    off_y = np.zeros((h, w), np.float32)
    rel_x = np.zeros((h, w), np.float32)  # offset / radius, for the highlight
    rel_y = np.zeros((h, w), np.float32)
    rho = np.full((h, w), 2.0, np.float32)  # normalised radial distance; >= 1 means "no drop"
    power = np.zeros((h, w), np.float32)
    lo, hi = _range("drop_count", heldout)
    n = int(_noted("drop_count", int(rng.integers(int(lo), int(hi)))) * max(scale, 0.5) ** 2)
    for _ in range(n):
        r = _draw(rng, "drop_radius", heldout) * max(scale, 0.75)  # small crops keep visible drops
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ax = rng.uniform(0.75, 1.0)  # drops run down: a bit taller than wide
        lobes, amp, phase = int(rng.integers(2, 5)), rng.uniform(0.0, 0.15), rng.uniform(0, 2 * np.pi)
        x0, x1 = max(int(cx - 1.3 * r), 0), min(int(cx + 1.3 * r) + 1, w)
        y0, y1 = max(int(cy - 1.3 * r), 0), min(int(cy + 1.3 * r) + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        dx, dy = np.broadcast_arrays(dx, dy)
        dist = np.sqrt(dx * dx * np.float32(1.0 / (ax * ax)) + dy * dy)
        # Irregular outline r (1 + amp sin(lobes theta + phase)), theta taken from the unit vector
        # (arctan2 is slow): sin(k theta + phase) = Im(unit^k e^{i phase}).
        unit = (dx + 1j * dy).astype(np.complex64) / np.maximum(dist, 1e-3)
        z = unit * np.complex64(np.exp(1j * phase))
        for _ in range(lobes - 1):
            z = z * unit
        local = dist / (np.float32(r) * (1.0 + np.float32(amp) * z.imag))
        take = local < rho[y0:y1, x0:x1]  # the nearer boundary wins where drops overlap
        np.copyto(rho[y0:y1, x0:x1], local, where=take)
        np.copyto(off_x[y0:y1, x0:x1], dx, where=take)
        np.copyto(off_y[y0:y1, x0:x1], dy, where=take)
        np.copyto(rel_x[y0:y1, x0:x1], dx / np.float32(r), where=take)
        np.copyto(rel_y[y0:y1, x0:x1], dy / np.float32(r), where=take)
        np.copyto(power[y0:y1, x0:x1], np.float32(rng.uniform(1.5, 4.0)), where=take)
    inside = rho < 1.0
    if not inside.any():
        return img.copy()
    # A convex drop inverts and minifies: the pixel at offset o samples the scene at centre - k o,
    # more strongly towards the rim (fisheye). Only pixels in drops are computed.
    ys, xs = np.nonzero(inside)
    ox, oy, rr = off_x[ys, xs], off_y[ys, xs], rho[ys, xs]
    k = power[ys, xs] * (1.0 + 0.6 * rr * rr)
    map_x, map_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x[ys, xs] = xs - ox - k * ox
    map_y[ys, xs] = ys - oy - k * oy
    defocus = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 3.5) * max(scale, 0.5))
    seen = cv2.remap(defocus, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # Soft edge: a drop fades out over the outer 15 % of its radius, then a slight blur of the mask.
    edge = cv2.GaussianBlur(np.clip((1.0 - rho) / 0.15, 0.0, 1.0), (0, 0), 0.8)
    ys, xs = np.nonzero(edge > 1e-3)
    rr = np.minimum(rho[ys, xs], 1.0)
    # Water flattens contrast and brightens slightly; the rim is dark (total internal reflection).
    rim = np.clip((rr - 0.7) / 0.3, 0.0, 1.0)
    shade = 1.08 * (1.0 - rng.uniform(0.3, 0.6) * rim * rim)
    hx, hy = rel_x[ys, xs] + 0.35, rel_y[ys, xs] + 0.35  # specular highlight up-left of the centre
    spot = np.where(rr < 1.0, np.exp(-(hx * hx + hy * hy) / 0.02), 0.0) * rng.uniform(0.1, 0.3)
    drop = (0.85 * seen[ys, xs] + 0.15 * float(seen.mean())) * shade[:, None] + spot[:, None]
    e = edge[ys, xs][:, None]
    out = img.copy()
    out[ys, xs] = img[ys, xs] * (1.0 - e) + drop * e
    return np.clip(out, 0.0, 1.0).astype(np.float32)


SYNTHESIZERS: dict[str, Callable[..., np.ndarray]] = {
    "snow": add_snow,
    "rainfog": add_rain_fog,
    "raindrop": add_raindrops,
    "rain": add_rain,
    "haze": add_haze,
}


def synthesize(img: np.ndarray, weather: str, rng: np.random.Generator, heldout: Heldout = False) -> np.ndarray:
    """Degrade `img` ((H, W, 3), uint8 or float in [0, 1]) with `weather`; returns float32 in [0, 1].
    `heldout=True` draws the main parameters from HELDOUT_RANGES (outside the training ranges); a frozenset of
    HELDOUT_RANGES keys draws those only from there."""
    if weather not in SYNTHESIZERS:
        raise ValueError(f"unknown weather {weather!r}; choose one of {', '.join(WEATHERS)}")
    if not isinstance(heldout, bool):
        check_heldout_keys(heldout)
    return SYNTHESIZERS[weather](img, rng, heldout)
