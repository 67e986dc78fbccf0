"""The original Riffusion server's request and response (reference/riffusion.md §3.2), checked.

`InferenceInput.from_json(body)` parses what the web app posts to `/run_inference/` (bytes or str;
limits in `minriff.values.parse_json`), `InferenceInput.from_dict(d)` checks a parsed object.
Unlike the original (dacite) an integer is accepted where a float is declared (`"guidance": 7`),
NumPy scalars are accepted from Python callers, and an unknown field is an error (dacite ignored a
misspelt "guidence"), unless the caller asks `unknown="ignore"`: the server does, as the original
did, since the web app and its forks may send fields of their own (`unknown_fields` names them).
Known fields are checked either way. Every problem is an InputError naming the field.

Image ids (`seed_image_id`, `mask_image_id`) name PNGs inside the seed-image folders and nothing
else: `resolve_image_id` refuses folders, absolute paths and symlinks that lead outside, with the
same answer as for a missing id (no existence oracle). Only the CLI's own flags may give a path.
"""
from __future__ import annotations

import base64
import json
import os
import re
import stat
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from minriff import values
from minriff.errors import InputError
from minriff.inputs import (
    check_alpha,
    check_guidance,
    check_negative_prompt,
    check_prompt,
    check_seed,
    check_steps,
    check_strength,
)

SEED_IMAGES_ENV = "MINRIFF_SEED_IMAGES"
IMAGE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")  # a file name in a seed-image folder, without .png
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_ID_CHARS = 255  # a seed/mask image id is a file name


def _number(d: dict, key: str, where: str, default=None, integer=False):
    """The field's value if it has the right type (ranges: the dataclasses' checks)."""
    if key not in d or d[key] is None:
        if default is None:
            raise InputError(f"{where}: missing required field {key!r}")
        return default
    v = d[key]
    ok = values.is_number(v) and (not integer or isinstance(v, (int, np.integer)))
    if not ok:
        kind = "an integer" if integer else "a number"
        raise InputError(f"{where}: field {key!r} must be {kind}, got {values.show(v)}")
    return v


def _string(d: dict, key: str, where: str, default=..., optional=False):
    if key not in d or (d[key] is None and optional):
        if default is ...:
            raise InputError(f"{where}: missing required field {key!r}")
        return default
    v = d[key]
    if not isinstance(v, str):
        raise InputError(f"{where}: field {key!r} must be a string, got {values.show(v)}")
    return v


def _unknown(d: dict, cls) -> list:
    known = {f.name for f in fields(cls)}
    return [k for k in d if k not in known]


def _known_fields(d: dict, cls, where: str, unknown: str = "error") -> None:
    """A misspelt field ("guidence") must not be ignored silently, unless the caller asks (the server)."""
    if unknown not in ("error", "ignore"):
        raise ValueError(f"unknown= must be 'error' or 'ignore', got {unknown!r}")
    names = _unknown(d, cls)
    if names and unknown == "error":
        known = [f.name for f in fields(cls)]
        raise InputError(f"{where}: unknown field {values.show(names[0])} (fields: {', '.join(known)})")


def _where(where: str, make):
    """Build a dataclass, its checks' messages prefixed with where it sits in the request."""
    try:
        return make()
    except InputError as e:
        raise InputError(f"{where} {e}") from None


@dataclass
class PromptInput:
    """One end of a request. Constructing it checks every field (`minriff.inputs`)."""

    prompt: str
    seed: int
    negative_prompt: str | None = None
    denoising: float = 0.75
    guidance: float = 7.0

    def __post_init__(self):
        self.prompt = check_prompt(self.prompt)
        self.seed = check_seed(self.seed)
        self.negative_prompt = check_negative_prompt(self.negative_prompt)
        self.denoising = check_strength(self.denoising, "denoising")
        self.guidance = check_guidance(self.guidance)

    @classmethod
    def from_dict(cls, d, where: str, unknown: str = "error") -> PromptInput:
        """unknown: "error" (an unknown field is an InputError) or "ignore" (dropped)."""
        if not isinstance(d, dict):
            raise InputError(f"{where} must be a JSON object, got {values.show(d)}")
        _known_fields(d, cls, where, unknown)
        kw = dict(prompt=_string(d, "prompt", where), seed=_number(d, "seed", where, integer=True),
                  negative_prompt=_string(d, "negative_prompt", where, default=None, optional=True),
                  denoising=_number(d, "denoising", where, default=0.75),
                  guidance=_number(d, "guidance", where, default=7.0))
        return _where(where, lambda: cls(**kw))


@dataclass
class InferenceInput:
    """The server's request. Constructing it checks every field; `from_json` is the one parser of
    request bodies (size, depth, encoding and number limits: `minriff.values.parse_json`)."""

    start: PromptInput
    end: PromptInput
    alpha: float
    num_inference_steps: int = 50
    seed_image_id: str = "og_beat"
    mask_image_id: str | None = None

    def __post_init__(self):
        for name in ("start", "end"):
            if not isinstance(getattr(self, name), PromptInput):
                raise InputError(f"{name} must be a PromptInput, got {type(getattr(self, name)).__name__}")
        self.alpha = check_alpha(self.alpha)
        self.num_inference_steps = check_steps(self.num_inference_steps, "num_inference_steps")
        self.seed_image_id = values.text(self.seed_image_id, "seed_image_id", MAX_ID_CHARS)
        if self.mask_image_id == "":  # the web app sends "" for ?maskImageId=none; the original read it as no mask
            self.mask_image_id = None
        if self.mask_image_id is not None:
            self.mask_image_id = values.text(self.mask_image_id, "mask_image_id", MAX_ID_CHARS)

    @classmethod
    def from_dict(cls, d, unknown: str = "error") -> InferenceInput:
        """unknown: "error" (an unknown field, here or in start/end, is an InputError; the CLI) or
        "ignore" (dropped, as the original server; `unknown_fields(d)` names them). Known fields are
        checked either way."""
        if not isinstance(d, dict):
            raise InputError(f"request must be a JSON object, got {values.json_kind(d)}")
        _known_fields(d, cls, "request", unknown)
        for key in ("start", "end"):
            if key not in d:
                raise InputError(f"request: missing required field {key!r}")
        start = PromptInput.from_dict(d["start"], "start", unknown)
        end = PromptInput.from_dict(d["end"], "end", unknown)
        kw = dict(alpha=_number(d, "alpha", "request"),
                  num_inference_steps=_number(d, "num_inference_steps", "request", default=50, integer=True),
                  seed_image_id=_string(d, "seed_image_id", "request", default="og_beat", optional=True),
                  mask_image_id=_string(d, "mask_image_id", "request", default=None, optional=True))
        return _where("request:", lambda: cls(start=start, end=end, **kw))

    @staticmethod
    def unknown_fields(d) -> list[str]:
        """The fields of a request dict that `from_dict` does not know ("start.x" inside start/end)."""
        if not isinstance(d, dict):
            return []
        names = [str(k) for k in _unknown(d, InferenceInput)]
        for side in ("start", "end"):
            if isinstance(d.get(side), dict):
                names += [f"{side}.{k}" for k in _unknown(d[side], PromptInput)]
        return names

    @classmethod
    def from_json(cls, data, unknown: str = "error") -> InferenceInput:
        """A request body (bytes as received, or str) -> checked request, or InputError."""
        return cls.from_dict(values.parse_json(data, "JSON request"), unknown)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class InferenceOutput:
    image: str  # "data:image/jpeg;base64,..."
    audio: str  # "data:audio/mpeg;base64,..." (or the format asked for)
    duration_s: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def data_url(mime: str, payload: bytes) -> str:
    """MIME-style base64 (newline every 76 chars) in a data URL, as the original server wrote it."""
    return f"data:{mime};base64," + base64.encodebytes(payload).decode("ascii")


def seed_image_dirs(extra: str | None = None) -> list[Path]:
    """The folders image ids are looked up in, in order: `extra` (--seed-images), $MINRIFF_SEED_IMAGES,
    ./seed_images."""
    dirs = [Path(extra)] if extra else []
    if os.environ.get(SEED_IMAGES_ENV):
        dirs.append(Path(os.environ[SEED_IMAGES_ENV]))
    dirs.append(Path("seed_images"))
    return dirs


def looks_like_path(name: str) -> bool:
    """On the command line a seed/mask image is a path when it has a folder separator or an image
    suffix (`./beat.png`, `beat.png`); anything else is an id."""
    seps = [s for s in (os.sep, os.altsep, "/") if s]
    return any(s in name for s in seps) or name.lower().endswith(IMAGE_SUFFIXES)


def _inside(folder: Path, name: str) -> Path | None:
    """folder/name as a real path if it is a regular file that stays inside the folder after
    following every symlink; else None (absent and forbidden look the same)."""
    try:
        root = folder.resolve(strict=True)
        found = (root / name).resolve(strict=True)
        regular = stat.S_ISREG(found.stat().st_mode)
    except (OSError, RuntimeError, ValueError):
        return None
    return found if regular and found.is_relative_to(root) else None


def available_image_ids(search: str | None = None, limit: int = 12) -> list[str]:
    """Up to `limit` ids that resolve (sorted), from the first folders that have any."""
    ids: set[str] = set()
    for folder in seed_image_dirs(search):
        try:
            with os.scandir(folder) as entries:
                names = [e.name for _, e in zip(range(1000), entries)]
        except OSError:
            continue
        ids.update(n[:-4] for n in names if n.endswith(".png") and IMAGE_ID.fullmatch(n[:-4])
                   and _inside(folder, n))
    return sorted(ids)[:limit]


def resolve_image_id(image_id, what: str = "seed image", search: str | None = None) -> Path:
    """An image id (`og_beat`) -> the real path of `<folder>/og_beat.png` in the first of
    `seed_image_dirs(search)` that has it. Ids are plain names (ASCII letters, digits, `_`, `-`, `.`,
    not starting with `.`; at most 100 characters): no folders, no absolute paths. A file reached
    through a symlink must lie inside the folder too. Missing and forbidden ids get the same
    InputError, so the answer never tells whether a file exists outside the folders."""
    if not isinstance(image_id, str):
        raise InputError(f"{what} id must be a string, got {type(image_id).__name__}")
    if IMAGE_ID.fullmatch(image_id):
        for folder in seed_image_dirs(search):
            found = _inside(folder, image_id + ".png")
            if found is not None:
                return found
    shown = image_id if len(image_id) <= 60 else image_id[:60] + "..."
    known = available_image_ids(search)
    raise InputError(
        f"invalid {what}: {shown!r} is not the id of a PNG in the seed-image folders "
        f"({', '.join(known) if known else 'none found'}; set the folder with --seed-images DIR or "
        f"${SEED_IMAGES_ENV}, default ./seed_images; ids are plain names without folders)")


def resolve_image(name, what: str, search: str | None = None, allow_path: bool = False) -> Path:
    """A seed or mask image: an id (`resolve_image_id`), or with allow_path (command-line flags
    only, never ids from a request) a file path when `looks_like_path(name)`."""
    if allow_path and isinstance(name, str) and looks_like_path(name):
        p = Path(name)
        if not p.is_file():
            raise InputError(f"invalid {what}: no such image file {name!r}")
        return p
    return resolve_image_id(name, what, search)
