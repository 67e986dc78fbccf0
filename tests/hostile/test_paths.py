"""Image ids (`seed_image_id`, `mask_image_id`; riffuse --json, the API, later the server) name PNGs
inside the seed-image folders and nothing else. Whatever the id (`..`, absolute, encoded, NUL
bytes, very long, unicode, symlinks planted in the folder), the answer is a file inside a folder or
an InputError, and the InputError is the same whether or not something exists outside: no
existence oracle. The command line's own flags may still give a PNG path."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from minriff.cli import main
from minriff.errors import InputError
from minriff.riffuse import IMAGE_ID, InferenceInput, resolve_image, resolve_image_id

BOGUS_WEIGHTS = "/nonexistent/weights.safetensors"  # ids are resolved before weights are loaded


def _png(path: Path):
    y, x = np.mgrid[0:512, 0:64]
    Image.fromarray((170 + 50 * np.sin(x / 4.0) * np.cos(y / 19.0)).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """root/seeds: og_beat.png, same.png -> og_beat.png (inside: fine), leak.png -> ../secret/x.png and
    abs.png -> /.../secret/x.png (outside: refused), sub/deep.png; root/secret/x.png outside."""
    root = tmp_path_factory.mktemp("world")
    seeds, secret = root / "seeds", root / "secret"
    seeds.mkdir()
    secret.mkdir()
    _png(seeds / "og_beat.png")
    _png(secret / "x.png")
    (secret / "passwd").write_text("root:x:0:0\n")
    (seeds / "same.png").symlink_to("og_beat.png")
    (seeds / "leak.png").symlink_to("../secret/x.png")
    (seeds / "abs.png").symlink_to(secret / "x.png")
    (seeds / "sub").mkdir()
    _png(seeds / "sub" / "deep.png")
    (root / "seeds_link").symlink_to("seeds")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MINRIFF_SEED_IMAGES", raising=False)
        mp.chdir(root)  # ./seed_images does not exist here
        yield root


def shown(image_id: str) -> str:
    """How an error quotes an id: whole up to 60 characters, else its first 60 and "..." (so a
    3,000-character id is not echoed back; a tmp_path alone can pass 60)."""
    return repr(image_id if len(image_id) <= 60 else image_id[:60] + "...")


def message(image_id, folder) -> str:
    with pytest.raises(InputError) as e:
        resolve_image_id(image_id, "seed image", str(folder))
    return str(e.value)


def hidden(root: Path):
    """The same world with everything outside the folder gone (so a refusal must equal a miss)."""
    class Hidden:
        def __enter__(self):
            (root / "secret").rename(root / "secret.away")

        def __exit__(self, *exc):
            (root / "secret.away").rename(root / "secret")
    return Hidden()


def hostile_ids(root: Path):
    secret = root / "secret"
    pieces = ["..", "/", "\\", ".", "%2e", "%2f", "%2e%2e%2f", "\x00", "~", "secret", "x", "x.png", "og_beat",
              "leak", "abs", "sub", "deep", ".png", " ", "\n", "é", "\u202e", "\ud800", "\uff4f", "*", "?", "$HOME",
              str(root), str(secret), "file://", "C:", "seeds"]
    known = ["../secret/x", "../secret/x.png", str(secret / "x"), str(secret / "x.png"), "/etc/passwd",
             str(secret / "passwd"), "../../../../../../etc/passwd", "sub/deep", "./og_beat", "og_beat/", "og_beat.png",
             "..", ".", "", "leak", "abs", "%2e%2e%2fsecret%2fx", "..\\secret\\x", "og_beat\x00", "\x00../secret/x",
             "og_beat\n", " og_beat", "ｏｇ_beat", "og_beat" + "/.." * 3 + "/secret/x", "~/x", "x" * 101, "a" * 5000]
    return st.one_of(st.sampled_from(known), st.lists(st.sampled_from(pieces), max_size=8).map("".join),
                     st.text(max_size=30), st.text(min_size=100, max_size=3000))


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_id_resolves_inside_or_is_the_same_input_error(world, data):
    image_id = data.draw(hostile_ids(world))
    folder = world / "seeds"
    try:
        found = resolve_image_id(image_id, "seed image", str(folder))
    except InputError as e:
        with hidden(world):
            assert str(e) == message(image_id, folder), "the answer depends on what exists outside the folder"
        return
    assert IMAGE_ID.fullmatch(image_id) and found.is_relative_to(folder.resolve()) and found.is_file(), found


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_request_ids_from_json_are_only_ids(world, data):
    """The server-style JSON request: both ids, through InferenceInput, only InputError."""
    image_id = data.draw(hostile_ids(world))
    body = {"alpha": 0.5, "start": {"prompt": "a", "seed": 1}, "end": {"prompt": "b", "seed": 2},
            "seed_image_id": image_id, "mask_image_id": image_id}
    try:
        req = InferenceInput.from_json(json.dumps(body))
        for got, what in ((req.seed_image_id, "seed image"), (req.mask_image_id, "mask image")):
            found = resolve_image(got, what, str(world / "seeds"))
            assert found.is_relative_to((world / "seeds").resolve()), found
    except InputError:
        pass


@pytest.mark.parametrize("image_id", ["../secret/x", "SECRET/x.png", "SECRET/x", "leak", "abs", "sub/deep",
                                      "seeds/../secret/x", "a" * 101, "b" * 3000])
def test_reading_outside_the_folder_is_refused(world, image_id):
    image_id = image_id.replace("SECRET", str(world / "secret"))
    msg = message(image_id, world / "seeds")
    assert msg.startswith(f"invalid seed image: {shown(image_id)} is not the id of a PNG in the seed-image folders")
    assert "og_beat, same" in msg  # what is there, so a typo is easy to fix
    assert str(world) not in msg.replace(shown(image_id), "")  # no folder path of this machine in the answer


def test_no_existence_oracle(world):
    """/etc/passwd and a missing file get the same answer (only the id differs)."""
    def shape(image_id):
        return message(image_id, world / "seeds").replace(shown(image_id), "ID")
    assert shape("/etc/passwd") == shape("/etc/passwd-not-there") == shape("nope")
    assert shape(str(world / "secret" / "x")) == shape(str(world / "secret" / "y"))
    assert shape("../secret/x") == shape("../secret/y")


def test_ids_inside_the_folder_work(world):
    seeds = (world / "seeds").resolve()
    assert resolve_image_id("og_beat", "seed image", str(world / "seeds")) == seeds / "og_beat.png"
    assert resolve_image_id("same", "seed image", str(world / "seeds")) == seeds / "og_beat.png"
    assert resolve_image_id("og_beat", "seed image", str(world / "seeds_link")) == seeds / "og_beat.png"


def test_non_string_ids_are_input_errors(world):
    for bad in (None, 3, b"og_beat", ["og_beat"]):
        with pytest.raises(InputError, match="must be a string"):
            resolve_image_id(bad, "seed image", str(world / "seeds"))


def test_cli_flags_may_still_give_a_path(world):
    """An explicit PNG path on the command line (`--seed-image ./x.png`, `--mask /abs/m.png`) is
    the user's own file; a bare name is an id."""
    x = world / "secret" / "x.png"
    assert resolve_image(str(x), "seed image", str(world / "seeds"), allow_path=True) == x
    assert resolve_image("og_beat", "seed image", str(world / "seeds"), allow_path=True).name == "og_beat.png"
    with pytest.raises(InputError, match="no such image file"):
        resolve_image(str(world / "secret" / "y.png"), "seed image", allow_path=True)
    with pytest.raises(InputError, match="invalid seed image"):  # a path is never an id
        resolve_image(str(x), "seed image", str(world / "seeds"))


# ----------------------------------------------------------------------------- through the CLI


def riffuse_json(world, capsys, **ids):
    body = {"alpha": 0.5, "start": {"prompt": "a", "seed": 1}, "end": {"prompt": "b", "seed": 2}, **ids}
    (world / "req.json").write_text(json.dumps(body))
    code = main(["riffuse", "--json", str(world / "req.json"), "--seed-images", str(world / "seeds"),
                 "--image", str(world / "out.png"), "--weights", BOGUS_WEIGHTS, "--quiet"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("field", ["seed_image_id", "mask_image_id"])
@pytest.mark.parametrize("image_id", ["../secret/x", "SECRET/x.png", "leak", "/etc/passwd"])
def test_riffuse_json_cannot_read_outside(world, capsys, field, image_id):
    """The reproduction: `riffuse --json` with `../secret/x` read a PNG outside the folder."""
    image_id = image_id.replace("SECRET", str(world / "secret"))
    code, err = riffuse_json(world, capsys, **{field: image_id})
    what = "seed image" if field == "seed_image_id" else "mask image"
    assert code == 2 and err.startswith(f"minriff riffuse: error: invalid {what}: {shown(image_id)} is not the id"), err
    assert not (world / "out.png").exists()


def test_riffuse_json_same_answer_for_passwd_and_missing(world, capsys):
    answers = [riffuse_json(world, capsys, seed_image_id=i)[1].replace(shown(i), "ID")
               for i in ("/etc/passwd", "/etc/passwd-not-there", str(world / "secret" / "passwd"))]
    assert answers[0] == answers[1] == answers[2], answers


def test_riffuse_flags_accept_a_png_path(world, capsys):
    code = main(["riffuse", "--start", "a", "--seed-image", str(world / "secret" / "x.png"), "--image",
                 str(world / "out.png"), "--weights", BOGUS_WEIGHTS, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "seed image" not in err and BOGUS_WEIGHTS in err, err  # got past the image, to the weights


def test_seed_image_env_and_default_folder(world, monkeypatch, tmp_path):
    """$MINRIFF_SEED_IMAGES and ./seed_images are searched with the same rules."""
    monkeypatch.setenv("MINRIFF_SEED_IMAGES", str(world / "seeds"))
    assert resolve_image_id("og_beat", "seed image").name == "og_beat.png"
    with pytest.raises(InputError):
        resolve_image_id("../secret/x", "seed image")
    monkeypatch.delenv("MINRIFF_SEED_IMAGES")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed_images").mkdir()
    (tmp_path / "seed_images" / "up.png").symlink_to(world / "secret" / "x.png")
    with pytest.raises(InputError, match="none found"):
        resolve_image_id("up", "seed image")
    os.link(world / "seeds" / "og_beat.png", tmp_path / "seed_images" / "hard.png")  # a hard link is a file here
    assert resolve_image_id("hard", "seed image").parent == (tmp_path / "seed_images").resolve()
