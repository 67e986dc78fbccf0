"""Download `riffusion/riffusion-model-v1` (the diffusers files only) from the Hugging Face Hub and
convert it. Plain urllib: `<endpoint>/<repo>/resolve/main/<path>`, streamed to `<path>.part`,
resumed with a Range request after a cut-off (also across runs), size-checked against
Content-Length / Content-Range (and the Hub's `X-Linked-Size`), and sha256-checked when the Hub
sends the LFS hash (`X-Linked-Etag` on its redirect to the CDN, or an `ETag` of 64 hex digits).

- The endpoint, token and offline switch come from the Hugging Face variables (`hub.py`); a token
  is sent as `Authorization: Bearer` to the endpoint's own host only, never to the CDN (or any other
  host) a redirect leads to.
- Repository ids are checked by the Hub's rules (`check_repo_id`) before they name any folder.
- Files go to a staging folder that minriff creates and marks (`STAGING_MARK`, holding the repo
  id); afterwards exactly the files it downloaded are removed, then the folders if empty. Nothing
  that minriff did not create is ever deleted (issue 13: `--repo ..` used to remove all of `--to`).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path

from minriff import atomic
from minriff.errors import DownloadError, InputError
from minriff.progress import Progress
from minriff.weights import hub

try:
    import fcntl
except ImportError:  # not on Windows: downloads there are not serialised
    fcntl = None

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
STAGING_MARK = ".minriff-staging"
# one part of a repo id: 1-96 ASCII letters, digits, '_', '-', '.', starting and ending with a letter,
# digit or '_' (huggingface_hub.utils.validate_repo_id: REPO_ID_REGEX with its word boundaries)
REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


def check_repo_id(repo) -> str:
    """`owner/name` by the Hub's rules: each part as REPO_PART, no '--' or '..' anywhere, the name
    not ending in '.git'. (The Hub also takes a bare `name`; minriff downloads need the owner.)"""
    parts = repo.split("/") if isinstance(repo, str) else []
    if (len(parts) != 2 or not all(REPO_PART.fullmatch(p) for p in parts) or "--" in repo or ".." in repo
            or repo.endswith(".git")):
        raise InputError(f"repository id {repo!r} is not OWNER/NAME with letters, digits, '-', '_' or '.' (1-96 "
                         "each, not starting or ending with '-' or '.', no '--' or '..'), e.g. "
                         f"{REPO}")
    return repo


def check_endpoint(endpoint) -> str:
    """An http(s) URL without query or fragment, trailing '/' removed."""
    parts = urllib.parse.urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise InputError(f"Hub endpoint {endpoint!r} is not an http(s) URL such as https://huggingface.co")
    return endpoint.rstrip("/")


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


def _origin(url: str) -> tuple:
    u = urllib.parse.urlsplit(url)
    return u.scheme, u.hostname, u.port or {"http": 80, "https": 443}.get(u.scheme)


class LinkedHeaders(urllib.request.HTTPRedirectHandler):
    """Keeps the Hub's `X-Linked-Etag` (sha256) and `X-Linked-Size` of an LFS file: they come with
    the redirect to the CDN, not with the CDN's own answer. The token (an unredirected header, which
    urllib drops on every redirect) is put back only when the redirect stays on the same origin."""

    def __init__(self, token: str | None = None):
        self.linked: dict[str, str] = {}
        self.token = token

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        for name in ("X-Linked-Etag", "X-Linked-Size"):
            if headers.get(name):
                self.linked[name] = headers[name]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and self.token and _origin(newurl) == _origin(req.full_url):
            new.add_unredirected_header("Authorization", f"Bearer {self.token}")
        return new


def fetch(url: str, dest: Path, label: str = "", timeout: float = 60.0, stream=sys.stderr, token: str | None = None,
          quiet: bool = False) -> None:
    """One attempt: download `url` to `dest`, resuming `dest.part` if it exists."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "minriff-download",
                                               **({"Range": f"bytes={have}-"} if have else {})})
    if token:
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    linked = LinkedHeaders(token)
    try:
        resp = urllib.request.build_opener(linked).open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our .part is not a prefix of the file any more: start over
            part.unlink()
            return fetch(url, dest, label, timeout, stream, token, quiet)
        hint = (" (gated or private repository? set HF_TOKEN to a token that may read it)"
                if e.code in (401, 403) else "")
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
        bar = Progress(total, f"  {label or dest.name:40s}", quiet=quiet, stream=stream, unit="MB", scale=1e6,
                       start=have, redraw_s=0.25)
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
                       stream=sys.stderr, token: str | None = None, quiet: bool = False) -> None:
    for attempt in range(retries + 1):
        try:
            return fetch(url, dest, label, timeout, stream, token, quiet)
        except (TimeoutError, DownloadError, urllib.error.URLError, HTTPException, ConnectionError, OSError) as e:
            if isinstance(e, DownloadError) and "cut off" not in str(e):
                raise
            if attempt == retries:
                reason = getattr(e, "reason", e)
                raise DownloadError(f"{url}: {reason} (after {retries + 1} attempts; run again to resume)") from None
            if not quiet:
                stream.write(f"\n  connection problem ({e}); resuming\n")
            time.sleep(min(2.0 ** attempt, 10.0) * 0.1)


def download_repo(folder, endpoint: str | None = None, repo: str = REPO, files=FILES, retries: int = 3,
                  timeout: float = 60.0, stream=sys.stderr, token: str | None = None, quiet: bool = False) -> Path:
    """Fetch `files` of `repo` into `folder` (files already there are kept; `.part` files resumed)."""
    repo, endpoint = check_repo_id(repo), check_endpoint(endpoint or hub.endpoint())
    folder = Path(folder)
    for path in files:
        dest = folder / path
        if dest.exists():
            if not quiet:
                stream.write(f"  {path:40s} already downloaded\n")
            continue
        url = f"{endpoint}/{repo}/resolve/main/{urllib.parse.quote(path)}"
        fetch_with_retries(url, dest, path, retries=retries, timeout=timeout, stream=stream, token=token, quiet=quiet)
    return folder


def download_and_convert(to="weights", endpoint: str | None = None, repo: str = REPO, dtype: str = "fp16",
                         keep: bool = False, retries: int = 3, timeout: float = 60.0, stream=sys.stderr,
                         token: str | None = None, quiet: bool = False, reuse: bool = False) -> Path:
    """Download `repo` into minriff's staging folder `<to>/.download/<owner>--<name>/`, convert it to
    `<to>/<name>.safetensors` (riffusion-v1 for the default repo) and remove the downloaded files
    (`keep=True` keeps them). One process at a time per `to` folder; `reuse=True` returns an
    existing converted file instead (a first run that another process already completed)."""
    from minriff.weights.convert import convert

    repo, endpoint = check_repo_id(repo), check_endpoint(endpoint or hub.endpoint())
    if hub.offline():
        raise DownloadError(f"offline mode is on ({hub.offline()}): not downloading {repo}; unset it to download")
    token = token if token is not None else hub.token()
    to = Path(to)
    out = to / f"{'riffusion-v1' if repo == REPO else repo.split('/')[1]}.safetensors"
    to.mkdir(parents=True, exist_ok=True)
    with exclusive(to):
        if reuse and out.is_file():
            return out
        folder = staging_folder(to, repo)
        if not quiet:
            stream.write(f"downloading {repo} from {endpoint} to {folder}\n")
        download_repo(folder, endpoint, repo, retries=retries, timeout=timeout, stream=stream, token=token,
                      quiet=quiet)
        convert(folder, out, dtype=dtype, log=lambda m: None if quiet else stream.write(m + "\n"), quiet=quiet)
        if not keep:
            remove_staging(folder, repo)
    return out


# ----------------------------------------------------------------------------- the staging folder


def staging_folder(to: Path, repo: str) -> Path:
    """`<to>/.download/<owner>--<name>/`, made by minriff and marked with STAGING_MARK (holding the
    repo id). An existing folder there is reused only when it carries that mark (or is empty);
    anything else is not minriff's and is refused, untouched."""
    folder = Path(to) / ".download" / check_repo_id(repo).replace("/", "--")  # '--' cannot occur in an id
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise DownloadError(f"{folder} exists and is not a folder minriff made; move it away or download --to "
                            "another folder")
    if folder.is_dir() and not _marked(folder, repo) and any(folder.iterdir()):
        raise DownloadError(f"{folder} exists but was not made by minriff (no {STAGING_MARK} naming {repo}); "
                            "move it away or download --to another folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / STAGING_MARK, repo)
    return folder


def remove_staging(folder: Path, repo: str, files=FILES) -> None:
    """Delete the files minriff downloads into its staging folder (and their `.part`s), the mark,
    then each folder on the way up that is left empty, up to `.download`. Refuses a folder without
    minriff's mark; never deletes a folder that still holds anything."""
    folder = Path(folder)
    if folder.is_symlink() or not _marked(folder, repo):
        raise DownloadError(f"{folder}: not minriff's staging folder for {repo} (no {STAGING_MARK}); not removing it")
    for path in files:
        for f in (folder / path, folder / (path + ".part")):
            if f.is_symlink() or f.is_file():
                f.unlink()
    (folder / STAGING_MARK).unlink()
    subfolders = {(folder / p).parent for p in files} - {folder}
    for d in sorted(subfolders, key=lambda p: len(p.parts), reverse=True) + [folder, folder.parent]:
        with contextlib.suppress(OSError):
            d.rmdir()  # only succeeds when empty


def _marked(folder: Path, repo: str) -> bool:
    mark = folder / STAGING_MARK
    try:
        return mark.is_file() and not mark.is_symlink() and mark.stat().st_size < 256 and mark.read_text() == repo
    except (OSError, UnicodeDecodeError):
        return False


@contextlib.contextmanager
def exclusive(folder: Path):
    """Hold an exclusive lock on `folder` (flock on the directory itself, so no lock file is left
    behind): two first runs at once download once. A no-op where flock does not exist or the file
    system refuses it (some network file systems)."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
