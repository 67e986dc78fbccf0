"""`minriff download` against a local HTTP server on 127.0.0.1 serving a fake
`riffusion/riffusion-model-v1` with the real layout (the tiny diffusers fixture): Range resume after
a cut-off transfer, resume of a `.part` left by an earlier run, size and sha256 checks, HTTP errors."""
from __future__ import annotations

import hashlib
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from minriff import weights
from minriff.cli import main as cli_main
from minriff.errors import DownloadError
from minriff.weights import download
from minriff.weights.convert import convert
from support import FIXTURES

FOLDER = FIXTURES / "weights" / "tiny-diffusers"
REPO = "riffusion/riffusion-model-v1"
BIG = "unet/diffusion_pytorch_model.bin"


class FakeHub:
    """Serves /<repo>/resolve/main/<path> from FOLDER with Range support; `.bin` files answer with a
    302 to /cdn/<path> carrying X-Linked-Etag/X-Linked-Size, as the Hub does for LFS files.
    `cut[path] = n` makes the next transfer of `path` stop after n bytes (then the connection closes)."""

    def __init__(self):
        self.files = {p: (FOLDER / p).read_bytes() for p in download.FILES}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.send_sha = True
        self.corrupt: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                prefix, cdn = f"/{REPO}/resolve/main/", "/cdn/"
                if self.path.startswith(prefix):
                    path = self.path[len(prefix):]
                    if path.endswith(".bin") and path in hub.files:  # LFS files: like the Hub, redirect
                        body = hub.files[path]
                        self.send_response(302)
                        self.send_header("Location", cdn + path)
                        if hub.send_sha:
                            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(body).hexdigest()}"')
                        self.send_header("X-Linked-Size", str(len(body)))
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                elif self.path.startswith(cdn):
                    path = self.path[len(cdn):]
                else:
                    path = None
                hub.requests.append((path, self.headers.get("Range")))
                if path not in hub.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = hub.files[path]
                if path in hub.corrupt:
                    body = bytes([body[0] ^ 1]) + body[1:]
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", '"5d41402abc4b2a76b9719d911017c592"')  # a CDN etag, not a sha256
                self.end_headers()
                payload = body[start:]
                if path in hub.cut:
                    payload = payload[: hub.cut.pop(path)]
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub():
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
