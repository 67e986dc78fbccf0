"""The original Riffusion server's request and response (reference/riffusion.md §3.2), checked.

`InferenceInput.from_dict(d)` accepts the JSON the web app posts to `/run_inference/`. Unlike the
original (dacite, strict types) an integer is accepted where a float is declared (`"guidance": 7`).
Every problem is an InputError naming the field. An unknown field is an error too (dacite ignored
a misspelt "guidence"), unless the caller asks `unknown="ignore"`: the server does, as the original
did, since the web app and its forks may send fields of their own (`unknown_fields` names them).

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

from minriff.errors import InputError

SEED_IMAGES_ENV = "MINRIFF_SEED_IMAGES"
IMAGE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")  # a file name in a seed-image folder, without .png
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _number(d: dict, key: str, where: str, default=None, integer=False):
    if key not in d or d[key] is None:
        if default is None:
            raise InputError(f"{where}: missing required field {key!r}")
        return default
    v = d[key]
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        kind = "an integer" if integer else "a number"
        raise InputError(f"{where}: field {key!r} must be {kind}, got {v!r}")
    return int(v) if integer else float(v)


def _unknown(d: dict, cls, where: str) -> list[str]:
    known = {f.name for f in fields(cls)}
    return [k for k in d if k not in known]


def _check_unknown(d: dict, cls, where: str, unknown: str) -> None:
    if unknown not in ("error", "ignore"):
        raise ValueError(f"unknown= must be 'error' or 'ignore', got {unknown!r}")
    names = _unknown(d, cls, where)
    if names and unknown == "error":
        known = ", ".join(f.name for f in fields(cls))
        raise InputError(f"{where}: unknown field {names[0]!r} (fields: {known})")


def _string(d: dict, key: str, where: str, default=..., optional=False):
    if key not in d or (d[key] is None and optional):
        if default is ...:
            raise InputError(f"{where}: missing required field {key!r}")
        return default
    v = d[key]
    if not isinstance(v, str):
        raise InputError(f"{where}: field {key!r} must be a string, got {v!r}")
    return v


@dataclass
class PromptInput:
    prompt: str
    seed: int
    negative_prompt: str | None = None
    denoising: float = 0.75
    guidance: float = 7.0

    @classmethod
    def from_dict(cls, d, where: str, unknown: str = "error") -> PromptInput:
        """unknown: "error" (an unknown field is an InputError) or "ignore" (dropped)."""
        if not isinstance(d, dict):
            raise InputError(f"{where} must be a JSON object, got {d!r}")
        _check_unknown(d, cls, where, unknown)
        return cls(
            prompt=_string(d, "prompt", where),
            seed=_number(d, "seed", where, integer=True),
            negative_prompt=_string(d, "negative_prompt", where, default=None, optional=True),
            denoising=_number(d, "denoising", where, default=0.75),
            guidance=_number(d, "guidance", where, default=7.0),
        )


@dataclass
class InferenceInput:
    start: PromptInput
    end: PromptInput
    alpha: float
    num_inference_steps: int = 50
    seed_image_id: str = "og_beat"
    mask_image_id: str | None = None

    @classmethod
    def from_dict(cls, d, unknown: str = "error") -> InferenceInput:
        """unknown: "error" (an unknown field, here or in start/end, is an InputError; the CLI) or
        "ignore" (dropped, as the original server; `unknown_fields(d)` names them). Known fields are
        checked either way."""
        if not isinstance(d, dict):
            raise InputError(f"request must be a JSON object, got {type(d).__name__}")
        _check_unknown(d, cls, "request", unknown)
        for key in ("start", "end"):
            if key not in d:
                raise InputError(f"request: missing required field {key!r}")
        return cls(
            start=PromptInput.from_dict(d["start"], "start", unknown),
            end=PromptInput.from_dict(d["end"], "end", unknown),
            alpha=_number(d, "alpha", "request"),
            num_inference_steps=_number(d, "num_inference_steps", "request", default=50, integer=True),
            seed_image_id=_string(d, "seed_image_id", "request", default="og_beat", optional=True),
            mask_image_id=_string(d, "mask_image_id", "request", default=None, optional=True),
        )

    @staticmethod
    def unknown_fields(d) -> list[str]:
        """The fields of a request dict that `from_dict` does not know ("start.x" inside start/end)."""
        if not isinstance(d, dict):
            return []
        names = _unknown(d, InferenceInput, "request")
        for side in ("start", "end"):
            if isinstance(d.get(side), dict):
                names += [f"{side}.{k}" for k in _unknown(d[side], PromptInput, side)]
        return names

    @classmethod
    def from_json(cls, text: str) -> InferenceInput:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON request: {e}") from None
        return cls.from_dict(d)

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
