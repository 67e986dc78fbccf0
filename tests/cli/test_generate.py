"""`minriff generate`, `interpolate` and `riffuse` end to end with a tiny random model.

The model is made by `minriff init-random --config tiny` (random weights: the music is noise, but
every stage runs at the real image size, 512 px high)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from minriff.cli import main
from support import shared_file

HOP, SR = 441, 44100


pytestmark = pytest.mark.usefixtures("serial_numba")


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def seed_png(path, width=128, level=170):
    y, x = np.mgrid[0:512, 0:width]
    g = (level + 50 * np.sin(x / 4.0) * np.cos(y / 19.0)).astype(np.uint8)
    Image.fromarray(g, mode="L").save(path)
    return path


# ---- generate ------------------------------------------------------------------------------------
def test_generate_writes_a_5_11_s_wav_and_png(tiny, tmp_path, capsys):
    wav, png = tmp_path / "jazz.wav", tmp_path / "jazz.png"
    code, err = run(capsys, "generate", "jazz piano solo", "-o", wav, "--seconds", 5, "--steps", 1,
                    "--seed", 42, "--image", png, "--weights", tiny, "--quiet")
    assert code == 0, err
    assert err == ""  # --quiet
    info = sf.info(str(wav))
    assert info.samplerate == SR and info.format == "WAV"
    assert info.frames == 511 * HOP  # 512 px -> 5.11 s
    assert round(info.frames / SR, 2) == 5.11
    data, _ = sf.read(str(wav))
    assert np.isfinite(data).all() and np.abs(data).max() > 0.01
    assert Image.open(png).size == (512, 512)


def test_generate_same_seed_same_bytes(tiny, tmp_path, capsys):
    outs = []
    for k in range(2):
        wav, png = tmp_path / f"a{k}.wav", tmp_path / f"a{k}.png"
        code, err = run(capsys, "generate", "jazz piano solo", "-o", wav, "--seconds", 0.64, "--steps", 2,
                        "--seed", 42, "--image", png, "--weights", tiny, "--quiet")
        assert code == 0, err
        outs.append((wav.read_bytes(), png.read_bytes()))
    assert outs[0] == outs[1]


def test_seed_and_negative_prompt_change_the_result(tiny):
    from minriff import Riffusion

    riff = Riffusion.load(tiny, quiet=True)

    def image(**kw):
        return riff.generate_spectrogram("jazz piano solo", duration_s=0.64, steps=2, **kw)

    base = image(seed=1)
    assert base.shape == (512, 64, 3) and base.dtype == np.uint8
    assert not np.array_equal(base, image(seed=2))
    assert not np.array_equal(base, image(seed=1, negative_prompt="drums"))
    assert np.array_equal(base, image(seed=1))
    assert riff.last_seed == 1


def test_generate_only_the_image(tiny, tmp_path, capsys):
    code, err = run(capsys, "generate", "lofi", "--image", tmp_path / "x.png", "--seconds", 0.64, "--steps", 1,
                    "--weights", tiny, "--quiet")
    assert code == 0, err
    assert Image.open(tmp_path / "x.png").size == (64, 512)
    code, err = run(capsys, "generate", "lofi", "--weights", tiny, "--quiet")
    assert code == 2 and "nothing to write" in err


@pytest.mark.parametrize("fmt", ["flac", "mp3"])
def test_generate_other_formats(tiny, tmp_path, capsys, fmt):
    out = tmp_path / f"clip.{fmt}"
    code, err = run(capsys, "generate", "lofi beat", "-o", out, "--seconds", 0.64, "--steps", 1, "--seed", 3,
                    "--weights", tiny, "--quiet")
    assert code == 0, err
    info = sf.info(str(out))
    assert info.samplerate == SR and info.format == fmt.upper()
    assert abs(info.frames - 63 * HOP) <= (1152 * 2 if fmt == "mp3" else 0)  # mp3 frames pad the end


def test_generate_progress_bar_and_seed_report(tiny, tmp_path, capsys):
    code, err = run(capsys, "generate", "lofi beat", "-o", tmp_path / "a.wav", "--seconds", 0.64, "--steps", 3,
                    "--weights", tiny)
    assert code == 0, err
    assert "seed " in err and "denoising [" in err and "3/3" in err
    assert "wrote" in err and "0.63 s" in err


def test_generate_img2img_keeps_the_width(tiny, tmp_path, capsys):
    init = seed_png(tmp_path / "init.png", width=192)
    code, err = run(capsys, "generate", "lofi beat", "--init-image", init, "--strength", 0.5,
                    "--steps", 4, "--seed", 1, "--image", tmp_path / "out.png", "--weights", tiny, "--quiet")
    assert code == 0, err
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (512, 192, 3)
    assert not np.array_equal(out, np.asarray(Image.open(init).convert("RGB")))


@pytest.mark.parametrize("args,message", [
    (["", "--steps", 2], "prompt is empty"),
    (["x", "--steps", 0], "steps must be an integer from 1 to 1,000"),
    (["x", "--guidance", -1], "guidance must be a number in [0, 100]"),
    (["x", "--seconds", 0], "duration must be a positive number"),
    (["x", "--seconds", 601], "above the limit of 600 s"),
    (["x", "--scheduler", "heun"], "unknown scheduler 'heun'"),
])
def test_generate_errors_are_one_line(tiny, tmp_path, capsys, args, message):
    code, err = run(capsys, "generate", *args, "-o", tmp_path / "a.wav", "--weights", tiny, "--quiet")
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_generate_without_weights_says_how_to_get_them(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    code, err = run(capsys, "generate", "jazz", "-o", "a.wav")
    assert code == 2 and "minriff download" in err and "init-random --config tiny" in err


def test_generate_rejects_a_wrong_size_init_image(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    Image.new("RGB", (100, 256)).save(bad)
    code, err = run(capsys, "generate", "x", "-o", tmp_path / "a.wav", "--init-image", bad, "--weights", tiny,
                    "--quiet")
    assert code == 2 and "100x256 px" in err and "512 px high" in err


# ---- interpolate ---------------------------------------------------------------------------------
def test_interpolate_joins_clips_into_one_continuous_file(tiny, tmp_path, capsys):
    out, png = tmp_path / "morph.wav", tmp_path / "morph.png"
    code, err = run(capsys, "interpolate", "church bells", "jazz with piano", "--frames", 3, "--seconds", 0.64,
                    "--steps", 2, "-o", out, "--image", png, "--weights", tiny, "--quiet")
    assert code == 0, err
    assert Image.open(png).size == (3 * 64, 512)
    assert sf.info(str(out)).frames == (3 * 64 - 1) * HOP  # one continuous conversion, no gaps or overlaps
    joined = np.asarray(Image.open(png))
    first = joined[:, :64]
    # alpha = 0 is prompt A with seed 42 alone: the same as generating it directly
    code, _ = run(capsys, "generate", "church bells", "--seconds", 0.64, "--steps", 2,
                  "--seed", 42, "--image", tmp_path / "a.png", "--weights", tiny, "--quiet")
    assert code == 0 and np.array_equal(first, np.asarray(Image.open(tmp_path / "a.png")))
    assert not np.array_equal(joined[:, :64], joined[:, 128:])


def test_interpolate_needs_two_frames(tiny, tmp_path, capsys):
    code, err = run(capsys, "interpolate", "a", "b", "--frames", 1, "-o", tmp_path / "x.wav", "--weights", tiny)
    assert code == 2 and "--frames must be an integer from 2 to 100" in err


# ---- riffuse -------------------------------------------------------------------------------------
def test_riffuse_json_request_like_the_server(tiny, tmp_path, capsys):
    seed_png(tmp_path / "og_beat.png", width=64)
    req = {"alpha": 0.75, "num_inference_steps": 4, "seed_image_id": "og_beat",
           "start": {"prompt": "church bells on sunday", "seed": 42, "denoising": 0.75, "guidance": 7},
           "end": {"prompt": "jazz with piano", "seed": 123, "denoising": 0.75, "guidance": 7.0}}
    (tmp_path / "req.json").write_text(json.dumps(req))
    code, err = run(capsys, "riffuse", "--json", tmp_path / "req.json", "--seed-images", tmp_path,
                    "-o", tmp_path / "out.wav", "--output-json", tmp_path / "out.json", "--weights", tiny, "--quiet")
    assert code == 0, err
    resp = json.loads((tmp_path / "out.json").read_text())
    assert resp["image"].startswith("data:image/jpeg;base64,") and resp["audio"].startswith("data:audio/mpeg;base64,")
    assert resp["duration_s"] == pytest.approx(63 * HOP / SR)
    import base64
    import io
    jpeg = Image.open(io.BytesIO(base64.b64decode(resp["image"].split(",", 1)[1])))
    assert jpeg.format == "JPEG" and jpeg.size == (64, 512)
    assert sf.info(str(tmp_path / "out.wav")).frames == 63 * HOP


def test_riffuse_flags_with_mask_and_alpha_endpoints(tiny, tmp_path, capsys):
    seed = seed_png(tmp_path / "seed.png", width=64)
    mask = np.full((512, 64), 255, np.uint8)
    mask[256:] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    imgs = {}
    for alpha in (0.0, 1.0):
        out = tmp_path / f"r{alpha}.png"
        code, err = run(capsys, "riffuse", "--start", "rock", "--end", "violin", "--alpha", alpha, "--steps", 4,
                        "--seed-image", seed, "--mask", tmp_path / "mask.png", "--image", out, "--weights", tiny,
                        "--quiet")
        assert code == 0, err
        imgs[alpha] = np.asarray(Image.open(out))
    assert not np.array_equal(imgs[0.0], imgs[1.0])


@pytest.mark.parametrize("body,message", [
    ("{oops", "malformed JSON"),
    ('{"alpha": 1.5, "start": {"prompt": "a", "seed": 1}, "end": {"prompt": "b", "seed": 2}}', "alpha must be"),
    ('{"alpha": 0.5, "start": {"prompt": "", "seed": 1}, "end": {"prompt": "b", "seed": 2}}', "start prompt is empty"),
    ('{"alpha": 0.5, "start": {"prompt": "a", "seed": 1}, "end": {"prompt": "b", "seed": 2}, "seed_image_id": "nope"}',
     "invalid seed image: 'nope'"),
    # a misspelt field is refused here (the server ignores unknown fields, as the original did)
    ('{"alpha": 0.5, "start": {"prompt": "a", "seed": 1}, "end": {"prompt": "b", "seed": 2}, "extra": 1}',
     "request: unknown field 'extra'"),
    ('{"alpha": 0.5, "start": {"prompt": "a", "seed": 1, "guidence": 9}, "end": {"prompt": "b", "seed": 2}}',
     "start: unknown field 'guidence'"),
])
def test_riffuse_bad_requests(tiny, tmp_path, capsys, body, message):
    seed_png(tmp_path / "og_beat.png", width=64)
    (tmp_path / "req.json").write_text(body)
    code, err = run(capsys, "riffuse", "--json", tmp_path / "req.json", "--seed-images", tmp_path,
                    "-o", tmp_path / "x.wav", "--weights", tiny, "--quiet")
    assert code == 2 and message in err and err.count("\n") == 1


def test_riffuse_with_the_original_seed_image_and_mask(tiny, tmp_path, capsys):
    folder = shared_file("seed_images")
    code, err = run(capsys, "riffuse", "--start", "lofi", "--steps", 2, "--seed-images", folder,
                    "--mask", "mask_top_third_75", "--image", tmp_path / "o.png", "--weights", tiny, "--quiet")
    assert code == 0, err
    assert Image.open(tmp_path / "o.png").size == (512, 512)


# ---- the installed console script ----------------------------------------------------------------
def test_console_script_generate(tiny, tmp_path):
    exe = [sys.executable, "-m", "minriff.cli"]
    r = subprocess.run(exe + ["generate", "jazz piano solo", "-o", str(tmp_path / "j.wav"), "--seconds", "0.64",
                              "--steps", "1", "--weights", tiny, "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sf.info(str(tmp_path / "j.wav")).frames == 63 * HOP


def test_riffuse_json_from_stdin_response_to_stdout(tiny, tmp_path, capsys, monkeypatch):
    import io

    seed_png(tmp_path / "og_beat.png", width=64)
    req = {"alpha": 0, "num_inference_steps": 2, "start": {"prompt": "a", "seed": 1, "negative_prompt": "b"},
           "end": {"prompt": "c", "seed": 2}}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(req)))
    code = main(["riffuse", "--json", "-", "--seed-images", str(tmp_path), "--output-json", "-",
                 "--weights", tiny, "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    resp = json.loads(out.out)
    assert resp["duration_s"] == pytest.approx(63 * HOP / SR)


def test_interpolate_from_a_seed_image_riffuses_each_clip(tiny, tmp_path, capsys):
    seed_png(tmp_path / "og_beat.png", width=64)
    code, err = run(capsys, "interpolate", "rock", "violin", "--frames", 2, "--steps", 3, "--seed-image", "og_beat",
                    "--seed-images", tmp_path, "--image", tmp_path / "j.png", "-o", tmp_path / "j.wav",
                    "--weights", tiny, "--quiet")
    assert code == 0, err
    joined = np.asarray(Image.open(tmp_path / "j.png"))
    assert joined.shape == (512, 128, 3)
    code, err = run(capsys, "riffuse", "--start", "rock", "--end", "violin", "--alpha", 0, "--start-seed", 42,
                    "--end-seed", 42, "--steps", 3, "--seed-image", tmp_path / "og_beat.png",
                    "--image", tmp_path / "r.png", "--weights", tiny, "--quiet")
    assert code == 0, err
    assert np.array_equal(joined[:, :64], np.asarray(Image.open(tmp_path / "r.png")))  # clip 1 = alpha 0
    assert sf.info(str(tmp_path / "j.wav")).frames == 127 * HOP


@pytest.mark.parametrize("flag,name", [("--image", "x.unknownext"), ("--image", "missing/dir/x.png")])
def test_unwritable_outputs_are_one_line_errors(tiny, tmp_path, capsys, flag, name):
    code, err = run(capsys, "generate", "x", flag, tmp_path / name, "--seconds", 0.64, "--steps", 1,
                    "--weights", tiny, "--quiet")
    assert code == 2 and "cannot write" in err and err.count("\n") == 1
