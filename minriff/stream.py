"""Endless music the way Riffusion's web app makes it, as plain Python (no server needed).

    from minriff import Riffusion
    from minriff.stream import RiffLoop, stream
    riff = Riffusion.load()
    loop = RiffLoop("lofi hip hop beat", seed_image_id="og_beat")
    for clip in stream(riff, loop, count=8):          # clip.audio: the next 5.12 s, seamless
        ...
        loop.up_next("jazz with saxophone")           # morphs there over the next cycle

`RiffLoop` is the web app's request loop (reference/riffusion.md §3.3) for one listener: each
`next_request()` is the original server's request (`riffuse.InferenceInput`) for the next clip.
- SAME_PROMPT: start = (prompt, seed), end = (prompt, seed + 1); alpha steps 0.25, 0.5, 0.75, 1.0;
  past 1 it wraps (seed rollover: seed += 1), so each cycle starts where the last one ended: endless,
  slowly drifting variations of one prompt.
- TRANSITION (a prompt was queued with `up_next`): at the next rollover start = (prompt, seed),
  end = (next prompt, same seed): only the text moves. At the end of that cycle the next prompt is
  the prompt, and the loop goes on to the next queued one or back to SAME_PROMPT.
Settings (denoising, seed image, guidance, steps, negative prompt) apply from the next request.

`render(riff, request)` runs one request (seed image by id, mask) into its spectrogram;
`http_response` makes the original server's answer of it (JPEG + MP3 of exactly width x 10 ms);
`stream` chains the loop, `render` and `audio.seamless.SeamlessAudio` (phase and loudness run on
across clip joins).
"""
from __future__ import annotations

import io
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from minriff.audio import io as audio_io
from minriff.audio.seamless import SeamlessAudio
from minriff.audio.spectrogram import image_to_audio
from minriff.errors import InputError
from minriff.inputs import check_alpha, check_guidance, check_prompt, check_steps, check_strength
from minriff.riffuse import InferenceInput, InferenceOutput, PromptInput, data_url, resolve_image_id

SAMPLE_RATE = 44100
ALPHA_VELOCITY = 0.25
FIRST_ALPHA = 0.25  # the app resets alpha to 0.25 on every state change
# The web app's starting seeds per seed image (samplePrompts.ts): a familiar first cycle.
APP_SEEDS = {"og_beat": [3, 738973, 674, 745234, 808, 231, 3324, 323984, 123, 51209, 123, 51209, 6754, 8730],
             "agile": [808, 231, 3324, 323984], "marim": [123, 51209, 6754, 8730],
             "motorway": [8730, 323984, 745234], "vibes": [4205, 94, 78530]}
MP3_VBR_QUALITY = 0.2  # ~93 kbit/s VBR, as the original's clips (~95-100)
JPEG_QUALITY = 75  # PIL's default, as the original


@dataclass
class LoopSettings:
    denoising: float = 0.75
    guidance: float = 7.0
    steps: int = 50
    seed_image_id: str = "og_beat"
    mask_image_id: str | None = None
    negative_prompt: str | None = None

    def checked(self) -> LoopSettings:
        check_strength(self.denoising, "denoising")
        check_guidance(self.guidance)
        check_steps(self.steps)
        if not isinstance(self.seed_image_id, str) or not self.seed_image_id:
            raise InputError(f"seed_image_id must be a non-empty string, got {self.seed_image_id!r}")
        for name in ("mask_image_id", "negative_prompt"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise InputError(f"{name} must be a string or null, got {getattr(self, name)!r}")
        return self


@dataclass
class RiffLoop:
    """The web app's loop for one listener (module docstring). `next_request()` -> InferenceInput."""

    prompt: str
    seed: int | None = None
    settings: LoopSettings = field(default_factory=LoopSettings)
    alpha_velocity: float = ALPHA_VELOCITY
    alpha: float = FIRST_ALPHA
    state: str = "SAME_PROMPT"
    target: str | None = None  # the prompt a TRANSITION moves to
    queued: deque = field(default_factory=deque)  # "up next" prompts, in order
    _rollover: bool = False

    def __post_init__(self):
        check_prompt(self.prompt)
        self.settings.checked()
        if not (isinstance(self.alpha_velocity, (int, float)) and 0 < self.alpha_velocity <= 1):
            raise InputError(f"alpha velocity must be in (0, 1], got {self.alpha_velocity!r}")
        check_alpha(self.alpha)
        if self.seed is None:
            seeds = APP_SEEDS.get(self.settings.seed_image_id)
            self.seed = random.choice(seeds) if seeds else random.randrange(2**31)

    def up_next(self, prompt: str) -> None:
        """Queue a prompt: the loop moves to it over the cycle after the current one."""
        self.queued.append(check_prompt(prompt))

    def update(self, **settings) -> None:
        """Change settings (LoopSettings fields) from the next request on."""
        unknown = set(settings) - set(LoopSettings.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown stream settings: {', '.join(sorted(unknown))}")
        self.settings = replace(self.settings, **settings).checked()

    def next_request(self) -> InferenceInput:
        """The request for the next clip; alpha then steps on (a wrap past 1 is a rollover,
        applied when the following request is made, so a prompt queued meanwhile is taken)."""
        if self._rollover:
            self._roll_over()
        s = self.settings
        end_prompt, end_seed = (self.target, self.seed) if self.state == "TRANSITION" else (self.prompt, self.seed + 1)
        req = InferenceInput(
            start=PromptInput(self.prompt, self.seed, s.negative_prompt, s.denoising, s.guidance),
            end=PromptInput(end_prompt, end_seed, s.negative_prompt, s.denoising, s.guidance),
            alpha=float(self.alpha), num_inference_steps=s.steps, seed_image_id=s.seed_image_id,
            mask_image_id=s.mask_image_id)
        self.alpha += self.alpha_velocity
        if self.alpha > 1 + 1e-3:
            self.alpha -= 1
            self._rollover = True
        return req

    def _roll_over(self):
        self._rollover = False
        if self.state == "SAME_PROMPT":
            self.seed += 1
            if self.queued:
                self.state, self.target, self.alpha = "TRANSITION", self.queued.popleft(), FIRST_ALPHA
        else:  # TRANSITION: the target is now the prompt
            self.prompt = self.target
            if self.queued:
                self.target = self.queued.popleft()  # alpha runs on, as the app's (no state change)
            else:
                self.state, self.target, self.alpha = "SAME_PROMPT", None, FIRST_ALPHA


# ---- one request ---------------------------------------------------------------------------------
def load_image_id(image_id: str, what: str = "seed image", search: str | None = None) -> np.ndarray:
    """A seed/mask image by id (`riffuse.resolve_image_id`: ids only, never paths) -> (H, W, 3) uint8."""
    from PIL import Image, UnidentifiedImageError

    path = resolve_image_id(image_id, what, search)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise InputError(f"invalid {what}: {image_id!r} is not a readable image ({e})") from None


def render(riff, request: InferenceInput, seed_images: str | None = None, steps: int | None = None,
           callback=None, guidance: float | None = None, **sampling) -> np.ndarray:
    """One request (InferenceInput) -> its spectrogram (512, W, 3) uint8. `steps` and `guidance`
    override the request's num_inference_steps and both ends' guidance (a server running a few-step
    sampler: LCM wants guidance 1 whatever the web app asks); `sampling`: more `riffuse` keywords
    (scheduler, decoder, cache_interval, ... from a preset). An empty mask id is no mask, as the web
    app sends it for `maskImageId=none`."""
    seed = load_image_id(request.seed_image_id, "seed image", seed_images)
    mask = load_image_id(request.mask_image_id, "mask image", seed_images) if request.mask_image_id else None
    start, end = request.start, request.end
    if guidance is not None:
        start, end = replace(start, guidance=guidance), replace(end, guidance=guidance)
    return riff.riffuse(start, end, request.alpha, seed, mask=mask,
                        steps=request.num_inference_steps if steps is None else steps, callback=callback,
                        **sampling)


def clip_audio(image: np.ndarray, method: str = "nnls", progress=None) -> np.ndarray:
    """A clip's audio as the server sends it: every column lasts 10 ms (width x 441 samples: 5.12 s
    for 512 px, so all clips of one width are exactly as long), with the original's loudness stage."""
    from PIL import Image

    return image_to_audio(Image.fromarray(image), method=method, progress=progress, length=image.shape[1] * 441)


def http_response(image: np.ndarray, wave: np.ndarray) -> InferenceOutput:
    """The original server's answer: base64 data URLs of the JPEG (quality 75) and a VBR MP3."""
    from PIL import Image

    jpeg = io.BytesIO()
    Image.fromarray(image).save(jpeg, format="JPEG", quality=JPEG_QUALITY)
    mp3 = audio_io.encode_audio(wave, SAMPLE_RATE, "mp3", vbr_quality=MP3_VBR_QUALITY)
    return InferenceOutput(image=data_url("image/jpeg", jpeg.getvalue()), audio=data_url("audio/mpeg", mp3),
                           duration_s=round(wave.shape[-1] / SAMPLE_RATE, 6))


# ---- the stream ----------------------------------------------------------------------------------
@dataclass
class Clip:
    index: int
    request: InferenceInput
    state: str  # the loop's state when the request was made
    image: np.ndarray  # (512, W, 3) uint8
    audio: np.ndarray  # (C, n) float32: the next piece of the one continuous waveform
    start_sample: int  # where it starts on the stream's timeline


def stream(riff, loop: RiffLoop, count: int | None = None, seed_images: str | None = None,
           steps: int | None = None, audio: SeamlessAudio | None = None, callback=None) -> Iterator[Clip]:
    """Clips of `loop`, one after the other (`count` of them, or endless); change the loop between
    clips (`up_next`, `update`). Play the `audio` pieces back to back: there is no seam."""
    audio = audio or SeamlessAudio()
    index = 0
    while count is None or index < count:
        request = loop.next_request()  # (a rollover is applied first: loop.state is this request's)
        image = render(riff, request, seed_images, steps=steps, callback=callback)
        start = audio.position
        yield Clip(index, request, loop.state, image, audio.push(image), start)
        index += 1
