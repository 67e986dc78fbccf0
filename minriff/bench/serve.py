"""`minriff bench serve`: what a listener of `minriff serve` gets, per sampler setting: time to first
audio (WebSocket start message -> first clip message) and clips per minute after that, through the
real Starlette app (in-process transport, one listener, the web app's loop: og_beat, denoising 0.75).

Settings (`minriff serve --preset NAME`, the server imposing them on every request):
  quality    the original's sampling: PNDM, the web app's 50 steps (38 run at denoising 0.75),
             guidance 7, full VAE
  dpmpp2m    DPM-Solver++ 20 steps (15 run), guidance 7, full VAE (`--scheduler dpmpp2m --steps 20`)
  fast       LCM 4 steps (3 run), guidance 1 (batch 1), DeepCache (interval 2, branch 0), TAESD
             encode + decode  - wants an LCM-LoRA for good images (timing does not depend on it)
Weights: --weights FILE (e.g. `minriff init-random --config sd15`), else random sd15 shapes in memory;
TAESD: beside the weights, $MINRIFF_TAESD, else random TAESD shapes. --quick: the tiny model, 64-px
clips, few steps (a smoke run). Realtime factor = seconds per clip / clip length (<= 1 keeps up)."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from minriff import presets
from minriff.bench.common import emit, peak_rss_mb

SETTINGS = {  # name -> (scheduler, steps (None: the request's), guidance override, autoencoder, sampling)
    "quality": ("pndm", None, None, "full", {}),
    "dpmpp2m": ("dpmpp2m", 20, None, "full", {}),
    "fast": ("lcm", presets.options("fast")["steps"], presets.options("fast")["guidance"], "taesd",
             {"cache_interval": presets.FAST_CACHE_INTERVAL, "cache_branch": presets.FAST_CACHE_BRANCH}),
}
REQUEST_STEPS, REQUEST_GUIDANCE = 50, 7.0  # what the web app asks


def _seed_folder(width: int) -> str:
    """og_beat from the shared reference data when present, else a synthetic beat-grid spectrogram."""
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="minriff-bench-seeds-"))
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "seed_images" / "og_beat.png"
    if shared.is_file() and width == 512:
        Image.open(shared).save(folder / "og_beat.png")
    else:
        y, x = np.mgrid[0:512, 0:width]
        beat = np.exp(-(x % 64) / 6.0) * np.exp(-y / 300.0)  # a hit every 64 px (0.64 s)
        Image.fromarray((235 - 120 * beat).astype(np.uint8), mode="L").save(folder / "og_beat.png")
    return str(folder)


def _riff(args, quick: bool):
    from minriff.models import random_models
    from minriff.models.init import random_taesd
    from minriff.pipeline import Riffusion
    from minriff.weights.taesd import find_taesd

    taesd = find_taesd(beside=args.weights) if args.weights else None
    taesd = taesd or random_taesd("tiny" if quick else "taesd")
    if args.weights:
        return Riffusion.load(args.weights, quiet=True, taesd=taesd), args.weights
    riff = Riffusion(random_models("tiny" if quick else "sd15"), quiet=True, taesd=taesd)
    return riff, "random tiny" if quick else "random sd15 shapes"


def _listen(riff, folder, setting, clips: int, quick: bool) -> dict:
    from starlette.testclient import TestClient

    from minriff.server import ServeConfig, Server, create_app

    scheduler, steps, guidance, coder, sampling = setting
    riff.scheduler, riff.decoder, riff.encoder = scheduler, coder, coder
    server = Server(riff, ServeConfig(seed_images=folder, max_steps=100, steps=2 if quick else steps,
                                      guidance=guidance, sampling=sampling))
    client = TestClient(create_app(server))
    times = []
    with client, client.websocket_connect("/stream") as ws:
        json.loads(ws.receive_text())  # hello
        t0 = time.perf_counter()
        ws.send_text(json.dumps({"type": "start", "prompt": "lofi hip hop beat", "seed": 42, "ahead": 4,
                                 "steps": REQUEST_STEPS, "guidance": REQUEST_GUIDANCE}))
        while len(times) < clips:
            msg = json.loads(ws.receive_text())
            if msg["type"] == "clip":
                times.append((time.perf_counter() - t0, msg["samples"] / 44100, msg["generate_s"]))
            elif msg["type"] == "error":
                raise RuntimeError(msg["error"])
        ws.close()
        while server.listeners.all:
            time.sleep(0.05)
    first = times[0][0]
    per_clip = (times[-1][0] - first) / (len(times) - 1) if len(times) > 1 else times[0][2]
    clip_s = times[-1][1]
    return {"first_audio_s": round(first, 2), "s_per_clip": round(per_clip, 2),
            "clips_per_min": round(60.0 / per_clip, 2), "realtime_factor": round(per_clip / clip_s, 2),
            "clip_s": round(clip_s, 2), "clips": len(times)}


def run(args) -> int:
    quick = bool(getattr(args, "quick", False))
    clips = max(2, args.repeat or (2 if quick else 3))
    names = list(SETTINGS) if not getattr(args, "setting", None) else args.setting
    riff, source = _riff(args, quick)
    folder = _seed_folder(64 if quick else 512)
    rows = []
    for name in names:
        scheduler, steps, guidance, coder, sampling = SETTINGS[name]
        row = {"setting": name, "scheduler": scheduler, "steps": steps or REQUEST_STEPS,
               "guidance": guidance or REQUEST_GUIDANCE, "autoencoder": coder,
               "deepcache": f"{sampling['cache_interval']}/{sampling['cache_branch']}" if sampling else "off"}
        row.update(_listen(riff, folder, SETTINGS[name], clips, quick))
        rows.append(row)
    size = "quick: tiny model, 64-px clips" if quick else "512-px clips"
    emit(rows, args.json, f"minriff serve, one listener ({size})",
         {"weights": source, "backend": riff.backend, "peak_rss_mb": round(peak_rss_mb(), 1)})
    return 0
