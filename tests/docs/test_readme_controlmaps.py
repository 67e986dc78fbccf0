"""README's "Control images from music": its commands run as written (on 3 s of made-up music and
that music's spectrogram PNG) and write the maps the section describes; the Python names it gives
exist. Kept apart from test_readme.py, which needs a model; these need none."""
from __future__ import annotations

import re
import shlex

import numpy as np
import soundfile as sf
from PIL import Image

from minriff.cli import main
from support import ROOT

README = (ROOT / "README.md").read_text()
START = README.index("## Control images from music\n")
SECTION = README[START:README.index("\n## ", START + 1)]
COMMANDS = [line for b in re.findall(r"```bash\n(.*?)```", SECTION, flags=re.S) for line in b.splitlines()
            if line.startswith("minriff ")]


def test_readme_control_image_commands_run(tmp_path, monkeypatch, capsys):
    assert [shlex.split(c)[2] for c in COMMANDS] == ["canny", "rhythm", "melody", "canny"]
    monkeypatch.chdir(tmp_path)
    t = np.arange(3 * 44100) / 44100
    wave = 0.3 * np.sin(2 * np.pi * 330 * t * (1 + t / 6)) * (1 + (np.sin(2 * np.pi * 2 * t) > 0.95))
    sf.write("song.wav", wave.astype(np.float32), 44100)
    assert main(["audio2image", "song.wav", "-o", "song.png", "--quiet"]) == 0
    for command in COMMANDS:
        argv = shlex.split(command)[1:]
        assert main(argv) == 0, (command, capsys.readouterr().err)
        image = np.asarray(Image.open(argv[argv.index("-o") + 1]))
        width = int(argv[argv.index("--width") + 1]) if "--width" in argv else 512
        assert image.shape == (512, width, 3) and image.any()
        assert not image[:, 301:].any()  # 3 s of music = 301 columns, black after them
    fine, edges = (np.asarray(Image.open(f)) > 0 for f in ("fine.png", "edges.png"))
    assert fine.sum() > edges.sum()  # lower thresholds, more edges


def test_readme_python_names_exist():
    from minriff.audio import controlmaps, musicmaps

    assert "control_image(prep, source, width=None)" in SECTION
    assert set(controlmaps.PREPROCESSORS) == {"canny", "rhythm", "melody"}
    assert callable(controlmaps.control_image) and callable(musicmaps.onset_columns)
    assert "minriff/audio/musicmaps.py" in SECTION
