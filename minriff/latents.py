"""Small array helpers of the pipeline: noise interpolation, image <-> model tensors, masks.

Everything here is plain NumPy on host arrays; the pipeline moves results to the backend.
"""
from __future__ import annotations

import numpy as np

from minriff import images

DOT_THRESHOLD = 0.9995  # above this |cos| the two noises are almost parallel: lerp instead of slerp


def lerp(a, b, alpha: float):
    return a + alpha * (b - a)


def slerp(alpha: float, v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """Spherical interpolation of two noise tensors treated as flat vectors (Riffusion's rule).

    alpha = 0 gives exactly v0 and alpha = 1 exactly v1; nearly parallel inputs fall back to lerp.
    Computed in float64 and returned in v0's dtype.
    """
    a = np.asarray(v0, dtype=np.float64)
    b = np.asarray(v1, dtype=np.float64)
    cos = float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    if abs(cos) > DOT_THRESHOLD:
        out = (1.0 - alpha) * a + alpha * b
    else:
        theta_0 = np.arccos(cos)
        theta = theta_0 * alpha
        out = np.sin(theta_0 - theta) / np.sin(theta_0) * a + np.sin(theta) / np.sin(theta_0) * b
    return out.astype(np.asarray(v0).dtype)


def as_rgb_array(image, what: str = "image") -> np.ndarray:
    """A PIL image or an (H, W[, C]) array -> (H, W, 3) uint8 (greyscale/palette -> 3 equal channels;
    16-bit and float images scaled, not clipped: `minriff.images.rgb8`)."""
    return images.rgb8(image, what)


def image_to_model(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1], the VAE encoder's input."""
    x = rgb.astype(np.float32) / 255.0
    return np.ascontiguousarray((2.0 * x - 1.0).transpose(2, 0, 1)[None])


def model_to_image(x: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) VAE decoder output in about [-1, 1] -> (H, W, 3) uint8, rounded like diffusers."""
    img = np.clip(np.asarray(x, dtype=np.float32)[0] / 2 + 0.5, 0.0, 1.0)  # (3, H, W)
    return np.round(img.transpose(1, 2, 0) * 255.0).astype(np.uint8)


def mask_to_latent(mask_rgb: np.ndarray, downscale: int, channels: int = 4) -> np.ndarray:
    """Mask image (H, W, 3) -> (1, C, H/f, W/f) keep-weights m: black keeps the seed image (m = 1),
    white is regenerated (m = 0). Greyscale with PIL's "L" weights, NEAREST downscale, as the original."""
    from PIL import Image

    h, w = mask_rgb.shape[:2]
    grey = Image.fromarray(mask_rgb).convert("L").resize((w // downscale, h // downscale), resample=Image.NEAREST)
    value = np.asarray(grey, dtype=np.float32) / 255.0  # (h, w)
    return np.ascontiguousarray(np.broadcast_to(1.0 - value, (1, channels) + value.shape), dtype=np.float32)


def fit_width(rgb: np.ndarray, width: int, nearest: bool = False) -> np.ndarray:
    """Stretch (H, W, 3) uint8 to `width` columns (bicubic, or nearest for masks); no-op if equal."""
    if rgb.shape[1] == width:
        return rgb
    from PIL import Image

    resample = Image.NEAREST if nearest else Image.BICUBIC
    return np.asarray(Image.fromarray(rgb).resize((width, rgb.shape[0]), resample=resample))
