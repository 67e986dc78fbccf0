"""The first run, the way Hugging Face users expect (issue 13), against the local fake Hub
(`support.fakehub`, the tiny diffusers fixture served as riffusion/riffusion-model-v1):

- no weights anywhere: `minriff generate` downloads, converts into minriff's home, goes on; the
  second run finds the file and asks nothing of the network;
- HF_ENDPOINT and HF_TOKEN are honoured; offline switches give the "how to get weights" hint;
- a riffusion-model-v1 in the Hugging Face cache (HF_HOME / HF_HUB_CACHE, refs/main, symlinked
  blobs) is converted without downloading; an incomplete one is downloaded over;
- an interrupted first run resumes where it stopped;
- hostile repo ids never delete anything outside minriff's staging folder (cause 1).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import threading

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minriff import Riffusion, weights
from minriff.cli import main as cli_main
from minriff.errors import InputError, MinriffError
from minriff.weights import download, firstrun
from support.fakehub import FOLDER, REPO, FakeHub

pytestmark = pytest.mark.usefixtures("serial_numba")  # tiny models: thread start-up would dominate

BIG = "unet/diffusion_pytorch_model.bin"
FAST = ["--seconds", "0.64", "--steps", "1"]


@pytest.fixture
def world(tmp_path, monkeypatch):
    """An empty machine: no weights, empty caches, online, HF_ENDPOINT at the fake Hub, in an empty cwd."""
    hub = FakeHub()
    monkeypatch.delenv("MINRIFF_OFFLINE")
    monkeypatch.setenv("MINRIFF_HOME", str(tmp_path / "minriff-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    yield hub
    hub.close()


def _converted(tmp_path):
    return tmp_path / "minriff-home" / "riffusion-v1.safetensors"


def test_first_run_downloads_converts_and_goes_on(world, tmp_path, capsys):
    code = cli_main(["generate", "jazz piano solo", "-o", "jazz.wav", *FAST])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (tmp_path / "work" / "jazz.wav").stat().st_size > 0
    notices = [line for line in err.splitlines() if line.startswith("no weights found")]
    assert len(notices) == 1 and REPO in notices[0] and str(_converted(tmp_path)) in notices[0]
    assert {p for p, _ in world.requests} == set(download.FILES)
    assert weights.WeightsFile(_converted(tmp_path)).source["type"] == "diffusers"
    home = sorted(p.name for p in (tmp_path / "minriff-home").iterdir())
    assert home == ["riffusion-v1.safetensors"]  # the staging folder is gone
    for stage in ("%", "writing riffusion-v1.safetensors", "loading unet", "loading vae", "decoding (VAE)"):
        assert stage in err, stage  # progress lines for the long stages (finished lines: stderr is not a tty)

    before = len(world.seen)
    code = cli_main(["generate", "jazz piano solo", "-o", "again.wav", *FAST, "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 and err == ""
    assert len(world.seen) == before  # not one request: the second run found the converted file


@pytest.mark.parametrize("var", ["MINRIFF_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_first_run_gives_the_hint(world, capsys, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    code = cli_main(["generate", "jazz piano solo", "-o", "jazz.wav", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "minriff download" in err and "init-random --config tiny" in err and f"Offline mode is on ({var}=1)" in err
    assert world.seen == []


def test_hf_token_reaches_the_hub_on_a_first_run(world, monkeypatch, tmp_path):
    world.token = "hf_first_run"
    monkeypatch.setenv("HF_TOKEN", "hf_first_run")
    out = firstrun.ensure_weights(quiet=True, stream=io.StringIO())
    assert out == _converted(tmp_path)
    hub_auth = {auth for role, _, auth in world.seen if role == "hub"}
    assert hub_auth == {"Bearer hf_first_run"}
    assert {auth for role, _, auth in world.seen if role == "cdn"} == {None}


def test_python_api_first_run_and_dtype_checked_before_downloading(world, tmp_path):
    with pytest.raises(InputError, match="dtype"):
        Riffusion.load(dtype=np.int8)
    assert world.seen == []
    riff = Riffusion.load(quiet=True)
    assert riff.source == str(_converted(tmp_path))
    assert riff.generate_spectrogram("jazz", duration_s=0.64, steps=1, seed=1).shape == (512, 64, 3)


# ----------------------------------------------------------------------------- the Hugging Face cache


def fill_hf_cache(cache, commit: str = "c" * 40, symlinks: bool = True, drop=(), ref: bool = True):
    """The layout huggingface_hub / diffusers leave: blobs by hash, snapshot files linking to them,
    refs/main naming the commit."""
    root = cache / ("models--" + REPO.replace("/", "--"))
    for path in download.FILES + ("safety_checker/config.json",):
        if path in drop:
            continue
        data = (FOLDER / path).read_bytes() if (FOLDER / path).exists() else b"{}"
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        dest = root / "snapshots" / commit / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if symlinks:
            dest.symlink_to(os.path.relpath(blob, dest.parent))
        else:
            shutil.copyfile(blob, dest)
    if ref:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(commit)
    return root / "snapshots" / commit


def test_prefilled_hf_cache_is_converted_without_downloading(world, tmp_path, monkeypatch, capsys):
    snapshot = fill_hf_cache(tmp_path / "hf-home" / "hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as from_pretrained: a cached model needs no network
    code = cli_main(["generate", "jazz piano solo", "-o", "jazz.wav", *FAST, "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("\n") == 1 and "from the Hugging Face cache" in err and str(snapshot) in err
    assert world.seen == []
    assert weights.WeightsFile(_converted(tmp_path)).source["path"] == str(snapshot)


@pytest.mark.parametrize("variable,layout,symlinks", [
    ("HF_HOME", "hub", False),  # plain files, as where symlinks are off
    ("HF_HUB_CACHE", "", True), ("HUGGINGFACE_HUB_CACHE", "", True), ("XDG_CACHE_HOME", "huggingface/hub", True)])
def test_hf_cache_is_found_where_huggingface_hub_looks(world, tmp_path, monkeypatch, variable, layout, symlinks):
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv(variable, str(tmp_path / "cache"))
    snapshot = fill_hf_cache(tmp_path / "cache" / layout, symlinks=symlinks)
    out = firstrun.ensure_weights(quiet=True, stream=io.StringIO())
    assert weights.WeightsFile(out).source["path"] == str(snapshot) and world.seen == []


def test_hf_hub_cache_wins_over_hf_home_and_refs_main_picks_the_snapshot(world, tmp_path, monkeypatch):
    fill_hf_cache(tmp_path / "hf-home" / "hub", commit="a" * 40)
    fill_hf_cache(tmp_path / "hub-cache", commit="b" * 40)
    newest = fill_hf_cache(tmp_path / "hub-cache", commit="d" * 40, ref=False)  # newer, but not main
    os.utime(newest, (2e9, 2e9))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    out = firstrun.ensure_weights(quiet=True, stream=io.StringIO())
    assert weights.WeightsFile(out).source["path"].endswith("snapshots/" + "b" * 40)
    assert world.seen == []


def test_incomplete_hf_cache_is_downloaded_over(world, tmp_path, monkeypatch):
    root = fill_hf_cache(tmp_path / "hf-home" / "hub")
    os.unlink(os.path.realpath(root / BIG))  # the blob is gone: a broken link, as after a cut download
    log = io.StringIO()
    out = firstrun.ensure_weights(quiet=True, stream=log)
    assert out == _converted(tmp_path) and "incomplete" in log.getvalue()
    assert {p for p, _ in world.requests} == set(download.FILES)


# ----------------------------------------------------------------------------- interrupted, concurrent


def test_an_interrupted_first_run_resumes(world, tmp_path, capsys):
    class AlwaysCut(dict):
        def pop(self, key, *default):
            return 1000
    world.cut = AlwaysCut({BIG: 1000})
    code = cli_main(["generate", "jazz piano solo", "-o", "jazz.wav", *FAST, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 2  # the first run's notice, then the error
    assert err.startswith("no weights found") and "run again to resume" in err.splitlines()[1]
    staging = tmp_path / "minriff-home" / ".download" / "riffusion--riffusion-model-v1"
    have = (staging / (BIG + ".part")).stat().st_size
    assert have == 4 * 1000 and not _converted(tmp_path).exists()

    world.cut, world.requests[:] = {}, []
    code = cli_main(["generate", "jazz piano solo", "-o", "jazz.wav", *FAST, "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (BIG, f"bytes={have}-") in world.requests  # resumed, not restarted
    assert {p for p, _ in world.requests} == {BIG}  # the finished files were kept
    assert not staging.exists()


def test_two_first_runs_at_once_download_once(world, tmp_path):
    results, errors = [], []

    def run():
        try:
            results.append(firstrun.ensure_weights(quiet=True, stream=io.StringIO()))
        except Exception as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [_converted(tmp_path)] * 2
    assert sorted(p for p, _ in world.requests) == sorted(download.FILES)


# ----------------------------------------------------------------------------- cause 1: hostile repo ids


@pytest.fixture(scope="module")
def careless_mirror():
    hub = FakeHub()
    hub.any_repo = True  # serves the files for whatever repo id is asked: only minriff's checks stand in the way
    yield hub
    hub.close()


REPO_TEXT = st.text(alphabet="./-_aZ9\\~ ", max_size=12)
REPO_IDS = st.one_of(
    REPO_TEXT, st.builds(lambda a, b: f"{a}/{b}", REPO_TEXT, REPO_TEXT),
    st.sampled_from(["..", ".", "../..", "a/..", "../a", "/", "/tmp", "a/b/../..", "a/b", "x_/y.z", "riffusion/v1"]))
SENTINELS = ("outside.txt", "w/user.txt", "w/.download/user.txt", "w/.download/someone--else/user.txt",
             "w/.download/a--b/user.txt")


@settings(max_examples=40, deadline=None)
@given(REPO_IDS)
@example("..")  # the reproduction: `minriff download --repo .. --to w` emptied w/
@example("a/b")  # its staging folder name exists and is not minriff's: refused, untouched
@example("x_/y.z")
def test_repo_ids_never_delete_outside_the_staging_folder(tmp_path_factory, careless_mirror, repo):
    root = tmp_path_factory.mktemp("ids")
    for s in SENTINELS:
        (root / s).parent.mkdir(parents=True, exist_ok=True)
        (root / s).write_text(s)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MINRIFF_OFFLINE")
        code = cli_main(["download", f"--repo={repo}", "--to", str(root / "w"), "--endpoint", careless_mirror.endpoint,
                         "--quiet"])
    assert code in (0, 2)
    for s in SENTINELS:
        assert (root / s).read_text() == s, f"{s} lost with --repo {repo!r}"
    valid = re.fullmatch(r"[\w](?:[\w.-]{0,94}\w)?/[\w](?:[\w.-]{0,94}\w)?", repo, re.ASCII) and ".." not in repo \
        and "--" not in repo
    theirs = (root / "w" / ".download" / repo.replace("/", "--") / "user.txt").exists()  # a user's folder: refused
    assert (code == 0) == bool(valid and not theirs)
    if code == 0:  # converted, and only minriff's own staging folder went away
        assert (root / "w" / f"{repo.split('/')[1]}.safetensors").is_file()
        assert not (root / "w" / ".download" / repo.replace("/", "--")).exists()


def test_download_never_deletes_a_folder_minriff_did_not_make(world, tmp_path):
    to = tmp_path / "w"
    theirs = to / ".download" / "riffusion--riffusion-model-v1"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(MinriffError, match="not made by minriff"):
        download.download_and_convert(to, stream=io.StringIO())
    assert (theirs / "notes.txt").read_text() == "mine"


def test_first_run_converts_into_minriff_weights_when_it_is_a_folder(world, tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("MINRIFF_WEIGHTS", str(tmp_path / "mine"))
    fill_hf_cache(tmp_path / "hf-home" / "hub")
    out = firstrun.ensure_weights(quiet=True, stream=io.StringIO())
    assert out == tmp_path / "mine" / "riffusion-v1.safetensors"
    assert weights.find_weights() == out  # and the next run finds it there


@pytest.mark.parametrize("cached", [True, False])
def test_an_unwritable_home_is_a_clear_error(world, tmp_path, monkeypatch, capsys, cached):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MINRIFF_HOME", str(tmp_path / "a-file" / "minriff"))
    if cached:
        fill_hf_cache(tmp_path / "hf-home" / "hub")
    code = cli_main(["generate", "jazz piano solo", "-o", "jazz.wav", *FAST, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "cannot write the converted weights to" in err and "MINRIFF_HOME" in err
