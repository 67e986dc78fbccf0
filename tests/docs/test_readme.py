"""Every command and the Python example of README's "Make music" and "Python API" sections run
(with a tiny random model from `minriff init-random --config tiny`).

To keep the suite fast, each documented command line gets `--steps 1 --seconds 0.64` (and
`--frames 2`) appended — argparse lets the last value win, so the documented flags are still parsed
and used; the Python example gets the same substitutions in its keyword arguments."""
from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from minriff.cli import main
from support import ROOT

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


MAKE_MUSIC = section("Make music")
COMMANDS = [line for b in blocks(MAKE_MUSIC, "bash") for line in b.splitlines() if line.startswith("minriff ")]


pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    (d / "weights").mkdir()
    assert main(["init-random", "--config", "tiny", "-o", str(d / "weights" / "tiny.safetensors")]) == 0
    # written after the main file, so the newest in weights/: finding the main file must skip it
    assert main(["init-random", "--config", "tiny", "--taesd", "-o", str(d / "weights" / "taesd.safetensors")]) == 0
    (d / "seed_images").mkdir()
    y, x = np.mgrid[0:512, 0:64]
    Image.fromarray((170 + 50 * np.sin(x / 4.0) * np.cos(y / 19.0)).astype(np.uint8)).save(
        d / "seed_images" / "og_beat.png")
    request = json.loads(blocks(MAKE_MUSIC, "json")[0])
    (d / "jobs.jsonl").write_text(json.dumps({"id": "one", "kind": "generate", "prompt": "jazz", "steps": 1,
                                              "duration_s": 0.3}) + "\n")
    request["num_inference_steps"] = 2  # the JSON's own value wins over --steps; 2 steps at 0.75 -> 2 UNet calls
    (d / "request.json").write_text(json.dumps(request))
    return d


def test_readme_documents_the_three_commands():
    names = {shlex.split(c)[1] for c in COMMANDS}
    assert {"generate", "interpolate", "riffuse"} <= names
    json.loads(blocks(MAKE_MUSIC, "json")[0])  # the request example is valid JSON


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(workdir, monkeypatch, capsys, command):
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)  # found in ./weights/, as documented
    argv = shlex.split(command)[1:]
    fast = ["--quiet"] if "--json" in argv else ["--steps", "1", "--quiet"]  # the request sets its own steps
    if argv[0] == "batch":  # the job file sets steps and length; one in-process worker
        fast = ["--quiet", "--workers", "0"]
    if argv[0] in ("generate", "interpolate"):
        fast += ["--seconds", "0.64"]
    if argv[0] == "interpolate":
        fast += ["--frames", "2"]
    code = main(argv + fast)
    assert code == 0, capsys.readouterr().err
    outputs = [argv[i + 1] for i, a in enumerate(argv) if a in ("-o", "--image", "--output-json")]
    if argv[0] == "batch":
        outputs = [f"{outputs[0]}one.wav", f"{outputs[0]}manifest.jsonl"]
    for out in outputs:
        assert (workdir / out).stat().st_size > 0
        if out.endswith((".wav", ".flac", ".mp3")):
            assert sf.info(str(workdir / out)).samplerate == 44100
    if "--output-json" in argv:
        resp = json.loads((workdir / "response.json").read_text())
        assert set(resp) == {"image", "audio", "duration_s"}


def test_readme_python_example_runs(workdir, monkeypatch):
    code = blocks(section("Python API"), "python")[0]
    fast = code.replace("steps=30", "steps=1").replace("duration_s=5.0", "duration_s=0.64")
    assert fast.count("steps=1") == 4 and fast != code
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    env: dict = {}
    exec(compile(fast, "README.md", "exec"), env)
    assert env["image"].shape == (512, 64, 3) and env["image"].dtype == np.uint8
    assert env["wave"].ndim == 2 and env["sample_rate"] == 44100
    assert env["clip"].shape == env["mid"].shape == (512, 64, 3)
    assert env["again"].shape[0] == 512


def test_readme_lora_section_runs(workdir, monkeypatch, capsys):
    """The LoRA section's Python and commands, with two random kohya LoRAs for the tiny model under
    the documented file names (`lora info` gets `--config tiny`: the files do not fit SD 1.5)."""
    from minriff import Riffusion
    from support.lora_cases import layer_shapes, random_kohya, save

    text = section("LoRA")
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    riff = Riffusion.load(quiet=True)
    before = riff.parameters()
    shapes = layer_shapes(riff)
    save(workdir / "style.safetensors", random_kohya(shapes, seed=1, alpha=lambda c, m: 2.0))
    save(workdir / "lcm.safetensors", random_kohya(shapes, seed=2))
    env = {"riff": riff}
    exec(compile(blocks(text, "python")[0], "README.md", "exec"), env)
    assert env["name"] == "style" and [i.name for i in riff.loras] == ["lcm"]
    assert not np.array_equal(riff.parameters(), before)
    riff.unload_lora("lcm")
    assert np.array_equal(riff.parameters(), before)
    commands = [ln for b in blocks(text, "bash") for ln in b.splitlines() if ln.startswith("minriff ")]
    assert [shlex.split(c)[1] for c in commands] == ["generate", "lora"]
    for command in commands:
        argv = shlex.split(command.split("#")[0])[1:]
        fast = ["--steps", "1", "--seconds", "0.64", "--quiet"] if argv[0] == "generate" else ["--config", "tiny"]
        assert main(argv + fast) == 0, capsys.readouterr().err
    assert sf.info(str(workdir / "jazz.wav")).samplerate == 44100
    assert "style.safetensors: kohya LoRA" in capsys.readouterr().out


def test_readme_few_step_example_runs(workdir, monkeypatch):
    code = next(b for b in blocks(section("Python API"), "python") if "TCDScheduler" in b)
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    env: dict = {}
    exec(compile(code.replace("steps=4", "steps=2"), "README.md", "exec"), env)
    assert env["image"].shape == (512, 512, 3) and env["tcd"].gamma == 0.3
    assert type(env["fast"].scheduler).__name__ == "LCMScheduler"


def test_readme_taesd_example_runs(workdir, monkeypatch):
    code = next(b for b in blocks(section("Python API"), "python") if "decode_preview" in b)
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    monkeypatch.delenv("MINRIFF_TAESD", raising=False)
    env: dict = {}
    exec(compile(code.replace("steps=30", "steps=2"), "README.md", "exec"), env)
    assert env["draft"].shape == env["image"].shape == (512, 512, 3)
    assert len(env["frames"]) == 2 and env["frames"][0].shape == (512, 512, 3)
    assert env["fast"].decoder == env["fast"].encoder == "taesd"
    assert not (env["draft"] == env["image"]).all()  # TAESD's picture is not the VAE's
def test_readme_deepcache_example_runs(workdir, monkeypatch):
    code = next(b for b in blocks(section("Python API"), "python") if "cache_interval" in b)
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    env: dict = {}
    exec(compile(code.replace("steps=30", "steps=4"), "README.md", "exec"), env)
    assert env["image"].shape == (512, 512, 3)


def test_readme_presets_example_runs(workdir, monkeypatch):
    code = next(b for b in blocks(section("Python API"), "python") if "presets.options" in b)
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    monkeypatch.delenv("MINRIFF_TAESD", raising=False)
    env: dict = {}
    exec(compile(code, "README.md", "exec"), env)
    assert env["fast"].shape == env["six"].shape == env["clip"].shape == (512, 512, 3)
    assert not (env["fast"] == env["six"]).all()
    assert env["opts"]["decoder"] == "taesd" and "guidance" not in env["opts"]


LONGER = section("Longer music and remixes")
LONGER_COMMANDS = [line for b in blocks(LONGER, "bash") for line in b.splitlines() if line.startswith("minriff ")]
# small stand-ins for the documented sizes: the same flags, a 2.56 s piece of 128-px windows
SHRINK = {"--seconds 60": "--seconds 2.56", "--prompt-at 30s": "--prompt-at 1.5s"}
SHRINK_FLAGS = {"generate": ["--clip-px", "128", "--overlap-px", "64", "--steps", "2"],  # img2img: 1 step
                "remix": ["--window-px", "128", "--overlap-px", "64", "--steps", "2"]}


def test_readme_longer_music_commands_run(workdir, monkeypatch, capsys):
    """The section's commands in order (exif reads what audio2image wrote; the song is 5 s of stereo)."""
    from minriff.audio import io as audio_io

    assert [shlex.split(c)[1] for c in LONGER_COMMANDS] == ["generate", "remix", "audio2image", "exif", "clips"]
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    t = np.arange(5 * 22050) / 22050
    stereo = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)])
    audio_io.write_audio(workdir / "song.wav", stereo, 22050)
    for command in LONGER_COMMANDS:
        for a, b in SHRINK.items():
            command = command.replace(a, b)
        argv = [a.replace("song.mp3", "song.wav") for a in shlex.split(command)[1:]]  # mp3 needs libsndfile >= 1.1
        code = main(argv + SHRINK_FLAGS.get(argv[0], []) + (["--quiet"] if argv[0] != "exif" else []))
        out, err = capsys.readouterr()
        assert code == 0, err
        if argv[0] == "exif":
            assert "SAMPLE_RATE" in out
    assert sf.info(str(workdir / "long.wav")).frames == (256 - 1) * 441
    info = sf.info(str(workdir / "remix.wav"))
    assert info.channels == 2 and info.frames == 3 * 44100
    assert len(list((workdir / "clips").iterdir())) == 4


def test_readme_longer_music_python_example_runs(workdir, monkeypatch):
    code = next(b for b in blocks(section("Python API"), "python") if "generate_long" in b)
    fast = (code.replace("duration_s=60.0", "duration_s=2.56, clip_px=128, overlap_px=64")
            .replace("(30.0,", "(1.5,").replace("steps=30", "steps=2").replace("steps=25", "steps=2")
            .replace("start_s=10.0, end_s=20.0", "start_s=0.5, end_s=1.5, window_px=128, overlap_px=64"))
    assert fast.count("steps=2") == 2
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    env: dict = {}
    exec(compile(fast, "README.md", "exec"), env)
    assert env["piece"].shape == (512, 256, 3) and env["wave"].shape == (1, 255 * 441)
    assert env["sample_rate"] == 44100 and env["remixed"].shape == (1, 44100)


def test_readme_controlnet_section_runs(workdir, monkeypatch, capsys):
    """The ControlNet section's Python and commands on the tiny model, with the tiny ControlNet A of
    tests/fixtures/make_controlnet.py as the documented diffusers folder and a synthetic clip.wav for
    the canny:clip.wav source."""
    import shutil

    from minriff import Riffusion
    from support import fixture_script

    make = fixture_script("make_controlnet")
    text = section("ControlNet")
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MINRIFF_WEIGHTS", raising=False)
    shutil.copytree(make.A_DIFFUSERS, workdir / "lllyasviel" / "sd-controlnet-canny", dirs_exist_ok=True)
    Image.fromarray(make.control_image("edges", 64)).save(workdir / "edges.png")
    t = np.arange(2 * 44100) / 44100
    sf.write(workdir / "clip.wav", (0.3 * np.sin(2 * np.pi * 440 * t) * (np.mod(t, 0.5) < 0.1)).astype(np.float32),
             44100)
    commands = [ln for b in blocks(text, "bash") for ln in b.splitlines() if ln.startswith("minriff ")]
    assert [shlex.split(c)[1] for c in commands] == ["convert", "info", "generate", "riffuse"]
    for command in commands:
        argv = shlex.split(command)[1:]
        fast = {"generate": ["--steps", "1", "--seconds", "0.64", "--quiet"], "riffuse": ["--steps", "2", "--quiet"]}
        assert main(argv + fast.get(argv[0], [])) == 0, capsys.readouterr().err
    assert sf.info(str(workdir / "jazz.wav")).samplerate == 44100 and sf.info(str(workdir / "r.wav")).frames > 0
    riff = Riffusion.load(quiet=True)  # the ControlNet file beside the main one is never taken for it
    env = {"riff": riff}
    code = blocks(text, "python")[0].replace("seed=42,", "seed=42, steps=2, duration_s=0.64,")
    exec(compile(code, "README.md", "exec"), env)
    assert env["image"].shape == (512, 64, 3)
    assert not np.array_equal(env["image"], riff.generate_spectrogram("jazz piano solo", seed=42, steps=2,
                                                                      duration_s=0.64))
