"""The original Riffusion server's request and response (reference/riffusion.md §3.2), checked.

`InferenceInput.from_dict(d)` accepts the JSON the web app posts to `/run_inference/`. Unlike the
original (dacite, strict types) an integer is accepted where a float is declared (`"guidance": 7`).
Every problem is an InputError naming the field.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from minriff.errors import InputError

SEED_IMAGES_ENV = "MINRIFF_SEED_IMAGES"


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
    def from_dict(cls, d, where: str) -> PromptInput:
        if not isinstance(d, dict):
            raise InputError(f"{where} must be a JSON object, got {d!r}")
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
    def from_dict(cls, d) -> InferenceInput:
        if not isinstance(d, dict):
            raise InputError(f"request must be a JSON object, got {type(d).__name__}")
        for key in ("start", "end"):
            if key not in d:
                raise InputError(f"request: missing required field {key!r}")
        return cls(
            start=PromptInput.from_dict(d["start"], "start"),
            end=PromptInput.from_dict(d["end"], "end"),
            alpha=_number(d, "alpha", "request"),
            num_inference_steps=_number(d, "num_inference_steps", "request", default=50, integer=True),
            seed_image_id=_string(d, "seed_image_id", "request", default="og_beat", optional=True),
            mask_image_id=_string(d, "mask_image_id", "request", default=None, optional=True),
        )

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
    dirs = [Path(extra)] if extra else []
    if os.environ.get(SEED_IMAGES_ENV):
        dirs.append(Path(os.environ[SEED_IMAGES_ENV]))
    dirs.append(Path("seed_images"))
    return dirs


def resolve_image(name: str, what: str, search: str | None = None) -> Path:
    """A seed or mask image given as a file path or as an id (`og_beat` -> `<dir>/og_beat.png`)."""
    p = Path(name)
    if p.is_file():
        return p
    tried = []
    for d in seed_image_dirs(search):
        cand = d / f"{name}.png"
        tried.append(str(cand))
        if cand.is_file():
            return cand
    raise InputError(
        f"invalid {what}: {name!r} is neither a file nor found as {', '.join(tried)} "
        f"(pass a PNG path, --seed-images DIR or set ${SEED_IMAGES_ENV})"
    )
