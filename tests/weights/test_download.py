"""`minriff download` against a local HTTP server on 127.0.0.1 serving a fake
`riffusion/riffusion-model-v1` with the real layout (the tiny diffusers fixture, `support.fakehub`):
Range resume after a cut-off transfer, resume of a `.part` left by an earlier run, size and sha256
checks, HTTP errors, the Hugging Face variables (HF_ENDPOINT, HF_TOKEN, offline), repo ids and the
staging folder."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff import weights
from minriff.cli import main as cli_main
from minriff.errors import DownloadError, InputError
from minriff.weights import download
from minriff.weights import hub as hf
from minriff.weights.convert import convert
from support import oracle
from support.fakehub import FOLDER, FakeHub

REPO = "riffusion/riffusion-model-v1"
BIG = "unet/diffusion_pytorch_model.bin"


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.delenv("MINRIFF_OFFLINE")  # the test session is offline (conftest); this hub is local
    h = FakeHub()
    yield h
    h.close()


def test_download_resumes_a_cut_transfer_and_converts(tmp_path, hub):
    size = len(hub.files[BIG])
    hub.cut[BIG] = size // 3
    log = io.StringIO()
    out = download.download_and_convert(tmp_path / "weights", endpoint=hub.endpoint, timeout=10, stream=log)
    assert out == tmp_path / "weights" / "riffusion-v1.safetensors"
    big = [r for p, r in hub.requests if p == BIG]
    assert big == [None, f"bytes={size // 3}-"]  # the second request resumed where the first stopped
    assert "resuming" in log.getvalue() and "%" in log.getvalue()
    assert not (tmp_path / "weights" / ".download").exists()  # removed after a successful conversion
    direct = tmp_path / "direct.safetensors"
    convert(FOLDER, direct, log=lambda m: None)
    a, b = weights.WeightsFile(out), weights.WeightsFile(direct)
    assert list(a.tensors) == list(b.tensors)
    assert all(np.array_equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert {p for p, _ in hub.requests} == set(download.FILES)  # nothing else (no .ckpt, no safety checker)


def test_resume_from_a_part_file_left_by_an_earlier_run(tmp_path, hub):
    folder = tmp_path / "dl"
    dest = folder / BIG
    dest.parent.mkdir(parents=True)
    body = hub.files[BIG]
    dest.with_name(dest.name + ".part").write_bytes(body[:1000])
    download.download_repo(folder, hub.endpoint, files=[BIG], stream=io.StringIO())
    assert hub.requests == [(BIG, "bytes=1000-")]
    assert dest.read_bytes() == body and not dest.with_name(dest.name + ".part").exists()
    download.download_repo(folder, hub.endpoint, files=[BIG], stream=io.StringIO())
    assert len(hub.requests) == 1  # complete files are not fetched again


def test_repeated_cutoffs_give_up_with_a_resumable_error(tmp_path, hub):
    class AlwaysCut(dict):
        def pop(self, key, *default):
            return 100
    hub.cut = AlwaysCut({BIG: 100})
    with pytest.raises(DownloadError, match="run again to resume"):
        download.download_repo(tmp_path, hub.endpoint, files=[BIG], retries=2, stream=io.StringIO())
    part = tmp_path / (BIG + ".part")
    assert part.stat().st_size == 300  # three attempts of 100 bytes each, appended
    assert part.read_bytes() == hub.files[BIG][:300]


def test_checksum_mismatch_is_refused(tmp_path, hub):
    hub.corrupt.add(BIG)
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download.download_repo(tmp_path, hub.endpoint, files=[BIG], stream=io.StringIO())
    assert not (tmp_path / BIG).exists() and not (tmp_path / (BIG + ".part")).exists()


def test_http_errors(tmp_path, hub):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download.download_repo(tmp_path, hub.endpoint, files=["safety_checker/pytorch_model.bin"], stream=io.StringIO())
    with pytest.raises(DownloadError, match="HTTP 404"):
        download.download_repo(tmp_path, hub.endpoint, repo="someone/else", files=["model_index.json"],
                               stream=io.StringIO())


def test_unreachable_endpoint(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download.download_repo(tmp_path, f"http://127.0.0.1:{port}", files=["model_index.json"], retries=1,
                               stream=io.StringIO())


def test_cli(tmp_path, hub, capsys):
    rc = cli_main(["download", "--to", str(tmp_path / "w"), "--endpoint", hub.endpoint, "--keep", "--dtype", "fp32"])
    assert rc == 0
    assert (tmp_path / "w" / ".download" / "riffusion--riffusion-model-v1" / BIG).exists()
    wf = weights.WeightsFile(tmp_path / "w" / "riffusion-v1.safetensors")
    assert wf.component("unet").dtype_name("conv_in.weight") == "F32"


# ----------------------------------------------------------------------------- the Hugging Face variables


def test_hf_endpoint_is_the_default_endpoint(tmp_path, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint + "/")
    assert cli_main(["download", "--to", str(tmp_path / "w"), "--quiet"]) == 0
    assert (tmp_path / "w" / "riffusion-v1.safetensors").is_file()
    assert {p for p, _ in hub.requests} == set(download.FILES)


def test_token_goes_to_the_hub_and_never_to_the_cdn(tmp_path, hub, monkeypatch):
    hub.token = "hf_secret"
    with pytest.raises(DownloadError, match="401.*HF_TOKEN"):
        download.download_repo(tmp_path / "a", hub.endpoint, files=["model_index.json"], stream=io.StringIO())
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    download.download_and_convert(tmp_path / "w", hub.endpoint, stream=io.StringIO(), quiet=True)
    assert (tmp_path / "w" / "riffusion-v1.safetensors").is_file()
    on_hub = [auth for role, _, auth in hub.seen if role == "hub"]
    on_cdn = [auth for role, _, auth in hub.seen if role == "cdn"]
    assert on_cdn and on_hub[-len(download.FILES):] == ["Bearer hf_secret"] * len(download.FILES)
    assert on_cdn == [None] * len(on_cdn)  # the redirect to another origin drops it


def test_token_file_is_read_when_no_variable_is_set(tmp_path, hub, monkeypatch):
    hub.token = "hf_from_file"
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text("hf_from_file\n")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    download.download_and_convert(tmp_path / "w", hub.endpoint, stream=io.StringIO(), quiet=True)
    assert {auth for role, _, auth in hub.seen if role == "hub"} == {"Bearer hf_from_file"}


@pytest.mark.parametrize("var", ["MINRIFF_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_mode_refuses_to_download(tmp_path, hub, monkeypatch, capsys, var):
    monkeypatch.setenv(var, "yes")
    assert cli_main(["download", "--to", str(tmp_path / "w"), "--endpoint", hub.endpoint]) == 2
    assert f"offline mode is on ({var}=yes)" in capsys.readouterr().err
    assert hub.seen == [] and not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------- repo ids and the staging folder


@pytest.mark.parametrize("repo", ["riffusion/riffusion-model-v1", "a/b", "_x/y_", "A1.b-c/D_e.f", "o/" + "n" * 96])
def test_valid_repo_ids(repo):
    assert download.check_repo_id(repo) == repo


@pytest.mark.parametrize("repo", ["..", ".", "../x", "x/..", "a/b/c", "/abs", "a/", "/a", "name", "a--b/c",
                                  "a/b..c", "-a/b", "a/b-", "a/.b", "a/b.git", "a/" + "n" * 97, "a/b c", "a/é",
                                  "a\\b", "", None, 3])
def test_invalid_repo_ids(repo, tmp_path, hub):
    with pytest.raises(InputError, match="repository id"):
        download.check_repo_id(repo)
    with pytest.raises(InputError, match="repository id"):
        download.download_and_convert(tmp_path / "w", hub.endpoint, repo=repo, stream=io.StringIO())
    assert hub.seen == [] and not (tmp_path / "w").exists()


@pytest.mark.parametrize("endpoint", ["ftp://x", "huggingface.co", "file:///etc", "http://", "https://h/?q=1", 5])
def test_invalid_endpoints(endpoint, tmp_path):
    with pytest.raises(InputError, match="endpoint"):
        download.download_repo(tmp_path, endpoint, files=["model_index.json"], stream=io.StringIO())


def test_a_folder_minriff_did_not_make_is_never_used_or_removed(tmp_path, hub):
    staging = tmp_path / "w" / ".download" / "riffusion--riffusion-model-v1"
    staging.mkdir(parents=True)
    (staging / "mine.txt").write_text("user data")
    with pytest.raises(DownloadError, match="not made by minriff"):
        download.download_and_convert(tmp_path / "w", hub.endpoint, stream=io.StringIO())
    assert (staging / "mine.txt").read_text() == "user data" and hub.seen == []
    with pytest.raises(DownloadError, match="not minriff's staging folder"):
        download.remove_staging(staging, REPO)
    assert (staging / "mine.txt").read_text() == "user data"


def test_only_downloaded_files_are_removed_from_the_staging_folder(tmp_path, hub):
    to = tmp_path / "w"
    staging = to / ".download" / "riffusion--riffusion-model-v1"
    download.download_and_convert(to, hub.endpoint, keep=True, stream=io.StringIO(), quiet=True)
    (staging / "unet" / "notes.txt").write_text("added by the user")
    (to / ".download" / "other.txt").write_text("also theirs")
    download.remove_staging(staging, REPO)
    assert sorted(p.relative_to(to).as_posix() for p in to.rglob("*") if p.is_file()) == [
        ".download/other.txt", ".download/riffusion--riffusion-model-v1/unet/notes.txt", "riffusion-v1.safetensors"]


@pytest.mark.oracle
@settings(max_examples=500)
@given(st.one_of(st.text(alphabet="abZ09_-./ é", max_size=12),
                 st.builds(lambda a, b: f"{a}/{b}", st.text(alphabet="ab09_-.", max_size=98),
                           st.text(alphabet="ab09_-.git", max_size=98))))
def test_repo_ids_follow_huggingface_hub(repo):
    """Ours accepts exactly what huggingface_hub's validate_repo_id accepts in OWNER/NAME form."""
    validators = oracle("huggingface_hub.utils")
    try:
        validators.validate_repo_id(repo)
        theirs = repo.count("/") == 1
    except validators.HFValidationError:
        theirs = False
    try:
        ours = download.check_repo_id(repo) == repo
    except InputError:
        ours = False
    assert ours == theirs, repo


@pytest.mark.parametrize("value,off", [("1", True), ("on", True), ("Yes", True), ("TRUE", True), ("0", False),
                                       ("", False), ("false", False), ("offline", False)])
def test_offline_values_as_huggingface_hub_reads_them(monkeypatch, value, off):
    monkeypatch.delenv("MINRIFF_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert bool(hf.offline()) == off


def test_hub_paths_and_token_precedence(tmp_path, monkeypatch):
    for name in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "MINRIFF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hf.hf_hub_cache() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    assert hf.minriff_home() == tmp_path / "home" / ".cache" / "minriff"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf.hf_home() == tmp_path / "xdg" / "huggingface" and hf.minriff_home() == tmp_path / "xdg" / "minriff"
    monkeypatch.setenv("HF_HOME", "~/hf")
    assert hf.hf_hub_cache() == tmp_path / "home" / "hf" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hf.hf_hub_cache() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "new"))
    assert hf.hf_hub_cache() == tmp_path / "new"
    (tmp_path / "home" / "hf").mkdir(parents=True)
    (tmp_path / "home" / "hf" / "token").write_text("  hf_file \n")
    assert hf.token() == "hf_file"
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_old")
    assert hf.token() == "hf_old"
    monkeypatch.setenv("HF_TOKEN", "hf_new")
    assert hf.token() == "hf_new"
    monkeypatch.setenv("HF_TOKEN", "bad\ntoken")  # never a header injection
    assert hf.token() is None
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    assert hf.endpoint() == "https://mirror.example"
