"""Download `riffusion/riffusion-model-v1` (the diffusers files only) from the Hugging Face Hub and
convert it. Plain urllib: `<endpoint>/<repo>/resolve/main/<path>`, streamed to `<path>.part`,
resumed with a Range request after a cut-off (also across runs), size-checked against
Content-Length / Content-Range (and the Hub's `X-Linked-Size`), and sha256-checked when the Hub
sends the LFS hash (`X-Linked-Etag` on its redirect to the CDN, or an `ETag` of 64 hex digits)."""
from __future__ import annotations

import hashlib
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from minriff.errors import DownloadError
from minriff.progress import Progress

REPO = "riffusion/riffusion-model-v1"
# Everything the conversion reads; not the 14.6 GB training .ckpt, the traced UNet or the safety checker.
FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/vocab.json", "tokenizer/merges.txt",
    "text_encoder/config.json", "text_encoder/pytorch_model.bin",
    "vae/config.json", "vae/diffusion_pytorch_model.bin",
    "unet/config.json", "unet/diffusion_pytorch_model.bin",
)
CHUNK = 1 << 20


def _expected_sha256(headers) -> str | None:
    for name in ("X-Linked-Etag", "ETag"):
        v = (headers.get(name) or "").strip().strip('"')
        if v.startswith("W/"):
            continue
        if re.fullmatch(r"[0-9a-f]{64}", v):
            return v
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class LinkedHeaders(urllib.request.HTTPRedirectHandler):
    """Keeps the Hub's `X-Linked-Etag` (sha256) and `X-Linked-Size` of an LFS file: they come with
    the redirect to the CDN, not with the CDN's own answer."""

    def __init__(self):
        self.linked: dict[str, str] = {}

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        for name in ("X-Linked-Etag", "X-Linked-Size"):
            if headers.get(name):
                self.linked[name] = headers[name]
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, dest: Path, label: str = "", timeout: float = 60.0, stream=sys.stderr) -> None:
    """One attempt: download `url` to `dest`, resuming `dest.part` if it exists."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "minriff-download",
                                               **({"Range": f"bytes={have}-"} if have else {})})
    linked = LinkedHeaders()
    try:
        resp = urllib.request.build_opener(linked).open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our .part is not a prefix of the file any more: start over
            part.unlink()
            return fetch(url, dest, label, timeout, stream)
        hint = " (gated or private repository?)" if e.code in (401, 403) else ""
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}{hint}") from None
    with resp:
        if resp.status == 206:
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not m or int(m[1]) != have:
                raise DownloadError(f"{url}: server answered a resume with Content-Range "
                                    f"{resp.headers.get('Content-Range')!r}")
            total = int(m[3]) if m[3] != "*" else None
            mode = "ab"
        else:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"
        sha = _expected_sha256(linked.linked) or _expected_sha256(resp.headers)
        size = linked.linked.get("X-Linked-Size", "")
        if size.isdigit() and total is not None and int(size) != total:
            raise DownloadError(f"{url}: the Hub announces {size} bytes, the server sends {total}")
        bar = Progress(total, f"  {label or dest.name:40s}", stream=stream, unit="MB", scale=1e6, start=have,
                       redraw_s=0.25)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(part, mode) as f:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
        bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: transfer cut off at {size} of {total} bytes")
    if sha and dest.suffix not in (".json", ".txt") and _sha256(part) != sha:
        part.unlink()
        raise DownloadError(f"{url}: sha256 mismatch (expected {sha}); the partial file was removed, run again")
    part.replace(dest)


def fetch_with_retries(url: str, dest: Path, label: str = "", retries: int = 3, timeout: float = 60.0,
                       stream=sys.stderr) -> None:
    for attempt in range(retries + 1):
        try:
            return fetch(url, dest, label, timeout, stream)
        except (TimeoutError, DownloadError, urllib.error.URLError, HTTPException, ConnectionError, OSError) as e:
            if isinstance(e, DownloadError) and "cut off" not in str(e):
                raise
            if attempt == retries:
                reason = getattr(e, "reason", e)
                raise DownloadError(f"{url}: {reason} (after {retries + 1} attempts; run again to resume)") from None
            stream.write(f"\n  connection problem ({e}); resuming\n")
            time.sleep(min(2.0 ** attempt, 10.0) * 0.1)


def download_repo(folder, endpoint: str = "https://huggingface.co", repo: str = REPO, files=FILES,
                  retries: int = 3, timeout: float = 60.0, stream=sys.stderr) -> Path:
    folder = Path(folder)
    for path in files:
        dest = folder / path
        if dest.exists():
            stream.write(f"  {path:40s} already downloaded\n")
            continue
        url = f"{endpoint.rstrip('/')}/{repo}/resolve/main/{path}"
        fetch_with_retries(url, dest, path, retries=retries, timeout=timeout, stream=stream)
    return folder


def download_and_convert(to="weights", endpoint: str = "https://huggingface.co", repo: str = REPO,
                         dtype: str = "fp16", keep: bool = False, retries: int = 3, timeout: float = 60.0,
                         stream=sys.stderr) -> Path:
    from minriff.weights.convert import convert
    to = Path(to)
    name = "riffusion-v1" if repo == REPO else repo.split("/")[-1]
    folder = to / ".download" / repo.replace("/", "--")
    stream.write(f"downloading {repo} from {endpoint} to {folder}\n")
    download_repo(folder, endpoint, repo, retries=retries, timeout=timeout, stream=stream)
    out = to / f"{name}.safetensors"
    convert(folder, out, dtype=dtype, log=lambda m: stream.write(m + "\n"))
    if not keep:
        shutil.rmtree(folder)
        if not any(folder.parent.iterdir()):
            folder.parent.rmdir()
    return out
