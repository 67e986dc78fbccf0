"""POST /run_inference/ as the original server (reference/riffusion.md §3.2), with the tiny model:
what the original web app sends (ints for floats, null mask, its proxy's body), missing and extra
fields, hostile ids, oversized steps; every answer JSON; every 512-px clip exactly 5.12 s of MP3."""
from __future__ import annotations

import base64
import io
import json
import logging
import threading

import pytest
import soundfile as sf
from PIL import Image

from minriff.server.jobs import Job

pytestmark = pytest.mark.usefixtures("serial_numba")


def app_request(**changes):
    """What riffusion-app-hobby's ModelInference.tsx posts (JSON.stringify of its inferenceInput):
    alpha 0 and guidance 7 are JS numbers, i.e. JSON integers; maskImageId null."""
    req = {"alpha": 0, "num_inference_steps": 1, "seed_image_id": "og_beat", "mask_image_id": None,
           "start": {"prompt": "church bells", "seed": 3, "denoising": 0.75, "guidance": 7},
           "end": {"prompt": "church bells", "seed": 4, "denoising": 0.75, "guidance": 7}}
    req.update(changes)
    return req


def decode(answer: dict):
    assert set(answer) == {"image", "audio", "duration_s"}
    mime, payload = answer["audio"].split(",", 1)
    assert mime == "data:audio/mpeg;base64"
    wave, sr = sf.read(io.BytesIO(base64.b64decode(payload)))  # libsndfile's mpg123: gapless (LAME tag)
    mime, payload = answer["image"].split(",", 1)
    assert mime == "data:image/jpeg;base64"
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert image.format == "JPEG" and sr == 44100
    return wave, image


@pytest.fixture(scope="module")
def served(make_client):
    client, server = make_client(max_steps=50)
    with client:
        yield client, server


def test_the_web_apps_request_through_its_proxy(served):
    client, _ = served
    # pages/api/server.js forwards the body string with Content-Type: application/json
    r = client.post("/run_inference/", content=json.dumps(app_request()), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    wave, image = decode(r.json())
    assert image.size == (64, 512)
    assert wave.shape == (64 * 441,)  # every column 10 ms: 0.64 s
    assert r.json()["duration_s"] == 0.64


@pytest.mark.parametrize("body,headers,path", [
    (app_request(alpha=1, mask_image_id=""), {}, "/run_inference/"),  # no content type; maskImageId=none
    ({"alpha": 0.5, "start": {"prompt": "a", "seed": 1}, "end": {"prompt": "b", "seed": 2},
      "num_inference_steps": 1}, {"Content-Type": "text/plain;charset=UTF-8"}, "/run_inference"),  # defaults
    (app_request(extra="ignored", start={"prompt": "a", "seed": 1, "transitionCounter": 3, "guidance": 7.5,
                                         "negative_prompt": "drums"},
                 mask_image_id="mask_top_third_75", seed_image_id="vibes"), {}, "/run_inference/"),
])
def test_variants_the_original_accepts_or_should(served, body, headers, path):
    client, _ = served
    r = client.post(path, content=json.dumps(body), headers=headers)
    assert r.status_code == 200, r.text
    wave, image = decode(r.json())
    assert wave.shape == (64 * 441,) and image.size == (64, 512)


def test_unknown_fields_are_ignored_and_logged_known_ones_still_checked(served, caplog):
    client, _ = served
    body = app_request(extra="x", start={"prompt": "a", "seed": 1, "transitionCounter": 3})
    with caplog.at_level(logging.INFO, logger="minriff.server"):
        r = client.post("/run_inference/", json=body)
    assert r.status_code == 200, r.text
    logged = [m for m in caplog.messages if "ignored unknown fields" in m]
    assert logged == ["/run_inference/: ignored unknown fields extra, start.transitionCounter"]
    r = client.post("/run_inference/", json={**body, "alpha": 2})
    assert r.status_code == 400 and "alpha" in r.json()["error"]


def test_every_512_px_clip_is_exactly_5_12_s_of_mp3(served):
    client, _ = served
    lengths = set()
    for alpha, prompt in ((0.25, "jazz"), (1, "rock")):
        r = client.post("/run_inference/", json=app_request(alpha=alpha, seed_image_id="wide",
                                                            end={"prompt": prompt, "seed": 9}))
        assert r.status_code == 200, r.text
        wave, image = decode(r.json())
        assert image.size == (512, 512) and r.json()["duration_s"] == 5.12
        lengths.add(wave.shape[0])
    assert lengths == {512 * 441}  # 225,792 samples = 196 MP3 frames of 1152, decoded gaplessly


ID_ERROR = "is not the id of a PNG in the seed-image folders"


@pytest.mark.parametrize("body,status,message", [
    ("{oops", 400, "malformed JSON"),
    ("[]", 400, "must be a JSON object, got an array"),
    ('"jazz"', 400, "must be a JSON object, got a string"),
    ("null", 400, "must be a JSON object, got null"),
    ("[" * 60000, 400, "nests 60000 levels deep"),  # refused before the parser recurses
    (b"\xff\xfe{}", 400, "not UTF-8"),
    ('{"alpha": 1e999, "start": {"prompt": "a", "seed": 1}, "end": {"prompt": "b", "seed": 2}}', 400, "1e999"),
    (json.dumps({"alpha": 0.5, "end": {"prompt": "b", "seed": 1}}), 400, "missing required field 'start'"),
    (json.dumps(app_request(alpha="0.5")), 400, "'alpha' must be a number"),
    (json.dumps(app_request(start={"prompt": "a", "seed": 1.5})), 400, "'seed' must be an integer"),
    (json.dumps(app_request(num_inference_steps=500)), 400, "above this server's limit of 50"),
    (json.dumps(app_request(num_inference_steps=5000)), 400, "integer from 1 to 1,000, got 5000"),
    (json.dumps(app_request(num_inference_steps=0)), 400, "integer from 1 to 1,000, got 0"),
    (json.dumps(app_request(start={"prompt": "", "seed": 1})), 400, "start prompt is empty"),
    (json.dumps(app_request(start={"prompt": "a", "seed": 1, "denoising": 0})), 400, "start denoising"),
    (json.dumps(app_request(lora={"x": 1})), 400, "unknown LoRA 'x'"),
    (json.dumps(app_request(seed_image_id="nope")), 400, ID_ERROR),
    (json.dumps(app_request(seed_image_id="../secret")), 400, ID_ERROR),
    (json.dumps(app_request(seed_image_id="/etc/passwd")), 400, ID_ERROR),
    (json.dumps(app_request(seed_image_id="outside_link")), 400, ID_ERROR),
    (json.dumps(app_request(seed_image_id=7)), 400, "must be a string"),
    (json.dumps(app_request(mask_image_id="../../secret")), 400, "invalid mask image"),
    ("x" * 70000, 413, "the limit is 65536"),
])
def test_bad_requests_get_json_errors(served, body, status, message):
    client, _ = served
    r = client.post("/run_inference/", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["status"] == status and message in r.json()["error"], r.json()


def test_forbidden_and_missing_ids_get_the_same_answer(served):
    client, _ = served
    answers = []
    for image_id in ("nope", "outside_link", "secret"):
        r = client.post("/run_inference/", json=app_request(seed_image_id=image_id))
        answers.append(r.json()["error"].replace(repr(image_id), "ID"))
    assert len(set(answers)) == 1


def test_other_routes_and_methods_answer_json_and_cors_is_open(served):
    client, _ = served
    for method, path, status in (("GET", "/run_inference/", 405), ("GET", "/nope", 404), ("DELETE", "/health", 405)):
        r = client.request(method, path)
        assert r.status_code == status and r.json()["status"] == status
    pre = client.options("/run_inference/", headers={"Origin": "http://localhost:3000",
                                                      "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "*"
    r = client.post("/run_inference/", content="{oops", headers={"Origin": "http://localhost:3000"})
    assert r.headers["access-control-allow-origin"] == "*"
    # ids that resolve (the symlink out of the folder does not)
    assert client.get("/seed_images").json()["seed_images"] == ["mask_top_third_75", "og_beat", "vibes", "wide"]


def test_a_full_queue_answers_503_json(make_client):
    client, server = make_client(max_queue=1)
    with client:
        release = threading.Event()
        started = threading.Event()

        def hold(job):
            started.set()
            release.wait(30)
        server.queue.submit(Job("other", hold))
        assert started.wait(30)
        server.queue.submit(Job("other", lambda job: None))  # waits: the queue (1) is full now
        r = client.post("/run_inference/", json=app_request())
        assert r.status_code == 503 and "queue is full" in r.json()["error"]
        health = client.get("/health").json()
        assert health["queue"]["waiting"] == 1 and health["queue"]["running"]["owner"] == "other"
        release.set()


def test_health_and_shutdown(make_client):
    client, server = make_client()
    with client:
        h = client.get("/health").json()
        assert h["status"] == "ok" and h["model"] == "tiny.safetensors" and h["backend"] == "cpu"
        assert h["queue"]["waiting"] == 0 and h["listeners"] == [] and h["peak_rss_mb"] > 0
        server.begin_shutdown()
        r = client.post("/run_inference/", json=app_request())
        assert r.status_code == 503 and "shutting down" in r.json()["error"]
        assert client.get("/health").json()["status"] == "shutting down"
