"""Reading pictures: the one helper every image minriff opens goes through (seed, init and mask
images, spectrogram PNGs, server uploads), and the one conversion to 8-bit RGB.

`open_image(source, what, max_width=, max_height=, max_pixels=)` reads the declared size from the
file header and refuses an image over the limits *before* decoding its pixels; Pillow's own
decompression-bomb guard (a process-wide 179-Mpixel cap, with a warning from 89 Mpixels) is
replaced by these per-use limits for PNG, the format minriff writes spectrograms in (an hour of
audio is a 360,001 x 512 px PNG, 184 Mpixels); for the other formats a Pillow bomb error becomes
the same clear error. Unreadable, truncated or corrupt files raise `error` (InputError by default).

`rgb8(image)` turns a PIL image or an array into (H, W, 3) uint8, scaling rather than clipping
deeper samples:
- 16-bit images (PIL modes I;16*, and I holding 0..65535 as Pillow opens 16-bit PNG/PGM/TIFF;
  uint16 arrays) keep their high byte, v >> 8 -- what Pillow does itself for 16-bit RGB(A) PNGs and
  libpng's strip_16, and the exact inverse of 8 -> 16-bit scaling (x * 257). Values outside
  0..65535 in mode I are refused.
- float images (PIL mode F, float arrays) must hold values in [0, 1]; they map to round(255 x).
- everything else goes through Pillow's convert("RGB") (palette, greyscale, alpha dropped, CMYK).
"""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from minriff.errors import InputError

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# what Pillow raises for files it cannot parse; truncated and corrupt files reach all of these
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, TypeError,
                 KeyError, UnidentifiedImageError, Image.DecompressionBombError)


def check_size(width: int, height: int, what: str, max_width: int, max_height: int, max_pixels: int | None = None,
               error=InputError) -> None:
    """Refuse an image of width x height px over the limits (or empty), naming them."""
    if width < 1 or height < 1:
        raise error(f"{what} is {width}x{height} px: empty")
    if width > max_width or height > max_height:
        raise error(f"{what} is {width:,}x{height:,} px; the limit is {max_width:,} px wide and "
                    f"{max_height:,} px high")
    if max_pixels is not None and width * height > max_pixels:
        raise error(f"{what} is {width:,}x{height:,} px = {width * height:,} pixels; the limit is {max_pixels:,}")


def open_image(source, what: str = "image", *, max_width: int, max_height: int, max_pixels: int | None = None,
               error=InputError) -> Image.Image:
    """A path, bytes or binary file -> a decoded PIL image (first frame), its size checked first."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        import io

        source = io.BytesIO(bytes(source))
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    label = f"{what} {name}" if name else what
    try:
        fp = open(name, "rb") if name is not None else source
    except OSError as e:
        raise error(f"cannot read {label}: {e.strerror or e}") from None
    try:
        image = _open_checked(fp, label, max_width, max_height, max_pixels, error)
        image.load()
        return image
    except DECODE_ERRORS as e:
        raise error(f"cannot read {label}: not a readable {'/'.join(FORMATS)} image ({_first_line(e)})") from None
    finally:
        if name is not None:
            fp.close()


def _open_checked(fp, label, max_width, max_height, max_pixels, error) -> Image.Image:
    fp.seek(0)
    head = fp.read(24)
    fp.seek(0)
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
        # PNG: size from the IHDR chunk, then Pillow's PNG reader without its global pixel cap
        width, height = struct.unpack(">II", head[16:24])
        check_size(width, height, label, max_width, max_height, max_pixels, error)
        return PngImagePlugin.PngImageFile(fp)
    image = Image.open(fp, formats=FORMATS)  # reads the header only
    check_size(*image.size, label, max_width, max_height, max_pixels, error)
    return image


def rgb8(image, what: str = "image", error=InputError) -> np.ndarray:
    """A PIL image or an (H, W), (H, W, 1|3|4) array -> (H, W, 3) uint8 (module docstring for depths)."""
    if isinstance(image, Image.Image):
        mode = image.mode
        if mode.startswith("I;16") or mode in ("I", "F"):
            return _grey_to_rgb(_to_uint8(np.asarray(image), f"{what} (mode {mode})", error, mode_i=mode == "I"))
        try:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
        except DECODE_ERRORS as e:
            raise error(f"cannot convert {what} (mode {mode}) to RGB: {_first_line(e)}") from None
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[:, :, :3]
    elif a.ndim != 2:
        raise error(f"{what} must be an (H, W), (H, W, 3) or (H, W, 4) array, got shape {a.shape}")
    a = _to_uint8(a, what, error)
    return _grey_to_rgb(a) if a.ndim == 2 or a.shape[2] == 1 else np.ascontiguousarray(a)


def _grey_to_rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a.reshape(a.shape[0], a.shape[1], 1), 3, axis=2)


def _to_uint8(a: np.ndarray, what: str, error, mode_i: bool = False) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:  # either byte order (PIL mode I;16B is big-endian)
        return (a >> 8).astype(np.uint8)
    if mode_i:
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise error(f"{what} holds values {a.min()}..{a.max()}; 32-bit integer images are read as 16-bit "
                        f"samples 0..65535")
        return (a >> 8).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            raise error(f"{what} is a float image with values outside [0, 1] (or NaN): float images must hold "
                        f"0..1 (divide 8-bit values by 255)")
        return np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)
    raise error(f"{what} has samples of type {a.dtype}; use uint8, uint16 or floats in [0, 1]")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
