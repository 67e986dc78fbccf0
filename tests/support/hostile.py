"""Hostile inputs for tests/hostile: what a careless user or the network sends minriff.

Strategies (hypothesis):
- `json_bodies()`: server requests (the original's InferenceInput, reference/riffusion.md §3.2) as
  bytes: mostly well-formed, with wrong types, missing and unknown fields, huge / NaN / Infinity /
  5,000-digit numbers, deep nesting, odd Unicode (lone surrogates, controls, RTL, emoji), invalid
  UTF-8, truncation, a BOM.
- `png_files()`: PNG bytes of any size, colour type and bit depth (1/8/16-bit grey, RGB, RGBA,
  grey+alpha, palette), optional EXIF spectrogram parameters (`exif_values()`: huge, negative,
  NaN, strings, tuples, rationals), dimensions declared huge in the header over a small body,
  truncated or with a corrupted byte.
- `wav_files()`: WAV bytes: any sample rate, 1-3 channels, 8/16-bit PCM or float (with NaN),
  headers that promise more data than there is, truncation.
- `exif_values()`: the EXIF tag -> value dicts alone, for SpectrogramParams.from_exif.

`run_cli_batch(cases)` runs `minriff.cli.main(argv)` for each case in one child process under
RLIMIT_AS (3 GB) and a timeout, and reports per case the exit code, the stderr and any exception
that escaped (a traceback is a failure: only exit 0 or a one-line minriff error, 2, is allowed).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
from hypothesis import strategies as st

from support import ROOT

# ---------------------------------------------------------------------------------------------------
# JSON requests


class Raw(str):
    """Text inserted verbatim into a rendered JSON document (NaN, 5,000-digit numbers, nesting)."""


def render(v) -> str:
    """JSON text of a value that may hold Raw pieces (json.dumps escapes lone surrogates as \\udXXX)."""
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {render(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(render(x) for x in v) + "]"
    return json.dumps(v)


odd_chars = st.sampled_from(["\ud800", "\udcff", "\x00", "\x1b[31m", "\u202e", "\U0001f3b7", "\ufeff", "\u0301",
                             "\n", "é", "ß", "\u3000"])
odd_text = st.lists(st.one_of(st.text(max_size=8), odd_chars), max_size=6).map("".join)
texts = st.one_of(st.sampled_from(["jazz piano", "church bells on sunday", "(caribbean:1.5) [drums]", "", "   "]),
                  odd_text, st.text(max_size=40),
                  st.integers(990, 1200).map(lambda n: "a" * n),  # around the 1000-character limit
                  st.sampled_from(["(x:1e39)", "(x:100000000000000000000000000000000000000000)", "((((((((x))))))))",
                                   "(x:-7.5)", "(x:1.2.3)", "[" * 300 + "x"]))
huge_numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e999"), Raw("-1e400"), Raw("1e-400"),
                     Raw("9" * 5000), Raw("-" + "1" * 4301), Raw("0." + "5" * 100), Raw("1" * 60)]),
    st.floats(allow_nan=False, allow_infinity=False))
wrong_types = st.one_of(st.none(), st.booleans(), texts, st.just([]), st.just({}), st.just([1, 2]),
                        st.just({"a": 1}), st.sampled_from([Raw("[" * 40 + "]" * 40), Raw("[" * 5000 + "]" * 5000)]))


def field(good, hostile_share: int = 1):
    """Mostly good values (so the success path runs too), otherwise hostile ones."""
    return st.one_of(*([good] * 3), *([st.one_of(huge_numbers, wrong_types)] * hostile_share))


def prompt_inputs():
    return st.fixed_dictionaries(
        {"prompt": field(texts), "seed": field(st.integers(-(2**63), 2**64 - 1))},
        optional={"negative_prompt": field(st.one_of(st.none(), texts)),
                  "denoising": field(st.floats(0.01, 1.0)), "guidance": field(st.floats(0.0, 30.0)),
                  "guidence": st.just(7.0)})


def requests():
    return st.fixed_dictionaries(
        {"start": field(prompt_inputs()), "end": field(prompt_inputs()), "alpha": field(st.floats(0.0, 1.0))},
        optional={"num_inference_steps": field(st.integers(1, 60)), "seed_image_id": field(st.just("og_beat")),
                  "mask_image_id": field(st.one_of(st.none(), st.just("mask_top_third_75"))),
                  "extra": st.integers()})


@st.composite
def json_bodies(draw) -> bytes:
    """A request body as the server would receive it (bytes)."""
    value = draw(st.one_of(requests(), requests(), requests(), wrong_types, st.lists(requests(), max_size=2)))
    body = render(value).encode("utf-8", "surrogatepass")  # a lone surrogate here is invalid UTF-8
    mutation = draw(st.sampled_from(["none", "none", "none", "truncate", "bad_byte", "bom", "pad", "nest"]))
    if mutation == "truncate":
        body = body[:draw(st.integers(0, max(0, len(body) - 1)))]
    elif mutation == "bad_byte":
        i = draw(st.integers(0, len(body)))
        body = body[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + body[i:]
    elif mutation == "bom":
        body = b"\xef\xbb\xbf" + body
    elif mutation == "pad":
        body = body + b" " * draw(st.sampled_from([10, 70000]))
    elif mutation == "nest":
        depth = draw(st.sampled_from([33, 1000, 100000]))
        body = b'{"alpha": ' + b"[" * depth + b"]" * depth + b"}"
    return body


# ---------------------------------------------------------------------------------------------------
# EXIF parameters, PNG and WAV files

EXIF_TAGS = list(range(11000, 11090, 5)) + [11000, 11005, 11010, 11020, 11030, 11040, 11050, 11060, 11070]
exif_value = st.one_of(
    st.sampled_from([44100, 0, 1, 10, 100, 400, 512, 10000, 20000, 65535, 2**31 - 1, 2**32 - 1, -1, -(2**31)]),
    st.integers(0, 200000), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["abc", "", "44100", b"\x00\x01".decode("latin-1")]),
    st.sampled_from([(1, 2), (44100,), ()]))


def exif_values():
    """tag -> value dicts over Riffusion's EXIF tags (and neighbours), hostile values included."""
    return st.dictionaries(st.sampled_from(EXIF_TAGS), exif_value, max_size=6)


def exif_bytes(tags: dict) -> bytes:
    """Raw TIFF bytes for a PNG eXIf chunk (Pillow writes the tags; its 'Exif\\0\\0' prefix dropped)."""
    from PIL import Image

    exif = Image.Exif()
    for tag, v in tags.items():
        exif[tag] = v
    data = exif.tobytes()
    return data[6:] if data.startswith(b"Exif\x00\x00") else data


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# colour type -> samples per pixel (PNG spec)
SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_bytes(pixels: np.ndarray, bit_depth: int, color_type: int, exif: bytes | None = None,
              declared: tuple[int, int] | None = None) -> bytes:
    """A PNG of pixels (H, W) or (H, W, S) uint8/uint16 (1-bit: values 0/1), written by hand so any
    header value can be declared: `declared` = (width, height) put in IHDR regardless of the data."""
    h, w = pixels.shape[:2]
    if bit_depth == 1:
        rows = [np.packbits(pixels[y].reshape(-1).astype(np.uint8)).tobytes() for y in range(h)]
    else:
        dtype = ">u2" if bit_depth == 16 else np.uint8
        rows = [pixels[y].astype(dtype).tobytes() for y in range(h)]
    raw = b"".join(b"\x00" + r for r in rows)
    width, height = declared or (w, h)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    if color_type == 3:
        out += chunk(b"PLTE", bytes(np.random.default_rng(1).integers(0, 256, 768, dtype=np.uint8)))
    if exif is not None:
        out += chunk(b"eXIf", exif)
    return out + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")


@st.composite
def png_files(draw, max_width: int = 160) -> bytes:
    """PNG bytes (module docstring). Content is smooth spectrogram-like bands (a few random-noise
    ones): random noise is the slowest input for the inverse mel."""
    color_type, bit_depth = draw(st.sampled_from([(0, 8), (0, 16), (2, 8), (2, 16), (4, 8), (6, 8), (6, 16), (3, 8),
                                                  (0, 1)]))
    width = draw(st.one_of(st.integers(1, max_width), st.sampled_from([2, 7, 64, 65])))
    height = draw(st.sampled_from([512, 512, 512, 1, 100, 511, 513, 1024]))
    top = {1: 1, 8: 255, 16: 65535}[bit_depth]
    if color_type == 3:
        top = 255
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = 0.5 + 0.45 * np.sin(x / (2.0 + seed % 7)) * np.cos(y / (5.0 + seed % 11))
    base = rng.random((height, width)) if draw(st.integers(0, 5)) == 0 else smooth
    samples = SAMPLES[color_type]
    pixels = np.repeat((base * top).round()[..., None], samples, axis=2).astype(np.uint16 if bit_depth == 16 else
                                                                           np.uint8)
    if samples == 3 and draw(st.booleans()):
        pixels[..., 0] = 0  # stereo-looking: R = 0
    exif = draw(st.one_of(st.none(), st.none(), exif_values()))
    declared = None
    kind = draw(st.sampled_from(["plain"] * 6 + ["huge", "truncate", "corrupt"]))
    if kind == "huge":  # a small body under a header claiming a giant image
        declared = draw(st.sampled_from([(100_000, 512), (400_000, 512), (20_000, 20_000), (2**31 - 1, 512),
                                         (512, 2**31 - 1), (0, 512), (360_001, 512)]))
    data = png_bytes(pixels if samples > 1 else pixels[..., 0], bit_depth, color_type,
                     exif_bytes(exif) if exif else None, declared)
    if kind == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "corrupt":
        i = draw(st.integers(8, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    return data


def wav_bytes(samples: np.ndarray, sample_rate: int, fmt: str, declared_frames: int | None = None) -> bytes:
    """A WAV of samples (N, C) float in [-1, 1] (NaN allowed for 'float'), written by hand so the
    header can lie: fmt 'u8', 's16' or 'float'; declared_frames sets the data chunk's length."""
    n, c = samples.shape
    if fmt == "u8":
        data, bits, tag = np.clip(samples * 127.5 + 128, 0, 255).astype(np.uint8).tobytes(), 8, 1
    elif fmt == "s16":
        data, bits, tag = np.clip(samples * 32767, -32768, 32767).astype("<i2").tobytes(), 16, 1
    else:
        data, bits, tag = samples.astype("<f4").tobytes(), 32, 3
    block = c * bits // 8
    size = len(data) if declared_frames is None else min(declared_frames * block, 0xFFFFFFFF)
    fmt_chunk = struct.pack("<HHIIHH", tag, c, sample_rate & 0xFFFFFFFF, (sample_rate * block) & 0xFFFFFFFF, block,
                            bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", min(len(body), 0xFFFFFFFF)) + body


@st.composite
def wav_files(draw) -> bytes:
    rate = draw(st.one_of(st.sampled_from([44100, 44100, 48000, 22050, 8000, 96000]),
                          st.sampled_from([1, 7, 44101, 192000, 2**31 - 1, 2**32 - 1]), st.integers(1000, 100000)))
    channels = draw(st.sampled_from([1, 1, 2, 3]))
    frames = draw(st.one_of(st.integers(0, 3 * 8000), st.sampled_from([1, 100, 2205, 2206])))
    fmt = draw(st.sampled_from(["s16", "s16", "u8", "float"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    t = np.arange(frames)[:, None] / max(rate, 1)
    samples = 0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * rng.standard_normal((frames, channels))
    if fmt == "float" and frames and draw(st.integers(0, 3)) == 0:
        samples[rng.integers(0, frames)] = np.nan
    declared = draw(st.one_of(st.none(), st.none(), st.none(), st.sampled_from([2**32 // 4, 10**9, frames + 100])))
    data = wav_bytes(samples, rate, fmt, declared)
    if draw(st.integers(0, 7)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return data


# ---------------------------------------------------------------------------------------------------
# running CLI commands in a child process under a memory limit

MEMORY_LIMIT = 3 << 30

_CHILD = r"""
import io, json, resource, sys, time, traceback
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from minriff.cli import main
out = sys.stdout
for line in sys.stdin:
    argv = json.loads(line)
    err, sys.stderr, sys.stdout = io.StringIO(), io.StringIO(), io.StringIO()
    escaped, t0 = None, time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    except BaseException:
        code, escaped = None, traceback.format_exc()
    err = sys.stderr.getvalue()
    sys.stderr, sys.stdout = sys.__stderr__, out
    out.write(json.dumps({"argv": argv, "code": code, "stderr": err[-3000:], "escaped": escaped,
                          "seconds": round(time.perf_counter() - t0, 2)}) + "\n")
    out.flush()
"""


def run_cli_batch(cases: list[list[str]], timeout: float = 120.0, memory: int = MEMORY_LIMIT) -> list[dict]:
    """Run `minriff` argv lists one after another in a child process limited to `memory` bytes of
    address space; a run past `timeout` seconds is a failure (subprocess.TimeoutExpired)."""
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    lines = "".join(json.dumps(a) + "\n" for a in cases)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(memory)], input=lines, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(ROOT))
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases), f"child stopped after {len(results)} of {len(cases)}:\n{proc.stderr[-3000:]}"
    return results


def check_outcome(result: dict, target, sentinel: bytes, read_output) -> None:
    """Only success (exit 0, a complete readable output) or a one-line minriff error (exit 2, the
    target untouched); never an escaped exception, a usage error or a partial file."""
    argv = " ".join(result["argv"])[:300]
    assert result["escaped"] is None, f"exception escaped for {argv}:\n{result['escaped']}"
    assert result["code"] in (0, 2), f"exit {result['code']} for {argv}: {result['stderr']}"
    if result["code"] == 2:
        lines = result["stderr"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("minriff ") and "error:" in lines[0], (argv, result["stderr"])
        assert target.read_bytes() == sentinel, f"{target} changed although {argv} failed"
    else:
        assert target.read_bytes() != sentinel, f"{argv} succeeded but did not write {target}"
        read_output(target)
