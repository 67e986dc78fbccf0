"""The Starlette application: routes, the HTTP endpoint of the original server, health, errors.

Every answer is JSON except the page and its static files: a JSON error with a 4xx/5xx status and
an `error` message, never HTML or plain text (the original web app's proxy parses every answer as
JSON and stops requesting when that fails). CORS allows every origin, as the original's Flask-CORS.
"""
from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from minriff import values
from minriff.errors import InputError, MinriffError
from minriff.riffuse import InferenceInput, available_image_ids, resolve_image_id
from minriff.server.jobs import Cancelled, FairQueue, Job, QueueFull
from minriff.server.streams import Listeners, stream_endpoint
from minriff.stream import clip_audio, http_response, render

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("minriff.server")
SERVER_FIELDS = {"lora"}  # request fields the server reads itself (not the original's)
MAX_BODY = 64 * 1024  # the app's requests are ~400 bytes
DISCONNECT_POLL_S = 0.5
# A request still running when SIGTERM's grace ends is answered (503 JSON) this long before uvicorn's
# own deadline, which would cancel the handler and send a plain-text 500 the web app cannot parse.
GRACE_MARGIN_S = 1.0


@dataclass
class ServeConfig:
    seed_images: str | None = None  # folder for seed/mask image ids (else $MINRIFF_SEED_IMAGES, ./seed_images)
    max_queue: int = 16  # jobs waiting (not running) before HTTP requests get 503
    max_listeners: int = 8  # streams at once
    steps: int | None = None  # run every request with this many steps (a few-step sampler), else its own
    max_steps: int = 100  # requests asking for more get 400
    ahead: int = 2  # clips a stream generates ahead of its listener's playhead
    method: str = "nnls"  # inverse mel
    threads: int | None = None  # Numba threads for the worker (default: all cores)
    shutdown_grace_s: float = 30.0
    guidance: float | None = None  # every request's guidance (LCM wants 1 whatever the web app asks), else its own
    sampling: dict = field(default_factory=dict)  # more riffuse keywords for every request (a preset's cache_*)

    def render_options(self) -> dict:
        """The keywords `stream.render` takes from the server's settings."""
        return dict(steps=self.steps, guidance=self.guidance, **self.sampling)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


class Server:
    """What the routes share: the model, the job queue, the listeners, the settings."""

    def __init__(self, riff, config: ServeConfig | None = None, loras: dict | None = None):
        self.riff, self.config = riff, config or ServeConfig()
        self.queue = FairQueue(self.config.max_queue, threads=self.config.threads)
        self.listeners = Listeners(self)
        self.loras = dict(loras or {})  # name -> default weight (LoRAs loaded at start)
        self.started = time.monotonic()
        self.previews = riff.has_taesd  # loads it (found beside the weights, $MINRIFF_TAESD, --taesd)
        self.shutting_down = False
        self.shutdown_started: float | None = None

    def begin_shutdown(self):
        """SIGTERM: refuse new work, cancel what waits, let the running job finish."""
        if self.shutdown_started is None:
            self.shutdown_started = time.monotonic()
        self.shutting_down = True
        self.queue.close(cancel_running=False, timeout=0)

    def grace_over(self) -> bool:
        """SIGTERM's grace period (less GRACE_MARGIN_S) has run out."""
        return self.shutdown_started is not None and \
            time.monotonic() - self.shutdown_started >= self.config.shutdown_grace_s - GRACE_MARGIN_S

    def check_request(self, req: InferenceInput) -> None:
        steps = req.num_inference_steps
        if self.config.steps is None and steps > self.config.max_steps:
            raise InputError(f"num_inference_steps {steps} is above this server's limit of {self.config.max_steps}")
        resolve_image_id(req.seed_image_id, "seed image", self.config.seed_images)
        if req.mask_image_id:
            resolve_image_id(req.mask_image_id, "mask image", self.config.seed_images)

    def lora_weights(self, body: dict) -> dict:
        """The optional `lora` field: {name: weight} for LoRAs the server loaded (`--lora`)."""
        asked = body.get("lora")
        if asked is None:
            return {}
        if not isinstance(asked, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in asked.values()):
            raise InputError("field 'lora' must be an object of LoRA name -> weight (a number)")
        unknown = sorted(set(asked) - set(self.loras))
        if unknown:
            raise InputError(f"unknown LoRA {', '.join(map(repr, unknown))}; this server has "
                             f"{', '.join(sorted(self.loras)) or 'none loaded (start it with --lora FILE)'}")
        return {k: float(v) for k, v in asked.items()}

    def apply_loras(self, weights: dict) -> None:
        """In the worker, before a job: every loaded LoRA at the job's weight (default: its --lora weight).
        Hook for issue 14's riff.set_lora_weight (a re-merge of the touched tensors only when a weight changes)."""
        for name, default in self.loras.items():
            self.riff.set_lora_weight(name, weights.get(name, default))

    def inference_job(self, req: InferenceInput, loras: dict):
        def run(job: Job) -> dict:
            if self.loras:
                self.apply_loras(loras)
            image = render(self.riff, req, self.config.seed_images, callback=job.check, **self.config.render_options())
            wave = clip_audio(image, method=self.config.method, progress=job.check)
            return asdict(http_response(image, wave))
        return run

    def health(self) -> dict:
        riff = self.riff
        return {"status": "shutting down" if self.shutting_down else "ok",
                "model": os.path.basename(getattr(riff, "source", "") or "") or "in-memory model",
                "backend": riff.backend, "scheduler": _name(riff.scheduler) or "pndm (the original's)",
                "decoder": riff.decoder, "steps": self.config.steps, "max_steps": self.config.max_steps,
                "guidance": self.config.guidance, "sampling": self.config.sampling,
                "previews": self.previews, "loras": self.loras,
                "queue": self.queue.snapshot(), "listeners": self.listeners.snapshot(),
                "max_listeners": self.config.max_listeners,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "uptime_s": round(time.monotonic() - self.started, 1)}


def _name(scheduler) -> str | None:
    return scheduler if isinstance(scheduler, str) or scheduler is None else type(scheduler).__name__


async def run_inference(request: Request) -> JSONResponse:
    server: Server = request.app.state.server
    body = await request.body()  # any content type: the original read the raw body
    if len(body) > MAX_BODY:
        return error(413, f"request body is {len(body)} bytes; the limit is {MAX_BODY}")
    try:
        data = values.parse_json(body, "JSON request")  # size, depth, encoding and number limits
        req = InferenceInput.from_dict(data, unknown="ignore")  # as the original (dacite, non-strict)
        ignored = [k for k in InferenceInput.unknown_fields(data) if k not in SERVER_FIELDS]
        if ignored:
            log.info("/run_inference/: ignored unknown fields %s", ", ".join(ignored))
        loras = server.lora_weights(data)
        server.check_request(req)
    except InputError as e:
        return error(400, str(e))
    if server.shutting_down:
        return error(503, "the server is shutting down")
    owner = f"http:{request.client.host if request.client else '?'}"
    job = Job(owner, server.inference_job(req, loras), kind="http")
    try:
        server.queue.submit(job)
    except QueueFull as e:
        return error(503, str(e))
    future = asyncio.wrap_future(job.future)
    while True:
        done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
        if done:
            break
        if await request.is_disconnected():  # e.g. the app's proxy gave up after 60 s
            server.queue.cancel(job)
            return error(499, "client disconnected")
        if server.grace_over():  # stopped at its next check; the answer goes out now, as JSON
            server.queue.cancel(job)
            return error(503, f"the server is shutting down: the request was cancelled when the "
                              f"{server.config.shutdown_grace_s:g} s grace period ran out")
    try:
        return JSONResponse(future.result())
    except Cancelled:
        return error(503, "the request was cancelled: the server is shutting down")
    except MinriffError as e:
        return error(400, str(e))


async def health(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.server.health())


async def seed_images(request: Request) -> JSONResponse:
    server: Server = request.app.state.server
    return JSONResponse({"seed_images": available_image_ids(server.config.seed_images, limit=100)})


async def index(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return error(exc.status_code, str(exc.detail))


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    return error(500, f"internal error: {type(exc).__name__}: {exc}")


def create_app(server: Server) -> Starlette:
    @asynccontextmanager
    async def lifespan(app):
        server.queue.start()
        yield
        server.begin_shutdown()
        await server.listeners.close_all()
        await asyncio.to_thread(server.queue.close, False, server.config.shutdown_grace_s)

    routes = [
        Route("/", index),
        Route("/run_inference/", run_inference, methods=["POST"]),
        Route("/run_inference", run_inference, methods=["POST"]),
        Route("/health", health),
        Route("/seed_images", seed_images),
        WebSocketRoute("/stream", stream_endpoint),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: internal_error})
    app.state.server = server
    return app
