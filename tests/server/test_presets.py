"""`minriff serve --preset quality|fast` and the sampling settings a server imposes on every request
(steps, guidance, DeepCache, decoder), and `--lora` through the command line's shared helper."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from minriff import presets
from minriff.cli import main
from minriff.riffuse import InferenceInput
from minriff.stream import load_image_id, render

pytestmark = pytest.mark.usefixtures("serial_numba")


@pytest.fixture
def started(monkeypatch):
    """Run `minriff serve ...` up to the point where it would listen: (riff, config, loras)."""
    import minriff.server

    seen = {}

    def fake_serve(riff, config, host, port, loras, log_level):
        seen.update(riff=riff, config=config, loras=loras)
    monkeypatch.setattr(minriff.server, "serve", fake_serve)

    def start(*argv):
        code = main(["serve", *argv])
        return code, seen
    return start


def test_fast_preset_sets_every_request_and_typed_flags_win(started, tiny_weights, capsys):
    code, seen = started("--weights", str(tiny_weights), "--preset", "fast")
    assert code == 0
    fast = presets.options("fast", "riffuse")
    config, riff = seen["config"], seen["riff"]
    assert config.steps == fast["steps"] == 4 and config.guidance == presets.options("fast")["guidance"] == 1.0
    assert config.sampling == {"cache_interval": fast["cache_interval"], "cache_branch": fast["cache_branch"]}
    assert riff.scheduler == "lcm"
    # the tiny model has no TAESD beside it: the preset falls back to the full VAE and says so
    assert riff.decoder == "full" and "no TAESD weights found" in capsys.readouterr().err

    code, seen = started("--weights", str(tiny_weights), "--preset", "fast", "--steps", "6", "--guidance", "2",
                         "--cache-branch", "1", "--scheduler", "tcd")
    config, riff = seen["config"], seen["riff"]
    assert code == 0 and config.steps == 6 and config.guidance == 2.0 and riff.scheduler == "tcd"
    assert config.sampling == {"cache_interval": fast["cache_interval"], "cache_branch": 1}


def test_fast_preset_with_taesd_encodes_and_decodes_with_it(started, tiny_weights, tmp_path, capsys):
    taesd = tmp_path / "taesd.safetensors"
    assert main(["init-random", "--config", "tiny", "--taesd", "-o", str(taesd)]) == 0
    code, seen = started("--weights", str(tiny_weights), "--taesd", str(taesd), "--preset", "fast")
    assert code == 0 and (seen["riff"].decoder, seen["riff"].encoder) == ("taesd", "taesd")
    assert "no TAESD" not in capsys.readouterr().err
    code, seen = started("--weights", str(tiny_weights), "--taesd", str(taesd), "--preset", "fast",
                         "--decoder", "full")
    assert code == 0 and (seen["riff"].decoder, seen["riff"].encoder) == ("full", "full")


def test_quality_preset_and_no_preset_keep_the_requests_own_sampling(started, tiny_weights):
    for argv in (["--preset", "quality"], []):
        code, seen = started("--weights", str(tiny_weights), *argv)
        config = seen["config"]
        assert code == 0 and config.steps is None and config.guidance is None and config.sampling == {}
        assert seen["riff"].scheduler is None and seen["riff"].decoder == "full"


@pytest.mark.parametrize("argv, message", [
    (["--cache-branch", "1"], "--cache-branch has no effect without --cache-interval or --preset"),
    (["--guidance", "nan"], "guidance"),
    (["--preset", "fast", "--lora", "missing.safetensors"], "LoRA file missing.safetensors not found"),
    (["--cache-interval", "0"], "interval"),
])
def test_bad_settings_are_refused_before_loading(started, tiny_weights, capsys, argv, message):
    code, seen = started("--weights", str(tiny_weights), *argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and not seen


def test_lora_goes_through_the_shared_helper(started, tiny_weights):
    from support import FIXTURES

    lora = FIXTURES / "lora" / "kohya.safetensors"
    code, seen = started("--weights", str(tiny_weights), "--lora", f"{lora}:0.5")
    assert code == 0 and seen["loras"] == {next(iter(seen["loras"])): 0.5}
    assert [i.name for i in seen["riff"].loras] == list(seen["loras"])


def test_server_settings_are_what_the_request_runs(make_client, riff, seed_folder):
    """A request asking guidance 7 and 50 steps, on a server fixed at 2 steps, guidance 1 and
    DeepCache: the answer's image is riffuse run directly with those settings, and differs from the
    request's own guidance."""
    body = {"alpha": 0.25, "num_inference_steps": 50, "seed_image_id": "og_beat", "mask_image_id": None,
            "start": {"prompt": "church bells", "seed": 3, "denoising": 0.75, "guidance": 7},
            "end": {"prompt": "jazz", "seed": 4, "denoising": 0.75, "guidance": 7}}
    sampling = {"cache_interval": 2, "cache_branch": 0}
    client, _ = make_client(steps=2, guidance=1.0, sampling=sampling)
    with client:
        r = client.post("/run_inference/", json=body)
    assert r.status_code == 200, r.text
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["image"].split(",", 1)[1]))).convert("RGB"))

    req = InferenceInput.from_dict(body)
    start, end = (type(req.start)(**{**e.__dict__, "guidance": 1.0}) for e in (req.start, req.end))
    seed = load_image_id("og_beat", "seed image", str(seed_folder))
    direct = riff.riffuse(start, end, 0.25, seed, steps=2, **sampling)
    own = render(riff, req, str(seed_folder), steps=2, **sampling)  # the request's guidance 7
    jpeg = np.asarray(Image.open(_jpeg(direct)).convert("RGB"))
    assert np.abs(got.astype(int) - jpeg.astype(int)).max() == 0
    assert np.abs(own.astype(int) - direct.astype(int)).max() > 0


def _jpeg(image) -> io.BytesIO:
    from minriff.stream import JPEG_QUALITY

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY)
    buf.seek(0)
    return buf
