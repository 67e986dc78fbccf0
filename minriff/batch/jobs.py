"""The job file: JSON Lines, one job an object `{"id": ..., "kind": ..., ...its parameters...}`.

Parameters take the Python API's names (`Riffusion.generate_spectrogram`, `interpolate_styles`,
`riffuse`), plus `seed` (every kind), `image: true` (also write `<id>.png`) and `method` (inverse mel,
nnls|sgd). Every line is checked before anything runs; all problems are reported at once, each with
its line number. A job without a seed gets one derived from its id (`seed_for`), never from time or
worker, so the same job gives the same bytes anywhere.

KINDS is the one table of job kinds: adding a kind (e.g. `remix`, when `Riffusion.remix` exists) is
one entry."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from minriff import inputs, values
from minriff.errors import InputError

ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # a file name: no '/', no leading dot, no '..' tricks
RESERVED_IDS = {"manifest"}
MAX_LINE_BYTES = values.MAX_JSON_BYTES
MAX_ERRORS = 20  # reported at once; a file of garbage still gets a short message
COMMON = {"id", "kind", "seed", "image", "method"}


def _text(v):
    return values.text(v, "value", 10_000)


def _scheduler(v):
    if not isinstance(v, str):
        raise InputError(f"scheduler must be a name, got {values.show(v)}")
    return inputs.check_scheduler(v)


def _one_of(v, names: tuple[str, ...]) -> str:
    if v not in names:
        raise InputError(f"{values.show(v)} is not one of {', '.join(names)}")
    return v


def _as_is(v):  # checked whole later (riffuse.PromptInput)
    return v


# parameter -> check (raises InputError; parse_job names the job and parameter); the checks the pipeline
# runs again, so a bad job costs nothing. Image parameters (an id or a path) are resolved by _resolve_image.
CHECKS = {
    "prompt": inputs.check_prompt, "prompt_a": inputs.check_prompt, "prompt_b": inputs.check_prompt,
    "negative_prompt": inputs.check_negative_prompt, "duration_s": inputs.check_duration,
    "steps": inputs.check_steps, "guidance": inputs.check_guidance, "scheduler": _scheduler,
    "strength": inputs.check_strength, "denoising": inputs.check_strength, "alpha": inputs.check_alpha,
    "seed_b": inputs.check_seed, "init_image": _text, "seed_image": _text, "mask": _text,
    "start": _as_is, "end": _as_is,
    "cache_interval": lambda v: values.integer(v, "cache_interval", 1, 1000),
    "cache_branch": lambda v: values.integer(v, "cache_branch", 0, 1000),  # the pipeline checks the UNet's bound
    "cache_schedule": lambda v: _one_of(v, ("uniform", "quadratic")),
    "decoder": lambda v: _one_of(v, ("full", "taesd")),
}
SAMPLING = ("cache_interval", "cache_branch", "cache_schedule", "decoder")  # options of the three entry points


@dataclass(frozen=True)
class Kind:
    method: str                      # the Riffusion method that makes the spectrogram
    required: tuple[str, ...]
    optional: tuple[str, ...]
    seed_arg: str | None = "seed"    # the method's argument that takes the job's seed
    needs_method: bool = False       # kind accepted only if Riffusion has `method` (a later branch adds it)


KINDS = {
    "generate": Kind("generate_spectrogram", ("prompt",),
                     ("negative_prompt", "duration_s", "steps", "guidance", "scheduler", "init_image", "strength",
                      *SAMPLING)),
    "interpolate": Kind("interpolate_styles", ("prompt_a", "prompt_b", "alpha"),
                        ("seed_b", "negative_prompt", "duration_s", "steps", "guidance", "scheduler", "seed_image",
                         "denoising", *SAMPLING), seed_arg="seed_a"),
    "riffuse": Kind("riffuse", ("start", "end", "alpha"), ("seed_image", "mask", "steps", "scheduler", *SAMPLING),
                    seed_arg=None),  # seeds sit in start/end (riffuse.PromptInput); `seed` is not accepted
    "remix": Kind("remix", ("init_image", "prompt"), ("negative_prompt", "steps", "guidance", "scheduler",
                                                      "strength"), needs_method=True),
}


@dataclass
class Job:
    id: str
    kind: str
    seed: int
    params: dict                     # the method's keyword arguments (images as resolved paths)
    image: bool = False
    method: str = "nnls"
    line: int = 0
    spec: dict = field(default_factory=dict)  # the line as given (the manifest records it)

    def key(self) -> dict:
        """What decides the output bytes: a finished job is skipped only if this is unchanged."""
        return {"kind": self.kind, "seed": self.seed, "params": self.params, "image": self.image,
                "method": self.method}


def seed_for(job_id: str) -> int:
    """A job's default seed: from its id only (the first 31 bits of SHA-256 of the UTF-8 id)."""
    return int.from_bytes(hashlib.sha256(job_id.encode("utf-8")).digest()[:4], "little") & 0x7FFFFFFF


def kind_available(kind: Kind) -> bool:
    if not kind.needs_method:
        return True
    from minriff.pipeline import Riffusion

    return hasattr(Riffusion, kind.method)


def parse_job(obj, line: int = 0, base: Path | None = None, seed_images: str | None = None) -> Job:
    """One parsed JSON value -> Job, or InputError (without the line number: parse_lines adds it)."""
    if not isinstance(obj, dict):
        raise InputError(f"a job must be a JSON object, got {values.json_kind(obj)}")
    job_id = obj.get("id")
    if not isinstance(job_id, str) or not ID.fullmatch(job_id) or job_id.lower() in RESERVED_IDS:
        raise InputError(f"id must be a string usable as a file name ({ID.pattern}, not 'manifest'), "
                         f"got {values.show(job_id)}")
    kind_name = obj.get("kind")
    kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise InputError(f"job {job_id}: kind must be one of {', '.join(KINDS)}, got {values.show(kind_name)}")
    if not kind_available(kind):
        raise InputError(f"job {job_id}: kind {kind_name!r} needs Riffusion.{kind.method}, which this minriff "
                         "does not have")
    allowed = set(kind.required) | set(kind.optional) | COMMON
    if kind.seed_arg is None:
        allowed.discard("seed")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InputError(f"job {job_id}: unknown parameter{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))} for kind {kind_name} "
                         f"(allowed: {', '.join(sorted(allowed))})")
    missing = [k for k in kind.required if k not in obj]
    if missing:
        raise InputError(f"job {job_id}: {kind_name} needs {', '.join(missing)}")
    params = {}
    for name in (*kind.required, *kind.optional):
        if name in obj:
            try:
                params[name] = CHECKS[name](obj[name])
            except InputError as e:
                raise InputError(f"job {job_id}: {name}: {e}") from None
    if kind_name == "riffuse":
        _check_riffuse(params, job_id)
    for name in ("init_image", "seed_image", "mask"):
        if name in params:
            params[name] = _resolve_image(params[name], name, base, seed_images, job_id)
    seed = obj.get("seed")
    if kind_name == "riffuse":
        seed = params["start"]["seed"]
    seed = seed_for(job_id) if seed is None else inputs.check_seed(seed, f"job {job_id}: seed")
    image = obj.get("image", False)
    if not isinstance(image, bool):
        raise InputError(f"job {job_id}: image must be true or false, got {values.show(image)}")
    method = obj.get("method", "nnls")
    if method not in ("nnls", "sgd"):
        raise InputError(f"job {job_id}: method must be nnls or sgd, got {values.show(method)}")
    return Job(job_id, kind_name, seed, params, image, method, line, dict(obj))


def _check_riffuse(params: dict, job_id: str) -> None:
    from minriff.riffuse import PromptInput

    for side in ("start", "end"):
        try:
            params[side] = vars(PromptInput.from_dict(params[side], side))
        except InputError as e:
            raise InputError(f"job {job_id}: {e}") from None
    params["alpha"] = inputs.check_alpha(params["alpha"], f"job {job_id}: alpha")
    params.setdefault("seed_image", "og_beat")


def _resolve_image(name: str, what: str, base: Path | None, seed_images, job_id: str) -> str:
    """An id (og_beat) or a PNG path, relative paths taken beside the job file; the absolute path goes to
    the workers (shared storage on a cluster)."""
    from minriff.riffuse import looks_like_path, resolve_image

    if looks_like_path(name) and base is not None and not Path(name).is_absolute():
        name = str(base / name)
    try:
        return str(resolve_image(name, what.replace("_", " "), seed_images, allow_path=True).resolve())
    except InputError as e:
        raise InputError(f"job {job_id}: {e}") from None


def parse_lines(lines, base: Path | None = None, seed_images: str | None = None) -> list[Job]:
    """Lines (str or bytes) -> jobs, or one InputError listing every bad line as 'line N: problem'.
    Blank lines and lines starting with '#' are skipped. Ids must be unique."""
    jobs, errors, seen = [], [], {}
    for n, raw in enumerate(lines, 1):
        text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            job = parse_job(values.parse_json(raw, "JSON", MAX_LINE_BYTES), n, base, seed_images)
            if job.id in seen:
                raise InputError(f"job id {job.id!r} already used on line {seen[job.id]}")
            seen[job.id] = n
            jobs.append(job)
        except InputError as e:
            errors.append(f"line {n}: {e}")
    if errors:
        more = f"\n  ... and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
        raise InputError(f"{len(errors)} bad line{'s' if len(errors) > 1 else ''} in the job file:\n  "
                         + "\n  ".join(errors[:MAX_ERRORS]) + more)
    if not jobs:
        raise InputError("the job file has no jobs")
    return jobs


def read_jobs(path, seed_images: str | None = None) -> list[Job]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InputError(f"cannot read job file {path}: {e.strerror}") from None
    return parse_lines(lines, path.resolve().parent, seed_images)


ENTRY = {"generate": "generate_spectrogram", "interpolate": "interpolate_styles", "riffuse": "riffuse"}


def apply_preset(jobs: list[Job], name: str, taesd: bool = True) -> list[Job]:
    """`--preset NAME` for a job file: each job of a kind with sampling options takes the preset's
    value of every option it does not set itself (a job's own parameters win; `quality` is the
    defaults, so it changes nothing). taesd=False: no TAESD file, so the preset's decoder is left out
    (the full VAE), as `minriff generate --preset fast` does."""
    from minriff import presets

    presets.check_name(name)
    if name == "quality":
        return list(jobs)
    out = []
    for job in jobs:
        if job.kind not in ENTRY:
            out.append(job)
            continue
        opts = {k: v for k, v in presets.options(name, ENTRY[job.kind]).items()
                if v is not None and k in KINDS[job.kind].optional and not (k == "decoder" and not taesd)}
        out.append(replace(job, params={**opts, **job.params}))
    return out
