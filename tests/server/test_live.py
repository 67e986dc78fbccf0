"""`minriff serve` as a process: its command line, and a graceful stop on SIGTERM (the running
request finishes, waiting ones get 503 JSON, listeners are closed, the process ends)."""
from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from minriff.cli import main


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--port", "--seed-images", "--max-queue", "--lora", "--steps", "--scheduler", "--decoder"):
        assert flag in out
    assert main(["serve", "--max-queue", "0"]) == 2
    assert "--max-queue must be at least 1" in capsys.readouterr().err
    assert main(["serve", "--scheduler", "nope"]) == 2
    assert "unknown scheduler 'nope'" in capsys.readouterr().err


def request(seed_image_id, prompt="bells"):
    return {"alpha": 0.5, "num_inference_steps": 2, "seed_image_id": seed_image_id,
            "start": {"prompt": prompt, "seed": 1}, "end": {"prompt": "jazz", "seed": 2}}


def test_sigterm_finishes_the_running_request_and_refuses_the_rest(live_server):
    live = live_server("--shutdown-grace", 600)  # the 5.12 s request can take minutes on a crowded machine
    answers = {}

    def post(name, body):
        answers[name] = httpx.post(live.url + "/run_inference/", json=body, timeout=300)

    running = threading.Thread(target=post, args=("running", request("wide")))  # 5.12 s: the slow one
    running.start()
    end = time.monotonic() + 120
    while (live.health()["queue"]["running"] or {}).get("kind") != "http":
        assert time.monotonic() < end and running.is_alive()
        time.sleep(0.1)
    waiting = threading.Thread(target=post, args=("waiting", request("og_beat")))
    waiting.start()
    with connect(live.ws_url, open_timeout=30) as ws:
        assert json.loads(ws.recv(30))["type"] == "hello"
        ws.send(json.dumps({"type": "start", "prompt": "lofi", "steps": 1}))
        while live.health()["queue"]["waiting"] < 2:
            assert time.monotonic() < end
            time.sleep(0.1)

        live.proc.send_signal(signal.SIGTERM)
        running.join(300)
        waiting.join(60)
        assert answers["running"].status_code == 200, answers["running"].text
        assert set(answers["running"].json()) == {"image", "audio", "duration_s"}
        assert answers["waiting"].status_code == 503 and "shutting down" in answers["waiting"].json()["error"]
        with pytest.raises(ConnectionClosed):
            while True:  # the listener got no clip (its job was cancelled) and is closed
                assert json.loads(ws.recv(60))["type"] != "clip"
    code = live.proc.wait(120)
    assert code in (0, -signal.SIGTERM), live.output()  # uvicorn re-raises the signal once it has stopped
    assert "Traceback" not in live.output()


def test_a_request_outliving_the_grace_period_gets_json_not_uvicorns_plain_500(live_server):
    live = live_server("--shutdown-grace", 1)  # grace 1 s less the 1 s margin: answered at the next poll
    answers = {}
    slow = {**request("wide"), "num_inference_steps": 90}  # 512 px, 90 steps and Griffin-Lim: seconds

    def post():
        answers["running"] = httpx.post(live.url + "/run_inference/", json=slow, timeout=300)

    running = threading.Thread(target=post)
    running.start()
    end = time.monotonic() + 120
    while (live.health()["queue"]["running"] or {}).get("kind") != "http":
        assert time.monotonic() < end and running.is_alive()
        time.sleep(0.05)
    live.proc.send_signal(signal.SIGTERM)
    running.join(120)
    r = answers["running"]
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/json"), r.text
    assert "grace period" in r.json()["error"]
    assert live.proc.wait(120) in (0, -signal.SIGTERM), live.output()
    assert "Traceback" not in live.output()
