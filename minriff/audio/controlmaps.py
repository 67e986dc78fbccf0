"""Control images from music, for ControlNet: a spectrogram image -> a white-on-black (H, W, 3) uint8
map of what to keep. `PREPROCESSORS` names them:

    canny   Canny edges as the public SD 1.5 canny ControlNet expects (canny.py: OpenCV's
            conventions, thresholds 100 / 200): the outlines of notes, drums and harmonics
    rhythm  onsets from the spectral flux as full-height vertical lines (musicmaps.py)
    melody  the dominant pitch track as a connected line in mel-row coordinates (musicmaps.py)

`control_image(prep, source, width)` reads `source` -- an audio file (WAV/FLAC/OGG/MP3, turned
into a spectrogram exactly as `minriff audio2image` does, Riffusion's default parameters) or a
spectrogram image (PNG from audio2image; its EXIF parameters are used where present) -- keeps its
first `width` columns (the clip width; default 512 = 5.12 s), runs the preprocessor and pads the
map with black to `width` when the music is shorter.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from minriff import images
from minriff.audio import canny as _canny
from minriff.audio import musicmaps
from minriff.audio.spectrogram import SpectrogramParams, open_spectrogram, params_from_image
from minriff.errors import AudioError, InputError

DEFAULT_WIDTH = 512
MAX_WIDTH = 3008  # = minriff.inputs.MAX_IMAGE_WIDTH (30 s), the widest clip; audio may not import inputs
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def canny(image, *, low: float = 100, high: float = 200, l2_gradient: bool = False, sigma: float = 0.0,
          params: SpectrogramParams | None = None) -> np.ndarray:
    """Spectrogram image -> Canny edge map (canny.py); `params` is accepted and unused (edges need none)."""
    return _canny.canny(images.rgb8(image, "spectrogram image", InputError), low, high, l2_gradient=l2_gradient,
                        sigma=sigma)


def rhythm(image, *, params: SpectrogramParams | None = None, **options) -> np.ndarray:
    """Spectrogram image -> onset lines (musicmaps.rhythm); `params` sets the flux lag (half a window)."""
    return musicmaps.rhythm(images.rgb8(image, "spectrogram image", InputError), params=params, **options)


def melody(image, *, params: SpectrogramParams | None = None, **options) -> np.ndarray:
    """Spectrogram image -> pitch line (musicmaps.melody); `params` maps mel rows to Hz."""
    return musicmaps.melody(images.rgb8(image, "spectrogram image", InputError), params=params, **options)


PREPROCESSORS = {"canny": canny, "rhythm": rhythm, "melody": melody}


def control_image(prep: str, source: str | Path, width: int | None = None, **options) -> np.ndarray:
    """An audio file or spectrogram image -> (H, width, 3) uint8 control map, H = its mel bins (512).
    `options` go to the preprocessor (canny: low, high; rhythm/melody: see musicmaps.py)."""
    fn = preprocessor(prep)
    width = check_width(DEFAULT_WIDTH if width is None else width)
    spec, params = load_spectrogram(source)
    spec = spec[:, :width]
    if not (spec < 255).any():
        raise AudioError(f"{source} is silent (its spectrogram has no energy in the first {width} columns): "
                         "nothing to make a control map from")
    out = fn(spec, params=params, **options)
    if out.shape[1] < width:
        out = np.pad(out, ((0, 0), (0, width - out.shape[1]), (0, 0)))  # music shorter than the clip: black
    return out


def preprocessor(prep: str):
    """The preprocessor called `prep`, or an InputError listing the names."""
    if prep not in PREPROCESSORS:
        raise InputError(f"unknown control preprocessor {prep!r}; choose one of {', '.join(PREPROCESSORS)}")
    return PREPROCESSORS[prep]


def check_width(width) -> int:
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 1 <= width <= MAX_WIDTH:
        raise InputError(f"control image width must be a whole number of pixels from 1 to {MAX_WIDTH} "
                         f"({MAX_WIDTH / 100:g} s, the longest clip), got {width!r}")
    return int(width)


def load_spectrogram(source) -> tuple[np.ndarray, SpectrogramParams]:
    """A spectrogram image or an audio file -> ((H, W, 3) uint8 spectrogram, its parameters)."""
    path = Path(os.fspath(source))
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise InputError(f"cannot read control source {path}: {e.strerror or e}") from None
    if head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        image = open_spectrogram(path, "control source image")
        params = params_from_image(image)
        return images.rgb8(image, f"control source image {path}", AudioError), params
    from minriff.audio.io import AudioFile
    from minriff.audio.spectrogram import audio_to_image

    params = SpectrogramParams()  # audio2image's defaults (the riffusion preset, mono)
    image = audio_to_image(AudioFile(path, params.sample_rate), params)
    return images.rgb8(image, f"the spectrogram of {path}", AudioError), params
