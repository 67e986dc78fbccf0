"""GET /stream (WebSocket) with the tiny model, and minriff.stream.stream without a server."""
from __future__ import annotations

import base64
import io
import json
import logging
import time
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile as sf

from minriff import Riffusion
from minriff.server import ServeConfig, Server, create_app
from minriff.stream import LoopSettings, RiffLoop, stream

HOP, HOLD = 441, 2205
pytestmark = pytest.mark.usefixtures("serial_numba")


def receive(ws, kind):
    """The next message of this type (previews and queue updates may come between)."""
    while True:
        msg = json.loads(ws.receive_text())
        if msg["type"] == kind:
            return msg
        assert msg["type"] in ("preview", "queue"), msg


def wav(msg) -> np.ndarray:
    data, sr = sf.read(io.BytesIO(base64.b64decode(msg["audio"].split(",", 1)[1])), always_2d=True)
    assert sr == 44100
    return data


@contextmanager
def listen(client, server):
    """A WebSocket session that ends like a browser tab closing: the client says goodbye and the
    server's session finishes before the test client tears its event loop down."""
    with client.websocket_connect("/stream") as ws:
        before = server.listeners.finished
        yield ws
        ws.close()
        assert wait_for(lambda: server.listeners.finished > before)


def wait_for(predicate, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_listener_gets_its_clips_in_order_as_one_waveform(make_client):
    client, server = make_client()
    with client, listen(client, server) as ws:
        hello = receive(ws, "hello")
        assert hello["sample_rate"] == 44100 and "og_beat" in hello["seed_images"]
        ws.send_text(json.dumps({"type": "start", "prompt": "lofi", "seed": 7, "steps": 1, "ahead": 4}))
        clips = [receive(ws, "clip")]
        ws.send_text(json.dumps({"type": "up_next", "prompt": "jazz"}))
        assert receive(ws, "queue")["queued"] == ["jazz"]
        clips += [receive(ws, "clip") for _ in range(4)]
        assert [c["index"] for c in clips] == [0, 1, 2, 3, 4]
        assert [c["request"]["alpha"] for c in clips] == [0.25, 0.5, 0.75, 1.0, 0.25]
        assert [c["state"] for c in clips] == ["SAME_PROMPT"] * 4 + ["TRANSITION"]
        assert clips[4]["request"]["start"] == {**clips[3]["request"]["end"], "seed": 8} | {"prompt": "lofi"}
        assert clips[4]["request"]["end"]["prompt"] == "jazz"
        # pieces of one timeline: each starts where the last ended; decoded lengths as announced
        lengths = [wav(c).shape[0] for c in clips]
        assert lengths == [c["samples"] for c in clips] == [64 * HOP - HOLD] + [64 * HOP] * 4
        assert [c["start_sample"] for c in clips] == list(np.cumsum([0] + lengths[:-1]))
        h = client.get("/health").json()
        (me,) = h["listeners"]
        assert me["clips"] == 5 and me["prompt"] in ("lofi", "jazz") and me["ahead_s"] <= 5 * 0.64


def test_bad_messages_are_answered_and_the_stream_goes_on(make_client, caplog):
    client, server = make_client(max_steps=10)
    caplog.set_level(logging.INFO, logger="minriff.server")
    with client, listen(client, server) as ws:
        receive(ws, "hello")
        for text, message in (("nope", "malformed JSON"), ("[1]", "JSON object with a 'type', got an array"),
                              ('{"type": "dance"}', "unknown message type 'dance': a message's type is one of start,"),
                              ('{"type": [1]}', "unknown message type [1]"),
                              ('{"prompt": 5}', "unknown message no 'type' (fields ['prompt'])"),
                              ('{"type": "up_next", "prompt": "x"}', "start message first"),
                              ('{"type": "start", "prompt": "a", "seed_image_id": "../secret"}', "invalid seed image"),
                              ('{"type": "start", "prompt": "a", "steps": 500}', "limit of 10"),
                              ('{"type": "start", "prompt": ""}', "prompt is empty")):
            ws.send_text(text)
            err = receive(ws, "error")
            assert err["status"] == 400 and message in err["error"], (text, err)
        ws.send_bytes(b"\x00")
        assert "binary" in receive(ws, "error")["error"]
        ws.send_text(json.dumps({"type": "start", "prompt": "a", "steps": 1, "seed_image_id": "vibes", "fork": 1}))
        assert receive(ws, "clip")["request"]["seed_image_id"] == "vibes"
        assert "/stream start message: ignored unknown fields fork" in caplog.messages  # accepted, logged
        ws.send_text(json.dumps({"type": "settings", "denoising": 2}))
        assert "denoising" in receive(ws, "error")["error"]


def test_pause_position_and_a_closed_listener_frees_its_work(make_client):
    client, server = make_client(max_listeners=1)
    with client:
        with listen(client, server) as ws:
            receive(ws, "hello")
            with client.websocket_connect("/stream") as second:  # one listener only
                err = receive(second, "error")
                assert err["status"] == 503 and "1 listeners" in err["error"]
            ws.send_text(json.dumps({"type": "start", "prompt": "a", "steps": 1, "ahead": 1}))
            receive(ws, "clip")
            ws.send_text(json.dumps({"type": "position", "seconds": 0.1}))
            ws.send_text(json.dumps({"type": "pause"}))
            assert wait_for(lambda: client.get("/health").json()["listeners"][0]["paused"])
            me = client.get("/health").json()["listeners"][0]
            assert me["playhead_s"] == pytest.approx(0.1, abs=0.05)
            ws.send_text(json.dumps({"type": "resume"}))
            ws.send_text(json.dumps({"type": "settings", "steps": 50}))  # a slow clip: still running at close
            assert wait_for(lambda: (server.queue.snapshot()["running"] or {}).get("kind") == "stream")
        # the listener is gone: its running job stops at the next denoising step, nothing waits
        assert wait_for(lambda: server.queue.snapshot()["running"] is None and not server.listeners.all)
        assert server.queue.snapshot()["waiting"] == 0


def test_previews_from_taesd(tiny_weights, seed_folder, tmp_path):
    from starlette.testclient import TestClient

    from minriff.cli import main

    assert main(["init-random", "--config", "tiny", "--taesd", "-o", str(tmp_path / "taesd.safetensors")]) == 0
    riff = Riffusion.load(tiny_weights, quiet=True, taesd=str(tmp_path / "taesd.safetensors"))
    server = Server(riff, ServeConfig(seed_images=str(seed_folder), threads=1))
    client = TestClient(create_app(server))
    with client, listen(client, server) as ws:
        assert receive(ws, "hello")["previews"] is True
        ws.send_text(json.dumps({"type": "start", "prompt": "a", "steps": 4, "previews": True}))
        previews = []
        while True:
            msg = json.loads(ws.receive_text())
            if msg["type"] == "clip":
                break
            previews.append(msg)
        n = previews[0]["steps"]  # the steps img2img runs; the last one's picture is the clip itself
        assert n >= 2 and [(p["index"], p["step"]) for p in previews] == [(0, i) for i in range(1, n)]
        assert previews[0]["image"].startswith("data:image/jpeg;base64,")


def test_the_loop_without_a_server(riff, seed_folder):
    loop = RiffLoop("lofi", seed=1, settings=LoopSettings(steps=1))
    got = []
    for clip in stream(riff, loop, count=3, seed_images=str(seed_folder)):
        got.append(clip)
        if clip.index == 0:
            loop.up_next("jazz")
    assert [c.request.alpha for c in got] == [0.25, 0.5, 0.75]
    assert [c.start_sample for c in got] == [0, 64 * HOP - HOLD, 2 * 64 * HOP - HOLD]
    assert all(c.image.shape == (512, 64, 3) for c in got) and got[0].audio.dtype == np.float32
