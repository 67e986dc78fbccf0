"""A local stand-in for the Hugging Face Hub on 127.0.0.1, serving the tiny diffusers fixture as
`riffusion/riffusion-model-v1` with the real layout and the Hub's habits:

- `/<repo>/resolve/main/<path>`; `.bin` files (LFS) answer 302 to a CDN on *another port* (another
  origin, as cdn-lfs.huggingface.co is) with `X-Linked-Etag` (sha256) and `X-Linked-Size`;
- Range requests (206), Content-Length, a CDN ETag that is not a sha256;
- `cut[path] = n`: the next transfer of `path` stops after n bytes and the connection closes;
- `corrupt`: paths whose first byte is flipped; `send_sha`: send the sha256 or not;
- `token`: when set, the Hub (not the CDN) answers 401 unless `Authorization: Bearer <token>`;
- `any_repo`: serve the files under whatever repo id is asked for (a careless mirror);
- `requests`: (path, Range) of every file transfer; `seen`: (server, raw path, Authorization) of
  every request, redirects included.
"""
from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minriff.weights import download
from support import FIXTURES

FOLDER = FIXTURES / "weights" / "tiny-diffusers"
REPO = "riffusion/riffusion-model-v1"


class FakeHub:
    def __init__(self, repo: str = REPO):
        self.repo = repo
        self.files = {p: (FOLDER / p).read_bytes() for p in download.FILES}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.seen: list[tuple[str, str, str | None]] = []
        self.send_sha = True
        self.corrupt: set[str] = set()
        self.token: str | None = None
        self.any_repo = False
        self.hub = _Server(self, "hub")
        self.cdn = _Server(self, "cdn")
        self.endpoint = self.hub.url

    def close(self):
        self.hub.close()
        self.cdn.close()

    def repo_path(self, raw: str) -> str | None:
        """The file path of a /<repo>/resolve/main/<path> request for a repo this hub serves."""
        m = re.fullmatch(r"/(.+?)/resolve/main/(.+)", raw)
        if m and (m[1] == self.repo or self.any_repo):
            return m[2]
        return None


class _Server:
    def __init__(self, hub: FakeHub, role: str):
        handler = type("Handler", (_Handler,), {"hub": hub, "role": role})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub
    role: str

    def log_message(self, *args):
        pass

    def _empty(self, code: int, headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        hub = self.hub
        hub.seen.append((self.role, self.path, self.headers.get("Authorization")))
        if self.role == "hub":
            if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                return self._empty(401)
            path = hub.repo_path(self.path)
            if path is not None and path.endswith(".bin") and path in hub.files:  # LFS: to the CDN
                body = hub.files[path]
                headers = [("Location", f"{hub.cdn.url}/cdn/{path}"), ("X-Linked-Size", str(len(body)))]
                if hub.send_sha:
                    headers.append(("X-Linked-Etag", f'"{hashlib.sha256(body).hexdigest()}"'))
                return self._empty(302, headers)
        else:
            path = self.path[len("/cdn/"):] if self.path.startswith("/cdn/") else None
        hub.requests.append((path, self.headers.get("Range")))
        if path not in hub.files:
            return self._empty(404)
        self._send_file(path)

    def _send_file(self, path: str):
        hub = self.hub
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
