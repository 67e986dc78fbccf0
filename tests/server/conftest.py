"""What the server tests share: a tiny random model (real image size, noise for music), a seed-image
folder (narrow images keep clips short: 64 px = 0.64 s; `wide` is the original's 512 px), and the app
on Starlette's TestClient. Tiny models run on one thread (see tests/conftest.py: serial_numba)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minriff.cli import main


def seed_png(path, width=64, level=170):
    y, x = np.mgrid[0:512, 0:width]
    g = (level + 50 * np.sin(x / 4.0) * np.cos(y / 19.0)).astype(np.uint8)
    Image.fromarray(g, mode="L").save(path)
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    assert main(["init-random", "--config", "tiny", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def seed_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    folder = root / "seed_images"
    folder.mkdir()
    seed_png(folder / "og_beat.png")
    seed_png(folder / "vibes.png", level=150)
    seed_png(folder / "wide.png", width=512)
    mask = np.full((512, 64), 255, np.uint8)
    mask[:180] = 192
    Image.fromarray(mask).save(folder / "mask_top_third_75.png")
    seed_png(root / "secret.png")  # outside the folder: never reachable by id
    (folder / "outside_link.png").symlink_to(root / "secret.png")
    return folder


@pytest.fixture(scope="session")
def riff(tiny_weights):
    from minriff import Riffusion

    return Riffusion.load(tiny_weights, quiet=True)


@pytest.fixture(scope="session")
def make_client(riff, seed_folder):
    """make_client(**ServeConfig fields) -> (TestClient (use it in a with block), Server)."""
    from starlette.testclient import TestClient

    from minriff.server import ServeConfig, Server, create_app

    def make(**config):
        server = Server(riff, ServeConfig(seed_images=str(seed_folder), threads=1, **config))
        return TestClient(create_app(server)), server
    return make


class Live:
    """A `minriff serve` process on a free loopback port."""

    def __init__(self, proc, port, log):
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/stream"

    def health(self) -> dict:
        import httpx

        return httpx.get(self.url + "/health", timeout=30).json()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def live_server(tiny_weights, seed_folder, tmp_path):
    """start(*extra_args) -> Live: `minriff serve` with the tiny model on one thread; stopped after the test."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    started = []

    def start(*extra, timeout=180):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = tmp_path / f"serve-{port}.log"
        cmd = [sys.executable, "-m", "minriff.cli", "serve", "--weights", str(tiny_weights), "--seed-images",
               str(seed_folder), "--port", str(port), "--threads", "1", "--log-level", "warning", *map(str, extra)]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "NUMBA_NUM_THREADS": "1"})
        live = Live(proc, port, log)
        started.append(live)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert proc.poll() is None, f"minriff serve exited {proc.returncode}:\n{live.output()}"
            try:
                if httpx.get(live.url + "/health", timeout=5).status_code == 200:
                    return live
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError(f"minriff serve did not come up in {timeout} s:\n{live.output()}")

    yield start
    for live in started:
        if live.proc.poll() is None:
            live.proc.terminate()
            try:
                live.proc.wait(60)
            except subprocess.TimeoutExpired:
                live.proc.kill()
                live.proc.wait()
