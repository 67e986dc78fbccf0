"""`GET /stream` (WebSocket): the web app's loop run on the server for one listener.

Protocol (JSON text messages both ways):

client -> server
  {"type": "start", "prompt": "...", optional: "seed", "denoising", "guidance", "steps", "seed_image_id",
   "mask_image_id", "negative_prompt", "alpha_velocity", "ahead" (clips, 1-4), "previews" (bool)}
  {"type": "up_next", "prompt": "..."}        queue a prompt: the loop morphs there next cycle
  {"type": "settings", <any LoopSettings field>}   from the next clip on
  {"type": "position", "seconds": s}          audio played so far on the stream's timeline
  {"type": "pause"} / {"type": "resume"}
server -> client
  {"type": "hello", "sample_rate", "seed_images", "previews", "steps", "max_steps", "model"}
  {"type": "clip", "index", "state", "request", "image" (JPEG data URL), "audio" (16-bit WAV data URL),
   "start_sample", "samples", "duration_s", "generate_s"}     in order, index 0, 1, 2, ...
  {"type": "preview", "index", "step", "steps", "image"}       TAESD's look at the latents, if asked
  {"type": "error", "status", "error"}        a refused message (the stream goes on) or a refusal (then closed)

Clips are pieces of one continuous waveform (audio.seamless): play them back to back, no gap, no
click. Pacing: a clip is generated while the listener has fewer than `ahead` clips of audio beyond
its playhead. The playhead is what the client reports (`position`), else the wall clock since
the first clip was sent (a client that does not report is assumed to play in real time); a paused
listener's playhead stands still, so its generation stops when its buffer is full. A listener
that disconnects has its waiting or running job dropped (FairQueue.cancel_owner).
"""
from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import time

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from minriff import values
from minriff.audio import io as audio_io
from minriff.audio.seamless import SeamlessAudio
from minriff.errors import InputError, MinriffError
from minriff.riffuse import available_image_ids, data_url, resolve_image_id
from minriff.server.jobs import Cancelled, Job
from minriff.stream import SAMPLE_RATE, LoopSettings, RiffLoop, render

MAX_MESSAGE = 16 * 1024
MAX_AHEAD = 4
PREVIEW_BACKLOG = 4  # previews waiting to be sent beyond which new ones are dropped
_ids = itertools.count(1)
log = logging.getLogger("minriff.server")
_SETTINGS = set(LoopSettings.__dataclass_fields__)
MESSAGE_FIELDS = {  # what each message type reads; anything else is ignored (and logged), as on /run_inference/
    "start": {"type", "prompt", "seed", "alpha_velocity", "ahead", "previews"} | _SETTINGS,
    "settings": {"type", "ahead", "previews"} | _SETTINGS,
    "up_next": {"type", "prompt"}, "position": {"type", "seconds"}, "pause": {"type"}, "resume": {"type"}}


def _jpeg(image, quality=75) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return data_url("image/jpeg", buf.getvalue())


class Listener:
    def __init__(self, websocket: WebSocket):
        self.id = f"stream-{next(_ids)}"
        self.ws = websocket
        self.loop: RiffLoop | None = None
        self.audio = SeamlessAudio()
        self.ahead = 2
        self.previews = False
        self.clips = 0
        self.samples = 0
        self.paused = False
        self.position: float | None = None  # last reported playhead (s) and when it came
        self.position_at = 0.0
        self.first_sent_at: float | None = None
        self.paused_for = 0.0  # wall-clock pause time before the first report (for the estimate)
        self.paused_at: float | None = None
        self.wake = asyncio.Event()
        self.out: asyncio.Queue = asyncio.Queue()
        self.connected_at = time.monotonic()
        self.generating = False
        self.clip_s = 5.12  # the last clip's length: `ahead` counts clips of it

    def wants_more(self) -> bool:
        return self.loop is not None and not self.paused and self.ahead_s() < self.ahead * self.clip_s - 0.01

    def playhead(self) -> float:
        now = time.monotonic()
        if self.position is not None:
            return self.position + (0.0 if self.paused else now - self.position_at)
        if self.first_sent_at is None:
            return 0.0
        paused = self.paused_for + (now - self.paused_at if self.paused_at is not None else 0.0)
        return max(0.0, now - self.first_sent_at - paused)

    def ahead_s(self) -> float:
        return self.samples / SAMPLE_RATE - self.playhead()

    def snapshot(self) -> dict:
        loop = self.loop
        return {"id": self.id, "clips": self.clips, "sent_s": round(self.samples / SAMPLE_RATE, 2),
                "playhead_s": round(self.playhead(), 2), "ahead_s": round(self.ahead_s(), 2),
                "paused": self.paused, "generating": self.generating,
                "state": loop.state if loop else None, "prompt": loop.prompt if loop else None,
                "alpha": loop.alpha if loop else None, "queued_prompts": len(loop.queued) if loop else 0}


class Listeners:
    def __init__(self, server):
        self.server = server
        self.all: dict[str, Listener] = {}
        self.finished = 0  # sessions that ended on their own (not cancelled)

    def snapshot(self) -> list[dict]:
        return [listener.snapshot() for listener in list(self.all.values())]

    async def close_all(self):
        for listener in list(self.all.values()):
            listener.wake.set()
            if listener.ws.application_state == WebSocketState.CONNECTED:
                try:
                    await listener.ws.close(code=1001, reason="server shutting down")
                except (RuntimeError, OSError):
                    pass


def _settings_from(msg: dict, server) -> dict:
    fields = {k: msg[k] for k in LoopSettings.__dataclass_fields__ if k in msg}
    if "steps" in fields and server.config.steps is None and isinstance(fields["steps"], int) \
            and fields["steps"] > server.config.max_steps:
        raise InputError(f"steps {fields['steps']} is above this server's limit of {server.config.max_steps}")
    for key, what in (("seed_image_id", "seed image"), ("mask_image_id", "mask image")):
        if fields.get(key):
            resolve_image_id(fields[key], what, server.config.seed_images)
    return fields


def handle(listener: Listener, msg: dict, server) -> dict | None:
    """Apply one client message (InputError if it is refused); returns a message to answer with.
    Unknown fields are ignored and logged (as on /run_inference/); known ones are checked."""
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in MESSAGE_FIELDS:  # str first: {"type": [1]} is unhashable
        what = f"type {values.show(kind)}" if "type" in msg else f"no 'type' (fields {values.show(sorted(msg))})"
        raise InputError(f"unknown message {what}: a message's type is one of {', '.join(MESSAGE_FIELDS)}")
    ignored = sorted(set(msg) - MESSAGE_FIELDS[kind])
    if ignored:
        log.info("/stream %s message: ignored unknown fields %s", kind, ", ".join(map(str, ignored)))
    if kind == "start":
        if listener.loop is not None:
            raise InputError("this stream has started already; use up_next or settings")
        settings = LoopSettings(**_settings_from(msg, server)).checked()
        listener.loop = RiffLoop(msg.get("prompt"), seed=_int_or_none(msg.get("seed")), settings=settings,
                                 alpha_velocity=msg.get("alpha_velocity", 0.25))
        listener.ahead = _ahead(msg.get("ahead", listener.ahead))
        listener.previews = bool(msg.get("previews")) and server.previews
    elif kind == "up_next":
        loop = _started(listener)
        loop.up_next(msg.get("prompt"))
        return {"type": "queue", "target": loop.target, "queued": list(loop.queued)}
    elif kind == "settings":
        _started(listener).update(**_settings_from(msg, server))
        if "ahead" in msg:
            listener.ahead = _ahead(msg["ahead"])
        if "previews" in msg:
            listener.previews = bool(msg["previews"]) and server.previews
    elif kind == "position":
        s = msg.get("seconds")
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not s >= 0:
            raise InputError(f"position seconds must be a number >= 0, got {s!r}")
        listener.position, listener.position_at = float(s), time.monotonic()
    elif kind in ("pause", "resume"):
        now = time.monotonic()
        if kind == "pause" and not listener.paused:
            listener.paused, listener.paused_at = True, now
            if listener.position is not None:
                listener.position += now - listener.position_at
                listener.position_at = now
        elif kind == "resume" and listener.paused:
            listener.paused = False
            listener.paused_for += now - (listener.paused_at or now)
            listener.paused_at = None
            listener.position_at = now


def _started(listener) -> RiffLoop:
    if listener.loop is None:
        raise InputError("send a start message first")
    return listener.loop


def _int_or_none(v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
        raise InputError(f"seed must be a non-negative integer, got {v!r}")
    return v


def _ahead(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_AHEAD:
        raise InputError(f"ahead must be an integer from 1 to {MAX_AHEAD}, got {v!r}")
    return v


def clip_job(server, listener: Listener, request, index: int, loop):
    """The worker's part of one clip: denoise, audio piece (continuing the last one), encode."""
    riff = server.riff
    rl = listener.loop
    state, target, queued = rl.state, rl.target, list(rl.queued)  # as when the request was made

    def on_step(job, i, n, t, latents):
        job.check()
        if listener.previews and (i < n - 1):
            msg = {"type": "preview", "index": index, "step": i + 1, "steps": n,
                   "image": _jpeg(riff.decode_preview(latents), quality=60)}
            loop.call_soon_threadsafe(_offer_preview, listener, msg)

    def run(job: Job) -> dict:
        started = time.monotonic()
        image = render(riff, request, server.config.seed_images, callback=lambda *a: on_step(job, *a),
                       **server.config.render_options())
        start = listener.audio.position
        piece = listener.audio.push(image, progress=job.check)
        wav = audio_io.encode_audio(piece, SAMPLE_RATE, "wav")
        return {"type": "clip", "index": index, "state": state, "request": request.to_dict(),
                "target": target, "queued": queued,
                "image": _jpeg(image), "audio": data_url("audio/wav", wav), "start_sample": start,
                "samples": int(piece.shape[1]), "duration_s": round(piece.shape[1] / SAMPLE_RATE, 6),
                "generate_s": round(time.monotonic() - started, 3)}
    return run


def _offer_preview(listener: Listener, msg: dict):
    if listener.out.qsize() < PREVIEW_BACKLOG:
        listener.out.put_nowait(msg)


async def _receiver(listener: Listener, server):
    ws = listener.ws
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        try:
            if text is None:
                raise InputError("binary messages are not understood; send JSON text")
            if len(text) > MAX_MESSAGE:
                raise InputError(f"message of {len(text)} characters; the limit is {MAX_MESSAGE}")
            msg = values.parse_json(text, "JSON message", max_bytes=MAX_MESSAGE)  # depth and number limits too
            if not isinstance(msg, dict):
                raise InputError(f"a message must be a JSON object with a 'type', got {values.json_kind(msg)}")
            answer = handle(listener, msg, server)
            if answer is not None:
                await listener.out.put(answer)
        except InputError as e:
            await listener.out.put({"type": "error", "status": 400, "error": str(e)})
        listener.wake.set()


async def _sender(listener: Listener):
    while True:
        msg = await listener.out.get()
        await listener.ws.send_text(json.dumps(msg))


async def _producer(listener: Listener, server):
    loop = asyncio.get_running_loop()
    index = 0
    while not server.shutting_down:
        if not listener.wants_more():
            listener.wake.clear()
            wait = None
            if listener.loop is not None and not listener.paused:  # until the playhead brings it below
                wait = max(0.05, listener.ahead_s() - listener.ahead * listener.clip_s + 0.05)
            try:
                await asyncio.wait_for(listener.wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass
            continue
        request = listener.loop.next_request()
        job = Job(listener.id, clip_job(server, listener, request, index, loop), kind="stream")
        listener.generating = True
        try:
            server.queue.submit(job, bounded=False)  # one per listener; listeners are bounded
            msg = await asyncio.wrap_future(job.future)
        except (Cancelled, RuntimeError):
            return
        except MinriffError as e:  # e.g. a seed image that went away: tell, wait for new settings
            await listener.out.put({"type": "error", "status": 400, "error": str(e)})
            listener.wake.clear()
            await listener.wake.wait()
            continue
        except Exception as e:  # a bug: tell the listener, end this stream
            await listener.out.put({"type": "error", "status": 500, "error": f"internal error: {e}"})
            await asyncio.sleep(0.5)  # let the sender deliver it
            return
        finally:
            listener.generating = False
        listener.clips += 1
        listener.samples += msg["samples"]
        if index > 0:
            listener.clip_s = msg["duration_s"]
        if listener.first_sent_at is None:
            listener.first_sent_at = time.monotonic()
        await listener.out.put(msg)
        index += 1


async def stream_endpoint(websocket: WebSocket):
    server = websocket.app.state.server
    await websocket.accept()
    if server.shutting_down or len(server.listeners.all) >= server.config.max_listeners:
        why = "the server is shutting down" if server.shutting_down else \
            f"this server has its {server.config.max_listeners} listeners already; try again later"
        await websocket.send_text(json.dumps({"type": "error", "status": 503, "error": why}))
        await websocket.close(code=1013)
        return
    listener = Listener(websocket)
    server.listeners.all[listener.id] = listener
    riff = server.riff
    await websocket.send_text(json.dumps({
        "type": "hello", "id": listener.id, "sample_rate": SAMPLE_RATE,
        "seed_images": available_image_ids(server.config.seed_images, limit=100),
        "previews": server.previews, "steps": server.config.steps, "max_steps": server.config.max_steps,
        "model": server.health()["model"], "backend": riff.backend}))
    tasks = [asyncio.create_task(c) for c in (_receiver(listener, server), _sender(listener),
                                              _producer(listener, server))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when cancelled (server shutdown): drop the listener and its work at once
        for t in tasks:
            t.cancel()
        server.queue.cancel_owner(listener.id)
        server.listeners.all.pop(listener.id, None)
    await asyncio.gather(*tasks, return_exceptions=True)
    if websocket.application_state == WebSocketState.CONNECTED:
        try:
            await websocket.close()
        except (RuntimeError, OSError, WebSocketDisconnect):
            pass
    server.listeners.finished += 1
