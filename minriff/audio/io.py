"""Audio files and the original's loudness stage.

read/write WAV, FLAC, OGG (Vorbis) and MP3 through soundfile (libsndfile >= 1.1 for MP3; files are
encoded in memory and written atomically through minriff.atomic),
resampling to the model rate with scipy's polyphase filter, and Riffusion's post-processing
(reference/riffusion.md §1.8) reproduced on int16 samples with pydub/audioop rounding:
audioop.mul floors and saturates, audioop.rms truncates to an integer.

Inputs are limited to MAX_SECONDS (an hour). `read_audio`/`load_audio` hold the whole waveform
(an hour of stereo float32 is 1.27 GB); `AudioFile` reads and resamples block by block, for
`audio_to_image` of long files in bounded memory. The loudness stage and the int16 conversion
work on blocks too, so their temporaries stay small whatever the length."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from minriff import atomic
from minriff.errors import AudioError

MAX_SECONDS = 3600.0  # refuse longer inputs: a spectrogram image of an hour is already 360,001 px wide
MIN_SAMPLE_RATE = 4000  # a lower rate turns a small file into hours of upsampled audio
BLOCK = 1 << 18  # samples per block in the block-wise passes (~6 s at 44.1 kHz)
FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
           ".mp3": ("MP3", "MPEG_LAYER_III")}


def _soundfile():
    import soundfile  # imported lazily: `minriff --help` should not load libsndfile

    return soundfile


def _info(path: Path, max_seconds: float):
    """soundfile's header info of an audio file, checked: it exists, holds samples, is not too long."""
    sf = _soundfile()
    if not path.is_file():
        raise AudioError(f"no such audio file: {path}")
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile says "Format not recognised" etc.
        raise AudioError(f"cannot read {path}: not a readable WAV/FLAC/OGG/MP3 file ({_first_line(e)})") from e
    if info.frames <= 0 or info.channels <= 0:
        raise AudioError(f"{path} contains no audio samples")
    if not MIN_SAMPLE_RATE <= info.samplerate <= 10**6:
        raise AudioError(f"{path} is sampled at {info.samplerate} Hz; minriff reads {MIN_SAMPLE_RATE:,} to "
                         f"1,000,000 Hz")
    if info.frames / info.samplerate > max_seconds:
        raise AudioError(f"{path} is {info.frames / max(info.samplerate, 1):.0f} s long at {info.samplerate} Hz; "
                         f"the limit is {max_seconds:.0f} s")
    return info


def read_audio(path, max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int]:
    """-> (waveform (C, N) float32 in [-1, 1], sample_rate)."""
    sf = _soundfile()
    path = Path(path)
    _info(path, max_seconds)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"cannot decode {path}: {_first_line(e)}") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path} contains no audio samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path} contains NaN or infinite samples")
    return np.ascontiguousarray(data.T), int(sr)


class AudioFile:
    """An audio file read block by block and resampled to `sample_rate` on the fly: `pieces()`
    yields consecutive (C, n) float32 blocks, `frames` of them in all. Memory is a few blocks,
    whatever the length. Each `pieces()` call reads the file again from the start."""

    def __init__(self, path, sample_rate: int = 44100, max_seconds: float = MAX_SECONDS):
        self.path = Path(path)
        info = _info(self.path, max_seconds)
        self.channels, self.source_rate, self.sample_rate = info.channels, int(info.samplerate), int(sample_rate)
        g = math.gcd(self.source_rate, self.sample_rate)
        self.up, self.down = self.sample_rate // g, self.source_rate // g
        self.source_frames = int(info.frames)
        self.frames = -(-self.source_frames * self.up // self.down)  # resample_poly's output length

    @property
    def seconds(self) -> float:
        return self.source_frames / self.source_rate

    def _read(self, block: int):
        sf = _soundfile()
        left = self.source_frames
        try:
            with sf.SoundFile(str(self.path)) as f:
                while left > 0:
                    data = f.read(min(block, left), dtype="float32", always_2d=True)
                    if data.shape[0] == 0:
                        break
                    left -= data.shape[0]
                    if not np.all(np.isfinite(data)):
                        raise AudioError(f"{self.path} contains NaN or infinite samples")
                    yield np.ascontiguousarray(data.T)
        except AudioError:
            raise
        except Exception as e:
            raise AudioError(f"cannot decode {self.path}: {_first_line(e)}") from e
        if left > 0:  # the header promised more than the file holds: complete with silence
            yield np.zeros((self.channels, left), np.float32)

    def pieces(self, block: int | None = None):
        block = block or BLOCK
        blocks = self._read(block)
        if self.up == self.down:
            return blocks
        return resample_stream(blocks, self.source_frames, self.up, self.down, block)


def resample_stream(blocks, n: int, up: int, down: int, segment: int | None = None):
    """resample_poly(x, up, down) of a signal of n samples that arrives as (C, n_i) blocks, given
    as consecutive output blocks. Each segment is filtered with enough neighbouring input on both
    sides to cover the filter and starts at a multiple of `down` (where the output grid restarts),
    so the result equals one call on the whole signal (to float rounding; tests check it)."""
    from scipy.signal import resample_poly

    segment = segment or BLOCK
    half = 10 * max(up, down)  # resample_poly's filter half-length, in upsampled samples
    margin = down * -(-((half + down) // up + 2) // down)  # input samples each side, a multiple of down
    n_out = -(-n * up // down)
    buf, buf_start, pos = None, 0, 0  # buf: input from index buf_start; pos: next input to cover
    for blk in _and_end(blocks):
        if blk is not None:
            buf = blk if buf is None else np.concatenate([buf, blk], axis=1)
            stop = pos + down * ((buf_start + buf.shape[1] - margin - pos) // down)
            if stop - pos < segment:
                continue  # wait for more input
        else:
            stop = n
        if buf is None or stop <= pos:
            continue
        lo, hi = max(0, pos - margin), min(n, stop + margin)
        y = resample_poly(buf[:, lo - buf_start:hi - buf_start], up, down, axis=-1)
        a = (pos - lo) * up // down
        b = (n_out if stop == n else stop * up // down) - lo * up // down
        yield np.ascontiguousarray(y[:, a:b], dtype=np.float32)
        pos = stop
        keep = max(0, pos - margin)
        buf, buf_start = buf[:, keep - buf_start:], keep


def _and_end(blocks):
    yield from blocks
    yield None


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


def _spans(n: int, block: int = BLOCK):
    """Slices covering range(n) in blocks: the block-wise passes over long waveforms."""
    return [slice(a, min(a + block, n)) for a in range(0, n, block)] or [slice(0, 0)]


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 by rounding x*32768 and saturating (exact for k/32768 values)."""
    w = np.asarray(waveform)
    out = np.empty(w.shape, np.int16)
    for s in _spans(w.shape[-1]):
        out[..., s] = np.clip(np.rint(w[..., s].astype(np.float64) * 32768.0), -32768, 32767)
    return out


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
        with atomic.deferred_signals():  # an interrupt inside libsndfile's callbacks would truncate the file
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


def _abs_max(a: np.ndarray) -> float:
    wide = np.int32 if a.dtype == np.int16 else None  # |-32768| does not fit in int16
    return max(float(np.max(np.abs(a[..., s].astype(wide) if wide else a[..., s]), initial=0))
               for s in _spans(a.shape[-1]))


def _audioop_mul(samples: np.ndarray, factor: float) -> np.ndarray:
    """audioop.mul on int16: multiply in double, floor, saturate."""
    out = np.empty(samples.shape, np.int16)
    for s in _spans(samples.shape[-1]):
        out[..., s] = np.clip(np.floor(samples[..., s].astype(np.float64) * factor), -32768, 32767)
    return out


def _rms_int(samples: np.ndarray) -> int:
    """audioop.rms: sqrt(mean of squares) truncated to an integer (the sum is exact in int64)."""
    if not samples.size:
        return 0
    total = sum(int(np.sum(np.square(samples[..., s].astype(np.int64)))) for s in _spans(samples.shape[-1]))
    return int(math.sqrt(total / samples.size))


def _pydub_normalize(samples: np.ndarray, headroom: float = 0.1) -> np.ndarray:
    peak = int(_abs_max(samples)) if samples.size else 0
    if peak == 0:
        return samples
    target = 32768.0 * 10.0 ** (-headroom / 20.0)
    boost_db = 20.0 * math.log10(target / peak)
    return _audioop_mul(samples, 10.0 ** (boost_db / 20.0))


def riffusion_int16(waveform: np.ndarray) -> np.ndarray:
    """The original's stage on int16 samples (C, N): peak to 32767 (truncation), gain to -12 dBFS
    (saturating), then peak to -0.1 dBFS."""
    w = np.asarray(waveform, dtype=np.float32)
    peak = np.float32(_abs_max(w)) if w.size else np.float32(0)
    if not np.isfinite(peak):
        raise AudioError("waveform contains NaN or infinite samples")
    if peak == 0:
        return np.zeros(w.shape, np.int16)
    samples = np.empty(w.shape, np.int16)
    for s in _spans(w.shape[-1]):
        samples[..., s] = w[..., s] * (np.float32(32767.0) / peak)  # truncation toward zero
    rms = _rms_int(samples)
    if rms == 0:
        return samples
    gain_db = -12.0 - 20.0 * math.log10(rms / 32768.0)
    samples = _audioop_mul(samples, 10.0 ** (gain_db / 20.0))
    return _pydub_normalize(samples, 0.1)


def loudness_riffusion(waveform: np.ndarray) -> np.ndarray:
    """riffusion_int16 as float32 (C, N) = int16 / 32768 (written back to 16-bit files exactly)."""
    samples = riffusion_int16(waveform)
    out = np.empty(samples.shape, np.float32)
    for s in _spans(samples.shape[-1]):
        out[..., s] = samples[..., s].astype(np.float32) / np.float32(32768.0)
    return out


# --- part of a file (remix --start/--end, `minriff clips`) --------------------------------------

def audio_info(path, max_seconds: float = math.inf) -> tuple[int, int, int]:
    """(frames, sample_rate, channels) of an audio file, with read_audio's checks and errors (missing,
    unreadable, not audio, no samples, sample rate) and one more (an empty file), but by default no
    length limit: parts of it are read with read_frames."""
    path = Path(path)
    try:
        empty = path.is_file() and path.stat().st_size == 0
    except OSError as e:
        raise AudioError(f"cannot read {path}: {e.strerror}") from None
    if empty:
        raise AudioError(f"{path} is empty (0 bytes): not an audio file")
    info = _info(path, max_seconds)
    return int(info.frames), int(info.samplerate), int(info.channels)


def read_frames(path, start: int, stop: int) -> np.ndarray:
    """Sample frames [start, stop) of a file -> (C, stop - start) float32 in [-1, 1] (only those are
    decoded, so a part of a long file takes memory for the part only)."""
    sf = _soundfile()
    try:
        data, _ = sf.read(str(path), start=int(start), stop=int(stop), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"cannot decode {path}: {_first_line(e)}") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: no audio samples between frames {start} and {stop}")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path} contains NaN or infinite samples")
    return np.ascontiguousarray(data.T)
