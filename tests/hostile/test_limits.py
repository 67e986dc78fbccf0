"""No input that runs away (issue 13, cause 4): every image, audio file and parameter that arrives
is either refused before the work starts (sizes from the header, parameters against their ranges)
or processed in bounded memory (long images and long audio in pieces). The end-to-end runs feed
drawn PNG/WAV files to the commands in a child process under a 3 GB address-space limit and a
timeout; the memory claims for long inputs are measured in-process with tracemalloc (NumPy's
allocations), comparing a length with twice that length."""
from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, Phase, given, settings
from PIL import Image, ImageFile

from minriff import inputs
from minriff.audio import io as audio_io
from minriff.audio import join, spectrogram
from minriff.audio.spectrogram import SpectrogramParams
from minriff.audio.stft import STFT
from minriff.cli import main
from minriff.errors import AudioError, InputError, MinriffError
from support.hostile import (
    check_outcome,
    chunk,
    exif_bytes,
    exif_values,
    png_bytes,
    png_files,
    run_cli_batch,
    wav_bytes,
    wav_files,
)

pytestmark = pytest.mark.usefixtures("serial_numba")
SENTINEL = b"an existing file that a failed run must leave alone"
WIDEST = 360_001  # px: the widest spectrogram image (an hour at 10 ms per pixel), README "Limits"


@pytest.fixture
def decode_spy(monkeypatch):
    """Counts pixel decodes (ImageFile.load): a refused image must never be decoded."""
    calls = []
    real = ImageFile.ImageFile.load

    def load(self):
        calls.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


def _read_wav(path):
    info = sf.info(str(path))
    assert info.frames > 0 and info.samplerate == 44100
    assert np.isfinite(sf.read(str(path))[0]).all()


def _read_png(path):
    with Image.open(path) as im:
        im.load()
        assert im.height in (512, 1024) or im.height >= 1


# ---- drawn files, end to end, in a child under RLIMIT_AS --------------------------------------------
def drawn(strategy, n: int) -> list:
    """n examples of a strategy (hypothesis's generation phase; derandomized under the ci profile),
    to be run together in one child process: one interpreter start instead of n."""
    found = []

    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x):
        found.append(x)

    collect()
    return found


def test_drawn_files_through_the_commands_only_succeed_or_fail_cleanly(tmp_path, tiny):
    cases, checks = [], []
    for i, data in enumerate(drawn(png_files(), 14)):
        src = tmp_path / f"in{i}.png"
        src.write_bytes(data)
        for argv, out, reader in (
                (["image2audio", str(src), "--iters", "1", "--quiet", "-o"], tmp_path / f"out{i}.wav", _read_wav),
                (["generate", "x", "--init-image", str(src), "--steps", "2", "--strength", "1", "--weights", tiny,
                  "--quiet", "--image"], tmp_path / f"gen{i}.png", _read_png)):
            out.write_bytes(SENTINEL)
            cases.append([*argv, str(out)])
            checks.append((out, reader))
    for i, data in enumerate(drawn(wav_files(), 14)):
        src, out = tmp_path / f"in{i}.wav", tmp_path / f"spec{i}.png"
        src.write_bytes(data)
        out.write_bytes(SENTINEL)
        cases.append(["audio2image", str(src), "-o", str(out), "--quiet"])
        checks.append((out, _read_png))
    before = sorted(p.name for p in tmp_path.iterdir())
    results = run_cli_batch(cases, timeout=150)
    for result, (out, reader) in zip(results, checks):
        check_outcome(result, out, SENTINEL, reader)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary or partial files left
    codes = [r["code"] for r in results]
    assert codes.count(0) >= 3 and codes.count(2) >= 3  # both paths were exercised


# ---- images: sizes from the header, before any decoding ----------------------------------------------
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(png_files(max_width=96))
def test_drawn_pngs_open_or_are_refused_without_decoding(decode_spy, data):
    for opener, limits in ((spectrogram.open_spectrogram, (WIDEST, 1024)), (inputs.open_model_image, (3008, 512))):
        decode_spy.clear()
        try:
            image = opener(io.BytesIO(data))
        except MinriffError:
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            if data[:8] == b"\x89PNG\r\n\x1a\n" and (width > limits[0] or height > limits[1]):
                assert decode_spy == [], "an image over the limits was decoded"
            continue
        if opener is spectrogram.open_spectrogram:
            try:
                spectrogram.params_from_image(image)
                spectrogram.image_to_mel(image, SpectrogramParams())
            except MinriffError:
                pass
        else:
            assert image.shape[0] == inputs.HEIGHT and image.dtype == np.uint8


@pytest.mark.parametrize("declared", [(100_000, 512), (3009, 512), (512, 100_000), (2**31 - 1, 2**31 - 1)])
def test_seed_and_init_images_over_the_limit_are_refused_before_decoding(tmp_path, tiny, decode_spy, capsys,
                                                                          declared):
    png = tmp_path / "wide.png"
    png.write_bytes(png_bytes(np.zeros((4, 4), np.uint8), 8, 0, declared=declared))
    out = tmp_path / "out.png"
    assert main(["generate", "x", "--init-image", str(png), "--image", str(out), "--weights", tiny]) == 2
    assert "px" in capsys.readouterr().err and decode_spy == [] and not out.exists()
    from minriff import Riffusion
    from minriff.models import random_models

    if declared[0] * declared[1] > Image.MAX_IMAGE_PIXELS:
        return  # Pillow's own Image.open refuses it: no lazy image to hand to the API
    riff = Riffusion(random_models("tiny"), quiet=True)
    lazy = Image.open(png)  # the API takes PIL images too: refused from .size, never decoded
    with pytest.raises(InputError, match="px"):
        riff.generate_spectrogram("x", init_image=lazy, steps=1)
    assert decode_spy == []


def test_wide_arrays_are_refused_before_the_model_runs():
    from minriff import Riffusion
    from minriff.models import random_models

    riff = Riffusion(random_models("tiny"), quiet=True)
    wide = np.zeros((512, 3009, 3), np.uint8)
    for call in (lambda: riff.generate_spectrogram("x", init_image=wide, steps=1),
                 lambda: riff.riffuse({"prompt": "a", "seed": 1}, {"prompt": "b", "seed": 2}, 0.5, wide, steps=1)):
        with pytest.raises(InputError, match="3008"):
            call()


def test_an_hour_long_spectrogram_png_opens_past_pillows_global_cap():
    """audio2image of an hour writes 360,001 x 512 px = 184 Mpixels, over Pillow's 179-Mpixel bomb
    error: it must read back (and a larger one is refused by minriff's own limit, clearly)."""
    z = zlib.compressobj(1)
    row = b"\x00" + bytes(WIDEST)
    idat = b"".join(z.compress(row) for _ in range(512)) + z.flush()
    data = png_bytes(np.zeros((1, 1), np.uint8), 8, 0, declared=(WIDEST, 512))
    data = data[:33] + chunk(b"IDAT", idat) + chunk(b"IEND", b"")  # signature + IHDR, then the real pixels
    image = spectrogram.open_spectrogram(io.BytesIO(data))
    assert image.size == (WIDEST, 512)
    del image
    over = png_bytes(np.zeros((1, 1), np.uint8), 8, 0, declared=(WIDEST + 1, 512))
    with pytest.raises(AudioError, match="360,001"):
        spectrogram.open_spectrogram(io.BytesIO(over))


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TIFF"])
def test_pillows_bomb_error_becomes_a_clear_error_in_every_format(tmp_path, capsys, fmt):
    small = io.BytesIO()
    Image.new("L", (8, 8)).save(small, fmt)
    data = bytearray(small.getvalue())
    if fmt == "BMP":  # BITMAPINFOHEADER width/height at 18/22
        data[18:26] = struct.pack("<ii", 30000, 30000)
    elif fmt == "GIF":  # logical screen and image descriptor sizes
        data[6:10] = struct.pack("<HH", 65535, 65535)
        i = data.index(b",")
        data[i + 5:i + 9] = struct.pack("<HH", 65535, 65535)
    else:
        im = Image.new("L", (8, 8))
        out = io.BytesIO()
        im.save(out, "TIFF", tiffinfo={256: 40000, 257: 40000})
        data = bytearray(out.getvalue())
    path = tmp_path / f"bomb.{fmt.lower()}"
    path.write_bytes(bytes(data))
    for opener in (spectrogram.open_spectrogram, inputs.open_model_image):
        with pytest.raises(MinriffError) as e:
            opener(path)
        assert "Traceback" not in str(e.value) and str(path) in str(e.value)
    assert main(["image2audio", str(path), "-o", str(tmp_path / "x.wav")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# ---- spectrogram parameters (EXIF) ----------------------------------------------------------------
@settings(max_examples=300)
@given(exif_values())
def test_exif_parameters_are_in_range_or_refused(tags):
    try:
        p = SpectrogramParams.from_exif(tags)
    except InputError as e:
        assert "\n" not in str(e)
        return
    # what the accepted parameters can cost: bounded before any allocation
    assert p.n_fft <= 65536 and p.num_frequencies <= 1024  # README "Limits"
    assert 1 <= p.hop_length <= p.win_length <= 64 * p.hop_length
    bins = p.n_fft // 2 + 1
    piece = join.chunk_width(bins, p.n_channels)
    assert piece * bins * p.n_channels <= max(join.CHUNK_PX * join.REFERENCE_BINS, 4 * join.OVERLAP_PX * bins * 2)
    stft = STFT(p.n_fft, p.hop_length, p.win_length)
    min_width = 2 + max(-stft.offset, stft.win + stft.offset) // p.hop_length
    assert min_width <= join.OVERLAP_PX  # so the last piece (> OVERLAP_PX wide) can always be converted


@pytest.mark.parametrize("tags,match", [
    ({11030: 10**9}, "padded_duration_ms"), ({11000: 2**32 - 1}, "sample_rate"), ({11040: 65535}, "num_frequencies"),
    ({11070: float("nan")}, "11070"), ({11010: "abc"}, "11010"), ({11010: 0}, "step_size_ms"),
    ({11005: 7}, "stereo"), ({11020: 10000, 11030: 10000}, "window"),
])
def test_hostile_exif_values_name_the_tag(tags, match):
    with pytest.raises(InputError, match=match):
        SpectrogramParams.from_exif(tags)


def test_a_png_with_a_huge_fft_in_its_exif_is_refused_before_any_work(tmp_path, capsys):
    png = tmp_path / "exif.png"
    png.write_bytes(png_bytes(np.full((512, 64), 200, np.uint8), 8, 0, exif=exif_bytes({11030: 10**9, 11000: 44100})))
    out = tmp_path / "x.wav"
    assert main(["image2audio", str(png), "-o", str(out)]) == 2
    assert "padded_duration_ms" in capsys.readouterr().err and not out.exists()


# ---- long inputs: bounded memory ----------------------------------------------------------------------
def _traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _spectrogram_png(path, width):
    y, x = np.mgrid[0:512, 0:width]
    grey = (150 + 90 * np.sin(x / 3.0) * np.cos(y / 23.0)).astype(np.uint8)
    Image.fromarray(grey).save(path)


def test_image2audio_memory_does_not_grow_with_the_width(tmp_path, monkeypatch):
    """image2audio converts in pieces (the pipeline's join): a twice wider image needs the same
    working memory; only the output waveform grows (width x 441 samples, a few copies of it)."""
    monkeypatch.setattr(join, "CHUNK_PX", 256)
    peaks = {}
    for width in (64, 600, 1200):  # 64: warm-up (caches of the parameters' filterbank and window)
        png = tmp_path / f"w{width}.png"
        _spectrogram_png(png, width)
        peaks[width] = _traced_peak(lambda png=png: main(["image2audio", str(png), "-o", str(tmp_path / "o.wav"),
                                                          "--iters", "1", "--quiet"]))
    assert peaks[1200] < peaks[600] + 20e6, peaks  # converting the whole width grew by 156 MB


def test_audio2image_streams_long_files(tmp_path, monkeypatch):
    """audio2image reads, resamples and analyses block by block: twice the audio adds only the
    image (100 px x 512 x 1 byte per second), not the waveform or its float64 mel."""
    monkeypatch.setattr(spectrogram, "KEEP_MEL_BYTES", 1 << 20, raising=False)
    monkeypatch.setattr(spectrogram, "FRAME_BLOCK", 128, raising=False)
    monkeypatch.setattr(audio_io, "BLOCK", 1 << 14, raising=False)  # file blocks: 16,384 samples
    peaks = {}
    for seconds in (1, 6, 12):  # 1: warm-up
        wav = tmp_path / f"a{seconds}.wav"
        t = np.arange(seconds * 48000) / 48000.0  # 48 kHz: resampled on the way, block by block too
        sf.write(str(wav), (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(t)).astype(np.float32), 48000)
        peaks[seconds] = _traced_peak(lambda wav=wav: main(["audio2image", str(wav), "-o", str(tmp_path / "o.png"),
                                                            "--quiet"]))
    assert peaks[12] < peaks[6] + 2e6, peaks  # whole-file analysis grew by 86 MB here


def test_streamed_audio_gives_the_same_image_as_the_waveform(tmp_path):
    t = np.arange(7 * 48000 + 17) / 48000.0
    wave = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    wav = tmp_path / "a.wav"
    sf.write(str(wav), wave, 48000, subtype="FLOAT")
    from minriff.audio.io import BLOCK, load_audio

    whole = np.asarray(spectrogram.audio_to_image(load_audio(wav)))
    stream = audio_io.AudioFile(wav)
    assert stream.frames == load_audio(wav).shape[1] and BLOCK < stream.source_frames
    assert np.array_equal(np.asarray(spectrogram.audio_to_image(stream)), whole)


class _Endless:
    """A source announcing more audio than an image may hold; reading it is a failure."""

    channels = 1

    def __init__(self, frames):
        self.frames = frames

    def pieces(self):
        raise AssertionError("read although the result is over the limits")


@pytest.mark.parametrize("seconds,step_ms", [(3601, 10), (700, 1), (2000, 5)])
def test_audio_whose_image_could_not_be_read_back_is_refused_before_reading(seconds, step_ms):
    p = SpectrogramParams(step_size_ms=step_ms, window_duration_ms=50)
    with pytest.raises(AudioError, match="360,001"):
        spectrogram.audio_to_image(_Endless(int(seconds * p.sample_rate)), p)


def test_an_hour_of_audio_is_accepted_and_more_is_refused_from_the_header(tmp_path, monkeypatch):
    read = []
    monkeypatch.setattr(audio_io.AudioFile, "_read", lambda self, block: read.append(1) or iter(()))
    for seconds in (3600, 3601):  # 4 kHz, 8-bit: 14 MB files; only their headers are read
        wav = tmp_path / f"{seconds}.wav"
        wav.write_bytes(wav_bytes(np.zeros((seconds * 4000, 1)), 4000, "u8"))
        if seconds == 3600:
            assert audio_io.AudioFile(wav).seconds == 3600
        else:
            with pytest.raises(AudioError, match="the limit is 3600 s"):
                spectrogram.audio_to_image(audio_io.AudioFile(wav))
    assert read == []


# ---- runaway counts --------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,match", [
    (["interpolate", "a", "b", "--frames", "1000000", "-o", "o.wav"], "--frames must be an integer from 2 to 100"),
    (["interpolate", "a", "b", "--frames", "9" * 5000, "-o", "o.wav"], "at most 40 digits"),
    (["generate", "x", "--steps", "100000000", "-o", "o.wav"], "steps must be an integer from 1 to 1,000"),
    (["generate", "x", "--seconds", "1e9", "-o", "o.wav"], "above the limit of 600 s"),
    (["image2audio", "x.png", "--iters", "1000000000", "-o", "o.wav"], "--iters must be an integer from 0 to 10,000"),
    (["bench", "ops", "--repeat", "0"], "--repeat must be an integer from 1 to 1,000"),
])
def test_runaway_counts_are_refused_before_any_work(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)  # no weights here: loading them would be a different error
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own one-line message for a type error
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and match in err, err
    assert not (tmp_path / "o.wav").exists()
