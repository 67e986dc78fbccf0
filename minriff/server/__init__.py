"""`minriff serve`: the original Riffusion server's API, a streaming endpoint and a web page, on one
loaded model (Starlette + uvicorn, the `.[server]` extra). Pipeline-level: it imports the pipeline
and `minriff.stream`, never the reverse.

    app.py      routes: POST /run_inference/ (the original's request and answer), GET /health,
                GET /seed_images, GET / (the page), /static; JSON errors; CORS for all origins
    streams.py  GET /stream, a WebSocket: the web app's loop on the server for one listener
    jobs.py     the one worker thread and its fair (round-robin over listeners) bounded queue
    static/     the page: plain JS modules, no build step, nothing from a CDN

`serve(riff, config, host, port)` runs it until SIGINT/SIGTERM; `create_app(Server(riff, config))`
gives the ASGI app (tests use it with Starlette's TestClient).
"""
from __future__ import annotations

from minriff.server.app import ServeConfig, Server, create_app

__all__ = ["ServeConfig", "Server", "create_app", "serve"]


def serve(riff, config: ServeConfig | None = None, host: str = "127.0.0.1", port: int = 3013,
          loras: dict | None = None, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM. On the signal: no new work, waiting jobs answered 503, the running
    job finishes (up to config.shutdown_grace_s), sockets closed, then the process returns."""
    import uvicorn

    server = Server(riff, config, loras=loras)
    app = create_app(server)

    class _Uvicorn(uvicorn.Server):
        def handle_exit(self, sig, frame):
            server.begin_shutdown()  # before uvicorn waits for open requests: they end quickly
            super().handle_exit(sig, frame)

    cfg = uvicorn.Config(app, host=host, port=port, log_level=log_level, ws="websockets",
                         ws_max_size=1 << 20, timeout_graceful_shutdown=server.config.shutdown_grace_s)
    _Uvicorn(cfg).run()
