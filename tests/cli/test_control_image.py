"""`minriff control-image PREP SOURCE -o OUT.png`: the file holds what `control_image` returns, the
options reach it, and mistakes are one-line errors (exit 2) that leave no file behind."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from minriff.audio.controlmaps import control_image
from minriff.cli import main

SR = 44100


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    """3 s: clicks every half second over a rising tone."""
    path = tmp_path_factory.mktemp("control") / "music.wav"
    t = np.arange(3 * SR) / SR
    wave = 0.3 * np.sin(2 * np.pi * (200 * t + 60 * t**2))
    rng = np.random.default_rng(0)
    for s in np.arange(0.25, 3.0, 0.5):
        a = int(s * SR)
        wave[a:a + 220] += 0.6 * np.hanning(220) * rng.standard_normal(220)
    sf.write(path, wave.astype(np.float32), SR)
    return path


@pytest.mark.parametrize("prep", ["canny", "rhythm", "melody"])
def test_writes_the_control_image(wav, tmp_path, capsys, prep):
    out = tmp_path / f"{prep}.png"
    assert main(["control-image", prep, str(wav), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out} (512x512, {prep})"
    image = Image.open(out)
    assert image.mode == "RGB" and image.size == (512, 512)
    np.testing.assert_array_equal(np.asarray(image), control_image(prep, wav))
    assert np.asarray(image).any()


def test_width_and_thresholds_reach_the_preprocessor(wav, tmp_path, capsys):
    out = tmp_path / "edges.png"
    assert main(["control-image", "canny", str(wav), "-o", str(out), "--width", "256", "--low", "40",
                 "--high", "90", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    got = np.asarray(Image.open(out))
    np.testing.assert_array_equal(got, control_image("canny", wav, 256, low=40, high=90))
    assert got.shape == (512, 256, 3)
    assert (got > 0).sum() > (control_image("canny", wav, 256) > 0).sum()  # lower thresholds: more edges


def test_a_spectrogram_png_is_a_source_too(wav, tmp_path):
    png, out = tmp_path / "spec.png", tmp_path / "melody.png"
    assert main(["audio2image", str(wav), "-o", str(png), "--quiet"]) == 0
    assert main(["control-image", "melody", str(png), "-o", str(out), "--quiet"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), control_image("melody", wav))


@pytest.mark.parametrize("argv, words", [
    (["control-image", "rhythm", "WAV", "-o", "OUT", "--low", "10"], "--low has no effect with rhythm"),
    (["control-image", "melody", "WAV", "-o", "OUT", "--high", "10"], "--high has no effect with melody"),
    (["control-image", "canny", "WAV", "-o", "OUT", "--width", "0"], "width must be"),
    (["control-image", "canny", "WAV", "-o", "OUT", "--width", "99999999"], "width must be"),
    (["control-image", "canny", "WAV", "-o", "OUT", "--low", "nan"], "low threshold"),
    (["control-image", "canny", "WAV", "-o", "OUT", "--high", "-3"], "high threshold"),
    (["control-image", "canny", "TEXT", "-o", "OUT"], "cannot read"),
    (["control-image", "canny", "MISSING", "-o", "OUT"], "cannot read control source"),
    (["control-image", "canny", "WAV", "-o", "OUT.jpg"], "output must be a .png"),
])
def test_mistakes_are_one_line_errors_and_leave_no_file(wav, tmp_path, capsys, argv, words):
    text = tmp_path / "notes.txt"
    text.write_text("not music\n")
    subst = {"WAV": str(wav), "TEXT": str(text), "MISSING": str(tmp_path / "nope.flac"),
             "OUT": str(tmp_path / "out.png"), "OUT.jpg": str(tmp_path / "out.jpg")}
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([subst.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.startswith("minriff control-image: error:") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unknown_preprocessor_is_an_argparse_error(wav, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["control-image", "sobel", str(wav), "-o", str(tmp_path / "x.png")])
    assert e.value.code == 2 and "invalid choice: 'sobel'" in capsys.readouterr().err
