"""Canny edges on NumPy, with the conventions of OpenCV's `cv2.Canny(image, low, high)` -- what the
public SD 1.5 canny ControlNets (lllyasviel control_sd15_canny, control_v11p_sd15_canny) were
trained on: their annotator calls exactly that on the RGB image, thresholds 100 / 200, no blur, and
stacks the 0/255 edge map into 3 channels.

    1. gradients: 3x3 Sobel per channel, border pixels replicated; where the image has several
       channels, each pixel takes the channel with the largest magnitude (the first on ties).
    2. magnitude |gx| + |gy| (OpenCV's default), or gx^2 + gy^2 compared with squared thresholds
       (`l2_gradient=True`); pixels outside the image count as magnitude 0.
    3. non-maximum suppression along the gradient direction quantised to 0/45/90/135 degrees with
       OpenCV's integer tangent test (tan 22.5 deg in 15-bit fixed point); ties keep the pixel whose
       *previous* neighbour (left / above) is smaller, so a two-pixel plateau gives one edge pixel.
    4. double threshold: candidates have magnitude > low, strong ones > high (strict, as OpenCV).
    5. hysteresis: candidates 8-connected to a strong pixel become edges.

`sigma > 0` blurs with a Gaussian first (OpenCV's Canny does not; the annotator does not either).
"""
from __future__ import annotations

import numpy as np

from minriff.errors import InputError

TG22 = 13573  # round(tan(22.5 deg) * 2^15), OpenCV's fixed-point constant
SHIFT = 15


def canny(image: np.ndarray, low: float = 100, high: float = 200, *, l2_gradient: bool = False,
          sigma: float = 0.0) -> np.ndarray:
    """(H, W) or (H, W, C) uint8 -> (H, W, 3) uint8 edge map: 255 on edges, 0 elsewhere."""
    edges = canny_mask(image, low, high, l2_gradient=l2_gradient, sigma=sigma)
    return np.repeat((edges * np.uint8(255))[:, :, None], 3, axis=2)


def canny_mask(image: np.ndarray, low: float = 100, high: float = 200, *, l2_gradient: bool = False,
               sigma: float = 0.0) -> np.ndarray:
    """(H, W) or (H, W, C) uint8 -> (H, W) bool edge mask (module docstring for the steps)."""
    img = _channels(image)  # (C, H, W) float64
    low, high = _thresholds(low, high, l2_gradient)
    if sigma:
        img = np.stack([gaussian_blur(c, sigma) for c in img])
    gx, gy = sobel(img)  # (C, H, W) each
    mag = gx * gx + gy * gy if l2_gradient else np.abs(gx) + np.abs(gy)
    pick = np.argmax(mag, axis=0)[None]  # (1, H, W): the channel with the largest magnitude
    gx, gy, mag = (np.take_along_axis(a, pick, axis=0)[0] for a in (gx, gy, mag))
    candidates = non_max_suppression(mag, gx, gy) & (mag > low)
    return hysteresis(candidates, candidates & (mag > high))


def _channels(image) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"canny needs an (H, W) or (H, W, 1|3|4) image, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise InputError(f"canny needs a uint8 image, got {a.dtype}")
    return a[:, :, :3].transpose(2, 0, 1).astype(np.float64)


def _thresholds(low, high, l2_gradient: bool) -> tuple[float, float]:
    for name, v in (("low", low), ("high", high)):
        if not isinstance(v, (int, float, np.integer, np.floating)) or not 0 <= v <= 10000:
            raise InputError(f"canny {name} threshold must be a number from 0 to 10000, got {v!r}")
    low, high = sorted((float(low), float(high)))  # OpenCV swaps them too
    if l2_gradient:
        low, high = min(low, 32767.0) ** 2, min(high, 32767.0) ** 2
    return float(np.floor(low)), float(np.floor(high))


def sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., H, W) -> (gx, gy): 3x3 Sobel (kernel [-1 0 1] x [1 2 1]), edges replicated."""
    p = np.pad(img, [(0, 0)] * (img.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    rows = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]  # (..., H, W+2): smoothed down the column
    cols = p[..., :, :-2] + 2 * p[..., :, 1:-1] + p[..., :, 2:]  # (..., H+2, W): smoothed along the row
    return rows[..., :, 2:] - rows[..., :, :-2], cols[..., 2:, :] - cols[..., :-2, :]


def non_max_suppression(mag: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """(H, W) magnitude and gradients -> bool mask of local maxima across the edge (OpenCV's test)."""
    m = np.pad(mag, 1)  # magnitude 0 outside the image
    h, w = mag.shape

    def at(dy: int, dx: int) -> np.ndarray:  # the neighbour at (y + dy, x + dx) of every pixel
        return m[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    ax = np.abs(gx).astype(np.int64)
    ay = np.abs(gy).astype(np.int64) << SHIFT
    tg22 = ax * TG22
    tg67 = tg22 + (ax << (SHIFT + 1))
    horizontal = ay < tg22
    vertical = ~horizontal & (ay > tg67)
    diagonal = ~horizontal & ~vertical
    s = np.where((gx < 0) != (gy < 0), -1, 1)  # the sign of gx * gy picks the diagonal
    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    keep_d = np.where(s > 0, (mag > at(-1, -1)) & (mag > at(1, 1)), (mag > at(-1, 1)) & (mag > at(1, -1)))
    return (horizontal & keep_h) | (vertical & keep_v) | (diagonal & keep_d)


def hysteresis(candidates: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Candidates 8-connected (through candidates) to a strong pixel: a breadth-first flood on flat
    indices of a padded grid, so each round costs only its frontier."""
    h, w = candidates.shape
    cand = np.pad(candidates, 1).ravel()  # the zero border stops the flood at the image's edges
    seen = np.pad(strong, 1).ravel().copy()
    stride = w + 2
    offsets = np.array([dy * stride + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
    frontier = np.flatnonzero(seen)
    while frontier.size:
        nb = np.unique((frontier[:, None] + offsets[None, :]).ravel())
        nb = nb[cand[nb] & ~seen[nb]]
        seen[nb] = True
        frontier = nb
    return seen.reshape(h + 2, w + 2)[1:-1, 1:-1]


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) -> (H, W) separable Gaussian blur, radius ceil(3 sigma), edges reflected (OpenCV's default)."""
    if not 0 < sigma <= 50:
        raise InputError(f"canny blur sigma must be in (0, 50], got {sigma!r}")
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(img, r, mode="reflect")
    rows = sum(k[i] * p[i:i + img.shape[0], :] for i in range(2 * r + 1))  # (H, W + 2r)
    return sum(k[i] * rows[:, i:i + img.shape[1]] for i in range(2 * r + 1))
