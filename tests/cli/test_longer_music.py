"""`minriff generate` for long pieces, `minriff remix`, and the original's audio tools `minriff exif`
(print-exif) and `minriff clips` (sample-clips), end to end with a tiny random model."""
from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from minriff.audio import io as audio_io
from minriff.cli import main
from support import shared_file

HOP, SR = 441, 44100

pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    """2.5 s of stereo music at 48 kHz (left and right differ)."""
    path = tmp_path_factory.mktemp("audio") / "song.flac"
    t = np.arange(int(2.5 * 48000)) / 48000
    beat = np.exp(-((t * 2) % 1.0) * 10)
    rng = np.random.default_rng(1)
    wave = np.stack([0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * beat * rng.standard_normal(t.size),
                     0.2 * np.sin(2 * np.pi * 330 * t) + 0.3 * beat * rng.standard_normal(t.size)])
    audio_io.write_audio(path, wave, 48000)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, message):
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


# ---- generate: long pieces ------------------------------------------------------------------------
def test_generate_long_piece_with_a_prompt_schedule_and_a_seed_image(tiny, tmp_path, capsys):
    seed_png = tmp_path / "beat.png"
    y, x = np.mgrid[0:512, 0:256]
    Image.fromarray((200 - 100 * np.exp(-((x % 64) / 6.0) ** 2) - 0 * y).astype(np.uint8)).save(seed_png)
    wav, png = tmp_path / "long.wav", tmp_path / "long.png"
    argv = ["generate", "lofi", "--seconds", 2.5, "--clip-px", 128, "--overlap-px", 64, "--prompt-at", "1.5s", "rock",
            "--seed-image", seed_png, "--strength", 0.6, "--steps", 2, "--seed", 4, "--weights", tiny, "-o", wav,
            "--image", png]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert re.search(r"clip 3/3 \[#+\] \d+/\d+", err)  # one bar over all clips and steps
    assert "seed 4" in err and "wrote" in err
    assert sf.info(str(wav)).frames == (256 - 1) * HOP  # 2.5 s -> 250 px -> 256 px
    assert Image.open(png).size == (256, 512)
    first = wav.read_bytes()
    assert run(capsys, *argv, "--quiet")[0] == 0
    assert wav.read_bytes() == first  # same seed, same bytes


def test_generate_above_30_s_is_a_long_piece(monkeypatch, tiny, tmp_path, capsys):
    """--seconds 45 is no longer refused; it goes clip by clip (the run itself is stubbed here:
    a full 45 s piece on the tiny model takes minutes on a shared machine)."""
    from minriff.pipeline import Riffusion

    seen = {}

    def fake_long(self, prompt, duration_s, **kw):
        seen.update(kw, duration_s=duration_s)
        return np.full((512, 128, 3), 200, np.uint8)

    monkeypatch.setattr(Riffusion, "generate_long", fake_long)
    code, _, err = run(capsys, "generate", "jazz", "--seconds", 45, "--steps", 1, "--weights", tiny,
                       "--image", tmp_path / "x.png", "--quiet")
    assert code == 0, err
    assert seen["duration_s"] == 45 and seen["clip_px"] == 512 and seen["overlap_px"] == 128


@pytest.mark.parametrize("args,message", [
    (["--seconds", 601], "above the limit of 600 s"),
    (["--seconds", "nan"], "duration must be a positive number"),
    (["--seconds", 40, "--prompt-at", "50s", "rock"], "must lie inside the piece"),
    (["--seconds", 40, "--prompt-at", "soon", "rock"], "cannot read 'soon' as a time"),
    (["--seconds", 40, "--clip-px", 500], "clip width must be a positive multiple of 64"),
    (["--seconds", 40, "--overlap-px", 512], "leaves nothing new"),
    (["--seconds", 40, "--seed-image", "no_such_id"], "invalid seed image"),
    (["--seconds", 40, "--init-image", "x.png"], "--seconds has no effect with --init-image"),
    (["--seconds", 40, "--seed-images", "."], "--seed-images has no effect without --seed-image"),
    (["--seconds", 40, "--strength", 0.5], "--strength has no effect without --init-image or --seed-image"),
])
def test_long_piece_errors_before_any_weights(tmp_path, capsys, args, message):
    code, _, err = run(capsys, "generate", "jazz", *args, "-o", tmp_path / "a.wav", "--weights",
                       tmp_path / "missing.safetensors", "--quiet")
    one_line_error(code, err, message)


# ---- remix ----------------------------------------------------------------------------------------
def test_remix_stereo_song_to_stereo_file_of_the_exact_length(tiny, song, tmp_path, capsys):
    out = tmp_path / "remix.wav"
    code, _, err = run(capsys, "remix", song, "jazz piano", "--strength", 0.55, "--start", 0.5, "--end", "2",
                       "--steps", 2, "--seed", 3, "--window-px", 128, "--overlap-px", 64, "--weights", tiny, "-o", out)
    assert code == 0, err
    assert re.search(r"remix window 2/2 \[#+\]", err) and "seed 3" in err
    info = sf.info(str(out))
    assert info.channels == 2 and info.samplerate == SR
    assert info.frames == round(1.5 * 48000) * SR // 48000  # the range, resampled: exactly 1.5 s


def test_remix_strength_zero_needs_no_weights(song, tmp_path, capsys):
    out = tmp_path / "round_trip.flac"
    code, _, err = run(capsys, "remix", song, "anything", "--strength", 0, "--weights", tmp_path / "none.safetensors",
                       "-o", out, "--quiet")
    assert code == 0, err
    info = sf.info(str(out))
    assert info.channels == 2 and info.frames == round(2.5 * SR) and info.format == "FLAC"


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.mp3").write_text("not audio at all\n" * 20)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\xff" * 40)
    (tmp_path / "folder.wav").mkdir()
    return tmp_path


@pytest.mark.parametrize("name,args,message", [
    ("empty.wav", [], "is empty"),
    ("text.mp3", [], "not a readable WAV/FLAC/OGG/MP3 file"),
    ("broken.wav", [], "cannot read"),
    ("folder.wav", [], "no such audio file"),
    ("missing.wav", [], "no such audio file"),
    (None, ["--start", 2, "--end", 1], "must come after start"),
    (None, ["--start", "1e9"], "at or after the end of the audio"),
    (None, ["--end", "inf"], "finite number of seconds"),
    (None, ["--start", "-5"], "finite number of seconds >= 0"),
    (None, ["--start", 1, "--end", 1.05], "at least 0.1 s"),
    (None, ["--strength", 2], "strength must be a number in [0, 1]"),
    (None, ["--window-px", 100], "multiple of 64"),
    (None, ["--steps", 0], "steps must be an integer from 1"),
])
def test_remix_bad_input_is_one_clear_line(bad_files, song, capsys, name, args, message):
    src = bad_files / name if name else song
    code, _, err = run(capsys, "remix", src, "jazz", *args, "-o", bad_files / "out.wav", "--weights",
                       bad_files / "none.safetensors", "--quiet")
    one_line_error(code, err, message)
    assert not (bad_files / "out.wav").exists()


# ---- exif (print-exif) ---------------------------------------------------------------------------
def test_exif_prints_the_originals_lines_for_the_golden_image(capsys):
    png = shared_file("golden", "clip_mono.png")
    code, out, _ = run(capsys, "exif", png)
    assert code == 0
    # the lines the original's print_exif_test looks for, character for character
    assert "NUM_FREQUENCIES      =             512" in out
    assert "SAMPLE_RATE          =           44100" in out
    assert "MAX_VALUE            =      46801012.0" in out
    assert len(out.splitlines()) == 10


def test_exif_of_an_image_minriff_wrote(song, tmp_path, capsys):
    png = tmp_path / "song.png"
    assert main(["audio2image", str(song), "-o", str(png), "--stereo", "--quiet"]) == 0
    code, out, _ = run(capsys, "exif", png)
    assert code == 0
    lines = dict(re.fullmatch(r"(\w+)\s+=\s+(\S+)", line).groups() for line in out.splitlines())
    assert lines["STEREO"] == "1" and lines["POWER_FOR_IMAGE"] == "0.25" and lines["MAX_FREQUENCY"] == "10000"
    assert all(re.fullmatch(r"\w{1,20} {0,19} = .{15,}", line) for line in out.splitlines())  # the original's widths
    assert float(lines["MAX_VALUE"]) > 0


def test_exif_without_parameters_and_of_a_non_image(tmp_path, capsys):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    code, out, err = run(capsys, "exif", plain)
    assert code == 1 and out == "" and "no EXIF" in err
    (tmp_path / "x.png").write_text("hello")
    code, _, err = run(capsys, "exif", tmp_path / "x.png")
    one_line_error(code, err, "not a readable")


# ---- clips (sample-clips) ------------------------------------------------------------------------
def test_clips_like_the_original_sample_clips(song, tmp_path, capsys):
    out = tmp_path / "clips"
    code, stdout, err = run(capsys, "clips", song, "-n", 3, "--seconds", 0.8, "-o", out, "--seed", 42)
    assert code == 0, err
    # the original: np.random.seed(42); np.random.randint(0, 2500 - 800) per clip, in milliseconds
    rs = np.random.RandomState(42)
    starts = [rs.randint(0, 2500 - 800) for _ in range(3)]
    names = [f"clip_{i}_start_{s}_ms_duration_800_ms.wav" for i, s in enumerate(starts)]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert stdout.splitlines() == [f"wrote {out / n}" for n in names]
    whole, sr = audio_io.read_audio(song)
    for name, start in zip(names, starts):
        clip, clip_sr = audio_io.read_audio(out / name)
        assert clip_sr == 48000 and clip.shape == (2, 800 * 48)  # the file's own rate and channels
        a = start * 48
        assert np.max(np.abs(clip - whole[:, a:a + 800 * 48])) <= 1 / 32768  # 16-bit both ways
    again = tmp_path / "again"
    assert run(capsys, "clips", song, "-n", 3, "--seconds", 0.8, "-o", again, "--seed", 42)[0] == 0
    assert sorted(p.name for p in again.iterdir()) == sorted(names)


def test_clips_defaults_mono_and_format(song, tmp_path, capsys):
    long_song = tmp_path / "long.wav"
    wave, sr = audio_io.read_audio(song)
    audio_io.write_audio(long_song, np.tile(wave, (1, 3)), sr)  # 7.5 s: room for the default 5.12 s
    code, stdout, _ = run(capsys, "clips", long_song, "-o", tmp_path / "d", "--mono", "--format", "flac")
    assert code == 0
    (clip,) = (tmp_path / "d").iterdir()
    assert re.fullmatch(r"clip_0_start_\d+_ms_duration_5120_ms\.flac", clip.name)
    info = sf.info(str(clip))
    assert info.channels == 1 and info.frames == 5120 * 48


@pytest.mark.parametrize("args,message", [
    (["-n", 0], "number of clips must be an integer from 1"),
    (["--seconds", 0], "clip length must be between"),
    (["--seconds", 2.5], "need a longer file"),
    (["--seconds", 30], "need a longer file"),
    (["--seed", -1], "--seed must be between 0 and 2^32 - 1"),
])
def test_clips_errors(song, tmp_path, capsys, args, message):
    code, _, err = run(capsys, "clips", song, "-o", tmp_path / "c", *args)
    one_line_error(code, err, message)
    assert not (tmp_path / "c").exists()


def test_clips_of_a_non_audio_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run(capsys, "clips", tmp_path / "notes.txt", "-o", tmp_path / "c")
    one_line_error(code, err, "not a readable WAV/FLAC/OGG/MP3 file")


def test_preset_fast_and_deepcache_flags_reach_long_pieces_and_remix(monkeypatch, tiny, song, tmp_path, capsys):
    """--preset fast / --cache-interval on `generate` (long) and `remix` end in the pipeline's keyword
    arguments (not silently dropped); --cache-branch alone is refused on remix as on generate."""
    from minriff import longform, remix

    seen = {}
    real_long, real_remix = longform.generate_long, remix.remix

    def spy_long(*a, **k):
        seen["long"] = k.get("cache")
        return real_long(*a, **k)

    def spy_remix(*a, **k):
        seen["remix"] = k.get("cache")
        return real_remix(*a, **k)

    monkeypatch.setattr(longform, "generate_long", spy_long)
    monkeypatch.setattr(remix, "remix", spy_remix)
    code, _, err = run(capsys, "generate", "lofi", "--seconds", 2.5, "--clip-px", 128, "--overlap-px", 64,
                       "--preset", "fast", "--seed", 1, "--weights", tiny, "-o", tmp_path / "long.wav")
    assert code == 0, err
    assert seen["long"] is not None and seen["long"].interval == 2
    code, _, err = run(capsys, "remix", song, "jazz", "--cache-interval", 3, "--cache-branch", 1, "--steps", 3,
                       "--window-px", 128, "--overlap-px", 64, "--seed", 1, "--weights", tiny,
                       "-o", tmp_path / "remix.wav")
    assert code == 0, err
    assert (seen["remix"].interval, seen["remix"].branch) == (3, 1)
    code, _, err = run(capsys, "remix", song, "jazz", "--cache-branch", 1, "--weights", tiny, "-o", tmp_path / "x.wav")
    one_line_error(code, err, "--cache-branch has no effect without --cache-interval")
