"""Audio files and the original's loudness stage.

read/write WAV, FLAC, OGG (Vorbis) and MP3 through soundfile (libsndfile >= 1.1 for MP3; files are
encoded in memory and written atomically through minriff.atomic),
resampling to the model rate with scipy's polyphase filter, and Riffusion's post-processing
(reference/riffusion.md §1.8) reproduced on int16 samples with pydub/audioop rounding:
audioop.mul floors and saturates, audioop.rms truncates to an integer."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from minriff import atomic
from minriff.errors import AudioError

MAX_SECONDS = 3600.0  # refuse longer inputs: a spectrogram image of an hour is already 360,000 px wide
FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
           ".mp3": ("MP3", "MPEG_LAYER_III")}


def _soundfile():
    import soundfile  # imported lazily: `minriff --help` should not load libsndfile

    return soundfile


def read_audio(path, max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int]:
    """-> (waveform (C, N) float32 in [-1, 1], sample_rate)."""
    sf = _soundfile()
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"no such audio file: {path}")
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile says "Format not recognised" etc.
        raise AudioError(f"cannot read {path}: not a readable WAV/FLAC/OGG/MP3 file ({_first_line(e)})") from e
    if info.frames <= 0 or info.channels <= 0:
        raise AudioError(f"{path} contains no audio samples")
    if info.samplerate <= 0 or info.frames / info.samplerate > max_seconds:
        raise AudioError(f"{path} is {info.frames / max(info.samplerate, 1):.0f} s long; "
                         f"the limit is {max_seconds:.0f} s")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"cannot decode {path}: {_first_line(e)}") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path} contains no audio samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path} contains NaN or infinite samples")
    return np.ascontiguousarray(data.T), int(sr)


def resample(waveform: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) along the last axis."""
    if sr_from == sr_to:
        return np.asarray(waveform, dtype=np.float32)
    if sr_from <= 0 or sr_to <= 0:
        raise AudioError(f"bad sample rates {sr_from} -> {sr_to}")
    from scipy.signal import resample_poly

    g = math.gcd(int(sr_from), int(sr_to))
    return resample_poly(waveform, sr_to // g, sr_from // g, axis=-1).astype(np.float32)


def load_audio(path, sample_rate: int = 44100, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """read_audio + resampling to `sample_rate` -> (C, N) float32."""
    wave, sr = read_audio(path, max_seconds)
    return resample(wave, sr, sample_rate)


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 by rounding x*32768 and saturating (exact for k/32768 values)."""
    return np.clip(np.rint(np.asarray(waveform, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_audio(path, waveform: np.ndarray, sample_rate: int, format: str | None = None) -> None:  # noqa: A002
    """waveform (C, N) or (N,) float in [-1, 1] (or int16) -> file; format from the suffix
    (wav, flac, ogg, mp3) unless given. Written atomically (minriff.atomic; missing folders are
    made): a failure leaves no partial file and an existing one untouched."""
    path = Path(path)
    suffix = "." + format.lower().lstrip(".") if format else path.suffix.lower()
    if suffix not in FORMATS:
        raise AudioError(f"unsupported audio format {suffix or '(none)'} for {path}; use .wav, .flac, .ogg or .mp3")
    atomic.check_target(path, make_parents=True)  # before the encoding work
    data = encode_audio(waveform, sample_rate, suffix)
    atomic.write_bytes(path, data, make_parents=True)


def encode_audio(waveform: np.ndarray, sample_rate: int, format: str = "wav",  # noqa: A002
                 vbr_quality: float | None = None) -> bytes:
    """waveform (C, N) or (N,) float in [-1, 1] (or int16) -> the bytes of a wav/flac/ogg/mp3 file
    (encoded in memory: at most the size of the int16 samples, which are in memory already).
    vbr_quality: MP3 only, variable bit rate at this libsndfile compression level (0 = best, 1 =
    smallest; 0.2 gives ~93 kbit/s, like the original server's clips); default libsndfile's."""
    sf = _soundfile()
    suffix = "." + format.lower().lstrip(".")
    if suffix not in FORMATS:
        raise AudioError(f"unsupported audio format {format!r}; use wav, flac, ogg or mp3")
    fmt, subtype = FORMATS[suffix]
    if fmt not in sf.available_formats():
        raise AudioError(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}; "
                         "MP3 needs libsndfile >= 1.1")
    w = np.asarray(waveform)
    w = w[None] if w.ndim == 1 else w
    if w.ndim != 2 or w.shape[1] == 0:
        raise AudioError(f"waveform must be (channels, samples) with samples > 0, got shape {np.shape(waveform)}")
    if w.dtype != np.int16:
        if not np.all(np.isfinite(w)):
            raise AudioError("waveform contains NaN or infinite samples")
        w = to_int16(w) if subtype == "PCM_16" else np.clip(w, -1.0, 1.0).astype(np.float32)
    buf = io.BytesIO()
    extra = {}
    if vbr_quality is not None and fmt == "MP3":
        extra = {"bitrate_mode": "VARIABLE", "compression_level": float(vbr_quality)}
    try:
        sf.write(buf, np.ascontiguousarray(w.T), int(sample_rate), format=fmt, subtype=subtype, **extra)
    except Exception as e:
        raise AudioError(f"cannot encode {fmt} audio: {_first_line(e)}") from e
    return buf.getvalue()


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# --- loudness -----------------------------------------------------------------------------------

def peak_normalize(waveform: np.ndarray, headroom_db: float = 0.1) -> np.ndarray:
    """Scale so the peak sits `headroom_db` below full scale; silence stays silent."""
    w = np.asarray(waveform, dtype=np.float32)
    peak = float(np.max(np.abs(w))) if w.size else 0.0
    if peak == 0.0:
        return w.copy()
    return (w * np.float32(10.0 ** (-headroom_db / 20.0) / peak)).astype(np.float32)


def _audioop_mul(samples: np.ndarray, factor: float) -> np.ndarray:
    """audioop.mul on int16: multiply in double, floor, saturate."""
    return np.clip(np.floor(samples.astype(np.float64) * factor), -32768, 32767).astype(np.int16)


def _rms_int(samples: np.ndarray) -> int:
    """audioop.rms: sqrt(mean of squares) truncated to an integer."""
    s = samples.astype(np.float64)
    return int(math.sqrt(float(np.dot(s.ravel(), s.ravel())) / s.size)) if s.size else 0


def _pydub_normalize(samples: np.ndarray, headroom: float = 0.1) -> np.ndarray:
    peak = int(np.max(np.abs(samples.astype(np.int32)))) if samples.size else 0
    if peak == 0:
        return samples
    target = 32768.0 * 10.0 ** (-headroom / 20.0)
    boost_db = 20.0 * math.log10(target / peak)
    return _audioop_mul(samples, 10.0 ** (boost_db / 20.0))


def riffusion_int16(waveform: np.ndarray) -> np.ndarray:
    """The original's stage on int16 samples (C, N): peak to 32767 (truncation), gain to -12 dBFS
    (saturating), then peak to -0.1 dBFS."""
    w = np.asarray(waveform, dtype=np.float32)
    peak = np.max(np.abs(w)) if w.size else np.float32(0)
    if not np.isfinite(peak):
        raise AudioError("waveform contains NaN or infinite samples")
    if peak == 0:
        return np.zeros(w.shape, np.int16)
    samples = (w * (np.float32(32767.0) / peak)).astype(np.int16)  # truncation toward zero
    rms = _rms_int(samples)
    if rms == 0:
        return samples
    gain_db = -12.0 - 20.0 * math.log10(rms / 32768.0)
    samples = _audioop_mul(samples, 10.0 ** (gain_db / 20.0))
    return _pydub_normalize(samples, 0.1)


def loudness_riffusion(waveform: np.ndarray) -> np.ndarray:
    """riffusion_int16 as float32 (C, N) = int16 / 32768 (written back to 16-bit files exactly)."""
    return (riffusion_int16(waveform).astype(np.float32) / np.float32(32768.0))
